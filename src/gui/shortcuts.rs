//! The studio's keyboard: what each key asks for, read once per frame in `ui()` and carried out
//! by the app. Keys that type (Space, arrows, letters, digits) count only while no text field
//! has focus, and so does Esc (which leaves a text field first); Ctrl+Enter and F1 work
//! everywhere.

use eframe::egui::{self, Key};

use super::command::{Move, StudioCommand};

/// The keys and what they do, as the shortcuts list shows them.
pub const HELP: &[(&str, &str)] = &[
    ("Ctrl+Enter", "Generate"),
    ("Esc", "Cancel the run (or close this list)"),
    ("Space", "Play or stop the selected clip"),
    (
        "Left, Up / Right, Down",
        "Previous / next clip (plays it with auto-audition on)",
    ),
    ("Home / End", "First / last clip"),
    ("1–9", "Switch to clip N at the same position (A/B)"),
    ("L", "Loop playback on or off"),
    ("F1 or ?", "Show or hide this list"),
];

/// What the keys pressed since the last frame ask for, in a fixed order.
pub fn read(ctx: &egui::Context) -> Vec<StudioCommand> {
    let typing = ctx.memory(|memory| memory.focused().is_some());
    ctx.input(|input| {
        let mut pressed = Vec::new();
        let plain = |key: Key| input.key_pressed(key) && !input.modifiers.any();
        if input.modifiers.command && input.key_pressed(Key::Enter) {
            pressed.push(StudioCommand::Generate);
        }
        // Esc in a text field only leaves the field; it must not also cancel the run.
        if input.key_pressed(Key::Escape) && !typing {
            pressed.push(StudioCommand::Escape);
        }
        if input.key_pressed(Key::F1) {
            pressed.push(StudioCommand::ToggleHelp);
        }
        if typing {
            return pressed;
        }
        // `?` is Shift+/ on most layouts: it arrives as its own key whatever the modifiers.
        if input.key_pressed(Key::Questionmark) {
            pressed.push(StudioCommand::ToggleHelp);
        }
        for (key, shortcut) in [
            (Key::Space, StudioCommand::PlayStop),
            (Key::ArrowLeft, StudioCommand::Select(Move::Previous)),
            (Key::ArrowUp, StudioCommand::Select(Move::Previous)),
            (Key::ArrowRight, StudioCommand::Select(Move::Next)),
            (Key::ArrowDown, StudioCommand::Select(Move::Next)),
            (Key::Home, StudioCommand::Select(Move::First)),
            (Key::End, StudioCommand::Select(Move::Last)),
            (Key::L, StudioCommand::ToggleLoop),
        ] {
            if plain(key) {
                pressed.push(shortcut);
            }
        }
        let digits = [
            Key::Num1,
            Key::Num2,
            Key::Num3,
            Key::Num4,
            Key::Num5,
            Key::Num6,
            Key::Num7,
            Key::Num8,
            Key::Num9,
        ];
        if let Some(index) = digits.iter().position(|key| plain(*key)) {
            pressed.push(StudioCommand::SwitchTo(index));
        }
        pressed
    })
}

/// The list of shortcuts, in a window, while `open`; true when its close button or title-bar
/// cross was pressed.
pub fn help_window(ctx: &egui::Context, open: bool) -> bool {
    let mut still_open = open;
    let mut close = false;
    egui::Window::new("Keyboard shortcuts")
        .collapsible(false)
        .resizable(false)
        .open(&mut still_open)
        .show(ctx, |ui| {
            egui::Grid::new("shortcuts").striped(true).show(ui, |ui| {
                for (keys, action) in HELP {
                    ui.strong(*keys);
                    ui.label(*action);
                    ui.end_row();
                }
            });
            close = ui.button("Close").clicked();
        });
    open && (close || !still_open)
}

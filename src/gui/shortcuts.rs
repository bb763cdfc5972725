//! The studio's keyboard: what each key asks for, read once per frame in `ui()` and carried out
//! by the app. Keys that type (Space, arrows, letters, digits) count only while no text field
//! has focus; Ctrl+Enter and Esc work everywhere.

use eframe::egui::{self, Key};

/// What a key press asks the studio to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shortcut {
    Generate,
    /// Esc: closes the shortcuts list if it is open, else cancels the run.
    Escape,
    /// Plays the selected clip, or stops playback.
    PlayStop,
    Previous,
    Next,
    First,
    Last,
    ToggleLoop,
    /// A/B: clip N (0-based) at the current position.
    Switch(usize),
    ToggleHelp,
}

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

/// The shortcuts pressed since the last frame, in a fixed order.
pub fn read(ctx: &egui::Context) -> Vec<Shortcut> {
    let typing = ctx.memory(|memory| memory.focused().is_some());
    ctx.input(|input| {
        let mut pressed = Vec::new();
        let plain = |key: Key| input.key_pressed(key) && !input.modifiers.any();
        if input.modifiers.command && input.key_pressed(Key::Enter) {
            pressed.push(Shortcut::Generate);
        }
        if input.key_pressed(Key::Escape) {
            pressed.push(Shortcut::Escape);
        }
        if input.key_pressed(Key::F1) {
            pressed.push(Shortcut::ToggleHelp);
        }
        if typing {
            return pressed;
        }
        // `?` is Shift+/ on most layouts: it arrives as its own key whatever the modifiers.
        if input.key_pressed(Key::Questionmark) {
            pressed.push(Shortcut::ToggleHelp);
        }
        for (key, shortcut) in [
            (Key::Space, Shortcut::PlayStop),
            (Key::ArrowLeft, Shortcut::Previous),
            (Key::ArrowUp, Shortcut::Previous),
            (Key::ArrowRight, Shortcut::Next),
            (Key::ArrowDown, Shortcut::Next),
            (Key::Home, Shortcut::First),
            (Key::End, Shortcut::Last),
            (Key::L, Shortcut::ToggleLoop),
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
            pressed.push(Shortcut::Switch(index));
        }
        pressed
    })
}

/// The list of shortcuts, in a window that Esc, F1 or its button closes.
pub fn help_window(ctx: &egui::Context, open: &mut bool) {
    let mut close = false;
    egui::Window::new("Keyboard shortcuts")
        .collapsible(false)
        .resizable(false)
        .open(open)
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
    if close {
        *open = false;
    }
}

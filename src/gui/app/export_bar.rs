//! The bar under an export: drag the WAV into a DAW, copy it, reveal it.

use super::*;

impl FoleyApp {
    /// Puts `path` on the clipboard as a file (a file list / text/uri-list), so pasting into a
    /// DAW or file manager copies the clip; this stands in for dragging out of the window.
    pub(super) fn copy_file(&mut self, path: &std::path::Path) -> Result<(), arboard::Error> {
        if self.clipboard.is_none() {
            self.clipboard = Some(arboard::Clipboard::new()?);
        }
        match self.clipboard.as_mut() {
            Some(clipboard) => clipboard.set().file_list(&[path]),
            None => Err(arboard::Error::ClipboardNotSupported),
        }
    }

    /// Hands the exported file to the platform's drag-and-drop while the button is held.
    pub(super) fn start_drag(&mut self, path: PathBuf) {
        if self.drag.is_some() {
            return;
        }
        match drag_out::start(path, self.window) {
            Ok(receiver) => self.drag = Some(receiver),
            Err(error) => self.session.say(error.to_string()),
        }
    }

    pub(super) fn poll_drag(&mut self) {
        let Some(receiver) = &self.drag else {
            return;
        };
        let Ok(result) = receiver.try_recv() else {
            return;
        };
        self.drag = None;
        match result {
            Ok(DragOutcome::Dropped | DragOutcome::NoTarget) => {}
            Ok(DragOutcome::Refused) => self.session.say("the drop target did not take the file"),
            Err(error) => self.session.say(format!("drag failed: {error}")),
        }
    }

    pub(super) fn last_export_bar(&mut self, ui: &mut egui::Ui) {
        if let Some(picture) = self.session.last_picture.clone() {
            ui.horizontal(|ui| {
                if ui.button("Show picture in folder").clicked() {
                    self.commands.push(StudioCommand::Reveal(picture.clone()));
                }
                if ui.button("Close picture").clicked() {
                    self.commands.push(StudioCommand::ClosePicture);
                }
                ui.add(egui::Label::new(format!("Saved picture {}", picture.display())).truncate());
            });
        }
        let Some(path) = self.session.last_export.clone() else {
            return;
        };
        // Only an exported WAV that is still there is offered to a DAW.
        if !path.is_file() {
            ui.horizontal(|ui| {
                if ui.button("Close").clicked() {
                    self.commands.push(StudioCommand::CloseExport);
                }
                ui.label(format!(
                    "The exported file {} is no longer there; export again.",
                    path.display()
                ));
            });
            return;
        }
        ui.horizontal(|ui| {
            let drag = ui
                .add(egui::Button::new("Drag to DAW").sense(egui::Sense::click_and_drag()))
                .on_hover_text("Drag onto a DAW track, the desktop or a file manager");
            if drag.drag_started() {
                self.commands.push(StudioCommand::DragFile(path.clone()));
            }
            if ui
                .button("Copy file")
                .on_hover_text("Paste it into a DAW or file manager")
                .clicked()
            {
                self.commands.push(StudioCommand::CopyFile(path.clone()));
            }
            if ui.button("Copy path").clicked() {
                ui.ctx().copy_text(path.display().to_string());
            }
            if ui.button("Show in folder").clicked() {
                self.commands.push(StudioCommand::Reveal(path.clone()));
            }
            if ui.button("Close").clicked() {
                self.commands.push(StudioCommand::CloseExport);
            }
            // Buttons first: a long path must not push them out of the window.
            ui.add(egui::Label::new(format!("Exported {}", path.display())).truncate());
        });
    }
}

/// Opens the folder holding `path` in the system's file manager.
pub(super) fn reveal(path: &std::path::Path) -> std::io::Result<()> {
    let folder = path.parent().unwrap_or(path);
    let program = if cfg!(target_os = "windows") {
        "explorer"
    } else if cfg!(target_os = "macos") {
        "open"
    } else {
        "xdg-open"
    };
    std::process::Command::new(program)
        .arg(folder)
        .spawn()
        .map(|_| ())
}

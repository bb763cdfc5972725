//! The compare board: the clips of every run and the pinned library clips, side by side.

use super::*;

impl FoleyApp {
    pub(super) fn clips_panel(&mut self, ui: &mut egui::Ui) {
        let mut commands = Vec::new();
        egui::ScrollArea::vertical().show(ui, |ui| {
            if self.session.results.is_empty() && self.session.opened.is_none() && self.session.run.is_none() {
                ui.label("Type a prompt and press Generate (Ctrl+Enter). Clips appear here and in the library.");
            }
            let compact = self.session.results.len() > 1;
            let playheads: Vec<Option<f64>> = (0..self.session.results.len())
                .map(|index| self.playhead(ClipRef::Board(index)))
                .collect();
            let selected = self.session.selected;
            for (index, clip) in self.session.results.iter_mut().enumerate() {
                let mut frame = egui::Frame::group(ui.style());
                if selected == Some(index) && compact {
                    frame = frame.stroke(ui.visuals().selection.stroke);
                }
                frame.show(ui, |ui| {
                    if compact {
                        ui.label(format!("{}", index + 1));
                    }
                    if let Some(action) = clip.ui(ui, playheads[index], compact, Place::Board) {
                        commands.push(StudioCommand::Clip(ClipRef::Board(index), action));
                    }
                });
            }
            if compact {
                ui.horizontal(|ui| {
                    ui.small("Keys 1–9 switch between clips at the same position; the arrow keys move.");
                    ui.checkbox(&mut self.settings.auto_audition, "Auto-audition")
                        .on_hover_text("Moving between clips with the arrow keys plays them");
                    if ui
                        .button("Clear board")
                        .on_hover_text("The clips stay in the library")
                        .clicked()
                    {
                        commands.push(StudioCommand::ClearBoard);
                    }
                });
            }
            let opened_playhead = self.playhead(ClipRef::Opened);
            if let Some(clip) = self.session.opened.as_mut() {
                ui.separator();
                ui.label("From the library");
                if let Some(action) = clip.ui(ui, opened_playhead, false, Place::Opened) {
                    commands.push(StudioCommand::Clip(ClipRef::Opened, action));
                }
            }
        });
        self.commands.extend(commands);
    }

    /// The bar under a delete: what went to the trash, with Undo.
    pub(super) fn deleted_bar(&mut self, ui: &mut egui::Ui) {
        let Some(record) = &self.session.last_deleted else {
            return;
        };
        let prompt = record.prompt.clone();
        ui.horizontal(|ui| {
            if ui
                .button("Undo")
                .on_hover_text("Bring the clip back")
                .clicked()
            {
                self.commands.push(StudioCommand::UndoDelete);
            }
            if ui.button("Dismiss").clicked() {
                self.commands.push(StudioCommand::DismissDeleted);
            }
            ui.add(
                egui::Label::new(format!("Moved \"{prompt}\" to the library's trash")).truncate(),
            );
        });
    }
}

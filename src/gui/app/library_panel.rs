//! The right panel: search the library, open a clip, empty the trash.

use super::*;

impl FoleyApp {
    pub(super) fn library_panel(&mut self, ui: &mut egui::Ui) {
        ui.heading("Library");
        if ui
            .button("Open audio…")
            .on_hover_text("Open a WAV file to play, export or edit (or drop it on the window)")
            .clicked()
        {
            self.commands.push(StudioCommand::ChooseFiles);
        }
        let label = ui.label("Search");
        ui.add(egui::TextEdit::singleline(&mut self.session.search))
            .labelled_by(label.id)
            .on_hover_text(
                "Words match the prompt, model, tags or seed; #tag for a tag, rating:4 for 4 or more, kept for kept clips",
            );
        let Ok(library) = &mut self.library else {
            if let Err(error) = &self.library {
                ui.colored_label(ui.visuals().error_fg_color, error);
            }
            return;
        };
        ui.small(library.dir().display().to_string());
        let mut open = None;
        egui::ScrollArea::vertical().show(ui, |ui| {
            for index in library.found(&self.session.search) {
                let record = &library.records()[index];
                let star = if record.starred { "[kept] " } else { "" };
                let mut text = format!("{star}{} · s{}", record.prompt, record.seed);
                if record.rating > 0 {
                    text.push_str(&format!(" · rated {}", record.rating));
                }
                for tag in &record.tags {
                    text.push_str(&format!(" #{tag}"));
                }
                if ui.selectable_label(false, text).clicked() {
                    open = Some(record.id.clone());
                }
            }
        });
        if ui
            .button("Empty trash")
            .on_hover_text("Delete the clips in the library's trash for good")
            .clicked()
        {
            self.commands.push(StudioCommand::EmptyTrash);
        }
        if let Some(id) = open {
            self.commands.push(StudioCommand::OpenFromLibrary(id));
        }
    }
}

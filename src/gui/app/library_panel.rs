//! The right panel (search, open, empty the trash) and the changes the studio asks of the
//! library: annotate and delete.

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
        let Ok(library) = &self.library else {
            if let Err(error) = &self.library {
                ui.colored_label(ui.visuals().error_fg_color, error);
            }
            return;
        };
        ui.small(library.dir().display().to_string());
        let records: Vec<ClipRecord> = library.search(&self.session.search).cloned().collect();
        let mut open = None;
        egui::ScrollArea::vertical().show(ui, |ui| {
            for record in &records {
                let star = if record.starred { "[kept] " } else { "" };
                let mut text = format!("{star}{} · s{}", record.prompt, record.seed);
                if record.rating > 0 {
                    text.push_str(&format!(" · rated {}", record.rating));
                }
                for tag in &record.tags {
                    text.push_str(&format!(" #{tag}"));
                }
                if ui.selectable_label(false, text).clicked() {
                    open = Some(record.clone());
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
        if let Some(record) = open {
            self.commands
                .push(StudioCommand::OpenFromLibrary(Box::new(record)));
        }
    }

    /// Applies `change` to the clip `which` (and to the other view of the same library clip)
    /// and saves what the user says of it to the library. A clip still being saved gets its
    /// annotations when its id comes back; an opened file has none to save.
    pub(super) fn annotate(&mut self, which: ClipRef, change: impl Fn(&mut ClipRecord)) {
        let Some(clip) = self.clip_mut(which) else {
            return;
        };
        change(&mut clip.record);
        let id = clip.record.id.clone();
        let annotations = Annotations::of(&clip.record);
        if id.is_empty() {
            return;
        }
        for clip in self
            .session
            .results
            .iter_mut()
            .chain(self.session.opened.as_mut())
        {
            if clip.record.id == id {
                change(&mut clip.record);
            }
        }
        self.send_to_disk(DiskJob::Annotate { id, annotations });
    }

    /// The record of clip `id` as the board, the opened view or the library has it.
    pub(super) fn records_by_id(&self, id: &str) -> Option<ClipRecord> {
        self.session
            .results
            .iter()
            .chain(self.session.opened.as_ref())
            .map(|clip| &clip.record)
            .chain(
                self.library
                    .as_ref()
                    .ok()
                    .into_iter()
                    .flat_map(LibraryView::records),
            )
            .find(|record| record.id == id)
            .cloned()
    }

    /// Moves library clip `id` to the trash (the bar then offers Undo) and off the screen.
    pub(super) fn delete(&mut self, id: &str) {
        self.stop_playback();
        if let Some(record) = self.records_by_id(id) {
            self.send_to_disk(DiskJob::Delete { record });
        }
        self.session.results.retain(|clip| clip.record.id != id);
        self.session.selected = self
            .session
            .selected
            .filter(|_| !self.session.results.is_empty())
            .map(|index| index.min(self.session.results.len() - 1));
        if self
            .session
            .opened
            .as_ref()
            .is_some_and(|clip| clip.record.id == id)
        {
            self.session.opened = None;
        }
    }
}

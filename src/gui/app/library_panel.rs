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

    /// Applies `change` to the clip `which` (and to the other view of the same library clip)
    /// and saves what the user says of it to the library; a clip whose save is still queued is
    /// named by its save's key. An opened file has nothing to save.
    pub(super) fn annotate(&mut self, which: ClipRef, change: impl Fn(&mut ClipRecord)) {
        let Some(clip) = self.clip_mut(which) else {
            return;
        };
        change(&mut clip.record);
        let annotations = Annotations::of(&clip.record);
        let id = clip.record.id.clone();
        let target = match clip.save_key {
            _ if !id.is_empty() => ClipId::Id(id.clone()),
            Some(key) => ClipId::Saved(key),
            None => return,
        };
        if !id.is_empty() {
            for clip in self.views_mut() {
                if clip.record.id == id {
                    change(&mut clip.record);
                }
            }
        }
        self.send_to_disk(DiskJob::Annotate {
            clip: target,
            annotations,
        });
    }

    /// Moves clip `which` to the library's trash (the bar then offers Undo) and takes every
    /// view of it off the screen; a clip outside the library only leaves the screen.
    pub(super) fn delete(&mut self, which: ClipRef) {
        let Some(clip) = self.clip(which) else {
            return;
        };
        let id = clip.record.id.clone();
        let target = match clip.save_key {
            _ if !id.is_empty() => Some(ClipId::Id(id.clone())),
            key => key.map(ClipId::Saved),
        };
        self.stop_playback();
        if let Some(clip) = target {
            // Undo offers this delete once the disk has done it, never an earlier one.
            self.session.last_deleted = None;
            self.send_to_disk(DiskJob::Delete { clip });
        }
        if id.is_empty() {
            return self.close(which);
        }
        self.session.results.retain(|clip| clip.record.id != id);
        self.clamp_selection();
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

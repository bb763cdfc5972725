//! The right panel and what it does to the library: search, open, delete (to the trash) and
//! undo.

use super::*;

impl FoleyApp {
    pub(super) fn library_panel(&mut self, ui: &mut egui::Ui) {
        ui.heading("Library");
        let label = ui.label("Search");
        ui.add(egui::TextEdit::singleline(&mut self.search))
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
        let records: Vec<ClipRecord> = library.search(&self.search).cloned().collect();
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
            && let Ok(library) = self.library.as_mut()
        {
            match library.empty_trash() {
                Ok(_) => self.last_deleted = None,
                Err(error) => self.messages.push(error.to_string()),
            }
        }
        if let Some(record) = open {
            self.open_from_library(&record);
        }
    }

    pub(super) fn open_from_library(&mut self, record: &ClipRecord) {
        let Ok(library) = &self.library else { return };
        match library.load_clip(record) {
            Ok((samples, mel)) => {
                self.stop_playback();
                self.opened = Some(ClipView::new(record.clone(), samples.into(), mel));
            }
            Err(error) => self.messages.push(error.to_string()),
        }
    }

    /// Saves a change to clip `id` in the library (a failure becomes a message) and applies
    /// `view_change` to the record of every view of it (board and opened).
    pub(super) fn change_record(
        &mut self,
        id: &str,
        save: impl FnOnce(&mut Library, &str) -> crate::error::Result<()>,
        view_change: impl Fn(&mut ClipRecord),
    ) {
        if let Ok(library) = self.library.as_mut()
            && let Err(error) = save(library, id)
        {
            self.messages.push(error.to_string());
        }
        for clip in self.results.iter_mut().chain(self.opened.as_mut()) {
            if clip.record.id == id {
                view_change(&mut clip.record);
            }
        }
    }

    /// The record of clip `id` as the board, the opened view or the library has it.
    pub(super) fn records_by_id(&self, id: &str) -> Option<ClipRecord> {
        self.results
            .iter()
            .chain(self.opened.as_ref())
            .map(|clip| &clip.record)
            .chain(
                self.library
                    .as_ref()
                    .ok()
                    .into_iter()
                    .flat_map(Library::records),
            )
            .find(|record| record.id == id)
            .cloned()
    }

    /// Brings the last deleted clip back from the trash and opens it.
    pub(super) fn undo_delete(&mut self) {
        let Some(record) = self.last_deleted.take() else {
            return;
        };
        let restored = match self.library.as_mut() {
            Ok(library) => library.restore(&record.id),
            Err(error) => {
                self.messages.push(error.clone());
                return;
            }
        };
        match restored {
            Ok(record) => self.open_from_library(&record),
            Err(error) => self.messages.push(error.to_string()),
        }
    }

    pub(super) fn delete(&mut self, id: &str) {
        self.stop_playback();
        let record = self.records_by_id(id);
        if let Ok(library) = self.library.as_mut() {
            match library.delete(id) {
                Ok(()) => self.last_deleted = record,
                Err(error) => self.messages.push(error.to_string()),
            }
        }
        self.results.retain(|clip| clip.record.id != id);
        self.selected = self
            .selected
            .filter(|_| !self.results.is_empty())
            .map(|index| index.min(self.results.len() - 1));
        if self
            .opened
            .as_ref()
            .is_some_and(|clip| clip.record.id == id)
        {
            self.opened = None;
        }
    }

    /// WAV files dropped on the window open as clips, ready to play, export or edit (they are
    /// not in the library until an edit of them is).
    pub(super) fn open_dropped_files(&mut self, ctx: &egui::Context) {
        let dropped: Vec<PathBuf> = ctx.input(|input| {
            input
                .raw
                .dropped_files
                .iter()
                .map(|file| file.path().to_path_buf())
                .filter(|path| !path.as_os_str().is_empty())
                .collect()
        });
        for path in dropped {
            match crate::audio::wav::read_wav_frames(&path) {
                Ok((samples, channels, sample_rate)) => {
                    let name = path
                        .file_stem()
                        .map_or_else(String::new, |stem| stem.to_string_lossy().into_owned());
                    let frames = samples.len() / channels.max(1) as usize;
                    let record = ClipRecord {
                        id: String::new(),
                        prompt: name,
                        negative_prompt: None,
                        seed: 0,
                        steps: 0,
                        guidance: 0.0,
                        scheduler: String::new(),
                        model: "dropped file".into(),
                        duration: frames as f64 / sample_rate.max(1) as f64,
                        sample_rate,
                        channels,
                        timings: Vec::new(),
                        score: None,
                        starred: false,
                        rating: 0,
                        tags: Vec::new(),
                        mel_bins: None,
                        created: 0,
                        task: None,
                        batch_job: None,
                    };
                    if self.playing == Some(PlayingClip::Opened) {
                        self.stop_playback();
                    }
                    self.opened = Some(ClipView::new(record, samples.into(), None));
                }
                Err(error) => self.messages.push(error.to_string()),
            }
        }
    }
}

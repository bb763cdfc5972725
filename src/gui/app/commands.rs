//! The one place where what the user asked for ([`StudioCommand`]) changes the studio.

use super::*;

impl FoleyApp {
    pub fn execute(&mut self, command: StudioCommand) {
        match command {
            StudioCommand::LoadModel => self.load_model(),
            StudioCommand::ChooseModelFolder => {
                if let Some(folder) = rfd::FileDialog::new()
                    .set_title("Model folder")
                    .pick_folder()
                {
                    self.settings.model = folder.display().to_string();
                    self.load_model();
                }
            }
            StudioCommand::CancelDownload => self.load_cancel.cancel(),
            StudioCommand::Generate if !self.is_busy() => self.generate(),
            // Ctrl+Enter during a run: the run goes on.
            StudioCommand::Generate => {}
            StudioCommand::Escape if self.session.show_shortcuts => {
                self.session.show_shortcuts = false
            }
            StudioCommand::Escape | StudioCommand::Cancel => self.cancel(),
            StudioCommand::Clip(which, action) => self.apply(which, action),
            StudioCommand::ClearBoard => {
                self.stop_playback();
                self.session.results.clear();
                self.session.selected = None;
            }
            StudioCommand::OpenFromLibrary(record) => {
                self.send_to_disk(DiskJob::Open { record: *record })
            }
            StudioCommand::OpenFiles(paths) => self.open_files(&paths),
            StudioCommand::ChooseFiles => self.choose_files(),
            StudioCommand::EmptyTrash => self.send_to_disk(DiskJob::EmptyTrash),
            StudioCommand::UndoDelete => {
                if let Some(record) = self.session.last_deleted.take() {
                    self.send_to_disk(DiskJob::Restore { id: record.id });
                }
            }
            StudioCommand::DismissDeleted => self.session.last_deleted = None,
            StudioCommand::DismissMessages => self.session.messages.clear(),
            StudioCommand::DragFile(path) => self.start_drag(path),
            StudioCommand::CopyFile(path) => {
                if let Err(error) = self.copy_file(&path) {
                    self.session
                        .messages
                        .push(format!("could not copy the file: {error}"));
                }
            }
            StudioCommand::Reveal(path) => {
                if let Err(error) = reveal(&path) {
                    self.session
                        .messages
                        .push(format!("could not open the folder: {error}"));
                }
            }
            StudioCommand::CloseExport => self.session.last_export = None,
            StudioCommand::ClosePicture => self.session.last_picture = None,
            StudioCommand::PlayStop if self.session.playing.is_some() => self.stop_playback(),
            StudioCommand::PlayStop => match self.session.selected {
                Some(index) => self.play(ClipRef::Board(index), 0.0),
                None if self.session.opened.is_some() => self.play(ClipRef::Opened, 0.0),
                None => {}
            },
            StudioCommand::Select(to) => self.select(to),
            StudioCommand::SwitchTo(index) if index < self.session.results.len() => {
                self.session.selected = Some(index);
                self.switch_to(index);
            }
            StudioCommand::SwitchTo(_) => {}
            StudioCommand::ToggleLoop => {
                self.settings.loop_playback = !self.settings.loop_playback;
                if let Ok(playback) = &self.playback {
                    playback.set_looping(self.settings.loop_playback);
                }
            }
            StudioCommand::ToggleHelp => self.session.show_shortcuts = !self.session.show_shortcuts,
        }
    }

    /// Audio files as clips, ready to play, export or edit (they are not in the library until
    /// an edit of them is). The last one opens; an unreadable one becomes a message.
    fn open_files(&mut self, paths: &[PathBuf]) {
        for path in paths {
            match crate::audio::wav::read_wav_frames(path) {
                Ok((samples, channels, sample_rate)) => {
                    let name = path
                        .file_stem()
                        .map_or_else(String::new, |stem| stem.to_string_lossy().into_owned());
                    let record = ClipRecord::of_file(name, channels, sample_rate, samples.len());
                    if self.session.playing == Some(ClipRef::Opened) {
                        self.stop_playback();
                    }
                    self.session.opened = Some(ClipView::new(record, samples.into(), None));
                }
                Err(error) => self.session.messages.push(error.to_string()),
            }
        }
    }

    /// The system's file dialog for WAV files; what is chosen opens as with a drop.
    fn choose_files(&mut self) {
        let chosen = rfd::FileDialog::new()
            .set_title("Open audio")
            .add_filter("WAV audio", &["wav", "WAV", "wave"])
            .pick_files();
        if let Some(paths) = chosen {
            self.open_files(&paths);
        }
    }
}

//! The one place where what the user asked for ([`StudioCommand`]) changes the studio.

use super::export_bar::reveal;
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
            // Opening the clip already open would only lose its zoom and selection.
            StudioCommand::OpenFromLibrary(id)
                if self
                    .session
                    .opened
                    .as_ref()
                    .is_some_and(|clip| clip.record.id == id) => {}
            StudioCommand::OpenFromLibrary(id) => {
                let ticket = self.next_open();
                self.send_to_disk(DiskJob::Open { id, ticket });
            }
            StudioCommand::OpenFiles(paths) => self.open_files(&paths),
            StudioCommand::ChooseFiles => self.choose_files(),
            StudioCommand::EmptyTrash => self.send_to_disk(DiskJob::EmptyTrash),
            StudioCommand::UndoDelete => {
                if let Some(record) = self.session.last_deleted.take() {
                    let ticket = self.next_open();
                    self.send_to_disk(DiskJob::Restore {
                        id: record.id,
                        ticket,
                    });
                }
            }
            StudioCommand::DismissDeleted => self.session.last_deleted = None,
            StudioCommand::DismissMessages => self.session.messages.clear(),
            StudioCommand::DragFile(path) => self.start_drag(path),
            StudioCommand::CopyFile(path) => {
                if let Err(error) = self.copy_file(&path) {
                    self.session
                        .say(format!("could not copy the file: {error}"));
                }
            }
            StudioCommand::Reveal(path) => {
                if let Err(error) = reveal(&path) {
                    self.session
                        .say(format!("could not open the folder: {error}"));
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
    /// an edit of them is); read on the disk thread, the last one stays open.
    fn open_files(&mut self, paths: &[PathBuf]) {
        for path in paths {
            let ticket = self.next_open();
            self.send_to_disk(DiskJob::OpenFile {
                path: path.clone(),
                ticket,
            });
        }
    }

    /// Numbers a new open: only the newest one's clip is shown when it arrives.
    fn next_open(&mut self) -> u64 {
        self.session.open_ticket += 1;
        self.session.open_ticket
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

//! Deleting with undo: clips move into `trash/` and back, until the trash is emptied.

use std::path::PathBuf;

use super::{ClipRecord, Library, TRASH, is_absent, move_file, sync_dir};
use crate::error::{FoleyError, Result};

impl Library {
    /// `<library>/trash/<id>.<extension>`.
    pub(super) fn trash_path(&self, id: &str, extension: &str) -> Result<PathBuf> {
        let path = self.clip_path(id, extension)?;
        let name = path.file_name().map(PathBuf::from).unwrap_or_default();
        Ok(self.dir.join(TRASH).join(name))
    }

    /// Moves a listed clip into `trash/`, where `restore` can bring it back: the sidecar first
    /// (so a crash leaves at worst an unlisted WAV, which the next `open` moves into
    /// `quarantine/`), then the WAV and spectrogram.
    pub fn delete(&mut self, id: &str) -> Result<()> {
        let Some(index) = self.records.iter().position(|record| record.id == id) else {
            return Ok(());
        };
        let _lock = self.lock_clip(id)?;
        let trash = self.dir.join(TRASH);
        std::fs::create_dir_all(&trash).map_err(|error| FoleyError::Output {
            path: trash.clone(),
            reason: error.to_string(),
        })?;
        self.records.remove(index);
        for extension in ["json", "wav", "mel"] {
            move_file(
                &self.clip_path(id, extension)?,
                &self.trash_path(id, extension)?,
            )?;
        }
        sync_dir(&trash);
        sync_dir(&self.dir);
        Ok(())
    }

    /// Brings a clip back from `trash/`: the WAV and spectrogram first, the sidecar that lists
    /// it last. Fails, changing nothing, when the id has been taken meanwhile.
    pub fn restore(&mut self, id: &str) -> Result<ClipRecord> {
        let trashed = self.trash_path(id, "json")?;
        let _lock = self.lock_clip(id)?;
        let text = std::fs::read_to_string(&trashed).map_err(|error| FoleyError::BadFile {
            path: trashed.clone(),
            reason: error.to_string(),
        })?;
        let mut record: ClipRecord =
            serde_json::from_str(&text).map_err(|error| FoleyError::BadFile {
                path: trashed.clone(),
                reason: error.to_string(),
            })?;
        record.id = id.to_string();
        for extension in ["json", "wav", "mel"] {
            let path = self.clip_path(id, extension)?;
            if !is_absent(&path) {
                return Err(FoleyError::Output {
                    path,
                    reason:
                        "a clip with this name exists again; the trashed one stays in the trash"
                            .into(),
                });
            }
        }
        for extension in ["wav", "mel", "json"] {
            move_file(
                &self.trash_path(id, extension)?,
                &self.clip_path(id, extension)?,
            )?;
        }
        sync_dir(&self.dir);
        self.records.insert(0, record.clone());
        Ok(record)
    }

    /// Deletes everything in `trash/` for good; returns how many clips went.
    pub fn empty_trash(&mut self) -> Result<usize> {
        let trash = self.dir.join(TRASH);
        let Ok(entries) = std::fs::read_dir(&trash) else {
            return Ok(0);
        };
        let mut clips = 0;
        for path in entries.flatten().map(|entry| entry.path()) {
            if path.extension().is_some_and(|ext| ext == "json") {
                clips += 1;
            }
            if path.is_file() {
                std::fs::remove_file(&path).map_err(|error| FoleyError::Output {
                    path: path.clone(),
                    reason: error.to_string(),
                })?;
            }
        }
        sync_dir(&trash);
        Ok(clips)
    }
}

//! The clip library: every generated clip is a WAV plus a JSON sidecar in one folder. Both are
//! written atomically (temporary file, fsync, rename), and the index is rebuilt from the
//! sidecars on start, so a crash never leaves a half-written entry behind.
//!
//! The folder is outside data: anyone can drop or copy a sidecar into it, and several studios
//! may share it. So a clip's id is its sidecar's file name (never the `id` inside it), every
//! path is built through [`Library::clip_path`], sample rates are checked where they are read,
//! ids are reserved with a lock file before a save, and leftovers of crashed saves are cleaned
//! up when the library is opened (`recovery`).

pub mod export;
mod id;
mod lock;
mod record;
mod recovery;
mod search;
mod trash;

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::io::Read;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

use crate::atomic_file::write_atomic;
use crate::audio::wav::{WavFormat, read_wav_frames, write_wav_with_metadata};
use crate::error::{FoleyError, Result};

pub use id::{InvalidId, MAX_ID_LEN, validate_id};
pub use record::{Annotations, ClipRecord};
pub use recovery::{ORPHAN_GRACE, QUARANTINE, STALE_AFTER};
pub use search::{prompt_history, search, search_indices, tag_list};

/// The subfolder deleted clips wait in until the trash is emptied.
pub const TRASH: &str = "trash";

use lock::ClipLock;

/// Sample rates a clip may have, in Hz. Anything else in a sidecar or WAV header is corrupt
/// (0 divides by zero in the resampler; billions ask it for billions of filter taps).
pub const SAMPLE_RATES: RangeInclusive<u32> = 1_000..=384_000;

/// A sidecar larger than this is not one of ours; reading it whole could exhaust memory.
const MAX_SIDECAR_BYTES: u64 = 1 << 20;

/// How many numbered ids (`<slug>_s<seed>_<n>`) a save tries before giving up.
const MAX_NUMBERED_IDS: u32 = 100_000;

/// A stored log-mel spectrogram: (frames × bins) row-major values and the bin count.
pub type Spectrogram = (Vec<f32>, usize);

/// A clip read back from the library.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadedClip {
    /// Samples in [-1, 1], frames of `channels` interleaved.
    pub samples: Vec<f32>,
    pub channels: u16,
    /// Samples per second, from the WAV header (checked to lie in [`SAMPLE_RATES`]).
    pub sample_rate: u32,
    /// The stored spectrogram, when there is one and it fits its bin count.
    pub mel: Option<Spectrogram>,
}

/// A folder of clips and the records read from it, newest first.
#[derive(Debug)]
pub struct Library {
    dir: PathBuf,
    records: Vec<ClipRecord>,
    /// Sidecars that could not be read or were corrected, with the reason (shown, never
    /// deleted); after `open`, also what `recovered` lists.
    pub problems: Vec<String>,
    /// What `open` cleaned up after interrupted saves: temporaries and locks removed, orphan
    /// WAV and spectrogram files moved into `quarantine/`.
    pub recovered: Vec<String>,
    /// The folder listing as of the last scan, so `refresh` can skip an unchanged folder.
    fingerprint: Option<u64>,
}

/// A file-name-safe slug of the prompt: lowercase words joined by '-', at most 40 characters.
pub fn slug(prompt: &str) -> String {
    let mut slug = String::new();
    for word in prompt
        .split(|c: char| !c.is_alphanumeric())
        .filter(|word| !word.is_empty())
    {
        if slug.len() + word.len() + 1 > 40 {
            break;
        }
        if !slug.is_empty() {
            slug.push('-');
        }
        slug.extend(word.chars().flat_map(char::to_lowercase));
    }
    if slug.is_empty() { "clip".into() } else { slug }
}

fn invalid_id(id: &str, error: InvalidId) -> FoleyError {
    FoleyError::InvalidRequest(format!("clip id {id:?}: {error}"))
}

fn sample_rate_problem(rate: u32) -> Option<String> {
    (!SAMPLE_RATES.contains(&rate)).then(|| {
        format!(
            "sample rate {rate} Hz is outside {}..={} Hz",
            SAMPLE_RATES.start(),
            SAMPLE_RATES.end()
        )
    })
}

/// Renames `from` to `to`; a missing `from` (a clip without a spectrogram) is fine.
fn move_file(from: &Path, to: &Path) -> Result<()> {
    match std::fs::rename(from, to) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(FoleyError::Output {
            path: from.to_path_buf(),
            reason: error.to_string(),
        }),
    }
}

fn is_absent(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_err_and(|error| error.kind() == std::io::ErrorKind::NotFound)
}

/// Makes the renames into `dir` durable: without it a power loss can undo a saved clip, or keep
/// a sidecar whose WAV is gone. Best effort, since not every platform can open a folder.
fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Ok(folder) = std::fs::File::open(dir) {
        let _ = folder.sync_all();
    }
    #[cfg(not(unix))]
    let _ = dir;
}

/// Reads a text file of at most `limit` bytes. Only regular files are opened: opening a FIFO
/// planted under a clip's name would block the studio for good.
fn read_small_file(path: &Path, limit: u64) -> std::result::Result<String, String> {
    let metadata = std::fs::metadata(path).map_err(|error| error.to_string())?;
    if !metadata.is_file() {
        return Err("not a regular file".into());
    }
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|file| file.take(limit + 1).read_to_string(&mut text))
        .map_err(|error| error.to_string())?;
    if text.len() as u64 > limit {
        return Err(format!("larger than {limit} bytes, not a clip sidecar"));
    }
    Ok(text)
}

impl Library {
    /// Opens (creating if needed) the library folder, cleans up after interrupted saves (see
    /// `recovered`) and reads every sidecar in it.
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|error| FoleyError::Output {
            path: dir.to_path_buf(),
            reason: error.to_string(),
        })?;
        let mut library = Self {
            dir: dir.to_path_buf(),
            records: Vec::new(),
            problems: Vec::new(),
            recovered: recovery::recover(dir),
            fingerprint: None,
        };
        library.reload()?;
        library.problems.extend(library.recovered.iter().cloned());
        Ok(library)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `<library>/<id>.<extension>`, or an error when `id` is not a valid clip id (see
    /// [`validate_id`]): the only way this module builds a path from an id.
    pub fn clip_path(&self, id: &str, extension: &str) -> Result<PathBuf> {
        id::entry_path(&self.dir, id, extension).map_err(|error| invalid_id(id, error))
    }

    /// Re-reads the folder; entries whose WAV is missing, whose sidecar is unreadable or whose
    /// sample rate is wrong are reported in `problems` and left on disk untouched.
    pub fn reload(&mut self) -> Result<()> {
        let fingerprint = self.scan_fingerprint()?;
        let entries = std::fs::read_dir(&self.dir).map_err(|error| FoleyError::BadFile {
            path: self.dir.clone(),
            reason: error.to_string(),
        })?;
        self.records.clear();
        self.problems.clear();
        for entry in entries.flatten() {
            let path = entry.path();
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                if path.extension().is_some_and(|ext| ext == "json") {
                    self.problems
                        .push(format!("{}: the file name is not UTF-8", path.display()));
                }
                continue;
            };
            let Some(id) = name
                .strip_suffix(".json")
                .filter(|_| !name.starts_with('.'))
            else {
                continue;
            };
            if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
                continue;
            }
            match self.read_entry(id, &path) {
                Ok((record, note)) => {
                    if let Some(note) = note {
                        self.problems.push(format!("{}: {note}", path.display()));
                    }
                    self.records.push(record);
                }
                Err(reason) => self.problems.push(format!("{}: {reason}", path.display())),
            }
        }
        self.records
            .sort_by(|a, b| b.created.cmp(&a.created).then_with(|| b.id.cmp(&a.id)));
        self.fingerprint = Some(fingerprint);
        Ok(())
    }

    /// Re-reads the folder only when its clips changed since the last read (another studio
    /// saved, starred or deleted one); returns whether it did. Cheap enough to call when the
    /// window gains focus: it lists the folder, and reads sidecars only after a change.
    pub fn refresh(&mut self) -> Result<bool> {
        if self.fingerprint == Some(self.scan_fingerprint()?) {
            return Ok(false);
        }
        self.reload()?;
        Ok(true)
    }

    /// A hash of the names, sizes and modification times of the clip files in the folder.
    fn scan_fingerprint(&self) -> Result<u64> {
        let entries = std::fs::read_dir(&self.dir).map_err(|error| FoleyError::BadFile {
            path: self.dir.clone(),
            reason: error.to_string(),
        })?;
        let mut files: Vec<_> = entries
            .flatten()
            .filter_map(|entry| {
                let name = entry.file_name();
                let name = name.to_str()?;
                let is_clip_file = !name.starts_with('.')
                    && [".json", ".wav", ".mel"]
                        .iter()
                        .any(|ext| name.ends_with(ext));
                let metadata = entry.metadata().ok().filter(|_| is_clip_file)?;
                Some((name.to_owned(), metadata.len(), metadata.modified().ok()))
            })
            .collect();
        files.sort();
        let mut hasher = DefaultHasher::new();
        files.hash(&mut hasher);
        Ok(hasher.finish())
    }

    /// The record of clip `id` from its sidecar at `path`, checked against its WAV header, and
    /// a note when the sidecar needed correcting.
    fn read_entry(
        &self,
        id: &str,
        path: &Path,
    ) -> std::result::Result<(ClipRecord, Option<String>), String> {
        validate_id(id).map_err(|error| error.to_string())?;
        let text = read_small_file(path, MAX_SIDECAR_BYTES)?;
        let mut record: ClipRecord =
            serde_json::from_str(&text).map_err(|error| error.to_string())?;
        // The id inside is only a copy of the file name: a copied or crafted sidecar could name
        // another clip or a path outside the library, and Keep and Delete act on the id.
        let note = (record.id != id).then(|| {
            format!(
                "its id field {:?} differs from its file name; listed as {id:?}",
                record.id
            )
        });
        record.id = id.to_owned();
        if let Some(problem) = sample_rate_problem(record.sample_rate) {
            return Err(problem);
        }
        if !(record.duration.is_finite() && record.duration >= 0.0) {
            return Err(format!(
                "duration {} is not a length in seconds",
                record.duration
            ));
        }
        let wav = id::entry_path(&self.dir, id, "wav").map_err(|error| error.to_string())?;
        let wav_name = record.wav_name();
        match std::fs::metadata(&wav) {
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Err(format!("its WAV {wav_name} is missing"));
            }
            Err(error) => return Err(format!("its WAV {wav_name} cannot be read: {error}")),
            Ok(metadata) if !metadata.is_file() => {
                return Err(format!("its WAV {wav_name} is not a regular file"));
            }
            Ok(_) => {}
        }
        let header = hound::WavReader::open(&wav)
            .map_err(|error| format!("its WAV {wav_name} cannot be read: {error}"))?
            .spec();
        if header.sample_rate != record.sample_rate {
            return Err(format!(
                "the sidecar says {} Hz but its WAV {wav_name} says {} Hz",
                record.sample_rate, header.sample_rate
            ));
        }
        Ok((record, note))
    }

    pub fn records(&self) -> &[ClipRecord] {
        &self.records
    }

    /// The clip's WAV. A record whose id is not a valid clip id (one not read from this
    /// library) gets a hidden name inside the folder that no clip uses, never a path outside;
    /// [`Library::clip_path`] reports the error instead.
    pub fn wav_path(&self, record: &ClipRecord) -> PathBuf {
        self.clip_path(&record.id, "wav")
            .unwrap_or_else(|_| self.dir.join(".invalid-clip-id.wav"))
    }

    /// Claims a new id that no file in the folder uses: `<slug>_s<seed>`, numbered if taken.
    /// The lock is taken before the check, so two writers can never both get the same id.
    fn reserve_id(&self, prompt: &str, seed: u64) -> Result<(String, ClipLock)> {
        let base = format!("{}_s{seed}", slug(prompt));
        for n in 1..=MAX_NUMBERED_IDS {
            let id = if n == 1 {
                base.clone()
            } else {
                format!("{base}_{n}")
            };
            let sidecar = self.clip_path(&id, "json")?;
            let Some(lock) =
                ClipLock::try_acquire(&self.dir, &id).map_err(|error| FoleyError::Output {
                    path: lock::lock_path(&self.dir, &id),
                    reason: error.to_string(),
                })?
            else {
                continue;
            };
            // A clip in the trash keeps its id, so undoing a delete never collides.
            let free = is_absent(&sidecar)
                && is_absent(&self.clip_path(&id, "wav")?)
                && is_absent(&self.clip_path(&id, "mel")?)
                && is_absent(&self.trash_path(&id, "json")?);
            if free {
                return Ok((id, lock));
            }
        }
        Err(FoleyError::Output {
            path: self.dir.clone(),
            reason: format!("no free clip id after {base}_{MAX_NUMBERED_IDS}"),
        })
    }

    /// Locks an existing clip for a change, failing when another writer holds it.
    fn lock_clip(&self, id: &str) -> Result<ClipLock> {
        let sidecar = self.clip_path(id, "json")?;
        match ClipLock::acquire(&self.dir, id) {
            Ok(Some(lock)) => Ok(lock),
            Ok(None) => Err(FoleyError::Output {
                path: sidecar,
                reason: "another Foley is changing this clip right now; try again".into(),
            }),
            Err(error) => Err(FoleyError::Output {
                path: lock::lock_path(&self.dir, id),
                reason: error.to_string(),
            }),
        }
    }

    /// Saves a clip: the WAV and spectrogram first, then the sidecar that makes it visible,
    /// each atomically. `mel` is (frames × bins) row-major with its bin count.
    pub fn add(
        &mut self,
        mut record: ClipRecord,
        samples: &[f32],
        mel: Option<(&[f32], usize)>,
    ) -> Result<ClipRecord> {
        if let Some(problem) = sample_rate_problem(record.sample_rate) {
            return Err(FoleyError::InvalidRequest(format!(
                "cannot save the clip: {problem}"
            )));
        }
        // Held until the sidecar is in place; from then on the sidecar itself marks the id taken.
        let (id, _reservation) = self.reserve_id(&record.prompt, record.seed)?;
        record.id = id;
        record.mel_bins = None;
        let written = self.write_entry(&mut record, samples, mel);
        if written.is_err() && is_absent(&self.clip_path(&record.id, "json")?) {
            // The id is still ours, so these can only be this save's own files.
            for extension in ["wav", "mel"] {
                let _ = std::fs::remove_file(self.clip_path(&record.id, extension)?);
            }
        }
        written?;
        self.records.insert(0, record.clone());
        Ok(record)
    }

    fn write_entry(
        &self,
        record: &mut ClipRecord,
        samples: &[f32],
        mel: Option<(&[f32], usize)>,
    ) -> Result<()> {
        write_wav_with_metadata(
            &self.clip_path(&record.id, "wav")?,
            samples,
            record.channels.max(1),
            record.sample_rate,
            WavFormat::Float32,
            None,
        )?;
        if let Some((values, bins)) = mel {
            let bytes: Vec<u8> = values
                .iter()
                .flat_map(|value| value.to_le_bytes())
                .collect();
            write_atomic(&self.clip_path(&record.id, "mel")?, &bytes)?;
            record.mel_bins = Some(bins);
        }
        // The WAV's name must be durable before the sidecar that points at it.
        sync_dir(&self.dir);
        self.write_sidecar(record)?;
        sync_dir(&self.dir);
        Ok(())
    }

    fn write_sidecar(&self, record: &ClipRecord) -> Result<()> {
        let path = self.clip_path(&record.id, "json")?;
        let json = serde_json::to_vec_pretty(record).map_err(|error| FoleyError::Output {
            path: path.clone(),
            reason: error.to_string(),
        })?;
        write_atomic(&path, &json)
    }

    /// The clip's samples at the WAV header's rate and, when stored, its spectrogram.
    pub fn load(&self, record: &ClipRecord) -> Result<LoadedClip> {
        let wav = self.clip_path(&record.id, "wav")?;
        let bad = |reason: String| FoleyError::BadFile {
            path: wav.clone(),
            reason,
        };
        if !std::fs::metadata(&wav)
            .map_err(|error| bad(error.to_string()))?
            .is_file()
        {
            return Err(bad("not a regular file".into()));
        }
        let (samples, channels, sample_rate) = read_wav_frames(&wav)?;
        if let Some(problem) = sample_rate_problem(sample_rate) {
            return Err(bad(format!("the WAV's {problem}")));
        }
        let mel_path = self.clip_path(&record.id, "mel")?;
        let mel = record.mel_bins.and_then(|bins| {
            if !std::fs::metadata(&mel_path).ok()?.is_file() {
                return None;
            }
            let bytes = std::fs::read(&mel_path).ok()?;
            let values: Vec<f32> = bytes
                .chunks_exact(4)
                .map(|chunk| f32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]))
                .collect();
            (bins > 0 && values.len().is_multiple_of(bins)).then_some((values, bins))
        });
        Ok(LoadedClip {
            samples,
            channels,
            sample_rate,
            mel,
        })
    }

    /// The clip's samples (frames of `record.channels`) and, when stored, its spectrogram.
    /// Fails when the WAV's rate or channel count is not the record's, since callers play and
    /// plot the samples as the record describes them.
    pub fn load_clip(&self, record: &ClipRecord) -> Result<(Vec<f32>, Option<Spectrogram>)> {
        let clip = self.load(record)?;
        if clip.channels != record.channels.max(1) {
            return Err(FoleyError::BadFile {
                path: self.clip_path(&record.id, "wav")?,
                reason: format!(
                    "the WAV has {} channels, not the {} its sidecar says",
                    clip.channels, record.channels
                ),
            });
        }
        if clip.sample_rate != record.sample_rate {
            return Err(FoleyError::BadFile {
                path: self.clip_path(&record.id, "wav")?,
                reason: format!(
                    "the WAV's sample rate is {} Hz, not the {} Hz its sidecar says",
                    clip.sample_rate, record.sample_rate
                ),
            });
        }
        Ok((clip.samples, clip.mel))
    }

    /// Stars or unstars a listed clip. Fails, and drops the clip from the list, when another
    /// studio deleted it meanwhile, rather than bringing back a sidecar without its WAV.
    pub fn set_starred(&mut self, id: &str, starred: bool) -> Result<()> {
        self.update(id, |record| record.starred = starred)
    }

    /// Rates a clip from 0 (unrated) to 5.
    pub fn set_rating(&mut self, id: &str, rating: u8) -> Result<()> {
        self.update(id, |record| record.rating = rating.min(5))
    }

    /// Replaces a clip's tags with `tags`, cleaned by `tag_list`.
    pub fn set_tags(&mut self, id: &str, tags: &[String]) -> Result<()> {
        let tags = tag_list(&tags.join(","));
        self.update(id, |record| record.tags = tags)
    }

    /// Sets what the user says of a clip (kept, rating, tags) in one sidecar write.
    pub fn annotate(&mut self, id: &str, annotations: &Annotations) -> Result<()> {
        let tags = tag_list(&annotations.tags.join(","));
        self.update(id, |record| {
            record.starred = annotations.starred;
            record.rating = annotations.rating.min(5);
            record.tags = tags;
        })
    }

    /// Rewrites a listed clip's sidecar with `change` applied, under the clip's lock.
    fn update(&mut self, id: &str, change: impl FnOnce(&mut ClipRecord)) -> Result<()> {
        let Some(index) = self.records.iter().position(|record| record.id == id) else {
            return Ok(());
        };
        let sidecar = self.clip_path(id, "json")?;
        let _lock = self.lock_clip(id)?;
        if is_absent(&sidecar) {
            self.records.remove(index);
            return Err(FoleyError::Output {
                path: sidecar,
                reason: "the clip was deleted outside this studio".into(),
            });
        }
        let mut record = self.records[index].clone();
        change(&mut record);
        self.write_sidecar(&record)?;
        self.records[index] = record;
        Ok(())
    }

    /// Records that match `query`; see [`search`].
    pub fn search<'a>(&'a self, query: &str) -> impl Iterator<Item = &'a ClipRecord> + 'a {
        search(&self.records, query)
    }

    /// See [`prompt_history`].
    pub fn prompt_history(&self, limit: usize) -> Vec<String> {
        prompt_history(&self.records, limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(prompt: &str, seed: u64, created: u64) -> ClipRecord {
        ClipRecord {
            id: String::new(),
            prompt: prompt.into(),
            negative_prompt: None,
            seed,
            steps: 4,
            guidance: 3.5,
            scheduler: "ddim".into(),
            model: "tiny".into(),
            duration: 0.016,
            sample_rate: 16_000,
            channels: 1,
            timings: vec![],
            score: None,
            starred: false,
            rating: 0,
            tags: Vec::new(),
            mel_bins: None,
            created,
            task: None,
            batch_job: None,
        }
    }

    #[test]
    fn clips_survive_a_reopen_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let mut library = Library::open(dir.path()).unwrap();
        let first = library
            .add(
                record("Glass shattering!", 1, 10),
                &[0.1, 0.2],
                Some((&[1.0, 2.0, 3.0, 4.0], 2)),
            )
            .unwrap();
        let second = library
            .add(record("glass shattering", 1, 20), &[0.3], None)
            .unwrap();
        assert_eq!(first.id, "glass-shattering_s1");
        assert_eq!(second.id, "glass-shattering_s1_2");
        let reopened = Library::open(dir.path()).unwrap();
        assert_eq!(reopened.records(), &[second.clone(), first.clone()]);
        assert!(reopened.problems.is_empty());
        let (samples, mel) = reopened.load_clip(&first).unwrap();
        assert_eq!(samples, vec![0.1, 0.2]);
        assert_eq!(mel, Some((vec![1.0, 2.0, 3.0, 4.0], 2)));
    }

    #[test]
    fn broken_entries_are_reported_not_lost() {
        let dir = tempfile::tempdir().unwrap();
        let mut library = Library::open(dir.path()).unwrap();
        let kept = library.add(record("rain", 3, 5), &[0.0], None).unwrap();
        std::fs::write(dir.path().join("broken.json"), b"{ not json").unwrap();
        // A save in progress in this (live) process: not a leftover yet.
        let in_progress = format!(".x.json.{}.partial", std::process::id());
        std::fs::write(dir.path().join(&in_progress), b"half").unwrap();
        let reopened = Library::open(dir.path()).unwrap();
        assert_eq!(reopened.records(), &[kept]);
        assert_eq!(reopened.problems.len(), 1, "{:?}", reopened.problems);
        assert!(reopened.recovered.is_empty(), "{:?}", reopened.recovered);
        assert!(dir.path().join("broken.json").exists());
        assert!(dir.path().join(in_progress).exists());
    }

    #[test]
    fn search_star_and_delete() {
        let dir = tempfile::tempdir().unwrap();
        let mut library = Library::open(dir.path()).unwrap();
        let rain = library
            .add(record("Rain on a tin roof", 1, 1), &[0.0], None)
            .unwrap();
        library
            .add(record("dog barking", 2, 2), &[0.0], None)
            .unwrap();
        let found: Vec<_> = library.search("TIN rain").map(|r| r.id.clone()).collect();
        assert_eq!(found, vec![rain.id.clone()]);
        library.set_starred(&rain.id, true).unwrap();
        assert!(
            Library::open(dir.path())
                .unwrap()
                .records()
                .iter()
                .any(|r| r.starred)
        );
        library.delete(&rain.id).unwrap();
        assert!(!dir.path().join(rain.wav_name()).exists());
        assert_eq!(Library::open(dir.path()).unwrap().records().len(), 1);
    }

    #[test]
    fn slugs_are_safe_file_names() {
        assert_eq!(
            slug("  Glass/shattering: on *concrete*?  "),
            "glass-shattering-on-concrete"
        );
        assert_eq!(slug("???"), "clip");
        assert!(slug(&"word ".repeat(30)).len() <= 40);
    }

    #[test]
    fn deleted_clips_wait_in_the_trash_until_restored_or_emptied() {
        let dir = tempfile::tempdir().unwrap();
        let mut library = Library::open(dir.path()).unwrap();
        let clip = library
            .add(record("rain", 1, 10), &[0.5; 16], Some((&[1.0; 4], 2)))
            .unwrap();
        library.delete(&clip.id).unwrap();
        assert!(library.records().is_empty());
        for extension in ["json", "wav", "mel"] {
            assert!(!dir.path().join(format!("{}.{extension}", clip.id)).exists());
            assert!(
                dir.path()
                    .join(TRASH)
                    .join(format!("{}.{extension}", clip.id))
                    .exists()
            );
        }
        assert!(
            Library::open(dir.path()).unwrap().records().is_empty(),
            "not listed"
        );
        // The trashed clip keeps its name: a new clip of the same prompt and seed takes another.
        let second = library
            .add(record("rain", 1, 11), &[0.25; 16], None)
            .unwrap();
        assert_ne!(second.id, clip.id);
        let restored = library.restore(&clip.id).unwrap();
        assert_eq!(restored, clip);
        assert_eq!(library.load_clip(&restored).unwrap().0, vec![0.5; 16]);
        assert_eq!(Library::open(dir.path()).unwrap().records().len(), 2);

        library.delete(&second.id).unwrap();
        assert_eq!(library.empty_trash().unwrap(), 1);
        assert!(library.restore(&second.id).is_err());
        assert_eq!(
            std::fs::read_dir(dir.path().join(TRASH)).unwrap().count(),
            0
        );
    }

    #[test]
    fn ratings_and_tags_persist_and_search_finds_by_every_field() {
        let dir = tempfile::tempdir().unwrap();
        let mut library = Library::open(dir.path()).unwrap();
        let door = library
            .add(record("old door creak", 7, 1), &[0.1; 8], None)
            .unwrap();
        let rain = library
            .add(record("rain on tin", 42, 2), &[0.1; 8], None)
            .unwrap();
        library.set_rating(&door.id, 9).unwrap();
        library
            .set_tags(&door.id, &["Wood, close  mic".into(), "wood".into()])
            .unwrap();
        library.set_starred(&rain.id, true).unwrap();
        let reopened = Library::open(dir.path()).unwrap();
        let saved = reopened.records().iter().find(|r| r.id == door.id).unwrap();
        assert_eq!(saved.rating, 5, "held to 5");
        assert_eq!(saved.tags, ["wood", "close-mic"]);
        let found = |query: &str| -> Vec<String> {
            reopened.search(query).map(|r| r.prompt.clone()).collect()
        };
        assert_eq!(found("#wood"), ["old door creak"]);
        assert_eq!(found("rating:4"), ["old door creak"]);
        assert_eq!(found("42"), ["rain on tin"]);
        assert_eq!(found("s7"), ["old door creak"]);
        assert_eq!(found("kept"), ["rain on tin"]);
        assert_eq!(found("close"), ["old door creak"]);
        assert_eq!(
            found("tiny rain"),
            ["rain on tin"],
            "model and prompt words together"
        );
        assert!(found("#metal").is_empty());
        assert_eq!(
            reopened.prompt_history(10),
            ["rain on tin", "old door creak"]
        );
        assert_eq!(reopened.prompt_history(1), ["rain on tin"]);
    }
}

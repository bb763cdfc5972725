//! The clip library: every generated clip is a WAV plus a JSON sidecar in one folder. Both are
//! written atomically (temporary file, fsync, rename), and the index is rebuilt from the
//! sidecars on start, so a crash never leaves a half-written entry behind.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::atomic_file::write_atomic;
use crate::audio::wav::{WavFormat, write_wav};
use crate::error::{FoleyError, Result};

/// Everything needed to reproduce and describe a clip; stored as `<id>.json` beside `<id>.wav`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClipRecord {
    pub id: String,
    pub prompt: String,
    #[serde(default)]
    pub negative_prompt: Option<String>,
    pub seed: u64,
    pub steps: usize,
    pub guidance: f64,
    pub scheduler: String,
    pub model: String,
    /// Seconds of audio.
    pub duration: f64,
    /// Samples per second of the WAV.
    pub sample_rate: u32,
    /// Seconds per stage: text encoding, denoising, VAE, vocoder.
    #[serde(default)]
    pub timings: Vec<(String, f64)>,
    /// CLAP score when the clip was ranked among several.
    #[serde(default)]
    pub score: Option<f32>,
    #[serde(default)]
    pub starred: bool,
    /// Mel bins of the stored spectrogram `<id>.mel` (little-endian f32, frames × bins).
    #[serde(default)]
    pub mel_bins: Option<usize>,
    /// Seconds since the Unix epoch.
    pub created: u64,
    /// The task when the clip is an edit (`TaskSummary`: name, input, strength, …); absent for
    /// text-to-audio.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<serde_json::Value>,
    /// `foley batch`: the fingerprint of the job that wrote this clip, so a rerun can tell it
    /// finished with the same settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_job: Option<String>,
}

impl ClipRecord {
    pub fn wav_name(&self) -> String {
        format!("{}.wav", self.id)
    }
}

/// A stored log-mel spectrogram: (frames × bins) row-major values and the bin count.
pub type Spectrogram = (Vec<f32>, usize);

/// A folder of clips and the records read from it, newest first.
#[derive(Debug)]
pub struct Library {
    dir: PathBuf,
    records: Vec<ClipRecord>,
    /// Sidecars that could not be read, with the reason (shown, never deleted).
    pub problems: Vec<String>,
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

impl Library {
    /// Opens (creating if needed) the library folder and reads every sidecar in it.
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|error| FoleyError::Output {
            path: dir.to_path_buf(),
            reason: error.to_string(),
        })?;
        let mut library = Self {
            dir: dir.to_path_buf(),
            records: Vec::new(),
            problems: Vec::new(),
        };
        library.reload()?;
        Ok(library)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Re-reads the folder; entries whose WAV is missing or whose sidecar is unreadable are
    /// reported in `problems` and left on disk untouched.
    pub fn reload(&mut self) -> Result<()> {
        let entries = std::fs::read_dir(&self.dir).map_err(|error| FoleyError::BadFile {
            path: self.dir.clone(),
            reason: error.to_string(),
        })?;
        self.records.clear();
        self.problems.clear();
        for path in entries.flatten().map(|entry| entry.path()) {
            let is_sidecar = path.extension().is_some_and(|ext| ext == "json")
                && !path
                    .file_name()
                    .is_some_and(|name| name.to_string_lossy().starts_with('.'));
            if !is_sidecar {
                continue;
            }
            let parsed = std::fs::read_to_string(&path)
                .map_err(|error| error.to_string())
                .and_then(|text| {
                    serde_json::from_str::<ClipRecord>(&text).map_err(|error| error.to_string())
                });
            match parsed {
                Ok(record) if self.dir.join(record.wav_name()).is_file() => {
                    self.records.push(record)
                }
                Ok(record) => self.problems.push(format!(
                    "{}: its WAV {} is missing",
                    path.display(),
                    record.wav_name()
                )),
                Err(reason) => self.problems.push(format!("{}: {reason}", path.display())),
            }
        }
        self.records
            .sort_by(|a, b| b.created.cmp(&a.created).then_with(|| b.id.cmp(&a.id)));
        Ok(())
    }

    pub fn records(&self) -> &[ClipRecord] {
        &self.records
    }

    pub fn wav_path(&self, record: &ClipRecord) -> PathBuf {
        self.dir.join(record.wav_name())
    }

    /// A new id that no file in the folder uses: `<slug>_s<seed>`, numbered if taken.
    fn unique_id(&self, prompt: &str, seed: u64) -> String {
        let base = format!("{}_s{seed}", slug(prompt));
        (1..)
            .map(|n| {
                if n == 1 {
                    base.clone()
                } else {
                    format!("{base}_{n}")
                }
            })
            .find(|id| {
                !self.dir.join(format!("{id}.wav")).exists()
                    && !self.dir.join(format!("{id}.json")).exists()
            })
            .unwrap_or(base)
    }

    /// Saves a clip: the WAV and spectrogram first, then the sidecar that makes it visible,
    /// each atomically. `mel` is (frames × bins) row-major with its bin count.
    pub fn add(
        &mut self,
        mut record: ClipRecord,
        samples: &[f32],
        mel: Option<(&[f32], usize)>,
    ) -> Result<ClipRecord> {
        record.id = self.unique_id(&record.prompt, record.seed);
        write_wav(
            &self.dir.join(record.wav_name()),
            samples,
            record.sample_rate,
            WavFormat::Float32,
        )?;
        record.mel_bins = None;
        if let Some((values, bins)) = mel {
            let bytes: Vec<u8> = values
                .iter()
                .flat_map(|value| value.to_le_bytes())
                .collect();
            write_atomic(&self.dir.join(format!("{}.mel", record.id)), &bytes)?;
            record.mel_bins = Some(bins);
        }
        self.write_sidecar(&record)?;
        self.records.insert(0, record.clone());
        Ok(record)
    }

    fn write_sidecar(&self, record: &ClipRecord) -> Result<()> {
        let json = serde_json::to_vec_pretty(record).map_err(|error| FoleyError::Output {
            path: self.dir.join(format!("{}.json", record.id)),
            reason: error.to_string(),
        })?;
        write_atomic(&self.dir.join(format!("{}.json", record.id)), &json)
    }

    /// The clip's samples and, when stored, its spectrogram.
    pub fn load_clip(&self, record: &ClipRecord) -> Result<(Vec<f32>, Option<Spectrogram>)> {
        let (samples, _) = crate::audio::wav::read_wav(&self.wav_path(record))?;
        let mel = record.mel_bins.and_then(|bins| {
            let bytes = std::fs::read(self.dir.join(format!("{}.mel", record.id))).ok()?;
            let values: Vec<f32> = bytes
                .chunks_exact(4)
                .map(|chunk| f32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]))
                .collect();
            (bins > 0 && values.len().is_multiple_of(bins)).then_some((values, bins))
        });
        Ok((samples, mel))
    }

    pub fn set_starred(&mut self, id: &str, starred: bool) -> Result<()> {
        let Some(index) = self.records.iter().position(|record| record.id == id) else {
            return Ok(());
        };
        let mut record = self.records[index].clone();
        record.starred = starred;
        self.write_sidecar(&record)?;
        self.records[index] = record;
        Ok(())
    }

    /// Removes a clip: the sidecar first (so a crash leaves at worst an unlisted WAV), then the WAV.
    pub fn delete(&mut self, id: &str) -> Result<()> {
        let Some(index) = self.records.iter().position(|record| record.id == id) else {
            return Ok(());
        };
        let record = self.records.remove(index);
        for path in [
            self.dir.join(format!("{}.json", record.id)),
            self.dir.join(record.wav_name()),
            self.dir.join(format!("{}.mel", record.id)),
        ] {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => {
                    return Err(FoleyError::Output {
                        path,
                        reason: error.to_string(),
                    });
                }
            }
        }
        Ok(())
    }

    /// Records whose prompt or negative prompt contains every word of `query` (case-insensitive).
    pub fn search<'a>(&'a self, query: &str) -> impl Iterator<Item = &'a ClipRecord> + 'a {
        let words: Vec<String> = query.split_whitespace().map(str::to_lowercase).collect();
        self.records.iter().filter(move |record| {
            let text = format!(
                "{} {}",
                record.prompt,
                record.negative_prompt.as_deref().unwrap_or("")
            )
            .to_lowercase();
            words.iter().all(|word| text.contains(word.as_str()))
        })
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
            timings: vec![],
            score: None,
            starred: false,
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
        std::fs::write(dir.path().join(".x.json.123.partial"), b"half").unwrap();
        let reopened = Library::open(dir.path()).unwrap();
        assert_eq!(reopened.records(), &[kept]);
        assert_eq!(reopened.problems.len(), 1, "{:?}", reopened.problems);
        assert!(dir.path().join("broken.json").exists());
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
}

//! What the library keeps of a clip: how it was made (`ClipRecord`, its JSON sidecar) and what
//! the user says of it (`Annotations`).

use serde::{Deserialize, Serialize};

/// Everything needed to reproduce and describe a clip; stored as `<id>.json` beside `<id>.wav`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClipRecord {
    /// The file stem shared by `<id>.wav`, `<id>.json` and `<id>.mel`. A `Library` takes it
    /// from the sidecar's file name; the copy inside the sidecar is only informative.
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
    /// Audio channels of the WAV: 1, or 2 for Stable Audio 3's stereo.
    #[serde(default = "mono")]
    pub channels: u16,
    /// Seconds per stage: text encoding, denoising, VAE, vocoder.
    #[serde(default)]
    pub timings: Vec<(String, f64)>,
    /// CLAP score when the clip was ranked among several.
    #[serde(default)]
    pub score: Option<f32>,
    #[serde(default)]
    pub starred: bool,
    /// 0 (unrated) to 5.
    #[serde(default)]
    pub rating: u8,
    /// Free-form labels ("door", "foley", "take-2"), lowercase, without duplicates.
    #[serde(default)]
    pub tags: Vec<String>,
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

fn mono() -> u16 {
    1
}

impl ClipRecord {
    /// The record of waveform `index` of `clip`, made from `request` with `model` and stored at
    /// `sample_rate`; `id` is left for the library (or the caller) to give. The task is kept
    /// for edits, not for plain text-to-audio.
    pub fn of_clip(
        request: &crate::engine::pipeline::Request,
        clip: &crate::engine::pipeline::Clip,
        model: &str,
        index: usize,
        sample_rate: u32,
    ) -> Self {
        let timings = &clip.timings;
        Self {
            id: String::new(),
            prompt: request.prompt.clone(),
            negative_prompt: request.negative_prompt.clone(),
            seed: clip.seed,
            steps: request.steps,
            guidance: request.guidance,
            scheduler: clip.scheduler.into(),
            model: model.to_string(),
            duration: clip.duration,
            sample_rate,
            channels: clip.channels as u16,
            timings: vec![
                ("text_encoding".into(), timings.text_encoding),
                ("encoding".into(), timings.encoding),
                ("denoising".into(), timings.denoising),
                ("vae_decode".into(), timings.vae_decode),
                ("vocoder".into(), timings.vocoder),
            ],
            score: clip
                .scores
                .as_ref()
                .and_then(|scores| scores.get(index).copied()),
            starred: false,
            rating: 0,
            tags: Vec::new(),
            mel_bins: None,
            created: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |elapsed| elapsed.as_secs()),
            task: (clip.task.name != "text_to_audio")
                .then(|| serde_json::to_value(&clip.task).ok())
                .flatten(),
            batch_job: None,
        }
    }

    /// The record of an audio file opened in the studio (not made by a model, not in the
    /// library): `samples` counts every channel's samples.
    pub fn of_file(name: String, channels: u16, sample_rate: u32, samples: usize) -> Self {
        let frames = samples / channels.max(1) as usize;
        Self {
            id: String::new(),
            prompt: name,
            negative_prompt: None,
            seed: 0,
            steps: 0,
            guidance: 0.0,
            scheduler: String::new(),
            model: "opened file".into(),
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
        }
    }

    pub fn wav_name(&self) -> String {
        format!("{}.wav", self.id)
    }
}

/// What the user says of a clip, as opposed to how it was made.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Annotations {
    pub starred: bool,
    pub rating: u8,
    pub tags: Vec<String>,
}

impl Annotations {
    pub fn of(record: &ClipRecord) -> Self {
        Self {
            starred: record.starred,
            rating: record.rating,
            tags: record.tags.clone(),
        }
    }
}

//! What a request asks the pipeline to do: make a new clip from text, or edit a given sound
//! (research/editing.md). Every task runs through the same denoising loop; they differ in how
//! the latents start, what is blended back after each step and how the result is assembled.

use std::sync::Arc;

use serde::Serialize;

use super::MAX_DURATION_SECONDS;
use crate::error::{FoleyError, Result};

/// Audio handed to the engine: channels of equal length at `sample_rate` Hz, with a name
/// (usually the file's) for messages.
#[derive(Debug, Clone)]
pub struct InputAudio {
    pub channels: Arc<Vec<Vec<f32>>>,
    pub sample_rate: u32,
    pub name: String,
}

impl InputAudio {
    pub fn new(channels: Vec<Vec<f32>>, sample_rate: u32, name: impl Into<String>) -> Self {
        Self {
            channels: Arc::new(channels),
            sample_rate,
            name: name.into(),
        }
    }

    pub fn frames(&self) -> usize {
        self.channels.first().map_or(0, Vec::len)
    }

    /// The channels' float32 mean (`x.mean(0)` in torch).
    pub fn mono(&self) -> Vec<f32> {
        crate::engine::dsp::downmix(&self.channels)
    }

    /// Length in seconds (f64, as Python divides).
    pub fn seconds(&self) -> f64 {
        self.frames() as f64 / self.sample_rate as f64
    }
}

/// How the VAE posterior becomes the clean latents `z0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EncodeMode {
    /// `mean + std·ε` with ε from the seed's stream (AudioLDM and diffusers' img2img).
    #[default]
    Sample,
    /// The posterior mean: no randomness from the encoder.
    Mean,
}

impl std::str::FromStr for EncodeMode {
    type Err = FoleyError;

    fn from_str(name: &str) -> Result<Self> {
        match name {
            "sample" => Ok(Self::Sample),
            "mean" => Ok(Self::Mean),
            other => Err(FoleyError::InvalidRequest(format!(
                "unknown encode mode '{other}' (available: sample, mean)"
            ))),
        }
    }
}

/// The part of a clip to regenerate; everything else is kept.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Regions {
    /// Time ranges in seconds, half-open, regenerated on every frequency.
    pub time: Vec<(f64, f64)>,
    /// Super-resolution: keep the mel bands wholly below this frequency, regenerate the rest.
    pub above_hz: Option<f64>,
}

/// One request's task. `strength` is diffusers' img2img strength: the fraction of the schedule
/// that is run (1 starts from pure noise, 0 returns the input through the VAE).
#[derive(Debug, Clone, Default)]
pub enum Task {
    #[default]
    TextToAudio,
    AudioToAudio {
        input: InputAudio,
        strength: f64,
        encode_mode: EncodeMode,
    },
    /// Stable Audio 3's audio-to-audio: the input's latents mixed with noise,
    /// `(1 − level)·z + level·ε`, then every step of a schedule rebuilt to start at `level`
    /// (research/sa3_notes.md §7; not img2img's strength).
    AudioToAudioFromNoise {
        input: InputAudio,
        init_noise_level: f64,
    },
    Inpaint {
        input: InputAudio,
        regions: Regions,
        strength: f64,
        encode_mode: EncodeMode,
    },
    /// Extend the input by `seconds` of new audio that follows on from its end.
    Continue {
        input: InputAudio,
        seconds: f64,
        encode_mode: EncodeMode,
    },
    /// Append a bridge of `seconds` so that the clip's end flows back into its start.
    Loop {
        input: InputAudio,
        seconds: f64,
        encode_mode: EncodeMode,
    },
    /// Generate from the sound's CLAP audio embedding instead of the text.
    Variation { input: InputAudio },
}

/// Default strength of audio-to-audio (AudioLDM's `--transfer_strength`).
pub const DEFAULT_AUDIO_TO_AUDIO_STRENGTH: f64 = 0.5;

/// The task and its parameters, for `--json`, sidecars and the studio.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TaskSummary {
    pub name: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub strength: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub init_noise_level: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encode_mode: Option<EncodeMode>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub regions: Option<Regions>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seconds: Option<f64>,
}

impl Task {
    pub fn name(&self) -> &'static str {
        match self {
            Self::TextToAudio => "text_to_audio",
            Self::AudioToAudio { .. } | Self::AudioToAudioFromNoise { .. } => "audio_to_audio",
            Self::Inpaint { .. } => "inpaint",
            Self::Continue { .. } => "continue",
            Self::Loop { .. } => "loop",
            Self::Variation { .. } => "variation",
        }
    }

    pub fn input(&self) -> Option<&InputAudio> {
        match self {
            Self::TextToAudio => None,
            Self::AudioToAudio { input, .. }
            | Self::AudioToAudioFromNoise { input, .. }
            | Self::Inpaint { input, .. }
            | Self::Continue { input, .. }
            | Self::Loop { input, .. }
            | Self::Variation { input } => Some(input),
        }
    }

    pub fn summary(&self) -> TaskSummary {
        let mut summary = TaskSummary {
            name: self.name(),
            input: self.input().map(|input| input.name.clone()),
            strength: None,
            init_noise_level: None,
            encode_mode: None,
            regions: None,
            seconds: None,
        };
        match self {
            Self::TextToAudio | Self::Variation { .. } => {}
            Self::AudioToAudioFromNoise {
                init_noise_level, ..
            } => summary.init_noise_level = Some(*init_noise_level),
            Self::AudioToAudio {
                strength,
                encode_mode,
                ..
            } => {
                summary.strength = Some(*strength);
                summary.encode_mode = Some(*encode_mode);
            }
            Self::Inpaint {
                regions,
                strength,
                encode_mode,
                ..
            } => {
                summary.strength = Some(*strength);
                summary.encode_mode = Some(*encode_mode);
                summary.regions = Some(regions.clone());
            }
            Self::Continue {
                seconds,
                encode_mode,
                ..
            }
            | Self::Loop {
                seconds,
                encode_mode,
                ..
            } => {
                summary.seconds = Some(*seconds);
                summary.encode_mode = Some(*encode_mode);
            }
        }
        summary
    }

    /// Checks what can be checked without the model.
    pub fn validate(&self) -> Result<()> {
        let invalid = |reason: String| Err(FoleyError::InvalidRequest(reason));
        if let Some(input) = self.input() {
            if input.sample_rate == 0 {
                return invalid(format!("{}: the sample rate is 0 Hz", input.name));
            }
            if input.channels.is_empty() || input.frames() == 0 {
                return invalid(format!("{}: the audio is empty", input.name));
            }
            if input
                .channels
                .iter()
                .any(|channel| channel.len() != input.frames())
            {
                return invalid(format!("{}: the channels differ in length", input.name));
            }
        }
        let check_strength = |strength: f64| {
            if !(0.0..=1.0).contains(&strength) {
                return invalid(format!("strength must be between 0 and 1, got {strength}"));
            }
            Ok(())
        };
        match self {
            Self::TextToAudio | Self::Variation { .. } => Ok(()),
            Self::AudioToAudio { strength, .. } => check_strength(*strength),
            Self::AudioToAudioFromNoise {
                init_noise_level, ..
            } => {
                if !(*init_noise_level > 0.0 && *init_noise_level <= 1.0) {
                    return invalid(format!(
                        "init noise level must be above 0 and at most 1, got {init_noise_level}"
                    ));
                }
                Ok(())
            }
            Self::Inpaint {
                regions, strength, ..
            } => {
                check_strength(*strength)?;
                if regions.time.is_empty() && regions.above_hz.is_none() {
                    return invalid("inpainting needs a time range or a frequency".into());
                }
                for &(start, end) in &regions.time {
                    if !start.is_finite() || !end.is_finite() || start < 0.0 || end <= start {
                        return invalid(format!(
                            "inpaint range {start}:{end} must be START:END seconds with 0 ≤ START < END"
                        ));
                    }
                }
                if let Some(hz) = regions.above_hz
                    && (!hz.is_finite() || hz <= 0.0)
                {
                    return invalid(format!("regenerate-above-hz must be positive, got {hz}"));
                }
                Ok(())
            }
            Self::Continue { seconds, .. } | Self::Loop { seconds, .. } => {
                if !seconds.is_finite() || *seconds <= 0.0 {
                    return invalid(format!(
                        "the {} length must be a positive number of seconds, got {seconds}",
                        self.name()
                    ));
                }
                // Checked before any buffer is sized from it.
                if *seconds > MAX_DURATION_SECONDS {
                    return invalid(format!(
                        "the {} length {seconds} s is over the maximum of {MAX_DURATION_SECONDS} s",
                        self.name()
                    ));
                }
                Ok(())
            }
        }
    }
}

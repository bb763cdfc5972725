//! Pipelines and the types they share with the CLI, the studio and the benchmarks:
//! request → progress events → clip, with cancellation between steps.

pub mod audioldm;
pub mod audioldm2;
pub mod editing;
mod length;
pub mod preview;
pub mod ranking;
pub mod stable_audio3;
pub mod stable_audio3_official;
pub mod stages;
pub mod task;

pub use audioldm::{AudioLdmPipeline, ClapFamily};
pub use audioldm2::AudioLdm2Pipeline;
pub use length::AudioLength;
pub use preview::{PreviewMel, PreviewProjection};
pub use stable_audio3::StableAudio3Pipeline;
pub use task::{EncodeMode, InputAudio, Regions, Task, TaskSummary};

use std::path::Path;

use candle_core::{DType, Device};

use crate::engine::weights::ModelIndex;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use candle_core::Tensor;
use serde::Serialize;

use crate::engine::schedulers::SchedulerKind;
use crate::error::{FoleyError, Result};

/// Any supported pipeline, chosen by `model_index.json`'s class.
pub enum Pipeline {
    /// AudioLDM or MusicLDM.
    AudioLdm(Box<AudioLdmPipeline>),
    AudioLdm2(Box<AudioLdm2Pipeline>),
    StableAudio3(Box<StableAudio3Pipeline>),
}

impl Pipeline {
    pub fn load(root: &Path, device: &Device, dtype: DType) -> Result<Self> {
        if stable_audio3_official::is_official_layout(root) {
            return Ok(Self::StableAudio3(Box::new(stable_audio3_official::load(
                root, device, dtype,
            )?)));
        }
        let index = ModelIndex::load(root)?;
        match index.class_name.as_str() {
            "AudioLDMPipeline" | "MusicLDMPipeline" => Ok(Self::AudioLdm(Box::new(
                AudioLdmPipeline::from_index(root, &index, device, dtype)?,
            ))),
            "AudioLDM2Pipeline" => Ok(Self::AudioLdm2(Box::new(AudioLdm2Pipeline::from_index(
                root, &index, device, dtype,
            )?))),
            "StableAudio3Pipeline"
            | "StableAudio3AudioToAudioPipeline"
            | "StableAudio3InpaintPipeline" => Ok(Self::StableAudio3(Box::new(
                StableAudio3Pipeline::from_index(root, &index, device, dtype)?,
            ))),
            other => Err(FoleyError::Unsupported(format!(
                "{} holds a {other}; Foley runs AudioLDMPipeline, MusicLDMPipeline, AudioLDM2Pipeline and StableAudio3Pipeline",
                root.display()
            ))),
        }
    }

    /// The family's own diffusers defaults: (steps, guidance).
    pub fn defaults(&self) -> (usize, f64) {
        match self {
            Self::AudioLdm(pipeline) => pipeline.family().defaults(),
            Self::AudioLdm2(_) => (200, 3.5),
            Self::StableAudio3(pipeline) => pipeline.defaults(),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::AudioLdm(pipeline) => match pipeline.family() {
                ClapFamily::AudioLdm => "AudioLDM",
                ClapFamily::MusicLdm => "MusicLDM",
            },
            Self::AudioLdm2(_) => "AudioLDM 2",
            Self::StableAudio3(_) => "Stable Audio 3",
        }
    }

    /// The VAE (both halves), vocoder and editing front-end of the mel-based families.
    pub fn decoder(&self) -> Option<&stages::AudioDecoder> {
        match self {
            Self::AudioLdm(pipeline) => Some(pipeline.decoder()),
            Self::AudioLdm2(pipeline) => Some(pipeline.decoder()),
            Self::StableAudio3(_) => None,
        }
    }

    /// Ranks several waveforms with the CLAP model of the checkpoint at `root` (for models
    /// without their own; the others rank with theirs and refuse).
    pub fn rank_with(&mut self, root: &Path, device: &Device, dtype: DType) -> Result<()> {
        match self {
            Self::StableAudio3(pipeline) => {
                pipeline.set_judge(ranking::ClapJudge::load(root, dtype, device)?);
                Ok(())
            }
            _ => Err(FoleyError::InvalidRequest(format!(
                "{} ranks with its own CLAP model; --rank-with is for Stable Audio 3",
                self.name()
            ))),
        }
    }

    /// The tokenizers that read the prompt, each of which cuts it at its `max_length`.
    pub fn prompt_tokenizers(&self) -> Vec<&crate::engine::text_tokenizer::TextTokenizer> {
        match self {
            Self::AudioLdm(pipeline) => vec![pipeline.tokenizer()],
            Self::AudioLdm2(pipeline) => {
                vec![pipeline.clap_tokenizer(), pipeline.t5_tokenizer()]
            }
            Self::StableAudio3(pipeline) => vec![pipeline.tokenizer()],
        }
    }

    /// Refuses a scheduler name for a model that samples with its own scheduler.
    pub fn check_scheduler_choice(&self) -> Result<()> {
        match self {
            Self::StableAudio3(_) => Err(FoleyError::InvalidRequest(
                "Stable Audio 3 samples with its own flow-matching scheduler (ping-pong for the \
                 distilled checkpoint, Euler for the base one); --scheduler does not apply"
                    .into(),
            )),
            _ => Ok(()),
        }
    }

    /// Audio channels of the clips it makes (1, or 2 for Stable Audio 3).
    pub fn channels(&self) -> usize {
        match self {
            Self::StableAudio3(pipeline) => pipeline.channels(),
            _ => 1,
        }
    }

    pub fn sample_rate(&self) -> u32 {
        match self {
            Self::AudioLdm(pipeline) => pipeline.sample_rate(),
            Self::AudioLdm2(pipeline) => pipeline.sample_rate(),
            Self::StableAudio3(pipeline) => pipeline.sample_rate(),
        }
    }

    pub fn audio_length(&self, duration: Option<f64>) -> Result<AudioLength> {
        match self {
            Self::AudioLdm(pipeline) => pipeline.audio_length(duration),
            Self::AudioLdm2(pipeline) => pipeline.audio_length(duration),
            Self::StableAudio3(pipeline) => pipeline.audio_length(duration),
        }
    }

    /// The step preview's latent → log-mel map for this model's VAE: fitted on the first call
    /// (probe sounds through the VAE encoder on the pipeline's device, then a small least-squares
    /// solve on the host), cached with the pipeline afterwards.
    pub fn preview_projection(&self) -> Result<Arc<PreviewProjection>> {
        match self {
            Self::AudioLdm(pipeline) => pipeline.decoder().preview_projection(),
            Self::AudioLdm2(pipeline) => pipeline.decoder().preview_projection(),
            Self::StableAudio3(pipeline) => pipeline.preview_projection(),
        }
    }

    pub fn generate(
        &self,
        request: &Request,
        on_step: &mut dyn FnMut(&Progress),
        cancel: &CancelFlag,
    ) -> Result<Clip> {
        match self {
            Self::AudioLdm(pipeline) => pipeline.generate(request, on_step, cancel),
            Self::AudioLdm2(pipeline) => pipeline.generate(request, on_step, cancel),
            Self::StableAudio3(pipeline) => pipeline.generate(request, on_step, cancel),
        }
    }
}

/// Everything that determines a generation (with the weights, it fixes the output).
#[derive(Debug, Clone)]
pub struct Request {
    pub prompt: String,
    pub negative_prompt: Option<String>,
    /// `torch.Generator("cpu").manual_seed(seed)`.
    pub seed: u64,
    pub steps: usize,
    /// Classifier-free guidance scale; guidance is off at or below 1.
    pub guidance: f64,
    /// Seconds of audio; `None` uses the model's default length.
    pub duration: Option<f64>,
    pub scheduler: SchedulerKind,
    /// Waveforms generated for the prompt.
    pub waveforms: usize,
    /// Text-to-audio, or an edit of a given sound.
    pub task: Task,
}

impl Request {
    /// The duration the pipeline runs at: the one asked for, else the input's length for the
    /// tasks that edit a clip in place, else the model's default.
    pub fn effective_duration(&self) -> Option<f64> {
        self.duration.or(match &self.task {
            Task::AudioToAudio { input, .. }
            | Task::AudioToAudioFromNoise { input, .. }
            | Task::Inpaint { input, .. } => Some(input.seconds()),
            _ => None,
        })
    }
}

/// Largest classifier-free guidance scale accepted (published settings stay below 20).
pub const MAX_GUIDANCE: f64 = 1000.0;

/// Most waveforms generated in one batch for a prompt.
pub const MAX_WAVEFORMS: usize = 16;

/// Longest clip Foley will attempt (4 waveforms of 150 s fit in 24 GB on the CPU,
/// docs/PERFORMANCE.md); longer requests are almost certainly typos.
pub const MAX_DURATION_SECONDS: f64 = 300.0;

/// Sent after every denoising step.
#[derive(Debug)]
pub struct Progress<'a> {
    /// Steps finished so far (1-based).
    pub step: usize,
    pub total: usize,
    pub timestep: f64,
    pub latents: &'a Tensor,
}

/// Shared flag the caller sets to stop a generation between steps.
#[derive(Debug, Clone, Default)]
pub struct CancelFlag(Arc<AtomicBool>);

impl CancelFlag {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Seconds spent in each stage of one generation.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Timings {
    pub text_encoding: f64,
    /// Front-end and VAE encoder of an editing task's input (0 for text-to-audio).
    pub encoding: f64,
    pub denoising: f64,
    pub vae_decode: f64,
    pub vocoder: f64,
    /// CLAP scoring of several waveforms (0 when there was one).
    pub ranking: f64,
}

/// The result of a generation: one waveform per requested waveform, at `sample_rate`.
#[derive(Debug, Clone)]
pub struct Clip {
    /// Samples of each waveform, frames interleaved when there are several channels.
    pub waveforms: Vec<Vec<f32>>,
    /// Channels per frame of `waveforms` (1, or 2 for Stable Audio 3's stereo).
    pub channels: usize,
    /// The scheduler that ran (the request's, or the model's own where it has one).
    pub scheduler: &'static str,
    /// The VAE's log-mel spectrogram of each waveform, (frames × mel_bins) row-major; empty for
    /// models without a mel stage.
    pub mels: Vec<Vec<f32>>,
    pub mel_bins: usize,
    /// Samples per second of `waveforms` (the vocoder's rate).
    pub sample_rate: u32,
    pub seed: u64,
    pub duration: f64,
    pub timings: Timings,
    /// Things the user should know, e.g. that the prompt was truncated.
    pub warnings: Vec<String>,
    /// CLAP text–audio scores (`logits_per_text`) of `waveforms`, when they were ranked.
    pub scores: Option<Vec<f32>>,
    /// What was asked: text-to-audio or an edit, with its parameters.
    pub task: TaskSummary,
    /// UNet steps run (fewer than `steps` at strength < 1; 0 when nothing was regenerated).
    pub denoising_steps: usize,
}

/// The start of a user text for a message: at most 60 characters, so a pasted novel never
/// floods stderr or the studio's message panel.
pub(crate) fn excerpt(text: &str) -> String {
    const LIMIT: usize = 60;
    if text.chars().count() <= LIMIT {
        return text.to_string();
    }
    let start: String = text.chars().take(LIMIT).collect();
    format!("{start}…")
}

/// Refuses waveforms holding NaN or infinite samples; `settings` and `advice` say which run
/// and what to try.
pub(crate) fn ensure_finite(waveforms: &[Vec<f32>], settings: &str, advice: &str) -> Result<()> {
    if waveforms.iter().flatten().all(|sample| sample.is_finite()) {
        return Ok(());
    }
    Err(FoleyError::NonFinite(format!(
        "the generation produced NaN or infinite samples ({settings}): {advice}"
    )))
}

/// Checks the parts of a request that do not depend on the model.
pub fn validate(request: &Request) -> Result<()> {
    request.task.validate()?;
    if let (Task::Inpaint { regions, .. }, Some(clip)) =
        (&request.task, request.effective_duration())
        && let Some((start, end)) = regions.time.iter().find(|(start, _)| *start >= clip)
    {
        return Err(FoleyError::InvalidRequest(format!(
            "inpaint range {start}:{end} s lies outside the clip ({clip:.3} s)"
        )));
    }
    // A variation is conditioned on the sound; its text is not used.
    let needs_prompt = !matches!(request.task, Task::Variation { .. });
    if needs_prompt && request.prompt.trim().is_empty() {
        return Err(FoleyError::InvalidRequest("the prompt is empty".into()));
    }
    if request.steps == 0 {
        return Err(FoleyError::InvalidRequest(
            "steps must be at least 1".into(),
        ));
    }
    // Above this the f32 UNet arithmetic overflows to inf (NaN audio) long before f64 would.
    if !(0.0..=MAX_GUIDANCE).contains(&request.guidance) {
        return Err(FoleyError::InvalidRequest(format!(
            "guidance must be between 0 and {MAX_GUIDANCE}, got {}",
            request.guidance
        )));
    }
    if request.waveforms == 0 || request.waveforms > MAX_WAVEFORMS {
        return Err(FoleyError::InvalidRequest(format!(
            "waveforms must be between 1 and {MAX_WAVEFORMS}, got {}",
            request.waveforms
        )));
    }
    Ok(())
}

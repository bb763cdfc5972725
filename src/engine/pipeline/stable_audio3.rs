//! diffusers' Stable Audio 3 pipelines (`StableAudio3Pipeline`, `…AudioToAudioPipeline`,
//! `…InpaintPipeline`) as one: T5Gemma text + duration conditioning → rectified-flow DiT with
//! the log-SNR sigma schedule → SAME decoder, stereo at 44.1 kHz (research/sa3_notes.md).

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};

use super::length::check_seconds;
use super::preview::{self, PreviewProjection};
use super::ranking::ClapJudge;
use super::stages::stage_seconds;
use super::{
    AudioLength, CancelFlag, Clip, InputAudio, Progress, Request, Task, Timings, ensure_finite,
    validate,
};
use crate::engine::dsp::resample::resample;
use crate::engine::kernels;
use crate::engine::models::autoencoder_same::{AutoencoderSame, AutoencoderSameConfig};
use crate::engine::models::stable_audio3_dit::{
    DiTConditioning, StableAudio3DiTConfig, StableAudio3DiTModel,
};
use crate::engine::models::stable_audio3_duration::{
    DurationEmbedderConfig, StableAudio3DurationEmbedder,
};
use crate::engine::models::t5gemma::{T5GemmaEncoder, T5GemmaEncoderConfig};
use crate::engine::noise::TorchGenerator;
use crate::engine::schedulers::flow_match_euler::{
    FlowMatchConfig, FlowMatchEulerScheduler, logsnr_sigma_schedule,
};
use crate::engine::text_tokenizer::TextTokenizer;
use crate::engine::weights::{Component, ModelIndex, read_json};
use crate::error::{FoleyError, Result};

/// Tokens every prompt is padded or cut to (the reference's `max_length`).
pub const PROMPT_TOKENS: usize = 256;
/// The log-SNR range of the sigma schedule (the pipelines' defaults).
const LOGSNR_MIN: f64 = -6.2;
const LOGSNR_MAX: f64 = 2.0;
/// diffusers' default `duration`.
const DEFAULT_SECONDS: f64 = 10.0;

/// Text and duration conditioning for the DiT, in diffusers' CFG layout
/// (negative rows first, then positive).
pub struct Sa3Conditioning {
    /// Text tokens plus the duration token (batch, 257, hidden).
    pub context: Tensor,
    /// (batch, 257): 1 on real tokens and on the duration token.
    pub context_mask: Tensor,
    /// Duration embedding (batch, hidden).
    pub global: Tensor,
    pub warnings: Vec<String>,
}

pub struct StableAudio3Pipeline {
    tokenizer: TextTokenizer,
    text_encoder: T5GemmaEncoder,
    duration_embedder: StableAudio3DurationEmbedder,
    transformer: StableAudio3DiTModel,
    vae: AutoencoderSame,
    scheduler: FlowMatchConfig,
    /// Another checkpoint's CLAP that orders several waveforms best first (SA3 has none).
    judge: Option<ClapJudge>,
    device: Device,
    /// The step preview's map, fitted on first use.
    preview: preview::PreviewCell,
}

/// The parts of a Stable Audio 3 checkpoint, however it is laid out on disk.
pub(crate) struct Sa3Parts {
    pub tokenizer: TextTokenizer,
    pub text_encoder: T5GemmaEncoder,
    pub duration_embedder: StableAudio3DurationEmbedder,
    pub transformer: StableAudio3DiTModel,
    pub vae: AutoencoderSame,
    pub scheduler: FlowMatchConfig,
}

impl StableAudio3Pipeline {
    pub(crate) fn from_parts(parts: Sa3Parts, device: &Device) -> Self {
        Self {
            tokenizer: parts.tokenizer,
            text_encoder: parts.text_encoder,
            duration_embedder: parts.duration_embedder,
            transformer: parts.transformer,
            vae: parts.vae,
            scheduler: parts.scheduler,
            judge: None,
            device: device.clone(),
            preview: OnceLock::new(),
        }
    }

    /// Loads a diffusers-layout `StableAudio3Pipeline` directory.
    pub(crate) fn from_index(
        root: &Path,
        index: &ModelIndex,
        device: &Device,
        dtype: DType,
    ) -> Result<Self> {
        for (name, expected) in [
            ("text_encoder", "T5GemmaEncoderModel"),
            ("transformer", "StableAudio3DiTModel"),
            ("vae", "AutoencoderSAME"),
        ] {
            if let Some(class) = index.component_class(name)
                && class != expected
            {
                return Err(FoleyError::Unsupported(format!(
                    "{name} of class {class} in {} (Stable Audio 3 needs {expected})",
                    root.display()
                )));
            }
        }
        let component = |name: &str| Component::new(root, name);
        let text_dir = component("text_encoder")?;
        let text_config: T5GemmaEncoderConfig = text_dir.config()?;
        // The encoder-only model has no decoder; a tied LM head may ride along.
        let text_encoder = text_dir.build(dtype, device, &["decoder.", "lm_head."], |vb| {
            T5GemmaEncoder::new(&text_config, vb)
        })?;
        let duration_dir = component("duration_embedder")?;
        let duration_config: DurationEmbedderConfig = duration_dir.config()?;
        let duration_embedder = duration_dir.build(dtype, device, &[], |vb| {
            StableAudio3DurationEmbedder::new(&duration_config, vb)
        })?;
        let transformer_dir = component("transformer")?;
        let transformer_config: StableAudio3DiTConfig = transformer_dir.config()?;
        let transformer = transformer_dir.build(dtype, device, &[], |vb| {
            StableAudio3DiTModel::new(&transformer_config, vb)
        })?;
        let vae_dir = component("vae")?;
        let vae_config: AutoencoderSameConfig = vae_dir.config()?;
        let vae = vae_dir.build(dtype, device, &[], |vb| {
            AutoencoderSame::new(&vae_config, vb)
        })?;
        let scheduler_path = root.join("scheduler/scheduler_config.json");
        let scheduler: FlowMatchConfig = read_json(&scheduler_path)?;
        scheduler.check().map_err(|reason| FoleyError::BadConfig {
            path: scheduler_path,
            reason,
        })?;
        let parts = Sa3Parts {
            tokenizer: TextTokenizer::load(&root.join("tokenizer"), PROMPT_TOKENS)?,
            text_encoder,
            duration_embedder,
            transformer,
            vae,
            scheduler,
        };
        check_widths(&parts, root)?;
        Ok(Self::from_parts(parts, device))
    }

    pub fn sample_rate(&self) -> u32 {
        self.vae.config().sampling_rate
    }

    pub fn channels(&self) -> usize {
        self.vae.config().audio_channels
    }

    /// (steps, guidance): 8 steps for the distilled checkpoint, 100 for the base; guidance 1
    /// (off) for both, as diffusers defaults.
    pub fn defaults(&self) -> (usize, f64) {
        (self.scheduler.default_steps(), 1.0)
    }

    /// Ranks several waveforms with `judge`'s CLAP on their mono fold-down.
    pub fn set_judge(&mut self, judge: ClapJudge) {
        self.judge = Some(judge);
    }

    /// The step preview's latent → mel map, fitted through the SAME encoder on first use and
    /// then kept.
    pub fn preview_projection(&self) -> Result<Arc<PreviewProjection>> {
        preview::cached(&self.preview, || {
            preview::fit_waveform_vae(&self.vae, &self.device)
        })
    }

    pub fn is_distilled(&self) -> bool {
        self.scheduler.stochastic_sampling
    }

    pub fn transformer(&self) -> &StableAudio3DiTModel {
        &self.transformer
    }
    pub fn vae(&self) -> &AutoencoderSame {
        &self.vae
    }
    pub fn text_encoder(&self) -> &T5GemmaEncoder {
        &self.text_encoder
    }
    pub fn tokenizer(&self) -> &TextTokenizer {
        &self.tokenizer
    }
    pub fn duration_embedder(&self) -> &StableAudio3DurationEmbedder {
        &self.duration_embedder
    }

    /// Latent frames and kept samples for `duration` seconds (Python's f64 `ceil` and `int`).
    pub fn audio_length(&self, duration: Option<f64>) -> Result<AudioLength> {
        let seconds = duration.unwrap_or(DEFAULT_SECONDS);
        // Any positive length: the latents are rounded up to whole frames.
        check_seconds(seconds, 0.0)?;
        let rate = self.sample_rate() as f64;
        let ratio = self.vae.config().downsampling_ratio() as f64;
        let latent_frames = (seconds * rate / ratio).ceil() as usize;
        Ok(AudioLength {
            seconds,
            mel_frames: 0,
            latent_height: latent_frames,
            samples: (seconds * rate) as usize,
        })
    }

    /// Token ids → T5Gemma states (1, 256, hidden) and the mask (1, 256).
    fn encode_text(&self, text: &str, warnings: &mut Vec<String>) -> Result<(Tensor, Tensor)> {
        let length = self.tokenizer.max_length.min(PROMPT_TOKENS);
        let tokens = self.tokenizer.encode(text, Some(length))?;
        if tokens.truncated {
            warnings.push(format!(
                "the text \"{}\" is longer than the {length} tokens T5Gemma reads; its end was ignored",
                super::excerpt(text)
            ));
        }
        let states = self.text_encoder.forward(
            &[tokens.ids],
            std::slice::from_ref(&tokens.mask),
            &self.device,
        )?;
        let mask = Tensor::new(vec![tokens.mask], &self.device)?.to_dtype(DType::F32)?;
        Ok((states, mask))
    }

    /// `encode_prompt` + `encode_duration` + `prepare_cross_attention` for one prompt and
    /// `copies` waveforms; with guidance the rows are `[negative × copies; positive × copies]`.
    pub fn condition(
        &self,
        prompt: &str,
        negative_prompt: Option<&str>,
        guidance: bool,
        seconds: f64,
        copies: usize,
    ) -> Result<Sa3Conditioning> {
        let mut warnings = Vec::new();
        let global = self.duration_embedder.forward(&[seconds], &self.device)?;
        let with_duration = |states: &Tensor, mask: &Tensor| -> Result<(Tensor, Tensor)> {
            let duration_token = global.unsqueeze(1)?.to_dtype(states.dtype())?;
            let context = Tensor::cat(&[states, &duration_token], 1)?;
            let mask = Tensor::cat(&[mask, &Tensor::ones((1, 1), DType::F32, &self.device)?], 1)?;
            Ok((context.repeat((copies, 1, 1))?, mask.repeat((copies, 1))?))
        };
        let (states, mask) = self.encode_text(prompt, &mut warnings)?;
        let (mut context, mut context_mask) = with_duration(&states, &mask)?;
        let mut global_rows = global.repeat((copies, 1))?;
        if guidance {
            let (negative, negative_mask) =
                self.encode_text(negative_prompt.unwrap_or(""), &mut warnings)?;
            let (negative, negative_mask) = with_duration(&negative, &negative_mask)?;
            context = Tensor::cat(&[&negative, &context], 0)?;
            context_mask = Tensor::cat(&[&negative_mask, &context_mask], 0)?;
            global_rows = Tensor::cat(&[&global_rows, &global_rows], 0)?;
        }
        Ok(Sa3Conditioning {
            context,
            context_mask,
            global: global_rows,
            warnings,
        })
    }

    /// The input as (1, channels, samples) at the model's rate: resampled if needed, and a
    /// mono file doubled to both channels (diffusers takes stereo only).
    pub fn prepare_input(&self, input: &InputAudio) -> Result<Tensor> {
        let rate = self.sample_rate();
        let wanted = self.channels();
        let channels: Vec<Vec<f32>> = input
            .channels
            .iter()
            .map(|channel| {
                if input.sample_rate == rate {
                    channel.clone()
                } else {
                    resample(channel, input.sample_rate, rate)
                }
            })
            .collect();
        let channels = match (channels.len(), wanted) {
            (have, want) if have == want => channels,
            (1, want) => vec![channels[0].clone(); want],
            (_, 1) => vec![crate::engine::dsp::downmix(&channels)],
            (have, want) => {
                return Err(FoleyError::InvalidRequest(format!(
                    "{}: {have} channels cannot feed a {want}-channel model",
                    input.name
                )));
            }
        };
        let samples = channels.first().map_or(0, Vec::len);
        let data: Vec<f32> = channels.into_iter().flatten().collect();
        Ok(Tensor::from_vec(data, (1, wanted, samples), &self.device)?)
    }

    /// The input encoded whole, then zero-padded or cut to `frames` latent frames.
    fn reference_latents(&self, input: &InputAudio, frames: usize) -> Result<Tensor> {
        let latents = self.vae.encode(&self.prepare_input(input)?)?;
        let (batch, channels, have) = latents.dims3()?;
        Ok(if have < frames {
            let zeros = Tensor::zeros((batch, channels, frames - have), DType::F32, &self.device)?;
            Tensor::cat(&[&latents, &zeros], 2)?
        } else {
            latents.narrow(2, 0, frames)?
        })
    }

    /// What the denoising loop starts from and sees, per task.
    fn plan(
        &self,
        request: &Request,
        length: &AudioLength,
        generator: &mut TorchGenerator,
        timings: &mut Timings,
    ) -> Result<(Tensor, f32, Option<Tensor>)> {
        let copies = request.waveforms;
        let frames = length.latent_height;
        let latent_dim = self.vae.config().latent_dim;
        let noise = |generator: &mut TorchGenerator| -> Result<Tensor> {
            let shape = (copies, latent_dim, frames);
            Ok(Tensor::from_vec(
                generator.randn_f32(copies * latent_dim * frames),
                shape,
                &self.device,
            )?)
        };
        match &request.task {
            Task::TextToAudio => Ok((noise(generator)?, 1.0, None)),
            Task::AudioToAudioFromNoise {
                input,
                init_noise_level,
            } => {
                let started = Instant::now();
                let reference = self
                    .reference_latents(input, frames)?
                    .repeat((copies, 1, 1))?;
                timings.encoding = stage_seconds(started, &self.device)?;
                let level = *init_noise_level;
                let mixed = ((reference * (1.0 - level))? + (noise(generator)? * level)?)?;
                Ok((mixed, level as f32, None))
            }
            Task::Inpaint {
                input,
                regions,
                strength,
                ..
            } => {
                if regions.above_hz.is_some() {
                    return Err(FoleyError::Unsupported(
                        "Stable Audio 3 inpaints time ranges (--inpaint START:END), not frequencies"
                            .into(),
                    ));
                }
                if *strength != 1.0 {
                    return Err(FoleyError::InvalidRequest(
                        "Stable Audio 3 inpainting always starts from noise; --strength does not apply"
                            .into(),
                    ));
                }
                let started = Instant::now();
                let rate = self.sample_rate() as f64;
                let ratio = self.vae.config().downsampling_ratio() as f64;
                let mut keep = vec![1f32; frames];
                for &(start, end) in &regions.time {
                    let first = (start * rate / ratio) as usize;
                    let last = ((end * rate / ratio) as usize).min(frames);
                    for value in keep.iter_mut().take(last).skip(first) {
                        *value = 0.0;
                    }
                }
                let mask = Tensor::from_vec(keep, (1, 1, frames), &self.device)?;
                let reference = self.reference_latents(input, frames)?;
                let local = Tensor::cat(&[&mask, &reference.broadcast_mul(&mask)?], 1)?
                    .repeat((copies, 1, 1))?;
                timings.encoding = stage_seconds(started, &self.device)?;
                Ok((noise(generator)?, 1.0, Some(local)))
            }
            Task::AudioToAudio { .. } => Err(FoleyError::InvalidRequest(
                "Stable Audio 3 sets how far to move from the input with --init-noise-level F \
                 (0 < F ≤ 1, its own semantics), not --strength"
                    .into(),
            )),
            other => Err(FoleyError::Unsupported(format!(
                "Stable Audio 3 runs text-to-audio, audio-to-audio (--init-noise-level) and \
                 inpainting (--inpaint); {} is for the AudioLDM family",
                other.name().replace('_', " ")
            ))),
        }
    }

    /// Runs the whole pipeline; `cancel` is checked between steps.
    pub fn generate(
        &self,
        request: &Request,
        on_step: &mut dyn FnMut(&Progress),
        cancel: &CancelFlag,
    ) -> Result<Clip> {
        validate(request)?;
        let editing = !matches!(request.task, Task::TextToAudio);
        let guidance = request.guidance > 1.0;
        if editing && guidance {
            return Err(FoleyError::InvalidRequest(
                "Stable Audio 3's audio-to-audio and inpainting run without guidance; drop --guidance (or pass 1)"
                    .into(),
            ));
        }
        if editing && request.negative_prompt.is_some() {
            return Err(FoleyError::InvalidRequest(
                "Stable Audio 3's audio-to-audio and inpainting take no negative prompt".into(),
            ));
        }
        let length = self.audio_length(request.effective_duration())?;
        let mut timings = Timings::default();
        let mut generator = TorchGenerator::new(request.seed);

        let started = Instant::now();
        let conditioning = self.condition(
            &request.prompt,
            request.negative_prompt.as_deref(),
            guidance,
            length.seconds,
            request.waveforms,
        )?;
        timings.text_encoding = stage_seconds(started, &self.device)?;
        if cancel.is_cancelled() {
            return Err(FoleyError::Cancelled);
        }

        let (mut latents, sigma_max, local) =
            self.plan(request, &length, &mut generator, &mut timings)?;
        let sigmas = logsnr_sigma_schedule(request.steps, LOGSNR_MIN, LOGSNR_MAX, sigma_max);
        let scheduler = FlowMatchEulerScheduler::new(&self.scheduler, &sigmas)?;
        let started = Instant::now();
        let timesteps = scheduler.timesteps().to_vec();
        let rows = conditioning.context.dim(0)?;
        let dit_conditioning = DiTConditioning {
            context: &conditioning.context,
            context_mask: Some(&conditioning.context_mask),
            global: &conditioning.global,
            local: local.as_ref(),
        };
        for (index, &timestep) in timesteps.iter().enumerate() {
            if cancel.is_cancelled() {
                return Err(FoleyError::Cancelled);
            }
            let input = if guidance {
                Tensor::cat(&[&latents, &latents], 0)?
            } else {
                latents.clone()
            };
            // The transformer runs every step (and every generation): its layers keep their
            // packed weights from the first call.
            let velocity = kernels::with_weights_kept(|| {
                self.transformer
                    .forward(&input, &vec![timestep; rows], &dit_conditioning)
            })?;
            let velocity = if guidance {
                let half = rows / 2;
                let unconditional = velocity.narrow(0, 0, half)?;
                let conditional = velocity.narrow(0, half, half)?;
                (&unconditional + ((conditional - &unconditional)? * request.guidance)?)?
            } else {
                velocity
            };
            latents = scheduler.step(&velocity, &latents, index, &mut generator)?;
            on_step(&Progress {
                step: index + 1,
                total: timesteps.len(),
                timestep: timestep as f64,
                latents: &latents,
            });
        }
        timings.denoising = stage_seconds(started, &self.device)?;

        let started = Instant::now();
        let audio = self
            .vae
            .decode(&latents)?
            .narrow(2, 0, length.samples)?
            .clamp(-1f32, 1f32)?;
        timings.vae_decode = stage_seconds(started, &self.device)?;
        let waveforms = interleave(&audio)?;
        ensure_finite(
            &waveforms,
            &format!("{} steps, guidance {}", request.steps, request.guidance),
            "the weights or config may be corrupt",
        )?;
        let mut warnings = conditioning.warnings;
        if request.waveforms > 1 && self.judge.is_none() {
            warnings.push(
                "the waveforms are in generation order: Stable Audio 3 has no CLAP model to rank them (--rank-with a MusicLDM or AudioLDM 2 checkpoint does)"
                    .into(),
            );
        }
        let clip = Clip {
            waveforms,
            channels: self.channels(),
            scheduler: if self.is_distilled() {
                "flow-match-ping-pong"
            } else {
                "flow-match-euler"
            },
            mels: Vec::new(),
            mel_bins: 0,
            sample_rate: self.sample_rate(),
            seed: request.seed,
            duration: length.seconds,
            timings,
            warnings,
            scores: None,
            task: request.task.summary(),
            denoising_steps: timesteps.len(),
        };
        match &self.judge {
            Some(judge) if request.waveforms > 1 => judge.rank(clip, &request.prompt, &self.device),
            _ => Ok(clip),
        }
    }
}

/// (batch, channels, samples) → one interleaved frame sequence per batch row.
fn interleave(audio: &Tensor) -> Result<Vec<Vec<f32>>> {
    let rows = audio
        .to_dtype(DType::F32)?
        .transpose(1, 2)?
        .contiguous()?
        .flatten_from(1)?
        .to_vec2::<f32>()?;
    Ok(rows)
}

/// The components must agree on the widths they pass each other.
pub(crate) fn check_widths(parts: &Sa3Parts, root: &Path) -> Result<()> {
    let dit = parts.transformer.config();
    let text = parts.text_encoder.config().hidden_size;
    let latent = parts.vae.config().latent_dim;
    let mismatch = [
        (
            "text encoder hidden_size",
            text,
            "DiT cond_token_dim",
            dit.cond_token_dim,
        ),
        (
            "duration embedder output_dim",
            parts.duration_embedder.output_dim(),
            "DiT global_cond_dim",
            dit.global_cond_dim,
        ),
        (
            "duration embedder output_dim",
            parts.duration_embedder.output_dim(),
            "DiT cond_token_dim",
            dit.cond_token_dim,
        ),
        ("VAE latent_dim", latent, "DiT io_channels", dit.io_channels),
        (
            "VAE latent_dim + 1",
            latent + 1,
            "DiT local_add_cond_dim",
            dit.local_add_cond_dim,
        ),
    ]
    .into_iter()
    .find(|(_, left, _, right)| left != right);
    match mismatch {
        Some((left_name, left, right_name, right)) => Err(FoleyError::BadConfig {
            path: root.to_path_buf(),
            reason: format!("{left_name} {left} does not match {right_name} {right}"),
        }),
        None => Ok(()),
    }
}

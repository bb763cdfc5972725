//! The stages every pipeline shares: the seed's initial latents, the guided denoising loop and
//! the VAE + vocoder tail that turns latents into trimmed waveforms.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};

use super::editing::{Assembly, LoopStart, Planner, assemble};
use super::preview::{self, PreviewProjection};
use super::{AudioLength, CancelFlag, Clip, Progress, Request, Timings};
use crate::engine::dsp::frontend::MelFrontEnd;
use crate::engine::kernels;
use crate::engine::models::clap_text::{ClapConfig, ClapTextConfig, ClapTextModel};
use crate::engine::models::hifigan::{HifiGan, HifiGanConfig};
use crate::engine::models::unet::{UNet2DConditionModel, UNetConditioning, UNetConfig};
use crate::engine::models::vae::{VaeConfig, VaeDecoder};
use crate::engine::models::vae_encoder::VaeEncoder;
use crate::engine::noise::TorchGenerator;
use crate::engine::schedulers::{Scheduler, SchedulerConfig};
use crate::engine::weights::Component;
use crate::error::{FoleyError, Result};

/// Tensors a checkpoint may hold that text-to-audio never runs (weight loading insists that
/// everything else is used, so a config that does not match its weights is caught).
pub(crate) const VAE_UNUSED: &[&str] = &["encoder.", "quant_conv."];
/// The input normalisation buffers exist even when `normalize_before` is off.
pub(crate) const VOCODER_UNUSED: &[&str] = &["mean", "scale"];
/// The audio branch (used only for ranking), logit scales and integer position buffers.
pub(crate) const CLAP_TEXT_UNUSED: &[&str] = &[
    "audio_model.",
    "audio_projection.",
    "logit_scale_a",
    "logit_scale_t",
    "text_model.embeddings.position_ids",
    "text_model.embeddings.token_type_ids",
];
/// Tied copies of the token embedding; one of the two is read.
pub(crate) const T5_UNUSED: &[&str] = &["shared.", "encoder.embed_tokens."];
/// Generation runs from embeddings, so the token embedding and LM head are never read.
pub(crate) const GPT2_UNUSED: &[&str] = &["wte.", "transformer.wte.", "lm_head."];

/// Loads `unet/`, rejecting configs with options Foley does not implement.
pub(crate) fn load_unet(
    root: &Path,
    dtype: DType,
    device: &Device,
) -> Result<UNet2DConditionModel> {
    let dir = Component::new(root, "unet")?;
    let config: UNetConfig = dir.config()?;
    config
        .check_supported()
        .map_err(|reason| FoleyError::BadConfig {
            path: dir.config_path(),
            reason,
        })?;
    dir.build(dtype, device, &[], |vb| {
        UNet2DConditionModel::new(&config, vb)
    })
}

/// VAE decoder and vocoder: latents → mel → waveform; and the way back for editing, the
/// front-end and the VAE encoder (loaded on first use: text-to-audio never needs it).
pub struct AudioDecoder {
    pub vae: VaeDecoder,
    pub vae_config: VaeConfig,
    pub vocoder: HifiGan,
    root: PathBuf,
    dtype: DType,
    device: Device,
    encoder: Mutex<Option<Arc<VaeEncoder>>>,
    /// The step preview's map, fitted on first use.
    preview: preview::PreviewCell,
}

impl AudioDecoder {
    pub(crate) fn load(root: &Path, dtype: DType, device: &Device) -> Result<Self> {
        let vae_dir = Component::new(root, "vae")?;
        let vae_config: VaeConfig = vae_dir.config()?;
        let vae = vae_dir.build(dtype, device, VAE_UNUSED, |vb| {
            VaeDecoder::new(&vae_config, vb)
        })?;
        let vocoder_dir = Component::new(root, "vocoder")?;
        let vocoder_config: HifiGanConfig = vocoder_dir.config()?;
        if !vocoder_config
            .model_in_dim
            .is_multiple_of(vae_config.scale_factor())
        {
            return Err(FoleyError::BadConfig {
                path: vocoder_dir.config_path(),
                reason: "model_in_dim is not a multiple of the VAE scale factor".into(),
            });
        }
        let vocoder = vocoder_dir.build(dtype, device, VOCODER_UNUSED, |vb| {
            HifiGan::new(&vocoder_config, vb)
        })?;
        Ok(Self {
            vae,
            vae_config,
            vocoder,
            root: root.to_path_buf(),
            dtype,
            device: device.clone(),
            encoder: Mutex::new(None),
            preview: OnceLock::new(),
        })
    }

    /// The VAE encoder, loaded from `vae/` on first use and then kept.
    pub fn encoder(&self) -> Result<Arc<VaeEncoder>> {
        let mut loaded = self.encoder.lock().map_err(|_| {
            FoleyError::Unsupported("the VAE encoder failed to load earlier".into())
        })?;
        if let Some(encoder) = loaded.as_ref() {
            return Ok(encoder.clone());
        }
        let dir = Component::new(&self.root, "vae")?;
        let encoder = dir.build(
            self.dtype,
            &self.device,
            &["decoder.", "post_quant_conv."],
            |vb| VaeEncoder::new(&self.vae_config, vb),
        )?;
        let encoder = Arc::new(encoder);
        *loaded = Some(encoder.clone());
        Ok(encoder)
    }

    /// The step preview's latent → mel map, fitted through the VAE encoder on first use (which
    /// loads the encoder, as editing does) and then kept.
    pub fn preview_projection(&self) -> Result<Arc<PreviewProjection>> {
        preview::cached(&self.preview, || preview::fit_mel_vae(self, &self.device))
    }

    /// The waveform → log-mel front-end matching this checkpoint's vocoder and VAE.
    pub fn front_end(&self) -> Result<MelFrontEnd> {
        let vocoder = self.vocoder.config();
        MelFrontEnd::for_checkpoint(
            vocoder.sampling_rate,
            vocoder.upsample_factor(),
            vocoder.model_in_dim,
            self.vae_config.scale_factor(),
        )
    }

    /// The length `seconds` of audio maps to.
    pub fn audio_length_for(&self, seconds: f64) -> Result<AudioLength> {
        self.audio_length(Some(seconds), 1)
    }

    pub fn sample_rate(&self) -> u32 {
        self.vocoder.config().sampling_rate
    }

    /// The length a requested duration maps to; `sample_size` is the UNet's (latent rows).
    pub fn audio_length(&self, duration: Option<f64>, sample_size: usize) -> Result<AudioLength> {
        let vocoder = self.vocoder.config();
        let seconds_per_frame = vocoder.upsample_factor() as f64 / vocoder.sampling_rate as f64;
        let scale = self.vae_config.scale_factor();
        AudioLength::resolve(
            duration,
            seconds_per_frame,
            scale,
            sample_size * scale,
            vocoder.sampling_rate,
        )
    }

    /// `prepare_latents`: the seed's `torch.randn` of shape (waveforms, channels, rows, bins/scale).
    pub(crate) fn initial_latents(
        &self,
        generator: &mut TorchGenerator,
        waveforms: usize,
        channels: usize,
        length: &AudioLength,
        device: &Device,
        dtype: DType,
    ) -> Result<Tensor> {
        let width = self.vocoder.config().model_in_dim / self.vae_config.scale_factor();
        let shape = (waveforms, channels, length.latent_height, width);
        let noise = generator.randn_f32(waveforms * channels * length.latent_height * width);
        Ok(Tensor::from_vec(noise, shape, device)?.to_dtype(dtype)?)
    }

    /// VAE decode of scaled latents to mel frames (batch, frames, bins).
    pub fn decode_latents(&self, latents: &Tensor) -> Result<Tensor> {
        let scaled = (latents / self.vae_config.scaling_factor)?;
        Ok(self.vae.decode(&scaled)?.squeeze(1)?)
    }

    /// Latents to waveforms trimmed to the requested length, with the VAE's mel frames for
    /// display, timing both stages.
    pub(crate) fn waveforms(
        &self,
        latents: &Tensor,
        length: &AudioLength,
        timings: &mut Timings,
    ) -> Result<Decoded> {
        // One waveform at a time: batch items are independent, and a 150 s clip's VAE and
        // vocoder activations are gigabytes each, so decoding four together would quadruple the
        // peak memory for no speed gain (the kernels already use every core per item).
        let (mut mels, mut audios) = (Vec::new(), Vec::new());
        for item in 0..latents.dim(0)? {
            let started = Instant::now();
            let mel = self.decode_latents(&latents.narrow(0, item, 1)?)?;
            timings.vae_decode += stage_seconds(started, &self.device)?;
            let started = Instant::now();
            audios.push(self.vocoder.forward(&mel)?.to_dtype(DType::F32)?);
            timings.vocoder += stage_seconds(started, &self.device)?;
            mels.push(mel);
        }
        let (mel, audio) = (Tensor::cat(&mels, 0)?, Tensor::cat(&audios, 0)?);
        let samples = audio.dim(1)?.min(length.samples);
        let (_, _, mel_bins) = mel.dims3()?;
        Ok(Decoded {
            waveforms: audio.narrow(1, 0, samples)?.to_vec2::<f32>()?,
            mels: mel
                .to_dtype(DType::F32)?
                .flatten_from(1)?
                .to_vec2::<f32>()?,
            mel_bins,
        })
    }
}

/// Seconds since `started` once `device` has finished the work queued so far: GPU ops return
/// before they run, so a stage's time is only its own after a synchronize (free on the CPU).
pub(crate) fn stage_seconds(started: Instant, device: &Device) -> Result<f64> {
    device.synchronize()?;
    Ok(started.elapsed().as_secs_f64())
}

/// Decoded audio of a batch: waveforms and their log-mel spectrograms.
pub(crate) struct Decoded {
    pub waveforms: Vec<Vec<f32>>,
    /// Per waveform, (frames × mel_bins) row-major.
    pub mels: Vec<Vec<f32>>,
    pub mel_bins: usize,
}

/// The denoising loop of all three pipelines and every task. With `guidance > 1` the UNet sees
/// the batch `[latents; latents]` against `[negative; positive]` conditioning and the two halves
/// are combined as `uncond + guidance · (cond − uncond)`. The loop runs the schedule from
/// `start.begin` on; an editing task's blend is applied after each step.
#[allow(clippy::too_many_arguments)]
pub(crate) fn denoise(
    unet: &UNet2DConditionModel,
    scheduler: &mut dyn Scheduler,
    generator: &mut TorchGenerator,
    start: LoopStart,
    guidance: f64,
    conditioning: UNetConditioning,
    on_step: &mut dyn FnMut(&Progress),
    cancel: &CancelFlag,
) -> Result<(Tensor, usize)> {
    let guided = guidance > 1.0;
    let mut latents = start.latents;
    let Some(begin) = start.begin else {
        return Ok((latents, 0));
    };
    let timesteps = scheduler.timesteps();
    let total = timesteps.len().saturating_sub(begin);
    for (index, timestep) in timesteps.iter().enumerate().skip(begin) {
        if cancel.is_cancelled() {
            return Err(FoleyError::Cancelled);
        }
        let input = if guided {
            Tensor::cat(&[&latents, &latents], 0)?
        } else {
            latents.clone()
        };
        let input = scheduler.scale_model_input(input, index)?;
        // The UNet runs every step (and every generation): its layers keep their packed
        // weights from the first call.
        let prediction =
            kernels::with_weights_kept(|| unet.forward(&input, *timestep, conditioning))?;
        let prediction = if guided {
            let rows = latents.dim(0)?;
            let unconditional = prediction.narrow(0, 0, rows)?;
            let conditional = prediction.narrow(0, rows, rows)?;
            (&unconditional + ((conditional - &unconditional)? * guidance)?)?
        } else {
            prediction
        };
        latents = scheduler.step(&prediction, index, &latents, generator)?;
        if let Some(blend) = &start.blend {
            let next = (index + 1 < timesteps.len()).then_some(index + 1);
            latents = blend.apply(&latents, &*scheduler, next)?;
        }
        on_step(&Progress {
            step: index + 1 - begin,
            total,
            timestep: *timestep,
            latents: &latents,
        });
    }
    Ok((latents, total))
}

/// Loads `text_encoder/` (a `ClapModel` or `ClapTextModelWithProjection`) with its text config.
pub(crate) fn load_clap_text(
    root: &Path,
    dtype: DType,
    device: &Device,
) -> Result<(ClapTextModel, ClapTextConfig)> {
    let dir = Component::new(root, "text_encoder")?;
    let config: ClapConfig = dir.config()?;
    let text = config.text().map_err(|reason| FoleyError::BadConfig {
        path: dir.config_path(),
        reason,
    })?;
    let model = dir.build(dtype, device, CLAP_TEXT_UNUSED, |vb| {
        ClapTextModel::new(&text, vb)
    })?;
    Ok((model, text))
}

/// Repeats one prompt's conditioning for `copies` waveforms in diffusers' layout: with guidance
/// the rows `[negative; positive]` become `[negative × copies; positive × copies]`.
pub(crate) fn per_waveform(conditioning: &Tensor, guided: bool, copies: usize) -> Result<Tensor> {
    if copies == 1 {
        return Ok(conditioning.clone());
    }
    let repeat = |rows: &Tensor| -> Result<Tensor> {
        let mut shape = vec![1; rows.rank()];
        shape[0] = copies;
        Ok(rows.repeat(shape)?)
    };
    if guided {
        let negative = repeat(&conditioning.narrow(0, 0, 1)?)?;
        let positive = repeat(&conditioning.narrow(0, 1, 1)?)?;
        Ok(Tensor::cat(&[&negative, &positive], 0)?)
    } else {
        repeat(conditioning)
    }
}

/// Everything after text encoding, shared by the pipelines: the seed's latents, the scheduler,
/// the guided denoising loop and the decode to trimmed waveforms.
pub(crate) struct Synthesis<'a> {
    pub unet: &'a UNet2DConditionModel,
    pub decoder: &'a AudioDecoder,
    pub scheduler_config: &'a SchedulerConfig,
    pub device: &'a Device,
}

impl Synthesis<'_> {
    /// The model's own clip length (the UNet's `sample_size`), which bounds editing windows.
    fn default_seconds(&self) -> f64 {
        let rows = self.unet.config().sample_size.unwrap_or(128);
        let frames = rows * self.decoder.vae_config.scale_factor();
        let vocoder = self.decoder.vocoder.config();
        frames as f64 * vocoder.upsample_factor() as f64 / vocoder.sampling_rate as f64
    }

    /// Denoises, decodes and packages the clip; `timings` already holds the text encoding.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn run(
        &self,
        request: &Request,
        length: &AudioLength,
        conditioning: UNetConditioning,
        mut timings: Timings,
        warnings: Vec<String>,
        on_step: &mut dyn FnMut(&Progress),
        cancel: &CancelFlag,
    ) -> Result<Clip> {
        let mut scheduler = request
            .scheduler
            .build(self.scheduler_config, request.steps)?;
        let mut generator = TorchGenerator::new(request.seed);
        let planner = Planner {
            decoder: self.decoder,
            device: self.device,
            latent_channels: self.unet.config().in_channels,
            default_seconds: self.default_seconds(),
        };
        let plan = planner.plan(
            &request.task,
            *length,
            request.steps,
            request.waveforms,
            scheduler.as_ref(),
            &mut generator,
            &mut timings,
        )?;
        let started = Instant::now();
        let (latents, denoising_steps) = denoise(
            self.unet,
            scheduler.as_mut(),
            &mut generator,
            plan.start,
            request.guidance,
            conditioning,
            on_step,
            cancel,
        )?;
        timings.denoising = stage_seconds(started, self.device)?;
        let decoded = self
            .decoder
            .waveforms(&latents, &plan.length, &mut timings)?;
        let sample_rate = self.decoder.sample_rate();
        let waveforms = assemble(&plan.assembly, decoded.waveforms, sample_rate);
        super::ensure_finite(
            &waveforms,
            &format!(
                "{} scheduler, {} steps, guidance {}",
                request.scheduler.name(),
                request.steps,
                request.guidance
            ),
            "these settings are numerically unstable for this model, or its weights or config are corrupt; try another scheduler or fewer steps",
        )?;
        let duration = match plan.assembly {
            Assembly::AsDecoded => plan.length.seconds,
            _ => waveforms.first().map_or(0, Vec::len) as f64 / sample_rate as f64,
        };
        Ok(Clip {
            waveforms,
            channels: 1,
            scheduler: request.scheduler.name(),
            mels: decoded.mels,
            mel_bins: decoded.mel_bins,
            sample_rate,
            seed: request.seed,
            duration,
            timings,
            warnings,
            task: request.task.summary(),
            denoising_steps,
            scores: None,
        })
    }
}

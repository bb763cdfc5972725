//! diffusers' `AudioLDM2Pipeline`: CLAP + Flan-T5 → projection → GPT-2 → dual-context UNet
//! denoising → VAE → HiFi-GAN, reproducing its numerics step for step.

use std::path::Path;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};

use super::{AudioLength, CancelFlag, Clip, Progress, Request, Timings};
use crate::engine::models::clap_text::{ClapConfig, ClapTextModel};
use crate::engine::models::gpt2::{Gpt2Config, Gpt2Model};
use crate::engine::models::hifigan::{HifiGan, HifiGanConfig};
use crate::engine::models::projection::{ProjectionConfig, ProjectionModel};
use crate::engine::models::t5::{T5Config, T5Encoder};
use crate::engine::models::unet::{AudioLdm2UNet, UNetConditioning, UNetConfig};
use crate::engine::models::vae::{VaeConfig, VaeDecoder};
use crate::engine::noise::TorchGenerator;
use crate::engine::schedulers::SchedulerConfig;
use crate::engine::text_tokenizer::TextTokenizer;
use crate::engine::weights::{Component, ModelIndex};
use crate::error::{FoleyError, Result};

/// Text conditioning for the UNet in diffusers' classifier-free-guidance layout
/// (negative rows first, then positive).
#[derive(Debug)]
pub struct PromptEmbeddings {
    /// T5 hidden states (batch, tokens, t5_dim): `prompt_embeds`.
    pub text: Tensor,
    /// T5 attention mask (batch, tokens): `attention_mask`.
    pub text_mask: Tensor,
    /// GPT-2 generated vectors (batch, new_tokens, width): `generated_prompt_embeds`.
    pub generated: Tensor,
    pub warnings: Vec<String>,
}

pub struct AudioLdm2Pipeline {
    clap_tokenizer: TextTokenizer,
    t5_tokenizer: TextTokenizer,
    clap: ClapTextModel,
    t5: T5Encoder,
    projection: ProjectionModel,
    language_model: Gpt2Model,
    unet: AudioLdm2UNet,
    vae: VaeDecoder,
    vae_config: VaeConfig,
    vocoder: HifiGan,
    scheduler_config: SchedulerConfig,
    device: Device,
    dtype: DType,
}

impl AudioLdm2Pipeline {
    /// Loads a diffusers-layout `AudioLDM2Pipeline` directory onto `device` in `dtype`.
    pub fn load(root: &Path, device: &Device, dtype: DType) -> Result<Self> {
        let index = ModelIndex::load(root)?;
        if index.class_name != "AudioLDM2Pipeline" {
            return Err(FoleyError::Unsupported(format!(
                "{} holds a {}, not an AudioLDM2Pipeline",
                root.display(),
                index.class_name
            )));
        }
        if let Some(class) = index.component_class("text_encoder_2")
            && class != "T5EncoderModel"
        {
            return Err(FoleyError::Unsupported(format!(
                "text_encoder_2 of class {class} (only the T5 variants of AudioLDM 2 are supported)"
            )));
        }
        let component = |name: &str| Component::new(root, name);

        let text_encoder = component("text_encoder")?;
        let clap_config: ClapConfig = text_encoder.config()?;
        let clap_text_config = clap_config.text().map_err(|reason| FoleyError::BadConfig {
            path: text_encoder.config_path(),
            reason,
        })?;
        let clap = text_encoder.build(dtype, device, |vb| {
            ClapTextModel::new(&clap_text_config, vb)
        })?;

        let text_encoder_2 = component("text_encoder_2")?;
        let t5_config: T5Config = text_encoder_2.config()?;
        let t5 = text_encoder_2.build(dtype, device, |vb| T5Encoder::new(&t5_config, vb))?;

        let projection_dir = component("projection_model")?;
        let projection_config: ProjectionConfig = projection_dir.config()?;
        let projection = projection_dir.build(dtype, device, |vb| {
            ProjectionModel::new(&projection_config, vb)
        })?;

        let language_dir = component("language_model")?;
        let gpt2_config: Gpt2Config = language_dir.config()?;
        let language_model =
            language_dir.build(dtype, device, |vb| Gpt2Model::new(&gpt2_config, vb))?;

        let unet_dir = component("unet")?;
        let unet_config: UNetConfig = unet_dir.config()?;
        unet_config
            .check_supported()
            .map_err(|reason| FoleyError::BadConfig {
                path: unet_dir.config_path(),
                reason,
            })?;
        let unet = unet_dir.build(dtype, device, |vb| AudioLdm2UNet::new(&unet_config, vb))?;

        let vae_dir = component("vae")?;
        let vae_config: VaeConfig = vae_dir.config()?;
        let vae = vae_dir.build(dtype, device, |vb| VaeDecoder::new(&vae_config, vb))?;

        let vocoder_dir = component("vocoder")?;
        let vocoder_config: HifiGanConfig = vocoder_dir.config()?;
        let vocoder = vocoder_dir.build(dtype, device, |vb| HifiGan::new(&vocoder_config, vb))?;

        if !vocoder_config
            .model_in_dim
            .is_multiple_of(vae_config.scale_factor())
        {
            return Err(FoleyError::BadConfig {
                path: vocoder_dir.config_path(),
                reason: "model_in_dim is not a multiple of the VAE scale factor".into(),
            });
        }
        let scheduler_config =
            SchedulerConfig::load(&root.join("scheduler/scheduler_config.json"))?;
        Ok(Self {
            clap_tokenizer: TextTokenizer::load(&root.join("tokenizer"), 512)?,
            t5_tokenizer: TextTokenizer::load(&root.join("tokenizer_2"), 128)?,
            clap,
            t5,
            projection,
            language_model,
            unet,
            vae,
            vae_config,
            vocoder,
            scheduler_config,
            device: device.clone(),
            dtype,
        })
    }

    pub fn sample_rate(&self) -> u32 {
        self.vocoder.config().sampling_rate
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn scheduler_config(&self) -> &SchedulerConfig {
        &self.scheduler_config
    }

    /// The audio length a request maps to (diffusers' rounding; errors for bad durations).
    pub fn audio_length(&self, duration: Option<f64>) -> Result<AudioLength> {
        let vocoder = self.vocoder.config();
        let seconds_per_frame = vocoder.upsample_factor() as f64 / vocoder.sampling_rate as f64;
        let scale = self.vae_config.scale_factor();
        let sample_size = self.unet.config().sample_size.unwrap_or(256);
        AudioLength::resolve(
            duration,
            seconds_per_frame,
            scale,
            sample_size * scale,
            vocoder.sampling_rate,
        )
    }

    /// CLAP features (batch 1, 1, dim) and T5 states for one text; `t5_length` pads/truncates T5.
    fn encode_text(
        &self,
        text: &str,
        t5_length: Option<usize>,
        warnings: &mut Vec<String>,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let clap_tokens = self
            .clap_tokenizer
            .encode(text, Some(self.clap_tokenizer.max_length))?;
        let t5_tokens = self.t5_tokenizer.encode(text, t5_length)?;
        // The negative prompt's T5 length follows the positive one by design; only warn for
        // cuts the tokenizer limit forced.
        if clap_tokens.truncated || (t5_tokens.truncated && t5_length.is_none()) {
            warnings.push(format!(
                "the text \"{text}\" is longer than the text encoders accept (CLAP {} tokens, T5 {}); its end was ignored",
                self.clap_tokenizer.max_length, self.t5_tokenizer.max_length
            ));
        }
        let clap = self
            .clap
            .text_features(&[clap_tokens.ids], &[clap_tokens.mask], &self.device)?
            .unsqueeze(1)?;
        let t5 = self.t5.forward(
            &[t5_tokens.ids],
            std::slice::from_ref(&t5_tokens.mask),
            &self.device,
        )?;
        let mask = Tensor::new(vec![t5_tokens.mask], &self.device)?;
        Ok((clap, t5, mask))
    }

    fn generate_from(&self, clap: &Tensor, t5: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let (joined, joined_mask) = self.projection.forward(clap, t5, mask)?;
        let new_tokens = self.language_model.config().max_new_tokens;
        Ok(self
            .language_model
            .generate(&joined, &joined_mask, new_tokens)?)
    }

    /// `encode_prompt` for one prompt: with guidance the batch is `[negative; positive]`.
    pub fn encode_prompt(
        &self,
        prompt: &str,
        negative_prompt: Option<&str>,
        guidance: bool,
    ) -> Result<PromptEmbeddings> {
        let mut warnings = Vec::new();
        let (clap, t5, mask) = self.encode_text(prompt, None, &mut warnings)?;
        let generated = self.generate_from(&clap, &t5, &mask)?;
        if !guidance {
            return Ok(PromptEmbeddings {
                text: t5,
                text_mask: mask,
                generated,
                warnings,
            });
        }
        let tokens = t5.dim(1)?;
        let negative = negative_prompt.unwrap_or("");
        let (neg_clap, neg_t5, neg_mask) =
            self.encode_text(negative, Some(tokens), &mut warnings)?;
        let neg_generated = self.generate_from(&neg_clap, &neg_t5, &neg_mask)?;
        Ok(PromptEmbeddings {
            text: Tensor::cat(&[&neg_t5, &t5], 0)?,
            text_mask: Tensor::cat(&[&neg_mask, &mask], 0)?,
            generated: Tensor::cat(&[&neg_generated, &generated], 0)?,
            warnings,
        })
    }

    /// Runs the whole pipeline. `on_step` sees every finished step; `cancel` is checked
    /// between steps.
    pub fn generate(
        &self,
        request: &Request,
        on_step: &mut dyn FnMut(&Progress),
        cancel: &CancelFlag,
    ) -> Result<Clip> {
        validate(request)?;
        let length = self.audio_length(request.duration)?;
        let guidance = request.guidance > 1.0;
        let mut timings = Timings::default();

        let started = Instant::now();
        let embeddings = self.encode_prompt(
            &request.prompt,
            request.negative_prompt.as_deref(),
            guidance,
        )?;
        timings.text_encoding = started.elapsed().as_secs_f64();
        if cancel.is_cancelled() {
            return Err(FoleyError::Cancelled);
        }

        let started = Instant::now();
        let mut scheduler = request
            .scheduler
            .build(&self.scheduler_config, request.steps)?;
        let mut generator = TorchGenerator::new(request.seed);
        let shape = (
            request.waveforms,
            self.unet.config().in_channels,
            length.latent_height,
            self.vocoder.config().model_in_dim / self.vae_config.scale_factor(),
        );
        let noise = generator.randn_f32(shape.0 * shape.1 * shape.2 * shape.3);
        let mut latents = (Tensor::from_vec(noise, shape, &self.device)?.to_dtype(self.dtype)?
            * scheduler.init_noise_sigma())?;
        let text = embeddings.text.to_dtype(self.dtype)?;
        let generated = embeddings.generated.to_dtype(self.dtype)?;
        let conditioning = UNetConditioning {
            generated: &generated,
            text: Some(&text),
            text_mask: Some(&embeddings.text_mask),
        };
        let timesteps = scheduler.timesteps().to_vec();
        for (index, timestep) in timesteps.iter().enumerate() {
            if cancel.is_cancelled() {
                return Err(FoleyError::Cancelled);
            }
            let input = if guidance {
                Tensor::cat(&[&latents, &latents], 0)?
            } else {
                latents.clone()
            };
            let input = scheduler.scale_model_input(input, index)?;
            let prediction = self.unet.forward(&input, *timestep as f64, conditioning)?;
            let prediction = if guidance {
                let rows = latents.dim(0)?;
                let unconditional = prediction.narrow(0, 0, rows)?;
                let conditional = prediction.narrow(0, rows, rows)?;
                (&unconditional + ((conditional - &unconditional)? * request.guidance)?)?
            } else {
                prediction
            };
            latents = scheduler.step(&prediction, index, &latents, &mut generator)?;
            on_step(&Progress {
                step: index + 1,
                total: timesteps.len(),
                timestep: *timestep,
                latents: &latents,
            });
        }
        timings.denoising = started.elapsed().as_secs_f64();

        let started = Instant::now();
        let mel = self.decode_latents(&latents)?;
        timings.vae_decode = started.elapsed().as_secs_f64();
        let started = Instant::now();
        let audio = self.vocoder.forward(&mel)?.to_dtype(DType::F32)?;
        timings.vocoder = started.elapsed().as_secs_f64();

        let samples = audio.dim(1)?.min(length.samples);
        let waveforms = audio.narrow(1, 0, samples)?.to_vec2::<f32>()?;
        Ok(Clip {
            waveforms,
            sample_rate: self.sample_rate(),
            seed: request.seed,
            duration: length.seconds,
            timings,
            warnings: embeddings.warnings,
        })
    }

    /// VAE decode of scaled latents to mel frames (batch, frames, bins).
    pub fn decode_latents(&self, latents: &Tensor) -> Result<Tensor> {
        let scaled = (latents / self.vae_config.scaling_factor)?;
        Ok(self.vae.decode(&scaled)?.squeeze(1)?)
    }

    pub fn unet(&self) -> &AudioLdm2UNet {
        &self.unet
    }
    pub fn vae(&self) -> &VaeDecoder {
        &self.vae
    }
    pub fn vocoder(&self) -> &HifiGan {
        &self.vocoder
    }
    pub fn clap(&self) -> &ClapTextModel {
        &self.clap
    }
    pub fn t5(&self) -> &T5Encoder {
        &self.t5
    }
    pub fn projection(&self) -> &ProjectionModel {
        &self.projection
    }
    pub fn language_model(&self) -> &Gpt2Model {
        &self.language_model
    }
    pub fn clap_tokenizer(&self) -> &TextTokenizer {
        &self.clap_tokenizer
    }
    pub fn t5_tokenizer(&self) -> &TextTokenizer {
        &self.t5_tokenizer
    }
}

/// Checks the parts of a request that do not depend on the model.
pub fn validate(request: &Request) -> Result<()> {
    if request.prompt.trim().is_empty() {
        return Err(FoleyError::InvalidRequest("the prompt is empty".into()));
    }
    if request.steps == 0 {
        return Err(FoleyError::InvalidRequest(
            "steps must be at least 1".into(),
        ));
    }
    if !request.guidance.is_finite() || request.guidance < 0.0 {
        return Err(FoleyError::InvalidRequest(format!(
            "guidance must be a finite number ≥ 0, got {}",
            request.guidance
        )));
    }
    if request.waveforms != 1 {
        return Err(FoleyError::Unsupported(
            "more than one waveform per prompt (CLAP ranking) is not available yet".into(),
        ));
    }
    Ok(())
}

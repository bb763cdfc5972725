//! diffusers' `AudioLDM2Pipeline`: CLAP + Flan-T5 → projection → GPT-2 → dual-context UNet
//! denoising → VAE → HiFi-GAN, reproducing its numerics step for step.

use std::path::Path;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};

use super::ranking::{LazyRanker, rank_clip};
use super::stages::{
    AudioDecoder, GPT2_UNUSED, Synthesis, T5_UNUSED, load_clap_text, load_unet, per_waveform,
    stage_seconds,
};
use super::{AudioLength, CancelFlag, Clip, Progress, Request, Task, Timings, validate};
use crate::engine::kernels;
use crate::engine::models::clap_text::ClapTextModel;
use crate::engine::models::gpt2::{Gpt2Config, Gpt2Model};
use crate::engine::models::projection::{ProjectionConfig, ProjectionModel};
use crate::engine::models::t5::{T5Config, T5Encoder};
use crate::engine::models::unet::{UNet2DConditionModel, UNetConditioning};
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
    unet: UNet2DConditionModel,
    decoder: AudioDecoder,
    scheduler_config: SchedulerConfig,
    /// CLAP audio branch for ranking several waveforms, loaded on first use.
    ranker: LazyRanker,
    device: Device,
    dtype: DType,
}

impl AudioLdm2Pipeline {
    /// Loads a diffusers-layout `AudioLDM2Pipeline` directory onto `device` in `dtype`.
    pub fn load(root: &Path, device: &Device, dtype: DType) -> Result<Self> {
        let index = ModelIndex::load(root)?;
        index.expect_class(root, &["AudioLDM2Pipeline"])?;
        Self::from_index(root, &index, device, dtype)
    }

    /// Loads the components once `model_index.json` has been read.
    pub(crate) fn from_index(
        root: &Path,
        index: &ModelIndex,
        device: &Device,
        dtype: DType,
    ) -> Result<Self> {
        if let Some(class) = index.component_class("text_encoder_2")
            && class != "T5EncoderModel"
        {
            return Err(FoleyError::Unsupported(format!(
                "text_encoder_2 of class {class} (only the T5 variants of AudioLDM 2 are supported)"
            )));
        }
        let component = |name: &str| Component::new(root, name);

        let (clap, _) = load_clap_text(root, dtype, device)?;

        let text_encoder_2 = component("text_encoder_2")?;
        let t5_config: T5Config = text_encoder_2.config()?;
        let t5 = text_encoder_2.build(dtype, device, T5_UNUSED, |vb| {
            T5Encoder::new(&t5_config, vb)
        })?;

        let projection_dir = component("projection_model")?;
        let projection_config: ProjectionConfig = projection_dir.config()?;
        let projection = projection_dir.build(dtype, device, &[], |vb| {
            ProjectionModel::new(&projection_config, vb)
        })?;

        let language_dir = component("language_model")?;
        let gpt2_config: Gpt2Config = language_dir.config()?;
        let language_model = language_dir.build(dtype, device, GPT2_UNUSED, |vb| {
            Gpt2Model::new(&gpt2_config, vb)
        })?;

        let unet = load_unet(root, dtype, device)?;
        let decoder = AudioDecoder::load(root, dtype, device)?;
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
            decoder,
            scheduler_config,
            ranker: LazyRanker::checked(root, dtype, device)?,
            device: device.clone(),
            dtype,
        })
    }

    pub fn sample_rate(&self) -> u32 {
        self.decoder.sample_rate()
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn scheduler_config(&self) -> &SchedulerConfig {
        &self.scheduler_config
    }

    /// The audio length a request maps to (diffusers' rounding; errors for bad durations).
    pub fn audio_length(&self, duration: Option<f64>) -> Result<AudioLength> {
        let sample_size = self.unet.config().sample_size.unwrap_or(256);
        self.decoder.audio_length(duration, sample_size)
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
                "the text \"{}\" is longer than the text encoders accept (CLAP {} tokens, T5 {}); its end was ignored",
                super::excerpt(text),
                self.clap_tokenizer.max_length,
                self.t5_tokenizer.max_length
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
        // f32 products whatever the mode: see `kernels::with_f32_products`.
        kernels::with_f32_products(|| {
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
        })
    }

    /// Runs the whole pipeline. `on_step` sees every finished step; `cancel` is checked
    /// between steps. Several waveforms come back best first, as diffusers ranks them.
    pub fn generate(
        &self,
        request: &Request,
        on_step: &mut dyn FnMut(&Progress),
        cancel: &CancelFlag,
    ) -> Result<Clip> {
        let clip = self.generate_unranked(request, on_step, cancel)?;
        if request.waveforms > 1 {
            return rank_clip(
                clip,
                &request.prompt,
                &self.clap_tokenizer,
                &self.clap,
                &self.ranker,
                &self.device,
            );
        }
        Ok(clip)
    }

    /// The waveforms in generation order, before any ranking.
    pub fn generate_unranked(
        &self,
        request: &Request,
        on_step: &mut dyn FnMut(&Progress),
        cancel: &CancelFlag,
    ) -> Result<Clip> {
        validate(request)?;
        if matches!(request.task, Task::Variation { .. }) {
            return Err(FoleyError::Unsupported(
                "variations of a sound need MusicLDM (or an AudioLDM checkpoint with a CLAP audio branch); \
                 AudioLDM 2 is conditioned through AudioMAE, which its Hub checkpoints do not include"
                    .into(),
            ));
        }
        let length = self.audio_length(request.effective_duration())?;
        let guidance = request.guidance > 1.0;
        let mut timings = Timings::default();

        let started = Instant::now();
        let embeddings = self.encode_prompt(
            &request.prompt,
            request.negative_prompt.as_deref(),
            guidance,
        )?;
        timings.text_encoding = stage_seconds(started, &self.device)?;
        if cancel.is_cancelled() {
            return Err(FoleyError::Cancelled);
        }

        let copies = request.waveforms;
        let text = per_waveform(&embeddings.text, guidance, copies)?.to_dtype(self.dtype)?;
        let text_mask = per_waveform(&embeddings.text_mask, guidance, copies)?;
        let generated =
            per_waveform(&embeddings.generated, guidance, copies)?.to_dtype(self.dtype)?;
        let conditioning = UNetConditioning {
            generated: Some(&generated),
            text: Some(&text),
            text_mask: Some(&text_mask),
            class_labels: None,
        };
        let synthesis = Synthesis {
            unet: &self.unet,
            decoder: &self.decoder,
            scheduler_config: &self.scheduler_config,
            device: &self.device,
        };
        synthesis.run(
            request,
            &length,
            conditioning,
            timings,
            embeddings.warnings,
            on_step,
            cancel,
        )
    }

    pub fn unet(&self) -> &UNet2DConditionModel {
        &self.unet
    }
    pub fn decoder(&self) -> &AudioDecoder {
        &self.decoder
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

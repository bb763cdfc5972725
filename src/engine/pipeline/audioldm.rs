//! diffusers' `AudioLDMPipeline` and `MusicLDMPipeline`: one CLAP text vector conditions the UNet
//! through its class embedding (there is no cross-attention context), then VAE and HiFi-GAN.
//! The two differ only in how the CLAP vector is obtained (`ClapTextModelWithProjection` plus
//! `F.normalize` vs `ClapModel.get_text_features`, the same numbers) and in their defaults.

use std::path::Path;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};

use super::ranking::{LazyRanker, rank_clip};
use super::stages::{
    AudioDecoder, Synthesis, load_clap_text, load_unet, per_waveform, stage_seconds,
};
use super::{
    AudioLength, CancelFlag, Clip, InputAudio, Progress, Request, Task, Timings, validate,
};
use crate::engine::kernels;
use crate::engine::models::clap_text::ClapTextModel;
use crate::engine::models::unet::{UNet2DConditionModel, UNetConditioning};
use crate::engine::schedulers::SchedulerConfig;
use crate::engine::text_tokenizer::TextTokenizer;
use crate::engine::weights::ModelIndex;
use crate::error::{FoleyError, Result};

/// Which of the two CLAP-conditioned pipelines a directory holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClapFamily {
    AudioLdm,
    MusicLdm,
}

impl ClapFamily {
    /// `num_inference_steps` and `guidance_scale` defaults of the diffusers `__call__`.
    pub fn defaults(self) -> (usize, f64) {
        match self {
            Self::AudioLdm => (10, 2.5),
            Self::MusicLdm => (200, 2.0),
        }
    }
}

pub struct AudioLdmPipeline {
    family: ClapFamily,
    tokenizer: TextTokenizer,
    clap: ClapTextModel,
    /// Width of the CLAP vector; diffusers pads the negative prompt to this many tokens.
    projection_dim: usize,
    unet: UNet2DConditionModel,
    decoder: AudioDecoder,
    scheduler_config: SchedulerConfig,
    /// CLAP audio branch for ranking several waveforms, loaded on first use.
    ranker: LazyRanker,
    device: Device,
    dtype: DType,
}

impl AudioLdmPipeline {
    /// Loads a diffusers-layout `AudioLDMPipeline` or `MusicLDMPipeline` directory.
    pub fn load(root: &Path, device: &Device, dtype: DType) -> Result<Self> {
        let index = ModelIndex::load(root)?;
        index.expect_class(root, &["AudioLDMPipeline", "MusicLDMPipeline"])?;
        Self::from_index(root, &index, device, dtype)
    }

    pub(crate) fn from_index(
        root: &Path,
        index: &ModelIndex,
        device: &Device,
        dtype: DType,
    ) -> Result<Self> {
        let family = if index.class_name == "MusicLDMPipeline" {
            ClapFamily::MusicLdm
        } else {
            ClapFamily::AudioLdm
        };
        let (clap, text_config) = load_clap_text(root, dtype, device)?;
        let projection_dim = text_config.projection_dim.unwrap_or(512);
        let unet = load_unet(root, dtype, device)?;
        if unet.config().class_embed_type.is_none() {
            return Err(FoleyError::BadConfig {
                path: root.join("unet/config.json"),
                reason: "the UNet has no class embedding for the CLAP vector".into(),
            });
        }
        Ok(Self {
            family,
            tokenizer: TextTokenizer::load(&root.join("tokenizer"), 512)?,
            clap,
            projection_dim,
            unet,
            decoder: AudioDecoder::load(root, dtype, device)?,
            scheduler_config: SchedulerConfig::load(&root.join("scheduler/scheduler_config.json"))?,
            ranker: LazyRanker::checked(root, dtype, device)?,
            device: device.clone(),
            dtype,
        })
    }

    pub fn family(&self) -> ClapFamily {
        self.family
    }

    pub fn sample_rate(&self) -> u32 {
        self.decoder.sample_rate()
    }

    pub fn scheduler_config(&self) -> &SchedulerConfig {
        &self.scheduler_config
    }

    pub fn audio_length(&self, duration: Option<f64>) -> Result<AudioLength> {
        let sample_size = self.unet.config().sample_size.unwrap_or(128);
        self.decoder.audio_length(duration, sample_size)
    }

    /// The normalised CLAP vector of one text, tokenised to `length` tokens.
    fn embed(&self, text: &str, length: usize, warnings: &mut Vec<String>) -> Result<Tensor> {
        // f32 products whatever the mode: see `kernels::with_f32_products`.
        kernels::with_f32_products(|| {
            let tokens = self.tokenizer.encode(text, Some(length))?;
            if tokens.truncated && length == self.tokenizer.max_length {
                warnings.push(format!(
                    "the text \"{}\" is longer than CLAP's {} tokens; its end was ignored",
                    super::excerpt(text),
                    self.tokenizer.max_length
                ));
            }
            Ok(self
                .clap
                .text_features(&[tokens.ids], &[tokens.mask], &self.device)?)
        })
    }

    /// `_encode_prompt`: (batch, projection_dim), `[negative; positive]` with guidance.
    pub fn encode_prompt(
        &self,
        prompt: &str,
        negative_prompt: Option<&str>,
        guidance: bool,
        warnings: &mut Vec<String>,
    ) -> Result<Tensor> {
        let positive = self.embed(prompt, self.tokenizer.max_length, warnings)?;
        self.with_negative(positive, negative_prompt, guidance)
    }

    /// `[negative; positive]` with guidance, the negative prompt's CLAP text vector padded to
    /// `prompt_embeds.shape[1]` (the CLAP width) as diffusers does; `positive` alone without.
    fn with_negative(
        &self,
        positive: Tensor,
        negative_prompt: Option<&str>,
        guidance: bool,
    ) -> Result<Tensor> {
        if !guidance {
            return Ok(positive);
        }
        let negative = self.embed(
            negative_prompt.unwrap_or(""),
            self.projection_dim,
            &mut Vec::new(),
        )?;
        Ok(Tensor::cat(
            &[&negative, &positive.to_dtype(negative.dtype())?],
            0,
        )?)
    }

    /// A variation's conditioning (editing.md §3.4): the sound's CLAP audio embedding takes the
    /// place of the prompt's text embedding, as `pipe(prompt_embeds=audio_embeds)` does; the
    /// negative side stays text. Needs the checkpoint's CLAP audio branch (MusicLDM has it; the
    /// Hub's AudioLDM checkpoints ship only the text branch).
    pub fn encode_variation(
        &self,
        input: &InputAudio,
        negative_prompt: Option<&str>,
        guidance: bool,
    ) -> Result<Tensor> {
        let ranker = self.ranker.get().map_err(|error| {
            FoleyError::Unsupported(format!(
                "variations need a CLAP audio branch, and this {} checkpoint has none ({error})",
                match self.family {
                    ClapFamily::AudioLdm => "AudioLDM",
                    ClapFamily::MusicLdm => "MusicLDM",
                }
            ))
        })?;
        if input.frames() == 0 || input.sample_rate == 0 {
            return Err(FoleyError::InvalidRequest(format!(
                "{}: the audio is empty",
                input.name
            )));
        }
        if input
            .channels
            .iter()
            .flatten()
            .any(|sample| !sample.is_finite())
        {
            return Err(FoleyError::InvalidRequest(format!(
                "{}: the audio contains NaN or infinite samples",
                input.name
            )));
        }
        let positive = ranker.audio_embeds(&input.mono(), input.sample_rate, &self.device)?;
        self.with_negative(positive, negative_prompt, guidance)
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
        // A variation has no text to rank against; its waveforms stay in generation order.
        let variation = matches!(request.task, Task::Variation { .. });
        if self.family == ClapFamily::MusicLdm && request.waveforms > 1 && !variation {
            return rank_clip(
                clip,
                &request.prompt,
                &self.tokenizer,
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
        let length = self.audio_length(request.effective_duration())?;
        let mut timings = Timings::default();
        let mut warnings = Vec::new();

        let started = Instant::now();
        let guided = request.guidance > 1.0;
        let embeddings = match &request.task {
            Task::Variation { input } => {
                self.encode_variation(input, request.negative_prompt.as_deref(), guided)?
            }
            _ => self.encode_prompt(
                &request.prompt,
                request.negative_prompt.as_deref(),
                guided,
                &mut warnings,
            )?,
        };
        let class_labels =
            per_waveform(&embeddings, guided, request.waveforms)?.to_dtype(self.dtype)?;
        timings.text_encoding = stage_seconds(started, &self.device)?;
        if cancel.is_cancelled() {
            return Err(FoleyError::Cancelled);
        }

        let conditioning = UNetConditioning {
            class_labels: Some(&class_labels),
            ..Default::default()
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
            warnings,
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
    pub fn tokenizer(&self) -> &TextTokenizer {
        &self.tokenizer
    }
}

//! `AudioLDM2ProjectionModel`: projects CLAP and T5 outputs to the GPT-2 width and frames each
//! with learned start/end embeddings.

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::VarBuilder;

use crate::engine::models::layers::Linear;
use serde::Deserialize;

use super::layers::linear;

#[derive(Debug, Clone, Deserialize)]
pub struct ProjectionConfig {
    pub text_encoder_dim: usize,
    pub text_encoder_1_dim: usize,
    /// Misspelled in diffusers' config; both spellings are accepted.
    #[serde(alias = "langauge_model_dim")]
    pub language_model_dim: usize,
    #[serde(default)]
    pub use_learned_position_embedding: Option<bool>,
}

#[derive(Debug)]
pub struct ProjectionModel {
    projection: Linear,
    projection_1: Linear,
    sos: Tensor,
    eos: Tensor,
    sos_1: Tensor,
    eos_1: Tensor,
}

impl ProjectionModel {
    pub fn new(config: &ProjectionConfig, vb: VarBuilder) -> Result<Self> {
        if config.use_learned_position_embedding == Some(true) {
            candle_core::bail!("learned position embeddings (the TTS variant) are not supported");
        }
        let width = config.language_model_dim;
        Ok(Self {
            projection: linear(config.text_encoder_dim, width, vb.pp("projection"))?,
            projection_1: linear(config.text_encoder_1_dim, width, vb.pp("projection_1"))?,
            sos: vb.get(width, "sos_embed")?,
            eos: vb.get(width, "eos_embed")?,
            sos_1: vb.get(width, "sos_embed_1")?,
            eos_1: vb.get(width, "eos_embed_1")?,
        })
    }

    /// `clap`: (batch, 1, clap_dim) with an all-ones mask; `t5`: (batch, tokens, t5_dim) with
    /// `t5_mask` (batch, tokens). Returns the joined sequence and its mask (as u32).
    pub fn forward(
        &self,
        clap: &Tensor,
        t5: &Tensor,
        t5_mask: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        let batch = clap.dim(0)?;
        let clap_mask = Tensor::ones((batch, clap.dim(1)?), DType::U32, clap.device())?;
        let (first, first_mask) = frame(
            &self.projection.forward(clap)?,
            &clap_mask,
            &self.sos,
            &self.eos,
        )?;
        let (second, second_mask) = frame(
            &self.projection_1.forward(t5)?,
            &t5_mask.to_dtype(DType::U32)?,
            &self.sos_1,
            &self.eos_1,
        )?;
        Ok((
            Tensor::cat(&[&first, &second], 1)?,
            Tensor::cat(&[&first_mask, &second_mask], 1)?,
        ))
    }
}

/// diffusers' `add_special_tokens`: `[sos; xs; eos]` with mask `[1; mask; 1]`.
fn frame(xs: &Tensor, mask: &Tensor, sos: &Tensor, eos: &Tensor) -> Result<(Tensor, Tensor)> {
    let (batch, _, width) = xs.dims3()?;
    let sos = sos
        .reshape((1, 1, width))?
        .broadcast_as((batch, 1, width))?;
    let eos = eos
        .reshape((1, 1, width))?
        .broadcast_as((batch, 1, width))?;
    let ones = Tensor::ones((batch, 1), mask.dtype(), mask.device())?;
    Ok((
        Tensor::cat(&[&sos, xs, &eos], 1)?,
        Tensor::cat(&[&ones, mask, &ones], 1)?,
    ))
}

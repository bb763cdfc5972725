//! diffusers' `StableAudio3DurationEmbedder`: seconds → normalised to [0, 1] → log-spaced
//! Fourier features (the stored `freqs` buffer) → one linear layer.

use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::VarBuilder;
use serde::Deserialize;

use super::layers::linear;
use super::stable_audio3_dit::fourier_features;
use crate::engine::limits::{Limits, Validated};
use crate::engine::models::layers::Linear;

fn default_output_dim() -> usize {
    768
}
fn default_fourier_dim() -> usize {
    256
}
fn default_max_val() -> f64 {
    384.0
}

#[derive(Debug, Clone, Deserialize)]
pub struct DurationEmbedderConfig {
    #[serde(default = "default_output_dim")]
    pub output_dim: usize,
    #[serde(default = "default_fourier_dim")]
    pub fourier_dim: usize,
    #[serde(default)]
    pub min_val: f64,
    #[serde(default = "default_max_val")]
    pub max_val: f64,
}

impl Validated for DurationEmbedderConfig {
    fn validate(&self) -> std::result::Result<(), String> {
        let mut limits = Limits::new();
        limits
            .dimension("output_dim", self.output_dim)
            .dimension("fourier_dim", self.fourier_dim)
            .splits("fourier_dim", self.fourier_dim, "2 (cos and sin)", 2);
        if !(self.min_val.is_finite() && self.max_val.is_finite() && self.max_val > self.min_val) {
            limits.problem(format!(
                "min_val {} and max_val {} do not make a range",
                self.min_val, self.max_val
            ));
        }
        limits.finish()
    }
}

#[derive(Debug)]
pub struct StableAudio3DurationEmbedder {
    freqs: Vec<f32>,
    linear: Linear,
    config: DurationEmbedderConfig,
}

impl StableAudio3DurationEmbedder {
    pub fn new(config: &DurationEmbedderConfig, vb: VarBuilder) -> Result<Self> {
        let freqs = vb
            .get(config.fourier_dim / 2, "freqs")?
            .to_dtype(DType::F32)?
            .to_vec1()?;
        Ok(Self {
            freqs,
            linear: linear(config.fourier_dim, config.output_dim, vb.pp("linear"))?,
            config: config.clone(),
        })
    }

    pub fn output_dim(&self) -> usize {
        self.config.output_dim
    }

    /// (batch, output_dim) embeddings of durations in seconds, clamped to the trained range.
    pub fn forward(&self, seconds: &[f64], device: &Device) -> Result<Tensor> {
        let (low, high) = (self.config.min_val as f32, self.config.max_val as f32);
        // Python subtracts the bounds in f64 before the f32 tensor divides by the result.
        let span = (self.config.max_val - self.config.min_val) as f32;
        let normalised: Vec<f32> = seconds
            .iter()
            .map(|&value| ((value as f32).clamp(low, high) - low) / span)
            .collect();
        let features = Tensor::from_vec(
            fourier_features(&normalised, &self.freqs),
            (seconds.len(), self.freqs.len() * 2),
            device,
        )?
        .to_dtype(self.linear.weight().dtype())?;
        self.linear.forward(&features)
    }
}

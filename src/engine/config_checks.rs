//! The limits each model config must meet before anything is built from it (see `limits`):
//! what turned zero heads into divisions by zero and a 10⁹ `spec_size` into a capacity overflow.

use super::dsp::MAX_SAMPLE_RATE;
use super::dsp::clap_features::ClapFeatureExtractorConfig;
use super::limits::{Limits, MAX_LAYERS, Validated};
use super::models::clap_audio::{ClapAudioConfig, ClapModelAudioConfig};
use super::models::clap_text::{ClapConfig, ClapTextConfig};
use super::models::gpt2::Gpt2Config;
use super::models::hifigan::HifiGanConfig;
use super::models::projection::ProjectionConfig;
use super::models::t5::T5Config;
use super::models::unet::UNetConfig;
use super::models::vae::VaeConfig;

/// Longest token sequence a position table may hold.
const MAX_POSITIONS: usize = 1 << 16;
/// Most levels of a UNet or VAE (each halves the resolution).
const MAX_LEVELS: usize = 8;

/// Each level's width: a dimension that group norm can split into `groups`.
fn block_channels(limits: &mut Limits, channels: &[usize], groups: usize) {
    for &width in channels {
        limits.dimension("block_out_channels", width).splits(
            "block_out_channels",
            width,
            "norm_num_groups",
            groups,
        );
    }
}

fn epsilon(limits: &mut Limits, field: &str, value: f64) {
    limits.number(field, value, 0.0, 1.0);
}

impl Validated for UNetConfig {
    fn validate(&self) -> Result<(), String> {
        let mut limits = Limits::new();
        let blocks = self.block_out_channels.len();
        limits
            .size("block_out_channels (count)", blocks, MAX_LEVELS)
            .dimension("in_channels", self.in_channels)
            .dimension("out_channels", self.out_channels)
            .size("norm_num_groups", self.norm_num_groups, 1024)
            .size(
                "downsample_padding + 1",
                self.downsample_padding.saturating_add(1),
                17,
            )
            .number(
                "|freq_shift|",
                self.freq_shift.abs() + f64::MIN_POSITIVE,
                0.0,
                1e6,
            );
        epsilon(&mut limits, "norm_eps", self.norm_eps);
        block_channels(&mut limits, &self.block_out_channels, self.norm_num_groups);
        if let Some(rows) = self.sample_size {
            limits.size("sample_size", rows, MAX_POSITIONS);
        }
        if let Some(width) = self.projection_class_embeddings_input_dim {
            limits.dimension("projection_class_embeddings_input_dim", width);
        }
        let per_block =
            |name: &str, values: Result<Vec<usize>, String>, limits: &mut Limits, max: usize| {
                match values {
                    Ok(values) => values.iter().for_each(|value| {
                        limits.size(name, *value, max);
                    }),
                    Err(reason) => {
                        limits.problem(format!("{name}: {reason}"));
                    }
                }
            };
        per_block(
            "layers_per_block",
            self.layers_per_block.resolve(blocks),
            &mut limits,
            64,
        );
        per_block(
            "transformer_layers_per_block",
            self.transformer_layers_per_block.resolve(blocks),
            &mut limits,
            64,
        );
        per_block(
            "attention_head_dim",
            self.attention_head_dim.resolve(blocks),
            &mut limits,
            1024,
        );
        if let Some(heads) = &self.num_attention_heads {
            per_block(
                "num_attention_heads",
                heads.resolve(blocks),
                &mut limits,
                1024,
            );
        }
        match self.cross_attention_dim.resolve(blocks) {
            Ok(dims) => dims
                .iter()
                .flat_map(|dims| dims.per_transformer())
                .flatten()
                .for_each(|dim| {
                    limits.dimension("cross_attention_dim", dim);
                }),
            Err(reason) => {
                limits.problem(format!("cross_attention_dim: {reason}"));
            }
        }
        limits.finish()
    }
}

impl Validated for VaeConfig {
    fn validate(&self) -> Result<(), String> {
        let mut limits = Limits::new();
        limits
            .size(
                "block_out_channels (count)",
                self.block_out_channels.len(),
                MAX_LEVELS,
            )
            .dimension("in_channels", self.in_channels)
            .dimension("out_channels", self.out_channels)
            .dimension("latent_channels", self.latent_channels)
            .size("layers_per_block", self.layers_per_block, 64)
            .size("norm_num_groups", self.norm_num_groups, 1024)
            // Decoding divides by it; 0 or a non-number gives NaN audio.
            .number("scaling_factor", self.scaling_factor.abs(), 0.0, 1e6);
        block_channels(&mut limits, &self.block_out_channels, self.norm_num_groups);
        limits.finish()
    }
}

impl Validated for HifiGanConfig {
    fn validate(&self) -> Result<(), String> {
        let mut limits = Limits::new();
        let stages = self.upsample_rates.len();
        limits
            .dimension("model_in_dim", self.model_in_dim)
            .size(
                "sampling_rate",
                self.sampling_rate as usize,
                MAX_SAMPLE_RATE as usize,
            )
            .size("upsample_rates (count)", stages, 16)
            .dimension("upsample_initial_channel", self.upsample_initial_channel)
            .product("upsample_rates (product)", &self.upsample_rates, 100_000)
            .number(
                "leaky_relu_slope",
                self.leaky_relu_slope.abs() + f64::MIN_POSITIVE,
                0.0,
                1e3,
            );
        for &rate in &self.upsample_rates {
            limits.size("upsample_rates", rate, 1024);
        }
        if self.upsample_kernel_sizes.len() != stages {
            limits.problem("upsample_kernel_sizes and upsample_rates differ in length".into());
        }
        for &kernel in self
            .upsample_kernel_sizes
            .iter()
            .chain(&self.resblock_kernel_sizes)
        {
            limits.size("kernel size", kernel, 1024);
        }
        if self.resblock_kernel_sizes.is_empty()
            || self.resblock_kernel_sizes.len() != self.resblock_dilation_sizes.len()
        {
            limits.problem("resblock_kernel_sizes and resblock_dilation_sizes must be non-empty and equally long".into());
        }
        for &dilation in self.resblock_dilation_sizes.iter().flatten() {
            limits.size("resblock_dilation_sizes", dilation, 1024);
        }
        // Each stage halves the channels.
        if stages < usize::BITS as usize && self.upsample_initial_channel >> stages == 0 {
            limits.problem(format!(
                "upsample_initial_channel {} halves to nothing over {stages} stages",
                self.upsample_initial_channel
            ));
        }
        limits.finish()
    }
}

fn check_clap_text(text: &ClapTextConfig, limits: &mut Limits) {
    limits
        .dimension("vocab_size", text.vocab_size)
        .dimension("hidden_size", text.hidden_size)
        .size("num_hidden_layers", text.num_hidden_layers, MAX_LAYERS)
        .size("num_attention_heads", text.num_attention_heads, 1024)
        .splits(
            "hidden_size",
            text.hidden_size,
            "num_attention_heads",
            text.num_attention_heads,
        )
        .dimension("intermediate_size", text.intermediate_size)
        .size(
            "max_position_embeddings",
            text.max_position_embeddings,
            MAX_POSITIONS,
        );
    epsilon(limits, "layer_norm_eps", text.layer_norm_eps);
    // Ids and RoBERTa's position ids (pad + 1 + i) index the embedding tables.
    let pad = text.pad_token_id as usize;
    if pad >= text.vocab_size || pad >= text.max_position_embeddings {
        limits.problem(format!(
            "pad_token_id {pad} is not below vocab_size {} and max_position_embeddings {}",
            text.vocab_size, text.max_position_embeddings
        ));
    }
    if let Some(types) = text.type_vocab_size {
        limits.size("type_vocab_size", types, 1024);
    }
    if let Some(width) = text.projection_dim {
        limits.dimension("projection_dim", width);
    }
}

impl Validated for ClapConfig {
    fn validate(&self) -> Result<(), String> {
        let mut limits = Limits::new();
        match self.text() {
            Ok(text) => check_clap_text(&text, &mut limits),
            Err(reason) => {
                limits.problem(reason);
            }
        }
        limits.finish()
    }
}

impl Validated for ClapAudioConfig {
    fn validate(&self) -> Result<(), String> {
        let mut limits = Limits::new();
        let stages = self.depths.len();
        limits
            .size("window_size", self.window_size, 64)
            .dimension("num_mel_bins", self.num_mel_bins)
            .size("spec_size", self.spec_size, 4096)
            .dimension("hidden_size", self.hidden_size)
            .dimension("patch_embeds_hidden_size", self.patch_embeds_hidden_size)
            .size(
                "patch_embed_input_channels",
                self.patch_embed_input_channels,
                16,
            )
            .size("depths (count)", stages, MAX_LEVELS)
            .number("mlp_ratio", self.mlp_ratio, 0.0, 64.0);
        epsilon(&mut limits, "layer_norm_eps", self.layer_norm_eps);
        for (field, sizes) in [
            ("patch_size", self.patch_size.values()),
            ("patch_stride", self.patch_stride.values()),
        ] {
            if sizes.is_empty() || sizes.len() > 2 {
                limits.problem(format!("{field} must be one size or a pair"));
            }
            for size in sizes {
                limits.size(field, size, 1024);
            }
        }
        for &depth in &self.depths {
            limits.size("depths", depth, 64);
        }
        if self.num_attention_heads.len() != stages {
            limits.problem("num_attention_heads and depths differ in length".into());
        }
        for &heads in &self.num_attention_heads {
            limits.size("num_attention_heads", heads, 1024);
        }
        limits.finish()
    }
}

impl Validated for ClapModelAudioConfig {
    fn validate(&self) -> Result<(), String> {
        let mut limits = Limits::new();
        limits.dimension("projection_dim", self.projection_dim);
        limits.finish()?;
        match &self.audio_config {
            Some(_) => self.audio().validate(),
            None => Ok(()),
        }
    }
}

impl Validated for Gpt2Config {
    fn validate(&self) -> Result<(), String> {
        let mut limits = Limits::new();
        limits
            .dimension("n_embd", self.n_embd)
            .size("n_head", self.n_head, 1024)
            .splits("n_embd", self.n_embd, "n_head", self.n_head)
            .size("n_layer", self.n_layer, MAX_LAYERS)
            .size("n_positions", self.n_positions, MAX_POSITIONS)
            .size(
                "max_new_tokens",
                self.max_new_tokens,
                self.n_positions.max(1),
            );
        if let Some(inner) = self.n_inner {
            limits.dimension("n_inner", inner);
        }
        epsilon(&mut limits, "layer_norm_epsilon", self.layer_norm_epsilon);
        limits.finish()
    }
}

impl Validated for T5Config {
    fn validate(&self) -> Result<(), String> {
        let mut limits = Limits::new();
        limits
            .dimension("vocab_size", self.vocab_size)
            .dimension("d_model", self.d_model)
            .dimension("d_kv", self.d_kv)
            .dimension("d_ff", self.d_ff)
            .size("num_layers", self.num_layers, MAX_LAYERS)
            .size("num_heads", self.num_heads, 1024)
            .size(
                "relative_attention_num_buckets",
                self.relative_attention_num_buckets,
                4096,
            )
            .size(
                "relative_attention_max_distance",
                self.relative_attention_max_distance,
                MAX_POSITIONS,
            );
        epsilon(&mut limits, "layer_norm_epsilon", self.layer_norm_epsilon);
        limits.finish()
    }
}

impl Validated for ProjectionConfig {
    fn validate(&self) -> Result<(), String> {
        Limits::new()
            .dimension("text_encoder_dim", self.text_encoder_dim)
            .dimension("language_model_dim", self.language_model_dim)
            .finish()
    }
}

impl Validated for ClapFeatureExtractorConfig {
    fn validate(&self) -> Result<(), String> {
        let mut limits = Limits::new();
        limits
            .size("feature_size", self.feature_size, 1024)
            .size(
                "sampling_rate",
                self.sampling_rate as usize,
                MAX_SAMPLE_RATE as usize,
            )
            .size("hop_length", self.hop_length, 1 << 20)
            .size("fft_window_size", self.fft_window_size, 1 << 16)
            .number("max_length_s", self.max_length_s, 0.0, 600.0);
        let (low, high) = (self.frequency_min, self.frequency_max);
        if !low.is_finite() || !high.is_finite() || low < 0.0 || low >= high {
            limits.problem(format!(
                "frequency_min {low} and frequency_max {high} must satisfy 0 ≤ min < max"
            ));
        }
        limits.finish()
    }
}

//! diffusers' `AutoencoderSAME`, Stable Audio 3's autoencoder: stereo audio is cut into patches,
//! then transformer resampling blocks (TRB) trade time for learned tokens under a band mask.
//! Everything runs in token layout (batch, tokens, channels); the 1×1 weight-norm convolutions
//! become linear layers on that layout.

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::VarBuilder;
use serde::Deserialize;

use super::differential_attention::{
    DynamicTanh, FusedSelfAttention, Gate, GatedFeedForward, KeyRange, QkNorm, RotaryTables,
    default_inv_freq,
};
use super::layers::linear;
use crate::engine::dsp::MAX_SAMPLE_RATE;
use crate::engine::limits::{Limits, MAX_DIMENSION, MAX_LAYERS, Validated};
use crate::engine::models::layers::Linear;

fn default_two() -> usize {
    2
}
fn default_patch() -> usize {
    256
}
fn default_channels() -> usize {
    128
}
fn default_c_mults() -> Vec<usize> {
    vec![6]
}
fn default_strides() -> Vec<usize> {
    vec![16]
}
fn default_depths() -> Vec<usize> {
    vec![6]
}
fn default_latent() -> usize {
    256
}
fn default_true() -> bool {
    true
}
fn default_heads() -> usize {
    64
}
fn default_ff_mult() -> f64 {
    3.0
}
fn default_one() -> usize {
    1
}
fn default_sinusoidal() -> Vec<usize> {
    vec![0]
}
fn default_rate() -> u32 {
    44100
}

#[derive(Debug, Clone, Deserialize)]
pub struct AutoencoderSameConfig {
    #[serde(default = "default_two")]
    pub audio_channels: usize,
    #[serde(default = "default_patch")]
    pub patch_size: usize,
    #[serde(default = "default_channels")]
    pub encoder_channels: usize,
    #[serde(default = "default_c_mults")]
    pub encoder_c_mults: Vec<usize>,
    #[serde(default = "default_strides")]
    pub encoder_strides: Vec<usize>,
    #[serde(default = "default_depths")]
    pub encoder_transformer_depths: Vec<usize>,
    #[serde(default = "default_latent")]
    pub latent_dim: usize,
    #[serde(default = "default_true")]
    pub use_differential_attention: bool,
    #[serde(default = "default_heads")]
    pub dim_heads: usize,
    #[serde(default = "default_ff_mult")]
    pub ff_mult: f64,
    #[serde(default = "default_one")]
    pub sliding_window: usize,
    #[serde(default = "default_sinusoidal")]
    pub encoder_sinusoidal_blocks: Vec<usize>,
    #[serde(default = "default_sinusoidal")]
    pub decoder_sinusoidal_blocks: Vec<usize>,
    #[serde(default = "default_rate")]
    pub sampling_rate: u32,
}

impl AutoencoderSameConfig {
    /// Audio samples per latent frame: `patch_size · ∏ strides`.
    pub fn downsampling_ratio(&self) -> usize {
        self.patch_size * self.encoder_strides.iter().product::<usize>()
    }

    /// Channel widths `[audio·patch, c_mult·channels, …]` (saturating: `validate` refuses the
    /// sizes that would overflow before anything is built from them).
    fn widths(&self) -> Vec<usize> {
        std::iter::once(self.audio_channels.saturating_mul(self.patch_size))
            .chain(
                self.encoder_c_mults
                    .iter()
                    .map(|mult| mult.saturating_mul(self.encoder_channels)),
            )
            .collect()
    }

    /// A per-level list given once for all levels is broadcast, as diffusers does.
    fn per_level(values: &[usize], levels: usize) -> Vec<usize> {
        if values.len() == 1 {
            vec![values[0]; levels]
        } else {
            values.to_vec()
        }
    }
}

impl Validated for AutoencoderSameConfig {
    fn validate(&self) -> std::result::Result<(), String> {
        let mut limits = Limits::new();
        let levels = self.encoder_strides.len();
        limits
            .size("audio_channels", self.audio_channels, 2)
            .size("patch_size", self.patch_size, 1 << 14)
            .dimension("encoder_channels", self.encoder_channels)
            .size("encoder_strides (count)", levels, 8)
            .dimension("latent_dim", self.latent_dim)
            .size("dim_heads", self.dim_heads, 4096)
            .number("ff_mult", self.ff_mult, 0.0, 64.0)
            .size("sliding_window", self.sliding_window, 1024)
            .size(
                "sampling_rate",
                self.sampling_rate as usize,
                MAX_SAMPLE_RATE as usize,
            );
        let mut ratio = vec![self.patch_size];
        ratio.extend(&self.encoder_strides);
        limits.product("patch_size × strides", &ratio, 1 << 20);
        for (field, values) in [
            ("encoder_c_mults", &self.encoder_c_mults),
            (
                "encoder_transformer_depths",
                &self.encoder_transformer_depths,
            ),
        ] {
            if values.len() != levels {
                limits.problem(format!(
                    "{field} has {} entries for {levels} encoder_strides",
                    values.len()
                ));
            }
        }
        for (field, values) in [
            ("encoder_sinusoidal_blocks", &self.encoder_sinusoidal_blocks),
            ("decoder_sinusoidal_blocks", &self.decoder_sinusoidal_blocks),
        ] {
            if values.len() != 1 && values.len() != levels {
                limits.problem(format!(
                    "{field} must have 1 or {levels} entries, has {}",
                    values.len()
                ));
            }
        }
        for &stride in &self.encoder_strides {
            limits.size("encoder_strides", stride, 1024);
        }
        for &mult in &self.encoder_c_mults {
            limits.product(
                "encoder_c_mults × encoder_channels",
                &[mult, self.encoder_channels],
                MAX_DIMENSION,
            );
        }
        limits.product(
            "audio_channels × patch_size",
            &[self.audio_channels, self.patch_size],
            MAX_DIMENSION,
        );
        for &depth in &self.encoder_transformer_depths {
            limits.size("encoder_transformer_depths", depth, MAX_LAYERS);
        }
        for width in self.widths() {
            limits.dimension("TRB width", width.min(MAX_DIMENSION + 1));
            let heads = self.dim_heads.min(width);
            if heads > 0 {
                limits.splits("TRB width", width, "dim_heads", heads);
            }
        }
        limits.finish()
    }
}

/// A weight-normalised 1×1 convolution (`weight_g`, `weight_v`, `bias`) as a linear layer:
/// `w = v · (g / ‖v‖)` with the norm over each output channel's inputs.
fn weight_norm_linear(input: usize, output: usize, vb: VarBuilder) -> Result<Linear> {
    let direction = vb.get((output, input, 1), "weight_v")?;
    let magnitude = vb.get((output, 1, 1), "weight_g")?;
    let dtype = direction.dtype();
    let direction = direction.to_dtype(DType::F32)?;
    let norm = direction.sqr()?.sum_keepdim((1, 2))?.sqrt()?;
    let weight = direction
        .broadcast_mul(&magnitude.to_dtype(DType::F32)?.broadcast_div(&norm)?)?
        .squeeze(2)?
        .to_dtype(dtype)?;
    Ok(Linear::new(weight, Some(vb.get(output, "bias")?)))
}

#[derive(Debug, Clone)]
struct TransformerBlock {
    norm_attn: DynamicTanh,
    attn: FusedSelfAttention,
    norm_ff: DynamicTanh,
    ff: GatedFeedForward,
}

impl TransformerBlock {
    fn new(
        dim: usize,
        head_dim: usize,
        config: &AutoencoderSameConfig,
        sinusoidal: bool,
        vb: VarBuilder,
    ) -> Result<Self> {
        let attn = vb.pp("attn");
        let inner = (dim as f64 * config.ff_mult) as usize;
        Ok(Self {
            norm_attn: DynamicTanh::new(dim, vb.pp("norm_attn"))?,
            attn: FusedSelfAttention::new(
                dim,
                head_dim,
                config.use_differential_attention,
                (
                    QkNorm::DynamicTanh(DynamicTanh::new(head_dim, attn.pp("q_norm"))?),
                    QkNorm::DynamicTanh(DynamicTanh::new(head_dim, attn.pp("k_norm"))?),
                ),
                attn,
            )?,
            norm_ff: DynamicTanh::new(dim, vb.pp("norm_ff"))?,
            ff: GatedFeedForward::new(
                dim,
                inner,
                if sinusoidal { Gate::Sine } else { Gate::Silu },
                vb.pp("ff"),
            )?,
        })
    }

    fn forward(&self, xs: &Tensor, rotary: &RotaryTables, range: KeyRange) -> Result<Tensor> {
        let xs = (xs
            + self
                .attn
                .forward(&self.norm_attn.forward(xs)?, rotary, range)?)?;
        &xs + self.ff.forward(&self.norm_ff.forward(&xs)?)?
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Encoder,
    Decoder,
}

/// `SAMETransformerResamplingBlock`: groups of `stride` frames share a segment with learned
/// tokens; the encoder keeps one token per segment, the decoder `stride`.
#[derive(Debug, Clone)]
struct ResamplingBlock {
    mapping: Option<Linear>,
    transformers: Vec<TransformerBlock>,
    new_tokens: Tensor,
    inv_freq: Vec<f32>,
    stride: usize,
    sliding_window: usize,
    width: usize,
    mode: Mode,
}

impl ResamplingBlock {
    fn new(
        input: usize,
        output: usize,
        level: (usize, usize, usize),
        mode: Mode,
        config: &AutoencoderSameConfig,
        vb: VarBuilder,
    ) -> Result<Self> {
        let (stride, depth, sinusoidal_blocks) = level;
        let width = if mode == Mode::Encoder { output } else { input };
        let head_dim = config.dim_heads.min(width);
        let transformers = (0..depth)
            .map(|index| {
                TransformerBlock::new(
                    width,
                    head_dim,
                    config,
                    depth - index < sinusoidal_blocks,
                    vb.pp(format!("transformers.{index}")),
                )
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            mapping: (input != output)
                .then(|| weight_norm_linear(input, output, vb.pp("mapping")))
                .transpose()?,
            transformers,
            new_tokens: vb.get((1, 1, width), "new_tokens")?,
            inv_freq: default_inv_freq(head_dim / 2, 10000.0),
            stride,
            sliding_window: config.sliding_window,
            width,
            mode,
        })
    }

    fn map(&self, xs: &Tensor) -> Result<Tensor> {
        match &self.mapping {
            Some(mapping) => mapping.forward(xs),
            None => Ok(xs.clone()),
        }
    }

    fn transform(&self, xs: &Tensor) -> Result<Tensor> {
        let segment = self.stride + 1;
        let rotary = RotaryTables::new(&self.inv_freq, xs.dim(1)?, xs.device())?;
        let range = KeyRange::Band {
            half_width: self.sliding_window * segment,
        };
        self.transformers
            .iter()
            .try_fold(xs.clone(), |hidden, layer| {
                layer.forward(&hidden, &rotary, range)
            })
    }

    /// (batch, frames, input) tokens → (batch, frames', output) tokens.
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let (batch, frames, channels) = xs.dims3()?;
        let stride = self.stride;
        let segment = stride + 1;
        let width = self.width;
        match self.mode {
            Mode::Encoder => {
                let padded = frames.div_ceil(stride) * stride;
                let xs = if padded > frames {
                    let zeros =
                        Tensor::zeros((batch, padded - frames, channels), xs.dtype(), xs.device())?;
                    Tensor::cat(&[xs, &zeros], 1)?
                } else {
                    xs.clone()
                };
                let xs = self.map(&xs)?;
                let groups = padded / stride;
                let grouped = xs.reshape((batch * groups, stride, width))?;
                let new = self.new_tokens.broadcast_as((batch * groups, 1, width))?;
                let sequence =
                    Tensor::cat(&[&grouped, &new], 1)?.reshape((batch, groups * segment, width))?;
                let transformed = self.transform(&sequence)?;
                transformed
                    .reshape((batch * groups, segment, width))?
                    .narrow(1, stride, 1)?
                    .reshape((batch, groups, width))?
                    .narrow(1, 0, frames.div_ceil(stride))
            }
            Mode::Decoder => {
                let seeds = xs.reshape((batch * frames, 1, width))?;
                let new = self
                    .new_tokens
                    .broadcast_as((batch * frames, stride, width))?;
                let sequence =
                    Tensor::cat(&[&seeds, &new], 1)?.reshape((batch, frames * segment, width))?;
                let transformed = self.transform(&sequence)?;
                let kept = transformed
                    .reshape((batch * frames, segment, width))?
                    .narrow(1, 1, stride)?
                    .reshape((batch, frames * stride, width))?;
                self.map(&kept)
            }
        }
    }
}

#[derive(Debug)]
pub struct AutoencoderSame {
    encoder_blocks: Vec<ResamplingBlock>,
    encoder_proj: Linear,
    decoder_proj: Linear,
    decoder_blocks: Vec<ResamplingBlock>,
    bottleneck_scale: Tensor,
    bottleneck_bias: Tensor,
    running_std: Tensor,
    config: AutoencoderSameConfig,
}

impl AutoencoderSame {
    pub fn new(config: &AutoencoderSameConfig, vb: VarBuilder) -> Result<Self> {
        let widths = config.widths();
        let levels = config.encoder_strides.len();
        let encoder_sin =
            AutoencoderSameConfig::per_level(&config.encoder_sinusoidal_blocks, levels);
        let decoder_sin =
            AutoencoderSameConfig::per_level(&config.decoder_sinusoidal_blocks, levels);
        let level = |index: usize, sinusoidal: &[usize]| {
            (
                config.encoder_strides[index],
                config.encoder_transformer_depths[index],
                sinusoidal[index],
            )
        };
        let encoder_blocks = (0..levels)
            .map(|index| {
                ResamplingBlock::new(
                    widths[index],
                    widths[index + 1],
                    level(index, &encoder_sin),
                    Mode::Encoder,
                    config,
                    vb.pp(format!("encoder.blocks.{index}")),
                )
            })
            .collect::<Result<_>>()?;
        // The decoder's blocks run the levels in reverse; block k mirrors level levels−1−k.
        let decoder_blocks = (0..levels)
            .rev()
            .enumerate()
            .map(|(position, index)| {
                ResamplingBlock::new(
                    widths[index + 1],
                    widths[index],
                    level(index, &decoder_sin),
                    Mode::Decoder,
                    config,
                    vb.pp(format!("decoder.blocks.{position}")),
                )
            })
            .collect::<Result<_>>()?;
        let top = widths[levels];
        Ok(Self {
            encoder_blocks,
            encoder_proj: linear(top, config.latent_dim, vb.pp("encoder.proj"))?,
            decoder_proj: linear(config.latent_dim, top, vb.pp("decoder.proj"))?,
            decoder_blocks,
            bottleneck_scale: vb.get((1, config.latent_dim, 1), "bottleneck.scale")?,
            bottleneck_bias: vb.get((1, config.latent_dim, 1), "bottleneck.bias")?,
            running_std: vb.get(1, "bottleneck.running_std")?,
            config: config.clone(),
        })
    }

    pub fn config(&self) -> &AutoencoderSameConfig {
        &self.config
    }

    pub fn dtype(&self) -> DType {
        self.encoder_proj.weight().dtype()
    }

    /// Audio (batch, audio_channels, samples) → latents (batch, latent_dim, ⌈samples/ratio⌉),
    /// in f32 whatever the weights' dtype.
    pub fn encode(&self, audio: &Tensor) -> Result<Tensor> {
        let dtype = self.dtype();
        let (batch, channels, samples) = audio.dims3()?;
        let patch = self.config.patch_size;
        let padded = samples.div_ceil(patch) * patch;
        let audio = audio.to_dtype(dtype)?;
        let audio = if padded > samples {
            let zeros = Tensor::zeros((batch, channels, padded - samples), dtype, audio.device())?;
            Tensor::cat(&[&audio, &zeros], 2)?
        } else {
            audio
        };
        let frames = padded / patch;
        // Channel index c·P + p for sample t·P + p of channel c.
        let mut tokens = audio
            .reshape((batch, channels, frames, patch))?
            .permute((0, 2, 1, 3))?
            .reshape((batch, frames, channels * patch))?;
        for block in &self.encoder_blocks {
            tokens = block.forward(&tokens)?;
        }
        let latents = self.encoder_proj.forward(&tokens)?.transpose(1, 2)?;
        latents
            .to_dtype(DType::F32)?
            .broadcast_mul(&self.bottleneck_scale.to_dtype(DType::F32)?)?
            .broadcast_add(&self.bottleneck_bias.to_dtype(DType::F32)?)?
            .broadcast_div(&self.running_std.to_dtype(DType::F32)?)
    }

    /// Latents (batch, latent_dim, frames) → audio (batch, audio_channels, frames·ratio) in f32.
    pub fn decode(&self, latents: &Tensor) -> Result<Tensor> {
        let dtype = self.dtype();
        let (batch, _, _) = latents.dims3()?;
        let scaled = latents
            .to_dtype(DType::F32)?
            .broadcast_mul(&self.running_std.to_dtype(DType::F32)?)?
            .to_dtype(dtype)?;
        let mut tokens = self
            .decoder_proj
            .forward(&scaled.transpose(1, 2)?.contiguous()?)?;
        for block in &self.decoder_blocks {
            tokens = block.forward(&tokens)?;
        }
        let frames = tokens.dim(1)?;
        let channels = self.config.audio_channels;
        let patch = self.config.patch_size;
        tokens
            .reshape((batch, frames, channels, patch))?
            .permute((0, 2, 1, 3))?
            .reshape((batch, channels, frames * patch))?
            .to_dtype(DType::F32)
    }
}

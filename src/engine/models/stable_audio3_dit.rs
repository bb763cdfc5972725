//! diffusers' `StableAudio3DiTModel`: the rectified-flow transformer of Stable Audio 3
//! (memory tokens, partial RoPE, differential attention with RMS QK-norm, AdaLN in the order
//! scale/shift/gate with `sigmoid(1 − gate)`, and a learned embedding for padded prompt tokens).

use candle_core::{D, DType, Module, Result, Tensor};
use candle_nn::{Conv1d, Conv1dConfig, VarBuilder};
use serde::Deserialize;

use super::differential_attention::{
    DifferentialAttention, FusedSelfAttention, Gate, GatedFeedForward, KeyRange, QkNorm,
    RotaryTables, default_inv_freq, rms_norm,
};
use super::layers::{linear, linear_no_bias};
use crate::engine::limits::{Limits, MAX_DIMENSION, MAX_LAYERS, Validated};
use crate::engine::models::layers::Linear;
use crate::engine::schedulers::linspace_f32;

fn default_io_channels() -> usize {
    256
}
fn default_one() -> usize {
    1
}
fn default_embed_dim() -> usize {
    1536
}
fn default_depth() -> usize {
    24
}
fn default_heads() -> usize {
    24
}
fn default_cond_dim() -> usize {
    768
}
fn default_local_dim() -> usize {
    257
}
fn default_timestep_features() -> usize {
    256
}
fn default_ff_mult() -> f64 {
    4.0
}
fn default_memory_tokens() -> usize {
    64
}
fn default_true() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
pub struct StableAudio3DiTConfig {
    #[serde(default = "default_io_channels")]
    pub io_channels: usize,
    #[serde(default = "default_one")]
    pub patch_size: usize,
    #[serde(default = "default_embed_dim")]
    pub embed_dim: usize,
    #[serde(default = "default_depth")]
    pub depth: usize,
    #[serde(default = "default_heads")]
    pub num_heads: usize,
    #[serde(default = "default_cond_dim")]
    pub cond_token_dim: usize,
    #[serde(default = "default_cond_dim")]
    pub global_cond_dim: usize,
    #[serde(default = "default_local_dim")]
    pub local_add_cond_dim: usize,
    #[serde(default = "default_timestep_features")]
    pub timestep_features_dim: usize,
    #[serde(default = "default_ff_mult")]
    pub ff_mult: f64,
    #[serde(default = "default_memory_tokens")]
    pub num_memory_tokens: usize,
    #[serde(default = "default_true")]
    pub use_differential_attention: bool,
}

impl StableAudio3DiTConfig {
    pub fn head_dim(&self) -> usize {
        self.embed_dim / self.num_heads
    }

    fn ff_inner(&self) -> usize {
        (self.embed_dim as f64 * self.ff_mult) as usize
    }
}

impl Validated for StableAudio3DiTConfig {
    fn validate(&self) -> std::result::Result<(), String> {
        let mut limits = Limits::new();
        limits
            .dimension("io_channels", self.io_channels)
            .size("patch_size", self.patch_size, 64)
            .dimension("embed_dim", self.embed_dim)
            .size("depth", self.depth, MAX_LAYERS)
            .size("num_heads", self.num_heads, 1024)
            .splits("embed_dim", self.embed_dim, "num_heads", self.num_heads)
            .dimension("cond_token_dim", self.cond_token_dim)
            .dimension("global_cond_dim", self.global_cond_dim)
            .dimension("local_add_cond_dim", self.local_add_cond_dim)
            .dimension("timestep_features_dim", self.timestep_features_dim)
            .splits(
                "timestep_features_dim",
                self.timestep_features_dim,
                "2 (cos and sin)",
                2,
            )
            .number("ff_mult", self.ff_mult, 0.0, 64.0)
            .size(
                "num_memory_tokens + 1",
                self.num_memory_tokens.saturating_add(1),
                4097,
            )
            .product(
                "embed_dim × ff_mult",
                &[self.embed_dim, self.ff_mult.ceil() as usize, 2],
                MAX_DIMENSION * 8,
            )
            .product(
                "io_channels × patch_size",
                &[self.io_channels, self.patch_size],
                MAX_DIMENSION,
            )
            .product("6 × embed_dim", &[self.embed_dim, 6], MAX_DIMENSION * 8);
        if self.num_heads > 0 && self.head_dim() < 2 {
            limits.problem(format!(
                "embed_dim / num_heads = {} leaves no rotary channels",
                self.head_dim()
            ));
        }
        limits.finish()
    }
}

/// Linear → SiLU → Linear (`nn.Sequential` keys `0` and `2`).
#[derive(Debug, Clone)]
struct TwoLayer {
    first: Linear,
    second: Linear,
}

impl TwoLayer {
    fn new(input: usize, hidden: usize, output: usize, bias: bool, vb: VarBuilder) -> Result<Self> {
        let make = if bias { linear } else { linear_no_bias };
        Ok(Self {
            first: make(input, hidden, vb.pp("0"))?,
            second: make(hidden, output, vb.pp("2"))?,
        })
    }
}

impl Module for TwoLayer {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        self.second.forward(&self.first.forward(xs)?.silu()?)
    }
}

/// Log-spaced Fourier features `[cos(2π t f), sin(2π t f)]` of a scalar per batch row, in f32
/// with PyTorch's order of operations (`StableAudio3ExpoFourierFeatures`, and the duration
/// embedder's features with a stored `freqs`).
pub fn expo_fourier_frequencies(dim: usize, min_freq: f64, max_freq: f64) -> Vec<f32> {
    let span = (max_freq.ln() - min_freq.ln()) as f32;
    let low = min_freq.ln() as f32;
    linspace_f32(0.0, 1.0, dim / 2)
        .into_iter()
        .map(|ramp| (ramp * span + low).exp())
        .collect()
}

/// `[cos(t·f·2·π), sin(t·f·2·π)]` for each `t` (rows) and `f` (columns), in f32.
pub fn fourier_features(values: &[f32], freqs: &[f32]) -> Vec<f32> {
    let pi = std::f64::consts::PI as f32;
    let mut out = Vec::with_capacity(values.len() * freqs.len() * 2);
    for &value in values {
        let args: Vec<f32> = freqs.iter().map(|f| value * f * 2.0 * pi).collect();
        out.extend(args.iter().map(|a| a.cos()));
        out.extend(args.iter().map(|a| a.sin()));
    }
    out
}

/// Cross-attention from the audio tokens to the projected context (no RoPE, no mask).
#[derive(Debug, Clone)]
struct CrossAttention {
    to_q: Linear,
    to_kv: Linear,
    to_out: Linear,
    q_norm: QkNorm,
    k_norm: QkNorm,
    shape: DifferentialAttention,
}

impl CrossAttention {
    fn new(dim: usize, head_dim: usize, differential: bool, vb: VarBuilder) -> Result<Self> {
        let (queries, keys_values) = if differential { (2, 3) } else { (1, 2) };
        Ok(Self {
            to_q: linear_no_bias(dim, dim * queries, vb.pp("to_q"))?,
            to_kv: linear_no_bias(dim, dim * keys_values, vb.pp("to_kv"))?,
            to_out: linear_no_bias(dim, dim, vb.pp("to_out"))?,
            q_norm: QkNorm::rms(head_dim, vb.pp("q_norm"))?,
            k_norm: QkNorm::rms(head_dim, vb.pp("k_norm"))?,
            shape: DifferentialAttention {
                heads: dim / head_dim,
                head_dim,
                differential,
            },
        })
    }

    fn forward(&self, xs: &Tensor, context: &Tensor) -> Result<Tensor> {
        let differential = self.shape.differential;
        let queries = self
            .shape
            .split(&self.to_q.forward(xs)?, if differential { 2 } else { 1 })?;
        let keys_values = self.shape.split(
            &self.to_kv.forward(context)?,
            if differential { 3 } else { 2 },
        )?;
        let value = keys_values.last().cloned().ok_or_else(|| {
            candle_core::Error::Msg("cross-attention projection has no value".into())
        })?;
        let queries = queries
            .iter()
            .map(|q| self.q_norm.forward(q))
            .collect::<Result<Vec<_>>>()?;
        let keys = keys_values[..keys_values.len() - 1]
            .iter()
            .map(|k| self.k_norm.forward(k))
            .collect::<Result<Vec<_>>>()?;
        let attended = self.shape.combine(&queries, &keys, &value, KeyRange::All)?;
        self.to_out.forward(&attended)
    }
}

#[derive(Debug, Clone)]
struct DiTBlock {
    pre_norm: Tensor,
    self_attn: FusedSelfAttention,
    cross_attend_norm: Tensor,
    cross_attn: CrossAttention,
    ff_norm: Tensor,
    ff: GatedFeedForward,
    to_scale_shift_gate: Tensor,
    to_local_embed: TwoLayer,
}

const NORM_EPS: f64 = 1e-6;

/// `x·(1 + scale) + shift` with (batch, dim) scale and shift broadcast over the tokens.
fn modulate(xs: &Tensor, shift: &Tensor, scale: &Tensor) -> Result<Tensor> {
    xs.broadcast_mul(&(scale.unsqueeze(1)? + 1.0)?)?
        .broadcast_add(&shift.unsqueeze(1)?)
}

/// `sigmoid(1 − gate)` as a (batch, 1, dim) factor.
fn gate_factor(gate: &Tensor) -> Result<Tensor> {
    candle_nn::ops::sigmoid(&gate.affine(-1.0, 1.0)?)?.unsqueeze(1)
}

impl DiTBlock {
    fn new(config: &StableAudio3DiTConfig, vb: VarBuilder) -> Result<Self> {
        let dim = config.embed_dim;
        let head_dim = config.head_dim();
        let differential = config.use_differential_attention;
        let attn = vb.pp("self_attn");
        Ok(Self {
            pre_norm: vb.get(dim, "pre_norm.gamma")?,
            self_attn: FusedSelfAttention::new(
                dim,
                head_dim,
                differential,
                (
                    QkNorm::rms(head_dim, attn.pp("q_norm"))?,
                    QkNorm::rms(head_dim, attn.pp("k_norm"))?,
                ),
                attn,
            )?,
            cross_attend_norm: vb.get(dim, "cross_attend_norm.gamma")?,
            cross_attn: CrossAttention::new(dim, head_dim, differential, vb.pp("cross_attn"))?,
            ff_norm: vb.get(dim, "ff_norm.gamma")?,
            ff: GatedFeedForward::new(dim, config.ff_inner(), Gate::Silu, vb.pp("ff"))?,
            to_scale_shift_gate: vb.get(6 * dim, "to_scale_shift_gate")?,
            to_local_embed: TwoLayer::new(
                config.local_add_cond_dim,
                dim,
                dim,
                true,
                vb.pp("to_local_embed"),
            )?,
        })
    }

    fn forward(
        &self,
        xs: &Tensor,
        context: &Tensor,
        global_modulation: &Tensor,
        rotary: &RotaryTables,
        local: Option<&Tensor>,
        memory_tokens: usize,
    ) -> Result<Tensor> {
        let modulation = global_modulation.broadcast_add(&self.to_scale_shift_gate)?;
        let chunks = modulation.chunk(6, D::Minus1)?;
        let [
            scale_attn,
            shift_attn,
            gate_attn,
            scale_ff,
            shift_ff,
            gate_ff,
        ] = &chunks[..]
        else {
            candle_core::bail!("AdaLN modulation does not split into six");
        };

        let normed = modulate(
            &rms_norm(xs, &self.pre_norm, NORM_EPS)?,
            shift_attn,
            scale_attn,
        )?;
        let attended = self.self_attn.forward(&normed, rotary, KeyRange::All)?;
        let mut xs = (xs + attended.broadcast_mul(&gate_factor(gate_attn)?)?)?;

        let crossed = self
            .cross_attn
            .forward(&rms_norm(&xs, &self.cross_attend_norm, NORM_EPS)?, context)?;
        xs = (xs + crossed)?;

        if let Some(local) = local {
            let tokens = xs.dim(1)?;
            let memory = xs.narrow(1, 0, memory_tokens)?;
            let audio = (xs.narrow(1, memory_tokens, tokens - memory_tokens)?
                + self.to_local_embed.forward(local)?)?;
            xs = Tensor::cat(&[&memory, &audio], 1)?;
        }

        let normed = modulate(&rms_norm(&xs, &self.ff_norm, NORM_EPS)?, shift_ff, scale_ff)?;
        let fed = self.ff.forward(&normed)?;
        xs + fed.broadcast_mul(&gate_factor(gate_ff)?)?
    }
}

/// The DiT's conditioning for one call.
pub struct DiTConditioning<'a> {
    /// Text tokens plus the duration token (batch, tokens, cond_token_dim).
    pub context: &'a Tensor,
    /// 1 on real tokens, 0 on padding (batch, tokens); padded tokens take the learned
    /// padding embedding.
    pub context_mask: Option<&'a Tensor>,
    /// The duration embedding (batch, global_cond_dim).
    pub global: &'a Tensor,
    /// Inpainting's `[mask, masked latents]` (batch, local_add_cond_dim, frames).
    pub local: Option<&'a Tensor>,
}

#[derive(Debug)]
pub struct StableAudio3DiTModel {
    timestep_freqs: Vec<f32>,
    to_timestep_embed: TwoLayer,
    prompt_padding_embedding: Tensor,
    to_cond_embed: TwoLayer,
    to_global_embed: TwoLayer,
    global_cond_embedder: TwoLayer,
    preprocess_conv: Conv1d,
    postprocess_conv: Conv1d,
    proj_in: Linear,
    proj_out: Linear,
    memory_tokens: Option<Tensor>,
    inv_freq: Vec<f32>,
    blocks: Vec<DiTBlock>,
    config: StableAudio3DiTConfig,
}

impl StableAudio3DiTModel {
    pub fn new(config: &StableAudio3DiTConfig, vb: VarBuilder) -> Result<Self> {
        let dim = config.embed_dim;
        let io = config.io_channels;
        let patched = io * config.patch_size;
        let conv = |name: &str| -> Result<Conv1d> {
            let weight = vb.get((io, io, 1), &format!("{name}.weight"))?;
            Ok(Conv1d::new(weight, None, Conv1dConfig::default()))
        };
        let rot_half = config.head_dim() / 2;
        // A stored buffer (`rotary_pos_emb.inv_freq`) wins over the formula, as in PyTorch.
        let inv_freq = if vb.contains_tensor("rotary_pos_emb.inv_freq") {
            vb.get(rot_half.div_ceil(2), "rotary_pos_emb.inv_freq")?
                .to_dtype(DType::F32)?
                .to_vec1()?
        } else {
            default_inv_freq(rot_half, 10000.0)
        };
        let memory_tokens = (config.num_memory_tokens > 0)
            .then(|| vb.get((config.num_memory_tokens, dim), "memory_tokens"))
            .transpose()?;
        Ok(Self {
            timestep_freqs: expo_fourier_frequencies(config.timestep_features_dim, 0.5, 10000.0),
            to_timestep_embed: TwoLayer::new(
                config.timestep_features_dim,
                dim,
                dim,
                true,
                vb.pp("to_timestep_embed"),
            )?,
            prompt_padding_embedding: vb.get(config.cond_token_dim, "prompt_padding_embedding")?,
            to_cond_embed: TwoLayer::new(
                config.cond_token_dim,
                dim,
                dim,
                false,
                vb.pp("to_cond_embed"),
            )?,
            to_global_embed: TwoLayer::new(
                config.global_cond_dim,
                dim,
                dim,
                false,
                vb.pp("to_global_embed"),
            )?,
            global_cond_embedder: TwoLayer::new(
                dim,
                dim,
                6 * dim,
                true,
                vb.pp("global_cond_embedder"),
            )?,
            preprocess_conv: conv("preprocess_conv")?,
            postprocess_conv: conv("postprocess_conv")?,
            proj_in: linear_no_bias(patched, dim, vb.pp("proj_in"))?,
            proj_out: linear_no_bias(dim, patched, vb.pp("proj_out"))?,
            memory_tokens,
            inv_freq,
            blocks: (0..config.depth)
                .map(|index| DiTBlock::new(config, vb.pp(format!("transformer_blocks.{index}"))))
                .collect::<Result<_>>()?,
            config: config.clone(),
        })
    }

    pub fn config(&self) -> &StableAudio3DiTConfig {
        &self.config
    }

    pub fn dtype(&self) -> DType {
        self.proj_in.weight().dtype()
    }

    /// The velocity for latents `xs` (batch, io_channels, frames) at flow time `timesteps`
    /// (one σ per batch row).
    pub fn forward(
        &self,
        xs: &Tensor,
        timesteps: &[f32],
        conditioning: &DiTConditioning,
    ) -> Result<Tensor> {
        let input_dtype = xs.dtype();
        let dtype = self.dtype();
        let xs = xs.to_dtype(dtype)?;
        let device = xs.device().clone();
        let (batch, channels, frames) = xs.dims3()?;
        let patch = self.config.patch_size;

        let mut context = conditioning.context.to_dtype(dtype)?;
        if let Some(mask) = conditioning.context_mask {
            let keep = mask.to_dtype(DType::U8)?.unsqueeze(D::Minus1)?;
            let padding = self
                .prompt_padding_embedding
                .reshape((1, 1, ()))?
                .broadcast_as(context.shape())?;
            context = keep
                .broadcast_as(context.shape())?
                .where_cond(&context, &padding)?;
        }
        let context = self.to_cond_embed.forward(&context)?;

        let features = Tensor::from_vec(
            fourier_features(timesteps, &self.timestep_freqs),
            (batch, self.timestep_freqs.len() * 2),
            &device,
        )?
        .to_dtype(dtype)?;
        let timestep_embed = self.to_timestep_embed.forward(&features)?;
        let global = (self
            .to_global_embed
            .forward(&conditioning.global.to_dtype(dtype)?)?
            + timestep_embed)?;
        let global_modulation = self.global_cond_embedder.forward(&global)?;

        let xs = (self.preprocess_conv.forward(&xs)? + &xs)?;
        let mut tokens = xs.transpose(1, 2)?;
        if patch > 1 {
            tokens = tokens.reshape((batch, frames / patch, channels * patch))?;
        }
        let mut tokens = self.proj_in.forward(&tokens.contiguous()?)?;
        let local = match conditioning.local {
            Some(_) if patch > 1 => {
                candle_core::bail!("inpainting needs a DiT with patch_size 1, this one has {patch}")
            }
            Some(local) => Some(local.to_dtype(dtype)?.transpose(1, 2)?.contiguous()?),
            None => None,
        };
        let memory = self.config.num_memory_tokens;
        if let Some(memory_tokens) = &self.memory_tokens {
            let memory_tokens =
                memory_tokens
                    .unsqueeze(0)?
                    .broadcast_as((batch, memory, self.config.embed_dim))?;
            tokens = Tensor::cat(&[&memory_tokens, &tokens], 1)?;
        }
        let rotary = RotaryTables::new(&self.inv_freq, tokens.dim(1)?, &device)?;
        for block in &self.blocks {
            tokens = block.forward(
                &tokens,
                &context,
                &global_modulation,
                &rotary,
                local.as_ref(),
                memory,
            )?;
        }
        let tokens = tokens.narrow(1, memory, tokens.dim(1)? - memory)?;
        let mut out = self.proj_out.forward(&tokens)?;
        if patch > 1 {
            let patched_frames = out.dim(1)?;
            out = out.reshape((batch, patched_frames * patch, channels))?;
        }
        let out = out.transpose(1, 2)?.contiguous()?;
        (self.postprocess_conv.forward(&out)? + out)?.to_dtype(input_dtype)
    }
}

//! The attention Stable Audio 3 uses in its DiT and in the SAME autoencoder: a fused projection
//! to `[q1|q2|k1|k2|v]`, a per-head norm of q and k, a rotary embedding over the first half of
//! each head, and `Attn(q1, k1, v) − Attn(q2, k2, v)` (differential attention without λ).
//! With `differential` off the projection is `[q|k|v]` and one attention runs. The gated
//! feed-forward both models put after it lives here too.

use candle_core::{D, DType, Device, Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::layers::{attention as dense_attention, linear, linear_no_bias};
use crate::engine::kernels::attention::attention;
use crate::engine::models::layers::Linear;

/// Rotary angles for positions `0..tokens`: `cat(freqs, freqs)` of `outer(pos, inv_freq)`, as
/// cos and sin tables of shape (tokens, rot_dim), in f32.
#[derive(Debug, Clone)]
pub struct RotaryTables {
    pub cos: Tensor,
    pub sin: Tensor,
}

impl RotaryTables {
    pub fn new(inv_freq: &[f32], tokens: usize, device: &Device) -> Result<Self> {
        let half = inv_freq.len();
        let mut angles = Vec::with_capacity(tokens * half * 2);
        for position in 0..tokens {
            let row: Vec<f32> = inv_freq.iter().map(|f| position as f32 * f).collect();
            angles.extend_from_slice(&row);
            angles.extend_from_slice(&row);
        }
        let cos: Vec<f32> = angles.iter().map(|a| a.cos()).collect();
        let sin: Vec<f32> = angles.iter().map(|a| a.sin()).collect();
        Ok(Self {
            cos: Tensor::from_vec(cos, (tokens, half * 2), device)?,
            sin: Tensor::from_vec(sin, (tokens, half * 2), device)?,
        })
    }

    pub fn rot_dim(&self) -> usize {
        self.cos.dim(1).unwrap_or(0)
    }
}

/// `1 / base^(arange(0, dim, 2) / dim)` in f32 (the power rounded once from f64).
pub fn default_inv_freq(dim: usize, base: f64) -> Vec<f32> {
    (0..dim)
        .step_by(2)
        .map(|i| {
            let exponent = (i as f32 / dim as f32) as f64;
            1.0f32 / (base.powf(exponent) as f32)
        })
        .collect()
}

/// `cat(-x2, x1)` over the last dimension split in halves.
pub fn rotate_half(xs: &Tensor) -> Result<Tensor> {
    let last = xs.dim(D::Minus1)?;
    let x1 = xs.narrow(D::Minus1, 0, last / 2)?;
    let x2 = xs.narrow(D::Minus1, last / 2, last - last / 2)?;
    Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)
}

/// Rotates the first `rot_dim` channels of every head of `xs` (batch, tokens, heads, head_dim)
/// in f32 and leaves the rest; the tables cover the last `tokens` positions.
pub fn apply_partial_rotary(xs: &Tensor, tables: &RotaryTables) -> Result<Tensor> {
    let (_, tokens, _, head_dim) = xs.dims4()?;
    let rot_dim = tables.rot_dim();
    let offset = tables.cos.dim(0)? - tokens;
    let cos = tables.cos.narrow(0, offset, tokens)?.unsqueeze(1)?;
    let sin = tables.sin.narrow(0, offset, tokens)?.unsqueeze(1)?;
    let dtype = xs.dtype();
    let rotated = xs.narrow(D::Minus1, 0, rot_dim)?.to_dtype(DType::F32)?;
    let rotated = (rotated.broadcast_mul(&cos)? + rotate_half(&rotated)?.broadcast_mul(&sin)?)?
        .to_dtype(dtype)?;
    if rot_dim == head_dim {
        return Ok(rotated);
    }
    let passed = xs.narrow(D::Minus1, rot_dim, head_dim - rot_dim)?;
    Tensor::cat(&[&rotated, &passed], D::Minus1)
}

/// The per-head norm of q and k.
#[derive(Debug, Clone)]
pub enum QkNorm {
    /// `x·rsqrt(mean x² + eps)·gamma` in f32 (the DiT's `StableAudio3RMSNorm`).
    Rms { gamma: Tensor, eps: f64 },
    /// Dynamic tanh `gamma·tanh(alpha·x) + beta` (SAME's `DynamicTanh`).
    DynamicTanh(DynamicTanh),
}

impl QkNorm {
    pub fn rms(dim: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self::Rms {
            gamma: vb.get(dim, "gamma")?,
            eps: 1e-6,
        })
    }

    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        match self {
            Self::Rms { gamma, eps } => rms_norm(xs, gamma, *eps),
            Self::DynamicTanh(norm) => norm.forward(xs),
        }
    }
}

/// RMS norm over the last dimension with a learnable scale, computed in f32 and returned in
/// the input's dtype.
pub fn rms_norm(xs: &Tensor, gamma: &Tensor, eps: f64) -> Result<Tensor> {
    let dtype = xs.dtype();
    let xs = xs.to_dtype(DType::F32)?;
    let variance = xs.sqr()?.mean_keepdim(D::Minus1)?;
    let normed = xs.broadcast_mul(&(variance + eps)?.sqrt()?.recip()?)?;
    normed
        .broadcast_mul(&gamma.to_dtype(DType::F32)?)?
        .to_dtype(dtype)
}

/// `DynamicTanh`: `gamma·tanh(alpha·x) + beta` with a scalar `alpha`.
#[derive(Debug, Clone)]
pub struct DynamicTanh {
    alpha: Tensor,
    gamma: Tensor,
    beta: Tensor,
}

impl DynamicTanh {
    pub fn new(dim: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            alpha: vb.get(1, "alpha")?,
            gamma: vb.get(dim, "gamma")?,
            beta: vb.get(dim, "beta")?,
        })
    }

    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        xs.broadcast_mul(&self.alpha)?
            .tanh()?
            .broadcast_mul(&self.gamma)?
            .broadcast_add(&self.beta)
    }
}

/// Which keys each query may see.
#[derive(Debug, Clone, Copy)]
pub enum KeyRange {
    All,
    /// Keys within `±half_width` positions of the query (SAME's band mask).
    Band {
        half_width: usize,
    },
}

/// Differential (or plain) attention heads of width `head_dim`.
#[derive(Debug, Clone)]
pub struct DifferentialAttention {
    pub heads: usize,
    pub head_dim: usize,
    pub differential: bool,
}

impl DifferentialAttention {
    /// Splits a fused projection (batch, tokens, parts·dim) into `parts` tensors of
    /// (batch, tokens, heads, head_dim).
    pub fn split(&self, fused: &Tensor, parts: usize) -> Result<Vec<Tensor>> {
        let (batch, tokens, width) = fused.dims3()?;
        let dim = width / parts;
        (0..parts)
            .map(|part| {
                fused.narrow(D::Minus1, part * dim, dim)?.reshape((
                    batch,
                    tokens,
                    self.heads,
                    self.head_dim,
                ))
            })
            .collect()
    }

    /// Attention of q (batch, queries, heads, d) over k, v (batch, keys, heads, d); q and k are
    /// normed (and rotated) already. Returns (batch, queries, heads·d).
    pub fn attend(&self, q: &Tensor, k: &Tensor, v: &Tensor, range: KeyRange) -> Result<Tensor> {
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        match range {
            KeyRange::All => {
                let merge = |x: &Tensor| -> Result<Tensor> {
                    let (batch, tokens, heads, dim) = x.dims4()?;
                    x.reshape((batch, tokens, heads * dim))?.contiguous()
                };
                attention(&merge(q)?, &merge(k)?, &merge(v)?, self.heads, scale, None)
            }
            KeyRange::Band { half_width } => band_attention(q, k, v, scale, half_width),
        }
    }

    /// `Attn(q1, k1, v) − Attn(q2, k2, v)`, or `Attn(q, k, v)` when not differential.
    /// `queries` and `keys` hold 2 (or 1) tensors each.
    pub fn combine(
        &self,
        queries: &[Tensor],
        keys: &[Tensor],
        value: &Tensor,
        range: KeyRange,
    ) -> Result<Tensor> {
        let first = self.attend(&queries[0], &keys[0], value, range)?;
        if !self.differential {
            return Ok(first);
        }
        first - self.attend(&queries[1], &keys[1], value, range)?
    }
}

/// Queries handled together in band attention; their keys span the block plus the band.
const BAND_QUERY_BLOCK: usize = 128;

/// Attention where query `i` sees keys `j` with `|i − j| ≤ half_width`, computed block by block
/// so long sequences never build the full score matrix. Same numbers as an additive −∞ mask.
fn band_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    scale: f64,
    half_width: usize,
) -> Result<Tensor> {
    let tokens = q.dim(1)?;
    let q = q.transpose(1, 2)?.contiguous()?;
    let k = k.transpose(1, 2)?.contiguous()?;
    let v = v.transpose(1, 2)?.contiguous()?;
    let mut outputs = Vec::with_capacity(tokens.div_ceil(BAND_QUERY_BLOCK));
    let mut start = 0;
    while start < tokens {
        let end = (start + BAND_QUERY_BLOCK).min(tokens);
        let key_start = start.saturating_sub(half_width);
        let key_end = (end + half_width).min(tokens);
        let bias: Vec<f32> = (start..end)
            .flat_map(|query| {
                (key_start..key_end).map(move |key| {
                    if query.abs_diff(key) <= half_width {
                        0.0
                    } else {
                        f32::NEG_INFINITY
                    }
                })
            })
            .collect();
        let bias = Tensor::from_vec(bias, (1, 1, end - start, key_end - key_start), q.device())?
            .to_dtype(q.dtype())?;
        let block = dense_attention(
            &q.narrow(2, start, end - start)?,
            &k.narrow(2, key_start, key_end - key_start)?,
            &v.narrow(2, key_start, key_end - key_start)?,
            scale,
            Some(&bias),
        )?;
        outputs.push(block);
        start = end;
    }
    Tensor::cat(&outputs, 1)
}

/// Self-attention with a fused `to_qkv`, q/k norms, partial RoPE and an output projection
/// (`StableAudio3SelfAttention` and `SAMEAttention`).
#[derive(Debug, Clone)]
pub struct FusedSelfAttention {
    to_qkv: Linear,
    to_out: Linear,
    q_norm: QkNorm,
    k_norm: QkNorm,
    shape: DifferentialAttention,
}

impl FusedSelfAttention {
    pub fn new(
        dim: usize,
        head_dim: usize,
        differential: bool,
        norms: (QkNorm, QkNorm),
        vb: VarBuilder,
    ) -> Result<Self> {
        let parts = if differential { 5 } else { 3 };
        Ok(Self {
            to_qkv: linear_no_bias(dim, dim * parts, vb.pp("to_qkv"))?,
            to_out: linear_no_bias(dim, dim, vb.pp("to_out"))?,
            q_norm: norms.0,
            k_norm: norms.1,
            shape: DifferentialAttention {
                heads: dim / head_dim,
                head_dim,
                differential,
            },
        })
    }

    pub fn forward(&self, xs: &Tensor, rotary: &RotaryTables, range: KeyRange) -> Result<Tensor> {
        let differential = self.shape.differential;
        let parts = self
            .shape
            .split(&self.to_qkv.forward(xs)?, if differential { 5 } else { 3 })?;
        let prepare = |x: &Tensor, norm: &QkNorm| apply_partial_rotary(&norm.forward(x)?, rotary);
        let (queries, keys, value) = if differential {
            (
                vec![
                    prepare(&parts[0], &self.q_norm)?,
                    prepare(&parts[1], &self.q_norm)?,
                ],
                vec![
                    prepare(&parts[2], &self.k_norm)?,
                    prepare(&parts[3], &self.k_norm)?,
                ],
                &parts[4],
            )
        } else {
            (
                vec![prepare(&parts[0], &self.q_norm)?],
                vec![prepare(&parts[1], &self.k_norm)?],
                &parts[2],
            )
        };
        let attended = self.shape.combine(&queries, &keys, value, range)?;
        self.to_out.forward(&attended)
    }
}

/// What gates a `GatedFeedForward`'s hidden half.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// SwiGLU: `silu(gate)`.
    Silu,
    /// `sin(π·gate)` (SAME's trailing decoder layers).
    Sine,
}

/// `proj_out(h · g(gate))` with `(h, gate) = proj_in(x).chunk(2)` (keys `proj_in`, `proj_out`).
#[derive(Debug, Clone)]
pub struct GatedFeedForward {
    proj_in: Linear,
    proj_out: Linear,
    gate: Gate,
}

impl GatedFeedForward {
    pub fn new(dim: usize, inner: usize, gate: Gate, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            proj_in: linear(dim, inner * 2, vb.pp("proj_in"))?,
            proj_out: linear(inner, dim, vb.pp("proj_out"))?,
            gate,
        })
    }

    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let projected = self.proj_in.forward(xs)?;
        let inner = projected.dim(D::Minus1)? / 2;
        let hidden = projected.narrow(D::Minus1, 0, inner)?;
        let gate = projected.narrow(D::Minus1, inner, inner)?;
        let gate = match self.gate {
            Gate::Silu => gate.silu()?,
            Gate::Sine => gate.affine(std::f64::consts::PI, 0.0)?.sin()?,
        };
        self.proj_out.forward(&(hidden * gate)?)
    }
}

//! Small building blocks shared by the neural components, named after their PyTorch modules.

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::VarBuilder;

use crate::engine::kernels::layer_norm::LayerNorm;

use crate::engine::kernels::conv::Conv2d;
use crate::engine::kernels::group_norm::GroupNorm;
pub use crate::engine::kernels::linear::Linear;

/// `nn.Linear` with bias.
pub fn linear(input: usize, output: usize, vb: VarBuilder) -> Result<Linear> {
    let weight = vb.get((output, input), "weight")?;
    Ok(Linear::new(weight, Some(vb.get(output, "bias")?)))
}

/// `nn.Linear(bias=False)`.
pub fn linear_no_bias(input: usize, output: usize, vb: VarBuilder) -> Result<Linear> {
    Ok(Linear::new(vb.get((output, input), "weight")?, None))
}

/// A 1×1 `nn.Conv2d` as the [`Linear`] it is, for layers that apply it to tokens.
pub fn pointwise_conv(input: usize, output: usize, vb: VarBuilder) -> Result<Linear> {
    let weight = vb
        .get((output, input, 1, 1), "weight")?
        .reshape((output, input))?;
    Ok(Linear::new(weight, Some(vb.get(output, "bias")?)))
}

/// `nn.Conv2d` with a square kernel, stride and zero padding.
pub fn conv2d(
    input: usize,
    output: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    vb: VarBuilder,
) -> Result<Conv2d> {
    Conv2d::new(input, output, kernel, stride, padding, vb)
}

pub fn group_norm(groups: usize, channels: usize, eps: f64, vb: VarBuilder) -> Result<GroupNorm> {
    GroupNorm::new(groups, channels, eps, vb)
}

pub fn layer_norm(size: usize, eps: f64, vb: VarBuilder) -> Result<LayerNorm> {
    LayerNorm::new(size, eps, vb)
}

/// Softmax over the last dimension computed in f32, as PyTorch's attention does for half types.
pub fn softmax_last_dim_f32(scores: &Tensor) -> Result<Tensor> {
    let dtype = scores.dtype();
    let probabilities = candle_nn::ops::softmax_last_dim(&scores.to_dtype(DType::F32)?)?;
    probabilities.to_dtype(dtype)
}

/// The most negative finite value of `dtype` (PyTorch's `finfo(dtype).min`).
pub fn finite_min(dtype: DType) -> f64 {
    match dtype {
        DType::F16 => -65504.0,
        DType::BF16 => -3.389_531_389_251_535_5e38,
        DType::F64 => f64::MIN,
        _ => f32::MIN as f64,
    }
}

/// Additive attention bias from a 0/1 mask of shape (batch, keys): 0 where kept, `masked` where
/// not. `masked` is held to the dtype's finite range: f32's minimum would round to −∞ in half
/// precision, and a query with every key hidden would then turn NaN instead of uniform.
pub fn mask_to_bias(mask: &Tensor, masked: f64, dtype: DType) -> Result<Tensor> {
    let masked = masked.max(finite_min(dtype));
    let mask = mask.to_dtype(DType::F32)?;
    let bias = mask.affine(-masked, masked)?;
    bias.to_dtype(dtype)
}

/// GELU with the tanh approximation (`gelu_new` / `gelu_pytorch_tanh`).
pub fn gelu_tanh(xs: &Tensor) -> Result<Tensor> {
    xs.gelu()
}

/// Exact GELU (`nn.GELU()` / `F.gelu`).
pub fn gelu_exact(xs: &Tensor) -> Result<Tensor> {
    xs.gelu_erf()
}

/// Applies a module to every item of a slice in order.
pub fn forward_all<M: Module>(modules: &[M], xs: &Tensor) -> Result<Tensor> {
    modules
        .iter()
        .try_fold(xs.clone(), |hidden, module| module.forward(&hidden))
}

/// (batch, tokens, heads·head_dim) → (batch, heads, tokens, head_dim), contiguous.
pub fn split_heads(xs: &Tensor, heads: usize) -> Result<Tensor> {
    let (batch, tokens, width) = xs.dims3()?;
    xs.reshape((batch, tokens, heads, width / heads))?
        .transpose(1, 2)?
        .contiguous()
}

/// softmax(q·kᵀ·scale + bias)·v over (batch, heads, tokens, head_dim), merged back to
/// (batch, tokens, heads·head_dim). `bias` broadcasts against the scores.
pub fn attention(
    query: &Tensor,
    key: &Tensor,
    value: &Tensor,
    scale: f64,
    bias: Option<&Tensor>,
) -> Result<Tensor> {
    let mut scores = query.matmul(&key.t()?)?;
    if scale != 1.0 {
        scores = (scores * scale)?;
    }
    if let Some(bias) = bias {
        scores = scores.broadcast_add(bias)?;
    }
    let attended = softmax_last_dim_f32(&scores)?.matmul(value)?;
    let (batch, heads, tokens, head_dim) = attended.dims4()?;
    attended
        .transpose(1, 2)?
        .reshape((batch, tokens, heads * head_dim))
}

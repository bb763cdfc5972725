//! diffusers `Attention`, `FeedForward` (GEGLU), `BasicTransformerBlock` and `Transformer2DModel`.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use crate::engine::kernels::layer_norm::LayerNorm;

use crate::engine::kernels::attention::attention;
use crate::engine::kernels::geglu::geglu;
use crate::engine::kernels::group_norm::GroupNorm;
use crate::engine::models::layers::Linear;

use crate::engine::models::layers::{
    group_norm, layer_norm, linear, linear_no_bias, pointwise_conv,
};

/// Multi-head scaled dot-product attention with separate q/k/v projections.
#[derive(Debug)]
pub struct Attention {
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
    heads: usize,
    scale: f64,
}

impl Attention {
    /// `context_dim` is the width of the keys' source (`None`: the query's own width).
    pub fn new(
        query_dim: usize,
        context_dim: Option<usize>,
        heads: usize,
        head_dim: usize,
        qkv_bias: bool,
        vb: VarBuilder,
    ) -> Result<Self> {
        let inner = heads * head_dim;
        let context_dim = context_dim.unwrap_or(query_dim);
        let projection = |input: usize, name: &str| {
            if qkv_bias {
                linear(input, inner, vb.pp(name))
            } else {
                linear_no_bias(input, inner, vb.pp(name))
            }
        };
        Ok(Self {
            to_q: projection(query_dim, "to_q")?,
            to_k: projection(context_dim, "to_k")?,
            to_v: projection(context_dim, "to_v")?,
            to_out: linear(inner, query_dim, vb.pp("to_out.0"))?,
            heads,
            scale: 1.0 / (head_dim as f64).sqrt(),
        })
    }

    /// Builds the VAE's single-head attention, accepting the legacy `query/key/value/proj_attn` names.
    pub fn new_vae(channels: usize, vb: VarBuilder) -> Result<Self> {
        let legacy = vb.contains_tensor("query.weight");
        let name = |modern: &'static str, old: &'static str| if legacy { old } else { modern };
        Ok(Self {
            to_q: linear(channels, channels, vb.pp(name("to_q", "query")))?,
            to_k: linear(channels, channels, vb.pp(name("to_k", "key")))?,
            to_v: linear(channels, channels, vb.pp(name("to_v", "value")))?,
            to_out: linear(channels, channels, vb.pp(name("to_out.0", "proj_attn")))?,
            heads: 1,
            scale: 1.0 / (channels as f64).sqrt(),
        })
    }

    /// `xs`: (batch, queries, dim); `context`: (batch, keys, context_dim) or self-attention;
    /// `bias`: additive (batch, 1, keys) mask bias.
    pub fn forward(
        &self,
        xs: &Tensor,
        context: Option<&Tensor>,
        bias: Option<&Tensor>,
    ) -> Result<Tensor> {
        self.forward_add(xs, context, bias, None)
    }

    /// [`Self::forward`] plus `residual` (batch, queries, dim), added in the output projection.
    pub fn forward_add(
        &self,
        xs: &Tensor,
        context: Option<&Tensor>,
        bias: Option<&Tensor>,
        residual: Option<&Tensor>,
    ) -> Result<Tensor> {
        let context = context.unwrap_or(xs);
        let query = self.to_q.forward(xs)?;
        let key = self.to_k.forward(context)?;
        let value = self.to_v.forward(context)?;
        let bias = bias.map(|bias| bias.squeeze(1)).transpose()?;
        let merged = attention(&query, &key, &value, self.heads, self.scale, bias.as_ref())?;
        match residual {
            Some(residual) => self.to_out.forward_add(&merged, residual),
            None => self.to_out.forward(&merged),
        }
    }
}

/// `FeedForward` with a GEGLU input projection (exact GELU on the gate).
#[derive(Debug)]
struct FeedForward {
    proj: Linear,
    out: Linear,
}

impl FeedForward {
    fn new(dim: usize, vb: VarBuilder) -> Result<Self> {
        let inner = 4 * dim;
        Ok(Self {
            proj: linear(dim, 2 * inner, vb.pp("net.0.proj"))?,
            out: linear(inner, dim, vb.pp("net.2"))?,
        })
    }

    /// The feed-forward of `xs` plus `residual`, added in the output projection.
    fn forward_add(&self, xs: &Tensor, residual: &Tensor) -> Result<Tensor> {
        self.out
            .forward_add(&geglu(&self.proj.forward(xs)?)?, residual)
    }
}

/// Self-attention, then attention over a context (or a second self-attention), then GEGLU.
#[derive(Debug)]
struct BasicTransformerBlock {
    norm1: LayerNorm,
    attn1: Attention,
    norm2: LayerNorm,
    attn2: Attention,
    norm3: LayerNorm,
    ff: FeedForward,
}

impl BasicTransformerBlock {
    fn new(dim: usize, heads: usize, context_dim: Option<usize>, vb: VarBuilder) -> Result<Self> {
        let head_dim = dim / heads;
        Ok(Self {
            norm1: layer_norm(dim, 1e-5, vb.pp("norm1"))?,
            attn1: Attention::new(dim, None, heads, head_dim, false, vb.pp("attn1"))?,
            norm2: layer_norm(dim, 1e-5, vb.pp("norm2"))?,
            attn2: Attention::new(dim, context_dim, heads, head_dim, false, vb.pp("attn2"))?,
            norm3: layer_norm(dim, 1e-5, vb.pp("norm3"))?,
            ff: FeedForward::new(dim, vb.pp("ff"))?,
        })
    }

    fn forward(
        &self,
        xs: &Tensor,
        context: Option<&Tensor>,
        bias: Option<&Tensor>,
    ) -> Result<Tensor> {
        let xs = self
            .attn1
            .forward_add(&self.norm1.forward(xs)?, None, None, Some(xs))?;
        let xs = self
            .attn2
            .forward_add(&self.norm2.forward(&xs)?, context, bias, Some(&xs))?;
        self.ff.forward_add(&self.norm3.forward(&xs)?, &xs)
    }
}

/// `Transformer2DModel` on continuous input with 1x1 convolution projections (run as the
/// linear layers they are, reading and writing the image through transposed views).
#[derive(Debug)]
pub struct Transformer2DModel {
    norm: GroupNorm,
    proj_in: Linear,
    blocks: Vec<BasicTransformerBlock>,
    proj_out: Linear,
}

#[derive(Debug, Clone, Copy)]
pub struct TransformerConfig {
    pub channels: usize,
    pub heads: usize,
    pub depth: usize,
    pub groups: usize,
    /// Width of the context; `None` makes the second attention a self-attention.
    pub context_dim: Option<usize>,
}

impl Transformer2DModel {
    pub fn new(config: TransformerConfig, vb: VarBuilder) -> Result<Self> {
        let channels = config.channels;
        let blocks = (0..config.depth)
            .map(|index| {
                BasicTransformerBlock::new(
                    channels,
                    config.heads,
                    config.context_dim,
                    vb.pp(format!("transformer_blocks.{index}")),
                )
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            norm: group_norm(config.groups, channels, 1e-6, vb.pp("norm"))?,
            proj_in: pointwise_conv(channels, channels, vb.pp("proj_in"))?,
            blocks,
            proj_out: pointwise_conv(channels, channels, vb.pp("proj_out"))?,
        })
    }

    pub fn forward(
        &self,
        xs: &Tensor,
        context: Option<&Tensor>,
        bias: Option<&Tensor>,
    ) -> Result<Tensor> {
        let mut tokens = self.proj_in.image_to_tokens(&self.norm.forward(xs)?)?;
        for block in &self.blocks {
            tokens = block.forward(&tokens, context, bias)?;
        }
        self.proj_out.tokens_onto_image(&tokens, xs)
    }
}

/// The VAE's mid-block attention: group norm, one head over all pixels, residual.
#[derive(Debug)]
pub struct SpatialSelfAttention {
    group_norm: GroupNorm,
    attention: Attention,
}

impl SpatialSelfAttention {
    pub fn new(channels: usize, groups: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            group_norm: group_norm(groups, channels, eps, vb.pp("group_norm"))?,
            attention: Attention::new_vae(channels, vb)?,
        })
    }

    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let (batch, channels, height, width) = xs.dims4()?;
        let tokens = self
            .group_norm
            .forward(xs)?
            .reshape((batch, channels, height * width))?
            .transpose(1, 2)?
            .contiguous()?;
        let attended = self.attention.forward(&tokens, None, None)?;
        let attended = attended
            .transpose(1, 2)?
            .reshape((batch, channels, height, width))?;
        attended + xs
    }
}

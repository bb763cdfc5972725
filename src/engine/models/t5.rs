//! transformers' `T5EncoderModel` with the key-padding mask (candle's t5.rs has none).

use candle_core::{D, DType, Device, Module, Result, Tensor};
use candle_nn::{Embedding, VarBuilder};

use crate::engine::models::layers::Linear;
use serde::Deserialize;

use super::layers::{attention, gelu_tanh, linear_no_bias, mask_to_bias, split_heads};

fn default_buckets() -> usize {
    32
}
fn default_max_distance() -> usize {
    128
}
fn default_eps() -> f64 {
    1e-6
}
fn default_ff() -> String {
    "relu".into()
}

#[derive(Debug, Clone, Deserialize)]
pub struct T5Config {
    pub vocab_size: usize,
    pub d_model: usize,
    pub d_kv: usize,
    pub d_ff: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    #[serde(default = "default_buckets")]
    pub relative_attention_num_buckets: usize,
    #[serde(default = "default_max_distance")]
    pub relative_attention_max_distance: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_epsilon: f64,
    #[serde(default = "default_ff")]
    pub feed_forward_proj: String,
}

/// T5's scale-only RMS norm, computed in f32.
#[derive(Debug)]
struct T5LayerNorm {
    weight: Tensor,
    eps: f64,
}

impl T5LayerNorm {
    fn new(size: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            weight: vb.get(size, "weight")?,
            eps,
        })
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let dtype = xs.dtype();
        let xs32 = xs.to_dtype(DType::F32)?;
        let variance = xs32.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = xs32.broadcast_div(&(variance + self.eps)?.sqrt()?)?;
        normed.to_dtype(dtype)?.broadcast_mul(&self.weight)
    }
}

#[derive(Debug)]
enum FeedForward {
    Relu {
        wi: Linear,
        wo: Linear,
    },
    GatedGelu {
        wi_0: Linear,
        wi_1: Linear,
        wo: Linear,
    },
}

impl FeedForward {
    fn new(config: &T5Config, vb: VarBuilder) -> Result<Self> {
        let (model, inner) = (config.d_model, config.d_ff);
        match config.feed_forward_proj.as_str() {
            "relu" => Ok(Self::Relu {
                wi: linear_no_bias(model, inner, vb.pp("wi"))?,
                wo: linear_no_bias(inner, model, vb.pp("wo"))?,
            }),
            "gated-gelu" => Ok(Self::GatedGelu {
                wi_0: linear_no_bias(model, inner, vb.pp("wi_0"))?,
                wi_1: linear_no_bias(model, inner, vb.pp("wi_1"))?,
                wo: linear_no_bias(inner, model, vb.pp("wo"))?,
            }),
            other => candle_core::bail!("unsupported T5 feed_forward_proj {other}"),
        }
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        match self {
            Self::Relu { wi, wo } => wo.forward(&wi.forward(xs)?.relu()?),
            Self::GatedGelu { wi_0, wi_1, wo } => {
                let gate = gelu_tanh(&wi_0.forward(xs)?)?;
                wo.forward(&(gate * wi_1.forward(xs)?)?)
            }
        }
    }
}

#[derive(Debug)]
struct Block {
    attention_norm: T5LayerNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    ff_norm: T5LayerNorm,
    ff: FeedForward,
    heads: usize,
}

impl Block {
    fn new(config: &T5Config, vb: VarBuilder) -> Result<Self> {
        let inner = config.num_heads * config.d_kv;
        let attention = vb.pp("layer.0.SelfAttention");
        Ok(Self {
            attention_norm: T5LayerNorm::new(
                config.d_model,
                config.layer_norm_epsilon,
                vb.pp("layer.0.layer_norm"),
            )?,
            q: linear_no_bias(config.d_model, inner, attention.pp("q"))?,
            k: linear_no_bias(config.d_model, inner, attention.pp("k"))?,
            v: linear_no_bias(config.d_model, inner, attention.pp("v"))?,
            o: linear_no_bias(inner, config.d_model, attention.pp("o"))?,
            ff_norm: T5LayerNorm::new(
                config.d_model,
                config.layer_norm_epsilon,
                vb.pp("layer.1.layer_norm"),
            )?,
            ff: FeedForward::new(config, vb.pp("layer.1.DenseReluDense"))?,
            heads: config.num_heads,
        })
    }

    /// `bias`: relative position bias plus mask, (batch or 1, heads, tokens, tokens).
    fn forward(&self, xs: &Tensor, bias: &Tensor) -> Result<Tensor> {
        let normed = self.attention_norm.forward(xs)?;
        let query = split_heads(&self.q.forward(&normed)?, self.heads)?;
        let key = split_heads(&self.k.forward(&normed)?, self.heads)?;
        let value = split_heads(&self.v.forward(&normed)?, self.heads)?;
        // T5 folds the 1/sqrt(d) scale into its weights: no scaling here.
        let context = attention(&query, &key, &value, 1.0, Some(bias))?;
        let xs = (xs + self.o.forward(&context)?)?;
        let ff = self.ff.forward(&self.ff_norm.forward(&xs)?)?;
        xs + ff
    }
}

#[derive(Debug)]
pub struct T5Encoder {
    embed_tokens: Embedding,
    relative_attention_bias: Embedding,
    blocks: Vec<Block>,
    final_layer_norm: T5LayerNorm,
    config: T5Config,
}

impl T5Encoder {
    pub fn new(config: &T5Config, vb: VarBuilder) -> Result<Self> {
        // `shared` and `encoder.embed_tokens` are tied; files may hold either or both.
        let embedding_name = if vb.contains_tensor("encoder.embed_tokens.weight") {
            "encoder.embed_tokens"
        } else {
            "shared"
        };
        let encoder = vb.pp("encoder");
        let blocks = (0..config.num_layers)
            .map(|index| Block::new(config, encoder.pp(format!("block.{index}"))))
            .collect::<Result<_>>()?;
        Ok(Self {
            embed_tokens: candle_nn::embedding(
                config.vocab_size,
                config.d_model,
                vb.pp(embedding_name),
            )?,
            relative_attention_bias: candle_nn::embedding(
                config.relative_attention_num_buckets,
                config.num_heads,
                encoder.pp("block.0.layer.0.SelfAttention.relative_attention_bias"),
            )?,
            blocks,
            final_layer_norm: T5LayerNorm::new(
                config.d_model,
                config.layer_norm_epsilon,
                encoder.pp("final_layer_norm"),
            )?,
            config: config.clone(),
        })
    }

    /// Bidirectional bucket of `key - query`, in f32 exactly as transformers computes it.
    fn bucket(&self, relative: i64) -> u32 {
        let buckets = (self.config.relative_attention_num_buckets / 2) as i64;
        let mut bucket = if relative > 0 { buckets } else { 0 };
        let distance = relative.abs();
        let max_exact = buckets / 2;
        if distance < max_exact {
            bucket += distance;
        } else {
            let ratio = (distance as f32 / max_exact as f32).ln()
                / ((self.config.relative_attention_max_distance as f64 / max_exact as f64).ln()
                    as f32);
            let large = max_exact + (ratio * (buckets - max_exact) as f32) as i64;
            bucket += large.min(buckets - 1);
        }
        bucket as u32
    }

    fn position_bias(&self, tokens: usize, device: &Device) -> Result<Tensor> {
        let buckets: Vec<u32> = (0..tokens)
            .flat_map(|query| (0..tokens).map(move |key| (query, key)))
            .map(|(query, key)| self.bucket(key as i64 - query as i64))
            .collect();
        let buckets = Tensor::from_vec(buckets, (tokens, tokens), device)?;
        // (tokens, tokens, heads) -> (1, heads, tokens, tokens)
        self.relative_attention_bias
            .forward(&buckets)?
            .permute((2, 0, 1))?
            .unsqueeze(0)
    }

    /// `T5EncoderModel(ids, attention_mask)[0]`: (batch, tokens, d_model).
    pub fn forward(&self, ids: &[Vec<u32>], mask: &[Vec<u32>], device: &Device) -> Result<Tensor> {
        let ids = Tensor::new(ids.to_vec(), device)?;
        let (_, tokens) = ids.dims2()?;
        let mut hidden = self.embed_tokens.forward(&ids)?;
        let dtype = hidden.dtype();
        let mask = Tensor::new(mask.to_vec(), device)?;
        let mask_bias = mask_to_bias(&mask, f32::MIN as f64, dtype)?
            .unsqueeze(1)?
            .unsqueeze(1)?;
        let bias = self
            .position_bias(tokens, device)?
            .to_dtype(dtype)?
            .broadcast_add(&mask_bias)?;
        for block in &self.blocks {
            hidden = block.forward(&hidden, &bias)?;
        }
        self.final_layer_norm.forward(&hidden)
    }
}

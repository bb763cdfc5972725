//! transformers' `T5GemmaEncoderModel` (the encoder half of T5Gemma), Stable Audio 3's text
//! encoder: Gemma-style layers with pre- and post-norms, grouped-query attention scaled by
//! `query_pre_attn_scalar`, logit soft-capping, RoPE and bidirectional (optionally banded) masks.

use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::{Embedding, VarBuilder};
use serde::Deserialize;

use super::differential_attention::{RotaryTables, default_inv_freq, rms_norm, rotate_half};
use super::layers::{finite_min, gelu_tanh, linear, linear_no_bias, softmax_last_dim_f32};
use crate::engine::limits::{Limits, MAX_DIMENSION, MAX_LAYERS, Validated};
use crate::engine::models::layers::Linear;

/// The encoder's settings. The file is a `T5GemmaConfig` whose `encoder` entry holds them; a
/// flat file is read as that entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "serde_json::Value")]
pub struct T5GemmaEncoderConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub hidden_activation: String,
    pub rms_norm_eps: f64,
    pub query_pre_attn_scalar: f64,
    pub sliding_window: Option<usize>,
    pub layer_types: Vec<String>,
    pub attn_logit_softcapping: Option<f64>,
    pub rope_theta: f64,
    pub attention_bias: bool,
}

#[derive(Deserialize)]
struct RawConfig {
    #[serde(default = "default_vocab")]
    vocab_size: usize,
    #[serde(default = "default_hidden")]
    hidden_size: usize,
    #[serde(default = "default_intermediate")]
    intermediate_size: usize,
    #[serde(default = "default_layers")]
    num_hidden_layers: usize,
    #[serde(default = "default_heads")]
    num_attention_heads: usize,
    #[serde(default = "default_kv_heads")]
    num_key_value_heads: usize,
    #[serde(default = "default_head_dim")]
    head_dim: usize,
    #[serde(default = "default_activation")]
    hidden_activation: String,
    #[serde(default = "default_eps")]
    rms_norm_eps: f64,
    #[serde(default = "default_scalar")]
    query_pre_attn_scalar: f64,
    #[serde(default = "default_window")]
    sliding_window: Option<usize>,
    #[serde(default)]
    layer_types: Option<Vec<String>>,
    #[serde(default = "default_softcap")]
    attn_logit_softcapping: Option<f64>,
    #[serde(default)]
    rope_parameters: Option<serde_json::Value>,
    #[serde(default)]
    rope_theta: Option<f64>,
    #[serde(default)]
    attention_bias: bool,
}

fn default_vocab() -> usize {
    256000
}
fn default_hidden() -> usize {
    2304
}
fn default_intermediate() -> usize {
    9216
}
fn default_layers() -> usize {
    26
}
fn default_heads() -> usize {
    8
}
fn default_kv_heads() -> usize {
    4
}
fn default_head_dim() -> usize {
    256
}
fn default_activation() -> String {
    "gelu_pytorch_tanh".into()
}
fn default_eps() -> f64 {
    1e-6
}
fn default_scalar() -> f64 {
    256.0
}
fn default_window() -> Option<usize> {
    Some(4096)
}
fn default_softcap() -> Option<f64> {
    Some(50.0)
}

impl TryFrom<serde_json::Value> for T5GemmaEncoderConfig {
    type Error = String;

    fn try_from(value: serde_json::Value) -> std::result::Result<Self, String> {
        let module = value.get("encoder").cloned().unwrap_or(value);
        let raw: RawConfig = serde_json::from_value(module).map_err(|error| error.to_string())?;
        let rope = raw.rope_parameters.as_ref();
        let rope_type = rope
            .and_then(|rope| rope.get("rope_type"))
            .and_then(serde_json::Value::as_str)
            .unwrap_or("default");
        if rope_type != "default" {
            return Err(format!(
                "rope_type {rope_type} is not supported (only the default RoPE)"
            ));
        }
        let rope_theta = rope
            .and_then(|rope| rope.get("rope_theta"))
            .and_then(serde_json::Value::as_f64)
            .or(raw.rope_theta)
            .unwrap_or(10000.0);
        // transformers' default alternates sliding and full attention, sliding first.
        let layer_types = raw.layer_types.unwrap_or_else(|| {
            (0..raw.num_hidden_layers)
                .map(|index| {
                    if (index + 1) % 2 == 1 {
                        "sliding_attention".to_string()
                    } else {
                        "full_attention".to_string()
                    }
                })
                .collect()
        });
        Ok(Self {
            vocab_size: raw.vocab_size,
            hidden_size: raw.hidden_size,
            intermediate_size: raw.intermediate_size,
            num_hidden_layers: raw.num_hidden_layers,
            num_attention_heads: raw.num_attention_heads,
            num_key_value_heads: raw.num_key_value_heads,
            head_dim: raw.head_dim,
            hidden_activation: raw.hidden_activation,
            rms_norm_eps: raw.rms_norm_eps,
            query_pre_attn_scalar: raw.query_pre_attn_scalar,
            sliding_window: raw.sliding_window,
            layer_types,
            attn_logit_softcapping: raw.attn_logit_softcapping,
            rope_theta,
            attention_bias: raw.attention_bias,
        })
    }
}

impl Validated for T5GemmaEncoderConfig {
    fn validate(&self) -> std::result::Result<(), String> {
        let mut limits = Limits::new();
        limits
            .dimension("vocab_size", self.vocab_size)
            .dimension("hidden_size", self.hidden_size)
            .dimension("intermediate_size", self.intermediate_size)
            .size("num_hidden_layers", self.num_hidden_layers, MAX_LAYERS)
            .size("num_attention_heads", self.num_attention_heads, 1024)
            .size("num_key_value_heads", self.num_key_value_heads, 1024)
            .splits(
                "num_attention_heads",
                self.num_attention_heads,
                "num_key_value_heads",
                self.num_key_value_heads,
            )
            .size("head_dim", self.head_dim, 4096)
            .splits("head_dim", self.head_dim, "2 (RoPE halves)", 2)
            .number("rms_norm_eps", self.rms_norm_eps, 0.0, 1.0)
            .number(
                "query_pre_attn_scalar",
                self.query_pre_attn_scalar,
                0.0,
                1e9,
            )
            .number("rope_theta", self.rope_theta, 0.0, 1e12)
            .product(
                "num_attention_heads × head_dim",
                &[self.num_attention_heads, self.head_dim],
                MAX_DIMENSION,
            )
            .product(
                "vocab_size × hidden_size",
                &[self.vocab_size, self.hidden_size],
                1 << 31,
            );
        if let Some(cap) = self.attn_logit_softcapping {
            limits.number("attn_logit_softcapping", cap, 0.0, 1e9);
        }
        if self.layer_types.len() != self.num_hidden_layers {
            limits.problem(format!(
                "layer_types has {} entries for {} layers",
                self.layer_types.len(),
                self.num_hidden_layers
            ));
        }
        if let Some(bad) = self
            .layer_types
            .iter()
            .find(|kind| !matches!(kind.as_str(), "full_attention" | "sliding_attention"))
        {
            limits.problem(format!("layer type {bad} is not supported"));
        }
        if !matches!(
            self.hidden_activation.as_str(),
            "gelu_pytorch_tanh" | "gelu_new" | "gelu"
        ) {
            limits.problem(format!(
                "hidden_activation {} is not supported",
                self.hidden_activation
            ));
        }
        limits.finish()
    }
}

/// T5Gemma's RMS norm: `x·rsqrt(mean x² + eps)·(1 + w)` in f32, the shared `rms_norm` with
/// `1 + w` as its scale.
#[derive(Debug, Clone)]
struct RmsNorm {
    weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    fn new(size: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            weight: (vb.get(size, "weight")?.to_dtype(DType::F32)? + 1.0)?,
            eps,
        })
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        rms_norm(xs, &self.weight, self.eps)
    }
}

#[derive(Debug, Clone)]
struct SelfAttention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    scaling: f64,
    softcap: Option<f64>,
}

impl SelfAttention {
    fn new(config: &T5GemmaEncoderConfig, vb: VarBuilder) -> Result<Self> {
        let make = if config.attention_bias {
            linear
        } else {
            linear_no_bias
        };
        let (hidden, head_dim) = (config.hidden_size, config.head_dim);
        let (heads, kv_heads) = (config.num_attention_heads, config.num_key_value_heads);
        Ok(Self {
            q_proj: make(hidden, heads * head_dim, vb.pp("q_proj"))?,
            k_proj: make(hidden, kv_heads * head_dim, vb.pp("k_proj"))?,
            v_proj: make(hidden, kv_heads * head_dim, vb.pp("v_proj"))?,
            o_proj: make(heads * head_dim, hidden, vb.pp("o_proj"))?,
            heads,
            kv_heads,
            head_dim,
            scaling: config.query_pre_attn_scalar.powf(-0.5),
            softcap: config.attn_logit_softcapping,
        })
    }

    /// (batch, tokens, width) → (batch, heads, tokens, head_dim), rotated in f32 like
    /// transformers' `apply_rotary_pos_emb` (whose cos/sin are cast to the input dtype).
    fn heads(&self, xs: &Tensor, heads: usize, rotary: Option<&RotaryTables>) -> Result<Tensor> {
        let (batch, tokens, _) = xs.dims3()?;
        let xs = xs
            .reshape((batch, tokens, heads, self.head_dim))?
            .transpose(1, 2)?
            .contiguous()?;
        match rotary {
            Some(tables) => {
                let dtype = xs.dtype();
                let cos = tables.cos.to_dtype(dtype)?;
                let sin = tables.sin.to_dtype(dtype)?;
                xs.broadcast_mul(&cos)? + rotate_half(&xs)?.broadcast_mul(&sin)?
            }
            None => Ok(xs),
        }
    }

    fn forward(&self, xs: &Tensor, rotary: &RotaryTables, bias: &Tensor) -> Result<Tensor> {
        let (batch, tokens, _) = xs.dims3()?;
        let query = self.heads(&self.q_proj.forward(xs)?, self.heads, Some(rotary))?;
        let key = self.heads(&self.k_proj.forward(xs)?, self.kv_heads, Some(rotary))?;
        let value = self.heads(&self.v_proj.forward(xs)?, self.kv_heads, None)?;
        let repeat = self.heads / self.kv_heads;
        let expand = |xs: Tensor| -> Result<Tensor> {
            if repeat == 1 {
                return Ok(xs);
            }
            xs.unsqueeze(2)?
                .broadcast_as((batch, self.kv_heads, repeat, tokens, self.head_dim))?
                .reshape((batch, self.heads, tokens, self.head_dim))
        };
        let key = expand(key)?;
        let value = expand(value)?;
        let mut scores = (query.matmul(&key.t()?)? * self.scaling)?;
        if let Some(cap) = self.softcap {
            scores = ((scores / cap)?.tanh()? * cap)?;
        }
        let scores = scores.broadcast_add(bias)?;
        let attended = softmax_last_dim_f32(&scores)?.matmul(&value)?;
        let merged =
            attended
                .transpose(1, 2)?
                .reshape((batch, tokens, self.heads * self.head_dim))?;
        self.o_proj.forward(&merged)
    }
}

#[derive(Debug, Clone)]
struct Mlp {
    gate_proj: Linear,
    up_proj: Linear,
    down_proj: Linear,
}

impl Module for Mlp {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let gated = (gelu_tanh(&self.gate_proj.forward(xs)?)? * self.up_proj.forward(xs)?)?;
        self.down_proj.forward(&gated)
    }
}

#[derive(Debug, Clone)]
struct EncoderLayer {
    self_attn: SelfAttention,
    pre_self_attn_layernorm: RmsNorm,
    post_self_attn_layernorm: RmsNorm,
    mlp: Mlp,
    pre_feedforward_layernorm: RmsNorm,
    post_feedforward_layernorm: RmsNorm,
    sliding: bool,
}

impl EncoderLayer {
    fn new(config: &T5GemmaEncoderConfig, index: usize, vb: VarBuilder) -> Result<Self> {
        let (hidden, eps) = (config.hidden_size, config.rms_norm_eps);
        let inner = config.intermediate_size;
        let norm = |name: &str| RmsNorm::new(hidden, eps, vb.pp(name));
        Ok(Self {
            self_attn: SelfAttention::new(config, vb.pp("self_attn"))?,
            pre_self_attn_layernorm: norm("pre_self_attn_layernorm")?,
            post_self_attn_layernorm: norm("post_self_attn_layernorm")?,
            mlp: Mlp {
                gate_proj: linear_no_bias(hidden, inner, vb.pp("mlp.gate_proj"))?,
                up_proj: linear_no_bias(hidden, inner, vb.pp("mlp.up_proj"))?,
                down_proj: linear_no_bias(inner, hidden, vb.pp("mlp.down_proj"))?,
            },
            pre_feedforward_layernorm: norm("pre_feedforward_layernorm")?,
            post_feedforward_layernorm: norm("post_feedforward_layernorm")?,
            sliding: config.layer_types[index] == "sliding_attention",
        })
    }

    fn forward(&self, xs: &Tensor, rotary: &RotaryTables, bias: &Tensor) -> Result<Tensor> {
        let attended =
            self.self_attn
                .forward(&self.pre_self_attn_layernorm.forward(xs)?, rotary, bias)?;
        let xs = (xs + self.post_self_attn_layernorm.forward(&attended)?)?;
        let fed = self
            .mlp
            .forward(&self.pre_feedforward_layernorm.forward(&xs)?)?;
        &xs + self.post_feedforward_layernorm.forward(&fed)?
    }
}

#[derive(Debug)]
pub struct T5GemmaEncoder {
    embed_tokens: Embedding,
    layers: Vec<EncoderLayer>,
    norm: RmsNorm,
    inv_freq: Vec<f32>,
    config: T5GemmaEncoderConfig,
}

impl T5GemmaEncoder {
    pub fn new(config: &T5GemmaEncoderConfig, vb: VarBuilder) -> Result<Self> {
        let encoder = vb.pp("encoder");
        Ok(Self {
            embed_tokens: candle_nn::embedding(
                config.vocab_size,
                config.hidden_size,
                encoder.pp("embed_tokens"),
            )?,
            layers: (0..config.num_hidden_layers)
                .map(|index| {
                    EncoderLayer::new(config, index, encoder.pp(format!("layers.{index}")))
                })
                .collect::<Result<_>>()?,
            norm: RmsNorm::new(config.hidden_size, config.rms_norm_eps, encoder.pp("norm"))?,
            inv_freq: default_inv_freq(config.head_dim, config.rope_theta),
            config: config.clone(),
        })
    }

    pub fn config(&self) -> &T5GemmaEncoderConfig {
        &self.config
    }

    /// Additive masks (batch, 1, tokens, tokens): padded keys are hidden from every query, and
    /// the sliding variant also hides keys farther than the window.
    fn attention_bias(
        &self,
        mask: &[Vec<u32>],
        window: Option<usize>,
        dtype: DType,
        device: &Device,
    ) -> Result<Tensor> {
        let tokens = mask.first().map_or(0, Vec::len);
        // transformers adds the dtype's own minimum (`finfo.min`), not −∞: a query whose keys
        // are all hidden (a pad far from any token in a sliding layer) attends uniformly instead
        // of becoming NaN, and f32's minimum would round to −∞ in half precision.
        let hidden = finite_min(dtype) as f32;
        let mut bias = Vec::with_capacity(mask.len() * tokens * tokens);
        for row in mask {
            for query in 0..tokens {
                bias.extend(row.iter().enumerate().map(|(key, &keep)| {
                    let in_window = window.is_none_or(|window| query.abs_diff(key) <= window);
                    if keep != 0 && in_window { 0.0 } else { hidden }
                }));
            }
        }
        Tensor::from_vec(bias, (mask.len(), 1, tokens, tokens), device)?.to_dtype(dtype)
    }

    /// `T5GemmaEncoderModel(ids, attention_mask).last_hidden_state`: (batch, tokens, hidden),
    /// padded positions included.
    pub fn forward(&self, ids: &[Vec<u32>], mask: &[Vec<u32>], device: &Device) -> Result<Tensor> {
        let ids = Tensor::new(ids.to_vec(), device)?;
        let (_, tokens) = ids.dims2()?;
        let embedded = self.embed_tokens.forward(&ids)?;
        let dtype = embedded.dtype();
        // The normaliser is a tensor of the hidden dtype: sqrt rounded to it first.
        let normaliser = (self.config.hidden_size as f64).sqrt() as f32;
        let normaliser = Tensor::new(normaliser, device)?.to_dtype(dtype)?;
        let mut hidden = embedded.broadcast_mul(&normaliser)?;
        let rotary = RotaryTables::new(&self.inv_freq, tokens, device)?;
        let full = self.attention_bias(mask, None, dtype, device)?;
        let sliding = match self.config.sliding_window {
            Some(window) if window < tokens && self.layers.iter().any(|layer| layer.sliding) => {
                self.attention_bias(mask, Some(window), dtype, device)?
            }
            _ => full.clone(),
        };
        for layer in &self.layers {
            let bias = if layer.sliding { &sliding } else { &full };
            hidden = layer.forward(&hidden, &rotary, bias)?;
        }
        self.norm.forward(&hidden)
    }
}

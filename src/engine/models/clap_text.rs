//! The text branch of transformers' `ClapModel` (a RoBERTa encoder, pooler and projection),
//! giving `get_text_features`: one L2-normalised vector per prompt.

use candle_core::{D, DType, Device, IndexOp, Module, Result, Tensor};
use candle_nn::{Embedding, VarBuilder};

use crate::engine::kernels::layer_norm::LayerNorm;
use serde::Deserialize;

use super::layers::{gelu_exact, layer_norm, linear, mask_to_bias};
use crate::engine::kernels::attention::attention;
use crate::engine::models::layers::Linear;

fn default_eps() -> f64 {
    1e-12
}
fn default_pad() -> u32 {
    1
}
fn default_act() -> String {
    "gelu".into()
}
fn default_projection_act() -> String {
    "relu".into()
}

#[derive(Debug, Clone, Deserialize)]
pub struct ClapTextConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "default_pad")]
    pub pad_token_id: u32,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default)]
    pub type_vocab_size: Option<usize>,
    #[serde(default)]
    pub projection_dim: Option<usize>,
    #[serde(default = "default_projection_act")]
    pub projection_hidden_act: String,
}

/// `config.json` of a `ClapModel` (text part) or `ClapTextModelWithProjection`.
#[derive(Debug, Clone, Deserialize)]
pub struct ClapConfig {
    #[serde(default)]
    pub text_config: Option<ClapTextConfig>,
    #[serde(default)]
    pub projection_dim: Option<usize>,
    /// `ClapTextModelWithProjection` keeps the text config at the top level.
    #[serde(flatten)]
    pub flat: serde_json::Map<String, serde_json::Value>,
}

impl ClapConfig {
    pub fn text(&self) -> std::result::Result<ClapTextConfig, String> {
        let mut text = match &self.text_config {
            Some(text) => text.clone(),
            None => serde_json::from_value(serde_json::Value::Object(self.flat.clone()))
                .map_err(|error| error.to_string())?,
        };
        // ClapConfig's own projection_dim overrides the branch's (transformers ClapConfig.__init__);
        // in a flat ClapTextConfig it is the text config's own key.
        if let Some(dim) = self.projection_dim {
            text.projection_dim = Some(dim);
        }
        Ok(text)
    }
}

#[derive(Debug)]
struct SelfAttention {
    query: Linear,
    key: Linear,
    value: Linear,
    heads: usize,
}

#[derive(Debug)]
struct EncoderLayer {
    attention: SelfAttention,
    attention_output: Linear,
    attention_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    output_norm: LayerNorm,
}

impl EncoderLayer {
    fn new(config: &ClapTextConfig, vb: VarBuilder) -> Result<Self> {
        let hidden = config.hidden_size;
        let attention = vb.pp("attention");
        Ok(Self {
            attention: SelfAttention {
                query: linear(hidden, hidden, attention.pp("self.query"))?,
                key: linear(hidden, hidden, attention.pp("self.key"))?,
                value: linear(hidden, hidden, attention.pp("self.value"))?,
                heads: config.num_attention_heads,
            },
            attention_output: linear(hidden, hidden, attention.pp("output.dense"))?,
            attention_norm: layer_norm(
                hidden,
                config.layer_norm_eps,
                attention.pp("output.LayerNorm"),
            )?,
            intermediate: linear(
                hidden,
                config.intermediate_size,
                vb.pp("intermediate.dense"),
            )?,
            output: linear(config.intermediate_size, hidden, vb.pp("output.dense"))?,
            output_norm: layer_norm(hidden, config.layer_norm_eps, vb.pp("output.LayerNorm"))?,
        })
    }

    fn forward(&self, xs: &Tensor, bias: &Tensor) -> Result<Tensor> {
        let width = xs.dim(2)?;
        let heads = self.attention.heads;
        let query = self.attention.query.forward(xs)?;
        let key = self.attention.key.forward(xs)?;
        let value = self.attention.value.forward(xs)?;
        let scale = 1.0 / ((width / heads) as f64).sqrt();
        let context = attention(&query, &key, &value, heads, scale, Some(bias))?;
        let attended = self
            .attention_norm
            .forward(&(self.attention_output.forward(&context)? + xs)?)?;
        let inner = gelu_exact(&self.intermediate.forward(&attended)?)?;
        self.output_norm
            .forward(&(self.output.forward(&inner)? + attended)?)
    }
}

#[derive(Debug)]
pub struct ClapTextModel {
    word_embeddings: Embedding,
    position_embeddings: Embedding,
    token_type_row: Tensor,
    embeddings_norm: LayerNorm,
    layers: Vec<EncoderLayer>,
    pooler: Linear,
    projection_1: Linear,
    projection_2: Linear,
    pad_token_id: u32,
    projection_relu: bool,
}

impl ClapTextModel {
    /// `vb` points at the root of a `ClapModel` or `ClapTextModelWithProjection` checkpoint.
    pub fn new(config: &ClapTextConfig, vb: VarBuilder) -> Result<Self> {
        if config.hidden_act != "gelu" {
            candle_core::bail!("unsupported CLAP hidden_act {}", config.hidden_act);
        }
        let projection_relu = match config.projection_hidden_act.as_str() {
            "relu" => true,
            "linear" | "identity" => false,
            other => candle_core::bail!("unsupported CLAP projection_hidden_act {other}"),
        };
        let hidden = config.hidden_size;
        let text = vb.pp("text_model");
        let embeddings = text.pp("embeddings");
        let type_rows = config.type_vocab_size.unwrap_or(1);
        let token_types = embeddings.get((type_rows, hidden), "token_type_embeddings.weight")?;
        let layers = (0..config.num_hidden_layers)
            .map(|index| EncoderLayer::new(config, text.pp(format!("encoder.layer.{index}"))))
            .collect::<Result<_>>()?;
        let projection_dim = config
            .projection_dim
            .ok_or_else(|| candle_core::Error::msg("CLAP config has no projection_dim"))?;
        Ok(Self {
            word_embeddings: candle_nn::embedding(
                config.vocab_size,
                hidden,
                embeddings.pp("word_embeddings"),
            )?,
            position_embeddings: candle_nn::embedding(
                config.max_position_embeddings,
                hidden,
                embeddings.pp("position_embeddings"),
            )?,
            token_type_row: token_types.i(0)?,
            embeddings_norm: layer_norm(hidden, config.layer_norm_eps, embeddings.pp("LayerNorm"))?,
            layers,
            pooler: linear(hidden, hidden, text.pp("pooler.dense"))?,
            projection_1: linear(hidden, projection_dim, vb.pp("text_projection.linear1"))?,
            projection_2: linear(
                projection_dim,
                projection_dim,
                vb.pp("text_projection.linear2"),
            )?,
            pad_token_id: config.pad_token_id,
            projection_relu,
        })
    }

    /// RoBERTa positions: real tokens count up from `pad + 1`, padding sits at `pad`.
    fn position_ids(&self, ids: &[Vec<u32>], device: &Device) -> Result<Tensor> {
        let rows: Vec<Vec<u32>> = ids
            .iter()
            .map(|row| {
                let mut seen = 0u32;
                row.iter()
                    .map(|id| {
                        if *id == self.pad_token_id {
                            self.pad_token_id
                        } else {
                            seen += 1;
                            seen + self.pad_token_id
                        }
                    })
                    .collect()
            })
            .collect();
        Tensor::new(rows, device)
    }

    /// The projected pooler output before normalisation, (batch, projection_dim).
    pub fn text_embeds(
        &self,
        ids: &[Vec<u32>],
        mask: &[Vec<u32>],
        device: &Device,
    ) -> Result<Tensor> {
        // Trailing padding every row shares changes nothing: masked keys get zero weight and
        // the pooler reads token 0. Dropping it saves the 512-token padding diffusers computes
        // (97 GFLOP per prompt for roberta-base; components.md §8).
        let keep = mask
            .iter()
            .map(|row| row.iter().rposition(|m| *m != 0).map_or(1, |last| last + 1))
            .max()
            .unwrap_or(1);
        let ids: Vec<Vec<u32>> = ids
            .iter()
            .map(|row| row[..keep.min(row.len())].to_vec())
            .collect();
        let mask: Vec<Vec<u32>> = mask
            .iter()
            .map(|row| row[..keep.min(row.len())].to_vec())
            .collect();
        let (ids, mask) = (ids.as_slice(), mask.as_slice());
        let dtype = self.token_type_row.dtype();
        let ids_tensor = Tensor::new(ids.to_vec(), device)?;
        let positions = self.position_ids(ids, device)?;
        let embedded = self
            .word_embeddings
            .forward(&ids_tensor)?
            .add(&self.position_embeddings.forward(&positions)?)?
            .broadcast_add(&self.token_type_row)?;
        let mut hidden = self.embeddings_norm.forward(&embedded)?;
        let mask = Tensor::new(mask.to_vec(), device)?;
        // (batch, keys): every head and query sees the same key mask.
        let bias = mask_to_bias(&mask, f32::MIN as f64, dtype)?;
        for layer in &self.layers {
            hidden = layer.forward(&hidden, &bias)?;
        }
        let first = hidden.i((.., 0))?;
        let pooled = self.pooler.forward(&first)?.tanh()?;
        let projected = self.projection_1.forward(&pooled)?;
        let projected = if self.projection_relu {
            projected.relu()?
        } else {
            projected
        };
        self.projection_2.forward(&projected)
    }

    /// `ClapModel.get_text_features`: the projected vector, L2-normalised.
    pub fn text_features(
        &self,
        ids: &[Vec<u32>],
        mask: &[Vec<u32>],
        device: &Device,
    ) -> Result<Tensor> {
        l2_normalize(&self.text_embeds(ids, mask, device)?)
    }
}

/// `F.normalize(x, dim=-1)`: divides by max(‖x‖, 1e-12).
pub fn l2_normalize(xs: &Tensor) -> Result<Tensor> {
    let norm = xs
        .to_dtype(DType::F32)?
        .sqr()?
        .sum_keepdim(D::Minus1)?
        .sqrt()?
        .clamp(1e-12, f64::INFINITY)?
        .to_dtype(xs.dtype())?;
    xs.broadcast_div(&norm)
}

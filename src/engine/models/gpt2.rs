//! transformers' `GPT2Model` driven by embeddings, and AudioLDM 2's `generate_language_model`.

use candle_core::{D, DType, Module, Result, Tensor};
use candle_nn::{Embedding, LayerNorm, VarBuilder};
use serde::Deserialize;

use super::layers::{attention, gelu_tanh, layer_norm, split_heads};

fn default_eps() -> f64 {
    1e-5
}
fn default_activation() -> String {
    "gelu_new".into()
}
fn default_new_tokens() -> usize {
    8
}

#[derive(Debug, Clone, Deserialize)]
pub struct Gpt2Config {
    pub n_embd: usize,
    pub n_head: usize,
    pub n_layer: usize,
    pub n_positions: usize,
    #[serde(default)]
    pub n_inner: Option<usize>,
    #[serde(default = "default_eps")]
    pub layer_norm_epsilon: f64,
    #[serde(default = "default_activation")]
    pub activation_function: String,
    /// AudioLDM 2 stores its generation length in the language model's config.
    #[serde(default = "default_new_tokens")]
    pub max_new_tokens: usize,
    #[serde(default)]
    pub scale_attn_by_inverse_layer_idx: bool,
    #[serde(default)]
    pub reorder_and_upcast_attn: bool,
}

/// GPT-2's `Conv1D`: a linear layer whose weight is stored (in, out).
#[derive(Debug)]
struct Conv1D {
    weight: Tensor,
    bias: Tensor,
}

impl Conv1D {
    fn new(input: usize, output: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            weight: vb.get((input, output), "weight")?,
            bias: vb.get(output, "bias")?,
        })
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let (batch, tokens, width) = xs.dims3()?;
        xs.reshape((batch * tokens, width))?
            .matmul(&self.weight)?
            .broadcast_add(&self.bias)?
            .reshape((batch, tokens, ()))
    }
}

#[derive(Debug)]
struct Block {
    ln_1: LayerNorm,
    c_attn: Conv1D,
    attn_proj: Conv1D,
    ln_2: LayerNorm,
    c_fc: Conv1D,
    mlp_proj: Conv1D,
    heads: usize,
}

impl Block {
    fn new(config: &Gpt2Config, vb: VarBuilder) -> Result<Self> {
        let width = config.n_embd;
        let inner = config.n_inner.unwrap_or(4 * width);
        Ok(Self {
            ln_1: layer_norm(width, config.layer_norm_epsilon, vb.pp("ln_1"))?,
            c_attn: Conv1D::new(width, 3 * width, vb.pp("attn.c_attn"))?,
            attn_proj: Conv1D::new(width, width, vb.pp("attn.c_proj"))?,
            ln_2: layer_norm(width, config.layer_norm_epsilon, vb.pp("ln_2"))?,
            c_fc: Conv1D::new(width, inner, vb.pp("mlp.c_fc"))?,
            mlp_proj: Conv1D::new(inner, width, vb.pp("mlp.c_proj"))?,
            heads: config.n_head,
        })
    }

    fn forward(&self, xs: &Tensor, bias: &Tensor) -> Result<Tensor> {
        let width = xs.dim(2)?;
        let qkv = self.c_attn.forward(&self.ln_1.forward(xs)?)?;
        let split =
            |index: usize| split_heads(&qkv.narrow(D::Minus1, index * width, width)?, self.heads);
        let (query, key, value) = (split(0)?, split(1)?, split(2)?);
        let scale = 1.0 / ((width / self.heads) as f64).sqrt();
        let context = attention(&query, &key, &value, scale, Some(bias))?;
        let xs = (xs + self.attn_proj.forward(&context)?)?;
        let mlp = self
            .mlp_proj
            .forward(&gelu_tanh(&self.c_fc.forward(&self.ln_2.forward(&xs)?)?)?)?;
        xs + mlp
    }
}

#[derive(Debug)]
pub struct Gpt2Model {
    wpe: Embedding,
    blocks: Vec<Block>,
    ln_f: LayerNorm,
    config: Gpt2Config,
}

impl Gpt2Model {
    /// Accepts both layouts: `GPT2Model` (keys at the root) and `GPT2LMHeadModel` (`transformer.`).
    pub fn new(config: &Gpt2Config, vb: VarBuilder) -> Result<Self> {
        if !matches!(
            config.activation_function.as_str(),
            "gelu_new" | "gelu_pytorch_tanh"
        ) {
            candle_core::bail!(
                "unsupported GPT-2 activation {}",
                config.activation_function
            );
        }
        if config.scale_attn_by_inverse_layer_idx || config.reorder_and_upcast_attn {
            candle_core::bail!("unsupported GPT-2 attention scaling options");
        }
        let vb = if vb.contains_tensor("transformer.wpe.weight") {
            vb.pp("transformer")
        } else {
            vb
        };
        let blocks = (0..config.n_layer)
            .map(|index| Block::new(config, vb.pp(format!("h.{index}"))))
            .collect::<Result<_>>()?;
        Ok(Self {
            wpe: candle_nn::embedding(config.n_positions, config.n_embd, vb.pp("wpe"))?,
            blocks,
            ln_f: layer_norm(config.n_embd, config.layer_norm_epsilon, vb.pp("ln_f"))?,
            config: config.clone(),
        })
    }

    pub fn config(&self) -> &Gpt2Config {
        &self.config
    }

    /// Last hidden state (after `ln_f`) for `inputs_embeds` (batch, tokens, n_embd) and a 0/1
    /// mask (batch, tokens); positions are plain `0..tokens` as in transformers.
    pub fn forward(&self, inputs_embeds: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let (batch, tokens, _) = inputs_embeds.dims3()?;
        if tokens > self.config.n_positions {
            candle_core::bail!(
                "GPT-2 input of {tokens} tokens exceeds n_positions {}",
                self.config.n_positions
            );
        }
        let device = inputs_embeds.device();
        let dtype = inputs_embeds.dtype();
        let positions = Tensor::arange(0u32, tokens as u32, device)?;
        let mut hidden = inputs_embeds.broadcast_add(&self.wpe.forward(&positions)?)?;
        let bias = attention_bias(mask, batch, tokens, dtype)?;
        for block in &self.blocks {
            hidden = block.forward(&hidden, &bias)?;
        }
        self.ln_f.forward(&hidden)
    }

    /// `AudioLDM2Pipeline.generate_language_model`: appends the last hidden state `new_tokens`
    /// times and returns the appended vectors (batch, new_tokens, n_embd).
    pub fn generate(
        &self,
        inputs_embeds: &Tensor,
        mask: &Tensor,
        new_tokens: usize,
    ) -> Result<Tensor> {
        let mut embeds = inputs_embeds.clone();
        let mut mask = mask.clone();
        let batch = embeds.dim(0)?;
        for _ in 0..new_tokens {
            // Recomputing the whole (short) sequence equals the KV-cached loop up to rounding.
            let hidden = self.forward(&embeds, &mask)?;
            let tokens = hidden.dim(1)?;
            let last = hidden.narrow(1, tokens - 1, 1)?;
            embeds = Tensor::cat(&[&embeds, &last], 1)?;
            let ones = Tensor::ones((batch, 1), mask.dtype(), mask.device())?;
            mask = Tensor::cat(&[&mask, &ones], 1)?;
        }
        let tokens = embeds.dim(1)?;
        embeds.narrow(1, tokens - new_tokens, new_tokens)
    }
}

/// Causal mask combined with key padding, as an additive bias (batch, 1, tokens, tokens).
fn attention_bias(mask: &Tensor, batch: usize, tokens: usize, dtype: DType) -> Result<Tensor> {
    let keep: Vec<u32> = mask.to_dtype(DType::U32)?.flatten_all()?.to_vec1()?;
    let mut bias = vec![0f32; batch * tokens * tokens];
    for row in 0..batch {
        for query in 0..tokens {
            for key in 0..tokens {
                if key > query || keep[row * tokens + key] == 0 {
                    bias[(row * tokens + query) * tokens + key] = f32::MIN;
                }
            }
        }
    }
    Tensor::from_vec(bias, (batch, 1, tokens, tokens), mask.device())?.to_dtype(dtype)
}

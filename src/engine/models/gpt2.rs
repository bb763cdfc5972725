//! transformers' `GPT2Model` driven by embeddings, and AudioLDM 2's `generate_language_model`.

use candle_core::{D, DType, Module, Result, Tensor};
use candle_nn::{Embedding, VarBuilder};

use crate::engine::kernels::layer_norm::LayerNorm;
use serde::Deserialize;

use super::layers::{Linear, attention, gelu_tanh, layer_norm, split_heads};

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
fn conv1d(input: usize, output: usize, vb: VarBuilder) -> Result<Linear> {
    let weight = vb.get((input, output), "weight")?;
    Linear::from_input_major(weight, Some(vb.get(output, "bias")?))
}

#[derive(Debug)]
struct Block {
    ln_1: LayerNorm,
    c_attn: Linear,
    attn_proj: Linear,
    ln_2: LayerNorm,
    c_fc: Linear,
    mlp_proj: Linear,
    heads: usize,
}

impl Block {
    fn new(config: &Gpt2Config, vb: VarBuilder) -> Result<Self> {
        let width = config.n_embd;
        let inner = config.n_inner.unwrap_or(4 * width);
        Ok(Self {
            ln_1: layer_norm(width, config.layer_norm_epsilon, vb.pp("ln_1"))?,
            c_attn: conv1d(width, 3 * width, vb.pp("attn.c_attn"))?,
            attn_proj: conv1d(width, width, vb.pp("attn.c_proj"))?,
            ln_2: layer_norm(width, config.layer_norm_epsilon, vb.pp("ln_2"))?,
            c_fc: conv1d(width, inner, vb.pp("mlp.c_fc"))?,
            mlp_proj: conv1d(inner, width, vb.pp("mlp.c_proj"))?,
            heads: config.n_head,
        })
    }

    /// One block over the new tokens `xs`; `cache` holds the keys and values of the tokens
    /// before them (batch, heads, tokens, head_dim) and gets these tokens' appended.
    fn forward(&self, xs: &Tensor, bias: &Tensor, cache: &mut Option<KeyValues>) -> Result<Tensor> {
        let width = xs.dim(2)?;
        let qkv = self.c_attn.forward(&self.ln_1.forward(xs)?)?;
        let split =
            |index: usize| split_heads(&qkv.narrow(D::Minus1, index * width, width)?, self.heads);
        let (query, key, value) = (split(0)?, split(1)?, split(2)?);
        let (key, value) = match cache.take() {
            Some(past) => (
                Tensor::cat(&[&past.key, &key], 2)?,
                Tensor::cat(&[&past.value, &value], 2)?,
            ),
            None => (key, value),
        };
        *cache = Some(KeyValues {
            key: key.clone(),
            value: value.clone(),
        });
        let scale = 1.0 / ((width / self.heads) as f64).sqrt();
        let context = attention(&query, &key, &value, scale, Some(bias))?;
        let xs = (xs + self.attn_proj.forward(&context)?)?;
        let mlp = self
            .mlp_proj
            .forward(&gelu_tanh(&self.c_fc.forward(&self.ln_2.forward(&xs)?)?)?)?;
        xs + mlp
    }
}

/// A block's keys and values of the tokens seen so far.
struct KeyValues {
    key: Tensor,
    value: Tensor,
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
        let mut caches = self.empty_caches();
        self.forward_cached(inputs_embeds, mask, &mut caches)
    }

    fn empty_caches(&self) -> Vec<Option<KeyValues>> {
        self.blocks.iter().map(|_| None).collect()
    }

    /// The last hidden state of `new_embeds`, the tokens after those in `caches`; `mask`
    /// (batch, all tokens) covers both. Positions continue from the cached length.
    fn forward_cached(
        &self,
        new_embeds: &Tensor,
        mask: &Tensor,
        caches: &mut [Option<KeyValues>],
    ) -> Result<Tensor> {
        let (batch, new, _) = new_embeds.dims3()?;
        let total = mask.dim(1)?;
        if total > self.config.n_positions {
            candle_core::bail!(
                "GPT-2 input of {total} tokens exceeds n_positions {}",
                self.config.n_positions
            );
        }
        let start = total - new;
        let device = new_embeds.device();
        let positions = Tensor::arange(start as u32, total as u32, device)?;
        let mut hidden = new_embeds.broadcast_add(&self.wpe.forward(&positions)?)?;
        let bias = attention_bias(mask, batch, start, new_embeds.dtype())?;
        for (block, cache) in self.blocks.iter().zip(caches.iter_mut()) {
            hidden = block.forward(&hidden, &bias, cache)?;
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
        // With a key/value cache, as diffusers' loop runs it (`past_key_values`): each step
        // feeds only the previous step's output.
        let batch = inputs_embeds.dim(0)?;
        let mut caches = self.empty_caches();
        let mut mask = mask.clone();
        let mut step_input = inputs_embeds.clone();
        let mut generated = Vec::with_capacity(new_tokens);
        for _ in 0..new_tokens {
            let hidden = self.forward_cached(&step_input, &mask, &mut caches)?;
            let last = hidden.narrow(1, hidden.dim(1)? - 1, 1)?;
            let ones = Tensor::ones((batch, 1), mask.dtype(), mask.device())?;
            mask = Tensor::cat(&[&mask, &ones], 1)?;
            generated.push(last.clone());
            step_input = last;
        }
        Tensor::cat(&generated, 1)
    }
}

/// Causal mask combined with key padding, as an additive bias (batch, 1, queries, tokens) for
/// the queries at positions `start..tokens` over all `tokens` keys of `mask` (batch, tokens).
fn attention_bias(mask: &Tensor, batch: usize, start: usize, dtype: DType) -> Result<Tensor> {
    let tokens = mask.dim(1)?;
    let queries = tokens - start;
    let keep: Vec<u32> = mask.to_dtype(DType::U32)?.flatten_all()?.to_vec1()?;
    let mut bias = vec![0f32; batch * queries * tokens];
    for row in 0..batch {
        for query in 0..queries {
            for key in 0..tokens {
                if key > start + query || keep[row * tokens + key] == 0 {
                    bias[(row * queries + query) * tokens + key] = f32::MIN;
                }
            }
        }
    }
    Tensor::from_vec(bias, (batch, 1, queries, tokens), mask.device())?.to_dtype(dtype)
}

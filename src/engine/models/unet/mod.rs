//! diffusers' conditional UNets in one model: `UNet2DConditionModel` as AudioLDM and MusicLDM
//! use it (a CLAP class embedding, no context) and `AudioLDM2UNet2DConditionModel`, whose
//! attention layers hold several transformers routed by position to the GPT-2 or T5 context.

mod attention;
mod blocks;
mod config;
mod resnet;

pub use attention::{Attention, SpatialSelfAttention};
pub use blocks::Route;
pub use config::UNetConfig;
pub use resnet::{ResnetBlock2D, ResnetConfig, Upsample2D};

use candle_core::{Device, Module, Result, Tensor};
use candle_nn::VarBuilder;

use blocks::{AttentionSpec, BlockShape, Contexts, DownBlock, MidBlock, UpBlock, UpChannels};

use crate::engine::kernels::conv::Conv2d;
use crate::engine::kernels::group_norm::GroupNorm;
use crate::engine::models::layers::Linear;
use crate::engine::models::layers::{conv2d, group_norm, linear, mask_to_bias};

/// Sinusoidal timestep features, computed in f32 like diffusers' `get_timestep_embedding`.
pub fn timestep_features(
    timestep: f64,
    batch: usize,
    dim: usize,
    flip_sin_to_cos: bool,
    freq_shift: f64,
    device: &Device,
) -> Result<Tensor> {
    let half = dim / 2;
    let log_period = -(10000f64.ln() as f32);
    let denominator = (half as f64 - freq_shift) as f32;
    let timestep = timestep as f32;
    let mut sines = Vec::with_capacity(half);
    let mut cosines = Vec::with_capacity(half);
    for index in 0..half {
        let frequency = (log_period * index as f32 / denominator).exp();
        let angle = timestep * frequency;
        sines.push(angle.sin());
        cosines.push(angle.cos());
    }
    let mut row = if flip_sin_to_cos {
        [cosines, sines].concat()
    } else {
        [sines, cosines].concat()
    };
    row.resize(dim, 0.0);
    let rows: Vec<f32> = row.iter().copied().cycle().take(batch * dim).collect();
    Tensor::from_vec(rows, (batch, dim), device)
}

#[derive(Debug)]
struct TimestepEmbedding {
    linear_1: Linear,
    linear_2: Linear,
}

impl TimestepEmbedding {
    fn new(input: usize, output: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            linear_1: linear(input, output, vb.pp("linear_1"))?,
            linear_2: linear(output, output, vb.pp("linear_2"))?,
        })
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        self.linear_2.forward(&self.linear_1.forward(xs)?.silu()?)
    }
}

/// The conditioning a UNet takes besides the noisy latents.
#[derive(Debug, Clone, Copy, Default)]
pub struct UNetConditioning<'a> {
    /// AudioLDM 2: GPT-2 generated embeddings (batch, 8, language_model_dim).
    pub generated: Option<&'a Tensor>,
    /// T5 hidden states (batch, tokens, t5_dim).
    pub text: Option<&'a Tensor>,
    /// T5 attention mask (batch, tokens) of 0/1.
    pub text_mask: Option<&'a Tensor>,
    /// AudioLDM / MusicLDM: the CLAP text vector (batch, projection_dim).
    pub class_labels: Option<&'a Tensor>,
}

#[derive(Debug)]
pub struct UNet2DConditionModel {
    config: UNetConfig,
    conv_in: Conv2d,
    time_embedding: TimestepEmbedding,
    class_embedding: Option<Linear>,
    down_blocks: Vec<DownBlock>,
    mid_block: MidBlock,
    up_blocks: Vec<UpBlock>,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl UNet2DConditionModel {
    pub fn new(config: &UNetConfig, vb: VarBuilder) -> Result<Self> {
        config.check_supported().map_err(candle_core::Error::msg)?;
        let blocks = config.block_out_channels.len();
        let resolve =
            |value: std::result::Result<Vec<usize>, String>| value.map_err(candle_core::Error::msg);
        let layers = resolve(config.layers_per_block.resolve(blocks))?;
        let depths = resolve(config.transformer_layers_per_block.resolve(blocks))?;
        let heads = resolve(
            config
                .num_attention_heads
                .as_ref()
                .unwrap_or(&config.attention_head_dim)
                .resolve(blocks),
        )?;
        let cross_dims = config
            .cross_attention_dim
            .resolve(blocks)
            .map_err(candle_core::Error::msg)?;
        let spec = |index: usize| AttentionSpec {
            dims: cross_dims[index].per_transformer(),
            heads: heads[index],
            depth: depths[index],
        };
        let channels = &config.block_out_channels;
        let time_dim = channels[0] * 4;
        let class_embedding = config
            .projection_class_embeddings_input_dim
            .filter(|_| config.class_embed_type.is_some())
            .map(|input| linear(input, time_dim, vb.pp("class_embedding")))
            .transpose()?;
        let concat = class_embedding.is_some() && config.class_embeddings_concat;
        let shape = BlockShape {
            groups: config.norm_num_groups,
            eps: config.norm_eps,
            temb_channels: if concat { 2 * time_dim } else { time_dim },
        };

        let mut down_blocks = Vec::with_capacity(blocks);
        let mut output = channels[0];
        for (index, kind) in config.down_block_types.iter().enumerate() {
            let input = output;
            output = channels[index];
            let attention = (kind == "CrossAttnDownBlock2D").then(|| spec(index));
            down_blocks.push(DownBlock::new(
                layers[index],
                input,
                output,
                attention.as_ref(),
                index + 1 < blocks,
                config.downsample_padding,
                shape,
                vb.pp(format!("down_blocks.{index}")),
            )?);
        }

        let mid_block = MidBlock::new(
            channels[blocks - 1],
            &spec(blocks - 1),
            shape,
            vb.pp("mid_block"),
        )?;

        let mut up_blocks = Vec::with_capacity(blocks);
        let reversed: Vec<usize> = channels.iter().rev().copied().collect();
        let mut output = reversed[0];
        for (index, kind) in config.up_block_types.iter().enumerate() {
            let previous_output = output;
            output = reversed[index];
            let input = reversed[(index + 1).min(blocks - 1)];
            let block_index = blocks - 1 - index;
            let attention = (kind == "CrossAttnUpBlock2D").then(|| spec(block_index));
            up_blocks.push(UpBlock::new(
                layers[block_index] + 1,
                UpChannels {
                    input,
                    output,
                    previous_output,
                },
                attention.as_ref(),
                index + 1 < blocks,
                shape,
                vb.pp(format!("up_blocks.{index}")),
            )?);
        }

        Ok(Self {
            config: config.clone(),
            conv_in: conv2d(config.in_channels, channels[0], 3, 1, 1, vb.pp("conv_in"))?,
            time_embedding: TimestepEmbedding::new(channels[0], time_dim, vb.pp("time_embedding"))?,
            class_embedding,
            down_blocks,
            mid_block,
            up_blocks,
            conv_norm_out: group_norm(
                config.norm_num_groups,
                channels[0],
                config.norm_eps,
                vb.pp("conv_norm_out"),
            )?,
            conv_out: conv2d(channels[0], config.out_channels, 3, 1, 1, vb.pp("conv_out"))?,
        })
    }

    pub fn config(&self) -> &UNetConfig {
        &self.config
    }

    /// Predicts the noise for `sample` (batch, channels, height, width) at `timestep`.
    pub fn forward(
        &self,
        sample: &Tensor,
        timestep: f64,
        conditioning: UNetConditioning,
    ) -> Result<Tensor> {
        // The caller's latents stay in their dtype (f32 for the scheduler); the network
        // computes in its weights' dtype and hands the prediction back in the caller's.
        let caller_dtype = sample.dtype();
        let dtype = self.conv_in.dtype();
        let sample = &sample.to_dtype(dtype)?;
        let (batch, _, height, width) = sample.dims4()?;
        let up_factor = 1usize << (self.up_blocks.len() - 1);
        let forward_upsample_size = height % up_factor != 0 || width % up_factor != 0;

        let features = timestep_features(
            timestep,
            batch,
            self.config.block_out_channels[0],
            self.config.flip_sin_to_cos,
            self.config.freq_shift,
            sample.device(),
        )?
        .to_dtype(dtype)?;
        let mut temb = self.time_embedding.forward(&features)?;
        if let Some(class_embedding) = &self.class_embedding {
            let labels = conditioning.class_labels.ok_or_else(|| {
                candle_core::Error::msg("this UNet needs class labels (the CLAP text vector)")
            })?;
            let class_emb = class_embedding.forward(&labels.to_dtype(dtype)?)?;
            temb = if self.config.class_embeddings_concat {
                Tensor::cat(&[&temb, &class_emb], 1)?
            } else {
                (temb + class_emb)?
            };
        }

        let text_bias = conditioning
            .text_mask
            .map(|mask| mask_to_bias(mask, -10000.0, dtype)?.unsqueeze(1))
            .transpose()?;
        // diffusers falls back to the first context when no second one is given.
        let secondary = conditioning.text.or(conditioning.generated);
        let contexts = Contexts {
            primary: conditioning.generated,
            primary_bias: None,
            secondary,
            secondary_bias: text_bias.as_ref(),
        };

        let mut hidden = self.conv_in.forward(sample)?;
        let mut skips = vec![hidden.clone()];
        for block in &self.down_blocks {
            let (output, block_skips) = block.forward(&hidden, &temb, &contexts)?;
            hidden = output;
            skips.extend(block_skips);
        }
        hidden = self.mid_block.forward(&hidden, &temb, &contexts)?;
        for (index, block) in self.up_blocks.iter().enumerate() {
            let count = block.resnet_count();
            let block_skips = skips.split_off(skips.len() - count);
            let is_final = index + 1 == self.up_blocks.len();
            let upsample_size = match skips.last() {
                Some(next) if forward_upsample_size && !is_final => {
                    let (_, _, next_height, next_width) = next.dims4()?;
                    Some((next_height, next_width))
                }
                _ => None,
            };
            hidden = block.forward(&hidden, &block_skips, &temb, &contexts, upsample_size)?;
        }
        let hidden = self.conv_norm_out.forward_silu(&hidden)?;
        self.conv_out.forward(&hidden)?.to_dtype(caller_dtype)
    }
}

//! The decoder half of diffusers' `AutoencoderKL`: latents to a mel spectrogram.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;
use serde::Deserialize;

use super::layers::{conv2d, group_norm};
use super::unet::{ResnetBlock2D, ResnetConfig, SpatialSelfAttention, Upsample2D};
use crate::engine::kernels::conv::Conv2d;
use crate::engine::kernels::group_norm::GroupNorm;

fn default_layers() -> usize {
    1
}
fn default_groups() -> usize {
    32
}
fn default_true() -> bool {
    true
}
fn default_scaling() -> f64 {
    0.18215
}

#[derive(Debug, Clone, Deserialize)]
pub struct VaeConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    pub latent_channels: usize,
    pub block_out_channels: Vec<usize>,
    #[serde(default = "default_layers")]
    pub layers_per_block: usize,
    #[serde(default = "default_groups")]
    pub norm_num_groups: usize,
    #[serde(default = "default_scaling")]
    pub scaling_factor: f64,
    #[serde(default = "default_true")]
    pub use_post_quant_conv: bool,
    #[serde(default = "default_true")]
    pub use_quant_conv: bool,
    #[serde(default = "default_true")]
    pub mid_block_add_attention: bool,
}

impl VaeConfig {
    /// diffusers' `vae_scale_factor`: each block but the last halves height and width.
    pub fn scale_factor(&self) -> usize {
        1 << (self.block_out_channels.len() - 1)
    }
}

pub(crate) const EPS: f64 = 1e-6;

/// The VAE's `ResnetBlock2D` (encoder and decoder alike): no time embedding, ε 1e-6.
pub(crate) fn vae_resnet(
    input: usize,
    output: usize,
    groups: usize,
    vb: VarBuilder,
) -> Result<ResnetBlock2D> {
    let config = ResnetConfig {
        in_channels: input,
        out_channels: output,
        temb_channels: None,
        groups,
        eps: EPS,
    };
    ResnetBlock2D::new(config, vb)
}

#[derive(Debug)]
struct UpDecoderBlock {
    resnets: Vec<ResnetBlock2D>,
    upsampler: Option<Upsample2D>,
}

#[derive(Debug)]
pub struct VaeDecoder {
    post_quant_conv: Option<Conv2d>,
    conv_in: Conv2d,
    mid_first: ResnetBlock2D,
    mid_attention: Option<SpatialSelfAttention>,
    mid_second: ResnetBlock2D,
    up_blocks: Vec<UpDecoderBlock>,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl VaeDecoder {
    /// `vb` points at the root of the AutoencoderKL weights (the encoder is not loaded).
    pub fn new(config: &VaeConfig, vb: VarBuilder) -> Result<Self> {
        let groups = config.norm_num_groups;
        let channels = &config.block_out_channels;
        let top = *channels
            .last()
            .ok_or_else(|| candle_core::Error::msg("block_out_channels is empty"))?;
        let resnet =
            |input: usize, output: usize, vb: VarBuilder| vae_resnet(input, output, groups, vb);
        let decoder = vb.pp("decoder");
        let mid = decoder.pp("mid_block");
        let mid_attention = config
            .mid_block_add_attention
            .then(|| SpatialSelfAttention::new(top, groups, EPS, mid.pp("attentions.0")))
            .transpose()?;

        let reversed: Vec<usize> = channels.iter().rev().copied().collect();
        let mut output = reversed[0];
        let mut up_blocks = Vec::with_capacity(reversed.len());
        for (index, channel) in reversed.iter().enumerate() {
            let previous = output;
            output = *channel;
            let block = decoder.pp(format!("up_blocks.{index}"));
            let resnets = (0..config.layers_per_block + 1)
                .map(|layer| {
                    let input = if layer == 0 { previous } else { output };
                    resnet(input, output, block.pp(format!("resnets.{layer}")))
                })
                .collect::<Result<_>>()?;
            let upsampler = (index + 1 < reversed.len())
                .then(|| Upsample2D::new(output, block.pp("upsamplers.0")))
                .transpose()?;
            up_blocks.push(UpDecoderBlock { resnets, upsampler });
        }

        let post_quant_conv = config
            .use_post_quant_conv
            .then(|| {
                let latent = config.latent_channels;
                conv2d(latent, latent, 1, 1, 0, vb.pp("post_quant_conv"))
            })
            .transpose()?;
        Ok(Self {
            post_quant_conv,
            conv_in: conv2d(config.latent_channels, top, 3, 1, 1, decoder.pp("conv_in"))?,
            mid_first: resnet(top, top, mid.pp("resnets.0"))?,
            mid_attention,
            mid_second: resnet(top, top, mid.pp("resnets.1"))?,
            up_blocks,
            conv_norm_out: group_norm(groups, channels[0], EPS, decoder.pp("conv_norm_out"))?,
            conv_out: conv2d(
                channels[0],
                config.out_channels,
                3,
                1,
                1,
                decoder.pp("conv_out"),
            )?,
        })
    }

    /// `vae.decode(latents).sample`, in the weights' dtype; the caller divides by
    /// `scaling_factor` first.
    pub fn decode(&self, latents: &Tensor) -> Result<Tensor> {
        let latents = latents.to_dtype(self.conv_in.dtype())?;
        let latents = match &self.post_quant_conv {
            Some(conv) => conv.forward(&latents)?,
            None => latents,
        };
        let mut hidden = self.conv_in.forward(&latents)?;
        hidden = self.mid_first.forward(&hidden, None)?;
        if let Some(attention) = &self.mid_attention {
            hidden = attention.forward(&hidden)?;
        }
        hidden = self.mid_second.forward(&hidden, None)?;
        for block in &self.up_blocks {
            for resnet in &block.resnets {
                hidden = resnet.forward(&hidden, None)?;
            }
            if let Some(upsampler) = &block.upsampler {
                hidden = upsampler.forward(&hidden, None)?;
            }
        }
        let hidden = self.conv_norm_out.forward_silu(&hidden)?;
        self.conv_out.forward(&hidden)
    }
}

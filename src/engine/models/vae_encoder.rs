//! The encoder half of diffusers' `AutoencoderKL` and its `DiagonalGaussianDistribution`:
//! a log-mel spectrogram to the latent posterior the editing tasks start from.

use candle_core::{D, DType, Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::layers::{conv2d, group_norm};
use super::unet::{ResnetBlock2D, SpatialSelfAttention};
use super::vae::{EPS, VaeConfig, vae_resnet};
use crate::engine::kernels::conv::Conv2d;
use crate::engine::kernels::group_norm::GroupNorm;

#[derive(Debug)]
struct DownEncoderBlock {
    resnets: Vec<ResnetBlock2D>,
    /// `Downsample2D(padding=0)`: zero-pads right and bottom by one, then a stride-2 3×3 conv.
    downsampler: Option<Conv2d>,
}

#[derive(Debug)]
pub struct VaeEncoder {
    conv_in: Conv2d,
    down_blocks: Vec<DownEncoderBlock>,
    mid_first: ResnetBlock2D,
    mid_attention: Option<SpatialSelfAttention>,
    mid_second: ResnetBlock2D,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
    quant_conv: Option<Conv2d>,
}

impl VaeEncoder {
    /// `vb` points at the root of the AutoencoderKL weights (the decoder is not loaded).
    pub fn new(config: &VaeConfig, vb: VarBuilder) -> Result<Self> {
        let groups = config.norm_num_groups;
        let channels = &config.block_out_channels;
        let top = *channels
            .last()
            .ok_or_else(|| candle_core::Error::msg("block_out_channels is empty"))?;
        let resnet =
            |input: usize, output: usize, vb: VarBuilder| vae_resnet(input, output, groups, vb);
        let encoder = vb.pp("encoder");
        let mut down_blocks = Vec::with_capacity(channels.len());
        let mut output = channels[0];
        for (index, &channel) in channels.iter().enumerate() {
            let input = output;
            output = channel;
            let block = encoder.pp(format!("down_blocks.{index}"));
            let resnets = (0..config.layers_per_block)
                .map(|layer| {
                    let from = if layer == 0 { input } else { output };
                    resnet(from, output, block.pp(format!("resnets.{layer}")))
                })
                .collect::<Result<_>>()?;
            let downsampler = (index + 1 < channels.len())
                .then(|| conv2d(output, output, 3, 2, 0, block.pp("downsamplers.0.conv")))
                .transpose()?;
            down_blocks.push(DownEncoderBlock {
                resnets,
                downsampler,
            });
        }
        let mid = encoder.pp("mid_block");
        let mid_attention = config
            .mid_block_add_attention
            .then(|| SpatialSelfAttention::new(top, groups, EPS, mid.pp("attentions.0")))
            .transpose()?;
        let moments = 2 * config.latent_channels;
        let quant_conv = config
            .use_quant_conv
            .then(|| conv2d(moments, moments, 1, 1, 0, vb.pp("quant_conv")))
            .transpose()?;
        Ok(Self {
            conv_in: conv2d(
                config.in_channels,
                channels[0],
                3,
                1,
                1,
                encoder.pp("conv_in"),
            )?,
            down_blocks,
            mid_first: resnet(top, top, mid.pp("resnets.0"))?,
            mid_attention,
            mid_second: resnet(top, top, mid.pp("resnets.1"))?,
            conv_norm_out: group_norm(groups, top, EPS, encoder.pp("conv_norm_out"))?,
            conv_out: conv2d(top, moments, 3, 1, 1, encoder.pp("conv_out"))?,
            quant_conv,
        })
    }

    /// `vae.encode(mel).latent_dist` for a (batch, 1, frames, mel bins) spectrogram, computed
    /// in the weights' dtype; the posterior is f32, like the latents the scheduler works on.
    pub fn encode(&self, mel: &Tensor) -> Result<DiagonalGaussian> {
        let mut hidden = self.conv_in.forward(&mel.to_dtype(self.conv_in.dtype())?)?;
        for block in &self.down_blocks {
            for resnet in &block.resnets {
                hidden = resnet.forward(&hidden, None)?;
            }
            if let Some(conv) = &block.downsampler {
                let padded = hidden.pad_with_zeros(D::Minus1, 0, 1)?;
                let padded = padded.pad_with_zeros(D::Minus2, 0, 1)?;
                hidden = conv.forward(&padded)?;
            }
        }
        hidden = self.mid_first.forward(&hidden, None)?;
        if let Some(attention) = &self.mid_attention {
            hidden = attention.forward(&hidden)?;
        }
        hidden = self.mid_second.forward(&hidden, None)?;
        let hidden = self.conv_norm_out.forward_silu(&hidden)?;
        let mut moments = self.conv_out.forward(&hidden)?;
        if let Some(conv) = &self.quant_conv {
            moments = conv.forward(&moments)?;
        }
        DiagonalGaussian::from_moments(moments.to_dtype(DType::F32)?)
    }
}

/// The posterior `N(mean, std²)` over the latents, from the encoder's moments.
#[derive(Debug, Clone)]
pub struct DiagonalGaussian {
    /// The raw encoder output, mean channels first, log-variance channels second.
    pub moments: Tensor,
    pub mean: Tensor,
    /// `exp(0.5 · clamp(logvar, −30, 20))`.
    pub std: Tensor,
}

impl DiagonalGaussian {
    pub fn from_moments(moments: Tensor) -> Result<Self> {
        let channels = moments.dim(1)? / 2;
        let mean = moments.narrow(1, 0, channels)?;
        let logvar = moments
            .narrow(1, channels, channels)?
            .clamp(-30f32, 20f32)?;
        let std = (logvar * 0.5)?.exp()?;
        Ok(Self { moments, mean, std })
    }

    /// `mean + std · noise`, with `noise` drawn by the caller from the seed's stream.
    pub fn sample_with(&self, noise: &Tensor) -> Result<Tensor> {
        &self.mean + (&self.std * noise)?
    }

    /// `mode()`: the mean.
    pub fn mode(&self) -> &Tensor {
        &self.mean
    }
}

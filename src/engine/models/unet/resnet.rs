//! diffusers `ResnetBlock2D`, `Downsample2D` and `Upsample2D` (shared by the UNets and the VAE).

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use crate::engine::kernels::conv::Conv2d;
use crate::engine::kernels::group_norm::GroupNorm;
use crate::engine::kernels::upsample;
use crate::engine::models::layers::Linear;
use crate::engine::models::layers::{conv2d, group_norm, linear};

/// Pre-norm residual block with an optional time-embedding projection ("default" scale-shift).
#[derive(Debug)]
pub struct ResnetBlock2D {
    norm1: GroupNorm,
    conv1: Conv2d,
    time_emb_proj: Option<Linear>,
    norm2: GroupNorm,
    conv2: Conv2d,
    conv_shortcut: Option<Conv2d>,
}

#[derive(Debug, Clone, Copy)]
pub struct ResnetConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    /// Width of the time embedding; `None` for the VAE, which has no timestep.
    pub temb_channels: Option<usize>,
    pub groups: usize,
    pub eps: f64,
}

impl ResnetBlock2D {
    pub fn new(config: ResnetConfig, vb: VarBuilder) -> Result<Self> {
        let ResnetConfig {
            in_channels,
            out_channels,
            temb_channels,
            groups,
            eps,
        } = config;
        let time_emb_proj = temb_channels
            .map(|temb| linear(temb, out_channels, vb.pp("time_emb_proj")))
            .transpose()?;
        let conv_shortcut = (in_channels != out_channels)
            .then(|| conv2d(in_channels, out_channels, 1, 1, 0, vb.pp("conv_shortcut")))
            .transpose()?;
        Ok(Self {
            norm1: group_norm(groups, in_channels, eps, vb.pp("norm1"))?,
            conv1: conv2d(in_channels, out_channels, 3, 1, 1, vb.pp("conv1"))?,
            time_emb_proj,
            norm2: group_norm(groups, out_channels, eps, vb.pp("norm2"))?,
            conv2: conv2d(out_channels, out_channels, 3, 1, 1, vb.pp("conv2"))?,
            conv_shortcut,
        })
    }

    pub fn forward(&self, xs: &Tensor, temb: Option<&Tensor>) -> Result<Tensor> {
        let mut hidden = self.conv1.forward(&self.norm1.forward_silu(xs)?)?;
        if let (Some(projection), Some(temb)) = (&self.time_emb_proj, temb) {
            let temb = projection.forward(&temb.silu()?)?;
            hidden = hidden.broadcast_add(&temb.unsqueeze(2)?.unsqueeze(3)?)?;
        }
        let hidden = self.conv2.forward(&self.norm2.forward_silu(&hidden)?)?;
        let shortcut = match &self.conv_shortcut {
            Some(conv) => conv.forward(xs)?,
            None => xs.clone(),
        };
        shortcut + hidden
    }
}

/// Strided 3x3 convolution halving height and width (rounding up, as padding 1 does).
#[derive(Debug)]
pub struct Downsample2D {
    conv: Conv2d,
}

impl Downsample2D {
    pub fn new(channels: usize, padding: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            conv: conv2d(channels, channels, 3, 2, padding, vb.pp("conv"))?,
        })
    }

    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        self.conv.forward(xs)
    }
}

/// Nearest-neighbour upsampling followed by a 3x3 convolution.
#[derive(Debug)]
pub struct Upsample2D {
    conv: Conv2d,
}

impl Upsample2D {
    pub fn new(channels: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            conv: conv2d(channels, channels, 3, 1, 1, vb.pp("conv"))?,
        })
    }

    /// `size` forces the output size, used when the latent height is not a power-of-two multiple.
    pub fn forward(&self, xs: &Tensor, size: Option<(usize, usize)>) -> Result<Tensor> {
        let (_, _, height, width) = xs.dims4()?;
        let (target_height, target_width) = size.unwrap_or((2 * height, 2 * width));
        self.conv
            .forward(&upsample::nearest2d(xs, (target_height, target_width))?)
    }
}

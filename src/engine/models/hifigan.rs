//! transformers' `SpeechT5HifiGan`: mel spectrogram (batch, frames, bins) to waveform.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;
use serde::Deserialize;

use crate::engine::kernels::conv::{Conv1d, ConvTranspose1d, leaky_relu};

fn default_slope() -> f64 {
    0.1
}

#[derive(Debug, Clone, Deserialize)]
pub struct HifiGanConfig {
    pub model_in_dim: usize,
    pub sampling_rate: u32,
    pub upsample_initial_channel: usize,
    pub upsample_rates: Vec<usize>,
    pub upsample_kernel_sizes: Vec<usize>,
    pub resblock_kernel_sizes: Vec<usize>,
    pub resblock_dilation_sizes: Vec<Vec<usize>>,
    #[serde(default = "default_slope")]
    pub leaky_relu_slope: f64,
    #[serde(default)]
    pub normalize_before: bool,
}

impl HifiGanConfig {
    /// Output samples per input mel frame.
    pub fn upsample_factor(&self) -> usize {
        self.upsample_rates.iter().product()
    }
}

fn conv1d(
    channels_in: usize,
    channels_out: usize,
    kernel: usize,
    dilation: usize,
    vb: VarBuilder,
) -> Result<Conv1d> {
    let padding = (kernel * dilation - dilation) / 2;
    Conv1d::new(channels_in, channels_out, kernel, padding, dilation, vb)
}

/// Three (leaky ReLU, dilated conv, leaky ReLU, conv) residual units.
#[derive(Debug)]
struct ResidualBlock {
    convs1: Vec<Conv1d>,
    convs2: Vec<Conv1d>,
    slope: f64,
}

impl ResidualBlock {
    fn new(
        channels: usize,
        kernel: usize,
        dilations: &[usize],
        slope: f64,
        vb: VarBuilder,
    ) -> Result<Self> {
        let convs1 = dilations
            .iter()
            .enumerate()
            .map(|(i, d)| conv1d(channels, channels, kernel, *d, vb.pp(format!("convs1.{i}"))))
            .collect::<Result<_>>()?;
        let convs2 = (0..dilations.len())
            .map(|i| conv1d(channels, channels, kernel, 1, vb.pp(format!("convs2.{i}"))))
            .collect::<Result<_>>()?;
        Ok(Self {
            convs1,
            convs2,
            slope,
        })
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let mut hidden = xs.clone();
        for (dilated, plain) in self.convs1.iter().zip(&self.convs2) {
            let residual = hidden.clone();
            let inner = dilated.forward_leaky(&hidden, self.slope)?;
            let inner = plain.forward_leaky(&inner, self.slope)?;
            hidden = (inner + residual)?;
        }
        Ok(hidden)
    }
}

#[derive(Debug)]
pub struct HifiGan {
    config: HifiGanConfig,
    mean: Option<Tensor>,
    scale: Option<Tensor>,
    conv_pre: Conv1d,
    upsamplers: Vec<ConvTranspose1d>,
    resblocks: Vec<ResidualBlock>,
    conv_post: Conv1d,
}

impl HifiGan {
    pub fn new(config: &HifiGanConfig, vb: VarBuilder) -> Result<Self> {
        let slope = config.leaky_relu_slope;
        let kernels = config.resblock_kernel_sizes.len();
        if config.resblock_dilation_sizes.len() != kernels
            || config.upsample_kernel_sizes.len() != config.upsample_rates.len()
        {
            candle_core::bail!("resblock or upsample kernel lists do not match their companions");
        }
        let mut upsamplers = Vec::new();
        let mut resblocks = Vec::new();
        let mut channels = config.upsample_initial_channel;
        for (index, (rate, kernel)) in config
            .upsample_rates
            .iter()
            .zip(&config.upsample_kernel_sizes)
            .enumerate()
        {
            let output = config.upsample_initial_channel >> (index + 1);
            upsamplers.push(ConvTranspose1d::new(
                channels,
                output,
                *kernel,
                *rate,
                (kernel - rate) / 2,
                vb.pp(format!("upsampler.{index}")),
            )?);
            channels = output;
            for (block, (kernel, dilations)) in config
                .resblock_kernel_sizes
                .iter()
                .zip(&config.resblock_dilation_sizes)
                .enumerate()
            {
                let name = format!("resblocks.{}", index * kernels + block);
                resblocks.push(ResidualBlock::new(
                    channels,
                    *kernel,
                    dilations,
                    slope,
                    vb.pp(name),
                )?);
            }
        }
        let (mean, scale) = if config.normalize_before {
            (
                Some(vb.get(config.model_in_dim, "mean")?),
                Some(vb.get(config.model_in_dim, "scale")?),
            )
        } else {
            (None, None)
        };
        Ok(Self {
            config: config.clone(),
            mean,
            scale,
            conv_pre: conv1d(
                config.model_in_dim,
                config.upsample_initial_channel,
                7,
                1,
                vb.pp("conv_pre"),
            )?,
            upsamplers,
            resblocks,
            conv_post: conv1d(channels, 1, 7, 1, vb.pp("conv_post"))?,
        })
    }

    pub fn config(&self) -> &HifiGanConfig {
        &self.config
    }

    /// (batch, frames, mel bins) to (batch, samples), computed in the weights' dtype.
    pub fn forward(&self, mel: &Tensor) -> Result<Tensor> {
        let mut mel = mel.to_dtype(self.conv_pre.dtype())?;
        if let (Some(mean), Some(scale)) = (&self.mean, &self.scale) {
            mel = mel.broadcast_sub(mean)?.broadcast_div(scale)?;
        }
        let mut hidden = self.conv_pre.forward(&mel.transpose(1, 2)?.contiguous()?)?;
        let kernels = self.config.resblock_kernel_sizes.len();
        for (index, upsampler) in self.upsamplers.iter().enumerate() {
            hidden = upsampler.forward(&leaky_relu(&hidden, self.config.leaky_relu_slope)?)?;
            let blocks = &self.resblocks[index * kernels..(index + 1) * kernels];
            let mut sum = blocks[0].forward(&hidden)?;
            for block in &blocks[1..] {
                sum = (sum + block.forward(&hidden)?)?;
            }
            hidden = (sum / kernels as f64)?;
        }
        // transformers uses the default 0.01 slope here, not the configured one.
        self.conv_post
            .forward_leaky(&hidden, 0.01)?
            .tanh()?
            .squeeze(1)
    }
}

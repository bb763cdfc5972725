//! Down, mid and up blocks of the AudioLDM 2 UNet: resnets interleaved with lists of transformers.

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

use super::attention::{Transformer2DModel, TransformerConfig};
use super::resnet::{Downsample2D, ResnetBlock2D, ResnetConfig, Upsample2D};

/// Which context a transformer attends to; diffusers routes by position in the list, not by width.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `cross_attention_dim` entry `null`: the second attention is another self-attention.
    SelfOnly,
    /// Entries 0 and 1: the GPT-2 "language of audio" embeddings.
    Primary,
    /// Entries 2 and later: the T5 hidden states, with their padding mask.
    Secondary,
}

impl Route {
    pub fn from_position(index: usize, dim: Option<usize>) -> Self {
        match (dim, index) {
            (None, _) => Self::SelfOnly,
            (Some(_), 0 | 1) => Self::Primary,
            (Some(_), _) => Self::Secondary,
        }
    }
}

/// The two conditioning sequences and their additive mask biases (batch, 1, keys).
#[derive(Debug, Clone, Copy)]
pub struct Contexts<'a> {
    pub primary: Option<&'a Tensor>,
    pub primary_bias: Option<&'a Tensor>,
    pub secondary: Option<&'a Tensor>,
    pub secondary_bias: Option<&'a Tensor>,
}

impl<'a> Contexts<'a> {
    fn select(&self, route: Route) -> (Option<&'a Tensor>, Option<&'a Tensor>) {
        match route {
            Route::SelfOnly => (None, None),
            Route::Primary => (self.primary, self.primary_bias),
            Route::Secondary => (self.secondary, self.secondary_bias),
        }
    }
}

/// Transformers applied in sequence after one resnet.
#[derive(Debug)]
struct TransformerStack {
    transformers: Vec<(Transformer2DModel, Route)>,
}

impl TransformerStack {
    fn forward(&self, xs: Tensor, contexts: &Contexts) -> Result<Tensor> {
        self.transformers
            .iter()
            .try_fold(xs, |hidden, (transformer, route)| {
                let (context, bias) = contexts.select(*route);
                transformer.forward(&hidden, context, bias)
            })
    }
}

/// What a block with attention needs to build its transformers.
#[derive(Debug, Clone)]
pub struct AttentionSpec {
    pub dims: Vec<Option<usize>>,
    pub heads: usize,
    pub depth: usize,
}

#[derive(Debug, Clone, Copy)]
pub struct BlockShape {
    pub groups: usize,
    pub eps: f64,
    pub temb_channels: usize,
}

/// Builds the flat `attentions.{layer * per_layer + j}` list for `layers` resnets.
fn build_stacks(
    layers: usize,
    channels: usize,
    spec: Option<&AttentionSpec>,
    shape: BlockShape,
    vb: &VarBuilder,
) -> Result<Vec<TransformerStack>> {
    let Some(spec) = spec else {
        return Ok(Vec::new());
    };
    let per_layer = spec.dims.len();
    (0..layers)
        .map(|layer| {
            let transformers = spec
                .dims
                .iter()
                .enumerate()
                .map(|(position, dim)| {
                    let config = TransformerConfig {
                        channels,
                        heads: spec.heads,
                        depth: spec.depth,
                        groups: shape.groups,
                        context_dim: *dim,
                    };
                    let index = layer * per_layer + position;
                    Transformer2DModel::new(config, vb.pp(format!("attentions.{index}")))
                        .map(|transformer| (transformer, Route::from_position(position, *dim)))
                })
                .collect::<Result<_>>()?;
            Ok(TransformerStack { transformers })
        })
        .collect()
}

fn resnet(
    in_channels: usize,
    out_channels: usize,
    shape: BlockShape,
    vb: VarBuilder,
) -> Result<ResnetBlock2D> {
    let config = ResnetConfig {
        in_channels,
        out_channels,
        temb_channels: Some(shape.temb_channels),
        groups: shape.groups,
        eps: shape.eps,
    };
    ResnetBlock2D::new(config, vb)
}

/// `DownBlock2D` / `CrossAttnDownBlock2D`.
#[derive(Debug)]
pub struct DownBlock {
    resnets: Vec<ResnetBlock2D>,
    stacks: Vec<TransformerStack>,
    downsampler: Option<Downsample2D>,
}

impl DownBlock {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        layers: usize,
        in_channels: usize,
        out_channels: usize,
        attention: Option<&AttentionSpec>,
        add_downsample: bool,
        downsample_padding: usize,
        shape: BlockShape,
        vb: VarBuilder,
    ) -> Result<Self> {
        let resnets = (0..layers)
            .map(|index| {
                let input = if index == 0 {
                    in_channels
                } else {
                    out_channels
                };
                resnet(
                    input,
                    out_channels,
                    shape,
                    vb.pp(format!("resnets.{index}")),
                )
            })
            .collect::<Result<_>>()?;
        let downsampler = add_downsample
            .then(|| Downsample2D::new(out_channels, downsample_padding, vb.pp("downsamplers.0")))
            .transpose()?;
        Ok(Self {
            resnets,
            stacks: build_stacks(layers, out_channels, attention, shape, &vb)?,
            downsampler,
        })
    }

    /// Returns the output and the skip tensors the up path consumes.
    pub fn forward(
        &self,
        xs: &Tensor,
        temb: &Tensor,
        contexts: &Contexts,
    ) -> Result<(Tensor, Vec<Tensor>)> {
        let mut hidden = xs.clone();
        let mut skips = Vec::with_capacity(self.resnets.len() + 1);
        for (index, resnet) in self.resnets.iter().enumerate() {
            hidden = resnet.forward(&hidden, Some(temb))?;
            if let Some(stack) = self.stacks.get(index) {
                hidden = stack.forward(hidden, contexts)?;
            }
            skips.push(hidden.clone());
        }
        if let Some(downsampler) = &self.downsampler {
            hidden = downsampler.forward(&hidden)?;
            skips.push(hidden.clone());
        }
        Ok((hidden, skips))
    }
}

/// `UNetMidBlock2DCrossAttn`: resnet, then (transformers, resnet) per layer.
#[derive(Debug)]
pub struct MidBlock {
    first: ResnetBlock2D,
    layers: Vec<(TransformerStack, ResnetBlock2D)>,
}

impl MidBlock {
    pub fn new(
        channels: usize,
        attention: &AttentionSpec,
        shape: BlockShape,
        vb: VarBuilder,
    ) -> Result<Self> {
        let stacks = build_stacks(1, channels, Some(attention), shape, &vb)?;
        let layers = stacks
            .into_iter()
            .enumerate()
            .map(|(index, stack)| {
                let vb = vb.pp(format!("resnets.{}", index + 1));
                Ok((stack, resnet(channels, channels, shape, vb)?))
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            first: resnet(channels, channels, shape, vb.pp("resnets.0"))?,
            layers,
        })
    }

    pub fn forward(&self, xs: &Tensor, temb: &Tensor, contexts: &Contexts) -> Result<Tensor> {
        let mut hidden = self.first.forward(xs, Some(temb))?;
        for (stack, resnet) in &self.layers {
            hidden = stack.forward(hidden, contexts)?;
            hidden = resnet.forward(&hidden, Some(temb))?;
        }
        Ok(hidden)
    }
}

/// `UpBlock2D` / `CrossAttnUpBlock2D`.
#[derive(Debug)]
pub struct UpBlock {
    resnets: Vec<ResnetBlock2D>,
    stacks: Vec<TransformerStack>,
    upsampler: Option<Upsample2D>,
}

pub struct UpChannels {
    pub input: usize,
    pub output: usize,
    pub previous_output: usize,
}

impl UpBlock {
    pub fn new(
        layers: usize,
        channels: UpChannels,
        attention: Option<&AttentionSpec>,
        add_upsample: bool,
        shape: BlockShape,
        vb: VarBuilder,
    ) -> Result<Self> {
        let UpChannels {
            input,
            output,
            previous_output,
        } = channels;
        let resnets = (0..layers)
            .map(|index| {
                let skip = if index == layers - 1 { input } else { output };
                let from_below = if index == 0 { previous_output } else { output };
                resnet(
                    from_below + skip,
                    output,
                    shape,
                    vb.pp(format!("resnets.{index}")),
                )
            })
            .collect::<Result<_>>()?;
        let upsampler = add_upsample
            .then(|| Upsample2D::new(output, vb.pp("upsamplers.0")))
            .transpose()?;
        Ok(Self {
            resnets,
            stacks: build_stacks(layers, output, attention, shape, &vb)?,
            upsampler,
        })
    }

    pub fn resnet_count(&self) -> usize {
        self.resnets.len()
    }

    /// `skips` are consumed from the end, as diffusers pops `res_hidden_states_tuple`.
    pub fn forward(
        &self,
        xs: &Tensor,
        skips: &[Tensor],
        temb: &Tensor,
        contexts: &Contexts,
        upsample_size: Option<(usize, usize)>,
    ) -> Result<Tensor> {
        let mut hidden = xs.clone();
        for (index, resnet) in self.resnets.iter().enumerate() {
            let skip = &skips[skips.len() - 1 - index];
            hidden = Tensor::cat(&[&hidden, skip], 1)?;
            hidden = resnet.forward(&hidden, Some(temb))?;
            if let Some(stack) = self.stacks.get(index) {
                hidden = stack.forward(hidden, contexts)?;
            }
        }
        match &self.upsampler {
            Some(upsampler) => upsampler.forward(&hidden, upsample_size),
            None => Ok(hidden),
        }
    }
}

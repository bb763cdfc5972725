//! `nn.GroupNorm`, optionally followed by SiLU as every resnet block does.
//!
//! candle_nn's group norm is about ten tensor ops (each a pass over memory and an allocation); on
//! the CPU in f32 this is one pass for the statistics and one that normalises, scales and applies
//! SiLU, with the statistics accumulated in f64.

use candle_core::{CpuStorage, CustomOp3, Layout, Module, Result, Shape, Tensor};
use candle_nn::VarBuilder;
use rayon::prelude::*;

use super::exp::silu;
use super::{contiguous_f32, is_cpu_f32};

#[derive(Debug, Clone)]
pub struct GroupNorm {
    weight: Tensor,
    bias: Tensor,
    groups: usize,
    eps: f64,
}

impl GroupNorm {
    /// Loads `weight` and `bias` (channels) from `vb`.
    pub fn new(groups: usize, channels: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        if groups == 0 || !channels.is_multiple_of(groups) {
            candle_core::bail!("group norm: {channels} channels do not split into {groups} groups");
        }
        Ok(Self {
            weight: vb.get(channels, "weight")?,
            bias: vb.get(channels, "bias")?,
            groups,
            eps,
        })
    }

    /// `silu(group_norm(xs))`.
    pub fn forward_silu(&self, xs: &Tensor) -> Result<Tensor> {
        self.run(xs, true)
    }

    fn run(&self, xs: &Tensor, then_silu: bool) -> Result<Tensor> {
        if is_cpu_f32(xs) && is_cpu_f32(&self.weight) {
            let op = GroupNormOp {
                groups: self.groups,
                eps: self.eps,
                silu: then_silu,
            };
            return xs
                .contiguous()?
                .apply_op3_no_bwd(&self.weight, &self.bias, &op);
        }
        let channels = self.weight.dim(0)?;
        let normed = candle_nn::GroupNorm::new(
            self.weight.clone(),
            self.bias.clone(),
            channels,
            self.groups,
            self.eps,
        )?
        .forward(xs)?;
        if then_silu { normed.silu() } else { Ok(normed) }
    }
}

impl Module for GroupNorm {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        self.run(xs, false)
    }
}

struct GroupNormOp {
    groups: usize,
    eps: f64,
    silu: bool,
}

/// Mean and variance of `values`, accumulated in f64 over independent lanes.
fn moments(values: &[f32]) -> (f64, f64) {
    const LANES: usize = 8;
    let count = values.len().max(1) as f64;
    let mut sums = [0f64; LANES];
    let chunks = values.chunks_exact(LANES);
    let tail: f64 = chunks.remainder().iter().map(|v| f64::from(*v)).sum();
    for chunk in chunks {
        for (sum, value) in sums.iter_mut().zip(chunk) {
            *sum += f64::from(*value);
        }
    }
    let mean = (sums.iter().sum::<f64>() + tail) / count;
    let mut squares = [0f64; LANES];
    let chunks = values.chunks_exact(LANES);
    let tail: f64 = chunks
        .remainder()
        .iter()
        .map(|v| (f64::from(*v) - mean).powi(2))
        .sum();
    for chunk in chunks {
        for (square, value) in squares.iter_mut().zip(chunk) {
            let centred = f64::from(*value) - mean;
            *square += centred * centred;
        }
    }
    (mean, (squares.iter().sum::<f64>() + tail) / count)
}

impl CustomOp3 for GroupNormOp {
    fn name(&self) -> &'static str {
        "foley-group-norm"
    }

    fn cpu_fwd(
        &self,
        input: &CpuStorage,
        input_layout: &Layout,
        weight: &CpuStorage,
        weight_layout: &Layout,
        bias: &CpuStorage,
        bias_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let dims = input_layout.dims();
        let (Some(&batch), Some(&channels)) = (dims.first(), dims.get(1)) else {
            candle_core::bail!("group norm: input {dims:?} has no channel axis");
        };
        let per_channel: usize = dims[2..].iter().product();
        let input = contiguous_f32(input, input_layout, "group norm input")?;
        let weight = contiguous_f32(weight, weight_layout, "group norm weight")?;
        let bias = contiguous_f32(bias, bias_layout, "group norm bias")?;
        if weight.len() != channels || bias.len() != channels {
            candle_core::bail!(
                "group norm: {channels} input channels, {} weights",
                weight.len()
            );
        }
        let per_group = channels / self.groups * per_channel;
        let mut output = super::fill::zeros(input.len());
        if per_group == 0 || batch == 0 {
            return Ok((CpuStorage::F32(output), input_layout.shape().clone()));
        }
        output
            .par_chunks_mut(per_group)
            .zip(input.par_chunks(per_group))
            .enumerate()
            .for_each(|(index, (out, values))| {
                let (mean, variance) = moments(values);
                let inverse_std = 1.0 / (variance + self.eps).sqrt();
                let first_channel = (index % self.groups) * (channels / self.groups);
                for (offset, (out, values)) in out
                    .chunks_mut(per_channel)
                    .zip(values.chunks(per_channel))
                    .enumerate()
                {
                    let channel = first_channel + offset;
                    let scale = (inverse_std * f64::from(weight[channel])) as f32;
                    let shift = (f64::from(bias[channel])
                        - mean * inverse_std * f64::from(weight[channel]))
                        as f32;
                    out.iter_mut()
                        .zip(values)
                        .for_each(|(out, value)| *out = value * scale + shift);
                    if self.silu {
                        silu(out);
                    }
                }
            });
        Ok((CpuStorage::F32(output), input_layout.shape().clone()))
    }
}

//! `nn.LayerNorm` over the last dimension.
//!
//! candle_nn's CPU layer norm zero-fills its output, runs one rayon task per row (2048 rows of
//! 256 in the UNet's second level) and sums each row serially in f32, as E[x²] − E[x]²: ~2 % of
//! an AudioLDM 2 step over its 45 layer norms. Here rows go in blocks, the sums run over 8
//! independent lanes (so they vectorise) and the variance is taken from the centred values, as
//! PyTorch does; the output is written once, never zero-filled.

use candle_core::{CpuStorage, CustomOp3, Layout, Module, Result, Shape, Tensor};
use candle_nn::VarBuilder;
use rayon::prelude::*;

use super::{contiguous_f32, is_cpu_f32};

/// Values per rayon task, at least.
const VALUES_PER_TASK: usize = 1 << 14;

#[derive(Debug, Clone)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    /// Loads `weight` and `bias` (`size`) from `vb`.
    pub fn new(size: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            weight: vb.get(size, "weight")?,
            bias: vb.get(size, "bias")?,
            eps,
        })
    }
}

impl Module for LayerNorm {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        if is_cpu_f32(xs) && is_cpu_f32(&self.weight) && is_cpu_f32(&self.bias) {
            let op = LayerNormOp { eps: self.eps };
            return xs
                .contiguous()?
                .apply_op3_no_bwd(&self.weight, &self.bias, &op);
        }
        candle_nn::LayerNorm::new(self.weight.clone(), self.bias.clone(), self.eps).forward(xs)
    }
}

struct LayerNormOp {
    eps: f64,
}

/// Mean and variance of `row`, summed over independent lanes (f32, as PyTorch's CPU kernel).
fn moments(row: &[f32]) -> (f32, f32) {
    const LANES: usize = 8;
    let count = row.len().max(1) as f32;
    let sum_lanes = |value: &dyn Fn(f32) -> f32| -> f32 {
        let mut sums = [0f32; LANES];
        let chunks = row.chunks_exact(LANES);
        let tail: f32 = chunks.remainder().iter().map(|v| value(*v)).sum();
        for chunk in chunks {
            for (sum, v) in sums.iter_mut().zip(chunk) {
                *sum += value(*v);
            }
        }
        sums.iter().sum::<f32>() + tail
    };
    let mean = sum_lanes(&|v| v) / count;
    let variance = sum_lanes(&|v| (v - mean) * (v - mean)) / count;
    (mean, variance)
}

impl CustomOp3 for LayerNormOp {
    fn name(&self) -> &'static str {
        "foley-layer-norm"
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
        let Some(&size) = dims.last() else {
            candle_core::bail!("layer norm: scalar input");
        };
        let input = contiguous_f32(input, input_layout, "layer norm input")?;
        let weight = contiguous_f32(weight, weight_layout, "layer norm weight")?;
        let bias = contiguous_f32(bias, bias_layout, "layer norm bias")?;
        if weight.len() != size || bias.len() != size {
            candle_core::bail!(
                "layer norm: input {dims:?} against {} weights and {} biases",
                weight.len(),
                bias.len()
            );
        }
        let mut output = Vec::with_capacity(input.len());
        if let Some(rows_per_task) = VALUES_PER_TASK.checked_div(size) {
            let rows_per_task = rows_per_task.max(1);
            output
                .spare_capacity_mut()
                .par_chunks_mut(rows_per_task * size)
                .zip(input.par_chunks(rows_per_task * size))
                .for_each(|(out, rows)| {
                    for (out, row) in out.chunks_mut(size).zip(rows.chunks(size)) {
                        let (mean, variance) = moments(row);
                        let inverse_std = 1.0 / (variance + self.eps as f32).sqrt();
                        let parts = row.iter().zip(weight).zip(bias);
                        for (out, ((value, weight), bias)) in out.iter_mut().zip(parts) {
                            out.write((value - mean) * inverse_std * weight + bias);
                        }
                    }
                });
        }
        // SAFETY: the chunks above cover the `input.len()` values of the spare capacity (whole
        // rows, as `size` divides the length) and each was written.
        unsafe { output.set_len(input.len()) };
        Ok((CpuStorage::F32(output), input_layout.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    /// Against an f64 definition, on rows of several widths (a tail that is not a whole number
    /// of lanes, one value, rows spanning several tasks), with a large mean that E[x²] − E[x]²
    /// in f32 would lose.
    #[test]
    fn layer_norm_matches_the_definition() -> Result<()> {
        let device = Device::Cpu;
        for (rows, size) in [(3usize, 37usize), (2, 1), (300, 256), (5, 1024)] {
            let values: Vec<f32> = (0..rows * size)
                .map(|index| 100.0 + ((index * 37 % 101) as f32 - 50.0) * 0.37)
                .collect();
            let weight: Vec<f32> = (0..size).map(|index| 0.5 + index as f32 * 0.01).collect();
            let bias: Vec<f32> = (0..size).map(|index| index as f32 * -0.02).collect();
            let mut map = std::collections::HashMap::new();
            map.insert(
                "weight".to_owned(),
                Tensor::new(weight.as_slice(), &device)?,
            );
            map.insert("bias".to_owned(), Tensor::new(bias.as_slice(), &device)?);
            let norm = LayerNorm::new(
                size,
                1e-5,
                VarBuilder::from_tensors(map, DType::F32, &device),
            )?;
            let xs = Tensor::from_vec(values.clone(), (rows, size), &device)?;
            let ours = norm.forward(&xs)?.flatten_all()?.to_vec1::<f32>()?;
            assert_eq!(ours.len(), rows * size);
            for (row, out) in values.chunks(size).zip(ours.chunks(size)) {
                let mean = row.iter().map(|v| f64::from(*v)).sum::<f64>() / size as f64;
                let variance = row
                    .iter()
                    .map(|v| (f64::from(*v) - mean).powi(2))
                    .sum::<f64>()
                    / size as f64;
                for (index, (value, out)) in row.iter().zip(out).enumerate() {
                    let expected = (f64::from(*value) - mean) / (variance + 1e-5).sqrt()
                        * f64::from(weight[index])
                        + f64::from(bias[index]);
                    assert!(
                        (f64::from(*out) - expected).abs() < 2e-4,
                        "{rows}×{size} [{index}]: {out} vs {expected}"
                    );
                }
            }
        }
        Ok(())
    }
}

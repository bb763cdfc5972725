//! `nn.Linear` as one product over every token, written onto the bias.
//!
//! candle's `Linear` multiplies each batch entry on its own (so `gemm` packs the weights once
//! per entry), zero-fills its output first and adds the bias in a second pass over a second
//! buffer. Here, on the CPU in f32, the output starts as the bias rows and one product over all
//! tokens is added onto it: one weight packing, no zero fill, no extra pass. The sums differ from
//! candle's only in where the bias joins them (float reassociation).

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Module, Result, Shape, Tensor};
use rayon::prelude::*;

use super::gemm::{self, View};
use super::{contiguous_f32, is_cpu_f32, previous_kernels};

/// Bias rows are written in chunks of at least this many values, one chunk per rayon task.
const PARALLEL_FILL: usize = 1 << 16;

/// `y = x · Wᵀ + b` over the last dimension of `x`, with `W` stored `(out, in)` as in PyTorch.
#[derive(Clone, Debug)]
pub struct Linear {
    /// candle's layer over the same tensors: the path for other devices and dtypes.
    candle: candle_nn::Linear,
}

impl Linear {
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Self {
        Self {
            candle: candle_nn::Linear::new(weight, bias),
        }
    }

    pub fn weight(&self) -> &Tensor {
        self.candle.weight()
    }

    pub fn bias(&self) -> Option<&Tensor> {
        self.candle.bias()
    }
}

impl Module for Linear {
    fn forward(&self, input: &Tensor) -> Result<Tensor> {
        let weight = self.weight();
        let fast = is_cpu_f32(input)
            && is_cpu_f32(weight)
            && weight.is_contiguous()
            && self
                .bias()
                .is_none_or(|bias| is_cpu_f32(bias) && bias.is_contiguous())
            && !previous_kernels();
        if !fast {
            return self.candle.forward(input);
        }
        let input = input.contiguous()?;
        match self.bias() {
            Some(bias) => input.apply_op3_no_bwd(weight, bias, &LinearOp),
            None => input.apply_op2_no_bwd(weight, &LinearOp),
        }
    }
}

struct LinearOp;

impl LinearOp {
    fn run(
        &self,
        (input, input_layout): (&CpuStorage, &Layout),
        (weight, weight_layout): (&CpuStorage, &Layout),
        bias: Option<(&CpuStorage, &Layout)>,
    ) -> Result<(CpuStorage, Shape)> {
        let (outputs, width) = weight_layout.shape().dims2()?;
        let mut dims = input_layout.dims().to_vec();
        match dims.last_mut() {
            Some(last) if *last == width => *last = outputs,
            _ => candle_core::bail!(
                "linear: input {:?} does not end in the weight's {width} inputs",
                input_layout.dims()
            ),
        }
        let input = contiguous_f32(input, input_layout, "linear input")?;
        let weight = contiguous_f32(weight, weight_layout, "linear weight")?;
        let tokens = input.len().checked_div(width).unwrap_or(0);
        let Some(len) = tokens.checked_mul(outputs) else {
            candle_core::bail!("linear: {tokens} tokens × {outputs} outputs overflow");
        };
        let lhs = (input, View::rows(tokens, width, width));
        let rhs = (weight, View::transposed(width, outputs, width));
        let output = match bias {
            None => gemm::product(lhs, rhs, tokens, outputs),
            Some((bias, bias_layout)) => {
                let bias = contiguous_f32(bias, bias_layout, "linear bias")?;
                if bias.len() != outputs {
                    candle_core::bail!("linear: {} biases for {outputs} outputs", bias.len());
                }
                let mut output = vec_of_rows(bias, tokens);
                let dst = View::rows(tokens, outputs, outputs);
                gemm::matmul((&mut output, dst), lhs, rhs, true, true);
                output
            }
        };
        debug_assert_eq!(output.len(), len);
        Ok((CpuStorage::F32(output), Shape::from(dims)))
    }
}

/// `rows` copies of `row`, one after another, written on rayon's threads in chunks of at least
/// [`PARALLEL_FILL`] values.
fn vec_of_rows(row: &[f32], rows: usize) -> Vec<f32> {
    let len = row.len() * rows;
    let mut out = Vec::with_capacity(len);
    if len == 0 {
        return out;
    }
    let chunk_rows = PARALLEL_FILL.div_ceil(row.len());
    out.spare_capacity_mut()[..len]
        .par_chunks_mut(chunk_rows * row.len())
        .for_each(|chunk| {
            for dst in chunk.chunks_mut(row.len()) {
                for (dst, &value) in dst.iter_mut().zip(row) {
                    dst.write(value);
                }
            }
        });
    // SAFETY: the chunks above cover `..len` and every chunk wrote each of its elements.
    unsafe { out.set_len(len) };
    out
}

impl CustomOp2 for LinearOp {
    fn name(&self) -> &'static str {
        "foley-linear"
    }

    fn cpu_fwd(
        &self,
        input: &CpuStorage,
        input_layout: &Layout,
        weight: &CpuStorage,
        weight_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.run((input, input_layout), (weight, weight_layout), None)
    }
}

impl CustomOp3 for LinearOp {
    fn name(&self) -> &'static str {
        "foley-linear"
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
        self.run(
            (input, input_layout),
            (weight, weight_layout),
            Some((bias, bias_layout)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{D, Device};

    fn ramp(shape: &[usize], scale: f32) -> Result<Tensor> {
        let count: usize = shape.iter().product();
        let values: Vec<f32> = (0..count)
            .map(|index| scale * ((index as f32 * 0.37).sin() + 0.1))
            .collect();
        Tensor::from_vec(values, shape, &Device::Cpu)
    }

    fn relative_l2(a: &Tensor, b: &Tensor) -> Result<f32> {
        let difference = (a - b)?.sqr()?.sum_all()?.to_scalar::<f32>()?.sqrt();
        let norm = b.sqr()?.sum_all()?.to_scalar::<f32>()?.sqrt();
        Ok(difference / norm)
    }

    /// Batched 3-D and 4-D inputs, a strided (transposed) input, with and without bias, sizes
    /// that leave partial `gemm` tiles, one large enough for the threaded bias fill, and zero
    /// tokens: each equals candle's `Linear` to float rounding.
    #[test]
    fn equals_candles_linear() -> Result<()> {
        let cases: [(&[usize], usize, bool); 6] = [
            (&[2, 37, 19], 23, true),
            (&[2, 3, 5, 19], 7, true),
            (&[2, 37, 19], 23, false),
            (&[1, 300, 64], 320, true),
            (&[0, 19], 5, true),
            (&[1, 19], 5, true),
        ];
        for (shape, outputs, with_bias) in cases {
            let width = *shape.last().unwrap_or(&0);
            let weight = ramp(&[outputs, width], 0.2)?;
            let bias = with_bias.then(|| ramp(&[outputs], 1.0)).transpose()?;
            let layer = Linear::new(weight.clone(), bias.clone());
            let input = ramp(shape, 1.0)?;
            let ours = layer.forward(&input)?;
            let candle = candle_nn::Linear::new(weight, bias).forward(&input)?;
            assert_eq!(ours.dims(), candle.dims(), "{shape:?}");
            if ours.elem_count() > 0 {
                let error = relative_l2(&ours, &candle)?;
                assert!(error < 1e-6, "{shape:?} → {outputs}: relative L2 {error}");
            }
        }
        // A transposed view goes through `contiguous` first. (candle 0.11's own `Linear` gives
        // this strided input a different answer, 6 % relative L2, so the reference is the
        // contiguous copy.)
        let weight = ramp(&[11, 13], 0.3)?;
        let layer = Linear::new(weight.clone(), None);
        let input = ramp(&[2, 13, 17], 1.0)?.transpose(D::Minus1, D::Minus2)?;
        let error = relative_l2(
            &layer.forward(&input)?,
            &candle_nn::Linear::new(weight, None).forward(&input.contiguous()?)?,
        )?;
        assert!(error < 1e-6, "transposed input: relative L2 {error}");
        Ok(())
    }

    #[test]
    fn a_width_mismatch_is_an_error() -> Result<()> {
        let layer = Linear::new(ramp(&[4, 6], 1.0)?, Some(ramp(&[4], 1.0)?));
        let error = layer.forward(&ramp(&[2, 5], 1.0)?).unwrap_err().to_string();
        assert!(error.contains("6 inputs"), "{error}");
        Ok(())
    }
}

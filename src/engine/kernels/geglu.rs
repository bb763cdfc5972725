//! GEGLU, `hidden · gelu(gate)` over the two halves of the feed-forward projection.
//!
//! As tensor ops this is a strided split, an erf pass over one half and a product of two strided
//! views; on the CPU in f32 it is one pass per row here, with an 8-lane erf on AVX2 (within
//! 1.5e-7 of libm's `erff`, which candle's `gelu_erf` calls per element).

use candle_core::{CpuStorage, CustomOp1, D, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::{contiguous_f32, exp, is_cpu_f32, previous_kernels};

/// `hidden · gelu_erf(gate)` where `(hidden, gate)` are the halves of the last dimension.
pub fn geglu(projected: &Tensor) -> Result<Tensor> {
    if is_cpu_f32(projected) {
        let op = Geglu {
            previous: previous_kernels(),
        };
        return projected.contiguous()?.apply_op1_no_bwd(&op);
    }
    let half = projected.dim(D::Minus1)? / 2;
    let hidden = projected.narrow(D::Minus1, 0, half)?;
    let gate = projected.narrow(D::Minus1, half, half)?;
    hidden * gate.gelu_erf()?
}

struct Geglu {
    /// libm's `erff` per element, as before the 8-lane erf ([`super::with_previous_kernels`]).
    previous: bool,
}

impl CustomOp1 for Geglu {
    fn name(&self) -> &'static str {
        "foley-geglu"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let input = contiguous_f32(storage, layout, "geglu input")?;
        let mut dims = layout.dims().to_vec();
        let Some(width) = dims.last_mut() else {
            candle_core::bail!("geglu: scalar input");
        };
        if *width % 2 != 0 {
            candle_core::bail!("geglu: last dimension {width} is odd");
        }
        let half = *width / 2;
        *width = half;
        let mut output = super::fill::zeros(input.len() / 2);
        // Rows in batches of ~64k values, so small inputs do not pay for a task per row.
        if let Some(rows) = 65_536usize.checked_div(half) {
            let rows = rows.max(1);
            output
                .par_chunks_mut(rows * half)
                .zip(input.par_chunks(rows * 2 * half))
                .for_each(|(out, input)| {
                    for (out, row) in out.chunks_mut(half).zip(input.chunks(2 * half)) {
                        let (hidden, gate) = row.split_at(half);
                        if self.previous {
                            exp::geglu_body(out, hidden, gate);
                        } else {
                            exp::geglu(out, hidden, gate);
                        }
                    }
                });
        }
        Ok((CpuStorage::F32(output), Shape::from(dims)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Rows of 19 per half: two 8-lane steps and a scalar tail; gates over ±6, where erf moves.
    #[test]
    fn fused_geglu_equals_the_tensor_ops() {
        let half = 19;
        let values: Vec<f32> = (0..3 * 5 * 2 * half)
            .map(|index| 6.0 * (index as f32 * 0.7).sin())
            .collect();
        let xs = Tensor::from_vec(values, (3, 5, 2 * half), &Device::Cpu).unwrap();
        let hidden = xs.narrow(D::Minus1, 0, half).unwrap();
        let gate = xs.narrow(D::Minus1, half, half).unwrap();
        let expected = (&hidden * gate.gelu_erf().unwrap()).unwrap();
        let ours = geglu(&xs).unwrap();
        assert_eq!(ours.dims(), &[3, 5, half]);
        // gelu(g) = g·(1 + erf)/2 with erf within 1.5e-7, plus a few f32 roundings of h·g.
        let bound = (((hidden * gate).unwrap().abs().unwrap() * 6e-7).unwrap() + 1e-7).unwrap();
        let excess = ((ours - expected).unwrap().abs().unwrap() - bound).unwrap();
        let excess = excess.max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(excess <= 0.0, "{excess}");
    }
}

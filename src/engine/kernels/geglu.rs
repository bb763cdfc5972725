//! GEGLU, `hidden · gelu(gate)` over the two halves of the feed-forward projection.
//!
//! As tensor ops this is a strided split, an erf pass over one half and a product of two strided
//! views; on the CPU in f32 it is one pass per row here. The erf is the same libm `erff` candle's
//! `gelu_erf` uses, so the values are identical.

use candle_core::{CpuStorage, CustomOp1, D, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::{contiguous_f32, is_cpu_f32};

/// `hidden · gelu_erf(gate)` where `(hidden, gate)` are the halves of the last dimension.
pub fn geglu(projected: &Tensor) -> Result<Tensor> {
    if is_cpu_f32(projected) {
        return projected.contiguous()?.apply_op1_no_bwd(&Geglu);
    }
    let half = projected.dim(D::Minus1)? / 2;
    let hidden = projected.narrow(D::Minus1, 0, half)?;
    let gate = projected.narrow(D::Minus1, half, half)?;
    hidden * gate.gelu_erf()?
}

struct Geglu;

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
        let mut output = vec![0f32; input.len() / 2];
        // Rows in batches of ~64k values, so small inputs do not pay for a task per row.
        if let Some(rows) = 65_536usize.checked_div(half) {
            let rows = rows.max(1);
            output
                .par_chunks_mut(rows * half)
                .zip(input.par_chunks(rows * 2 * half))
                .for_each(|(out, input)| {
                    for (out, row) in out.chunks_mut(half).zip(input.chunks(2 * half)) {
                        let (hidden, gate) = row.split_at(half);
                        for ((out, h), g) in out.iter_mut().zip(hidden).zip(gate) {
                            let gelu =
                                (libm::erff(g * std::f32::consts::FRAC_1_SQRT_2) + 1.0) * 0.5 * g;
                            *out = h * gelu;
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

    #[test]
    fn fused_geglu_equals_the_tensor_ops() {
        let xs = Tensor::randn(0f32, 2.0, (3, 5, 14), &Device::Cpu).unwrap();
        let hidden = xs.narrow(D::Minus1, 0, 7).unwrap();
        let gate = xs.narrow(D::Minus1, 7, 7).unwrap();
        let expected = (hidden * gate.gelu_erf().unwrap()).unwrap();
        let ours = geglu(&xs).unwrap();
        assert_eq!(ours.dims(), &[3, 5, 7]);
        let difference = (ours - expected).unwrap().abs().unwrap().max_all().unwrap();
        assert_eq!(difference.to_scalar::<f32>().unwrap(), 0.0);
    }
}

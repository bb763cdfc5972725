//! Nearest-neighbour upsampling of an image batch (the UNet's and the VAE's `Upsample2D`).
//!
//! candle's CPU op copies every value through two index tables on one thread; at the VAE's
//! 512-channel, 10.24 s sizes that was 6 % of the decode with the other threads idle. Here the
//! planes are copied in parallel, a doubled width as pairs and each source row written once and
//! then copied to the rows that repeat it, into a buffer that is never zero-filled first. The
//! values are candle's exactly: the same index tables pick the same source pixels.

use std::mem::MaybeUninit;

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::{contiguous_f32, is_cpu_f32};

/// `xs` (batch, channels, height, width) resized to `(height, width)` by nearest neighbour,
/// as `Tensor::upsample_nearest2d`.
pub fn nearest2d(xs: &Tensor, (height, width): (usize, usize)) -> Result<Tensor> {
    if is_cpu_f32(xs) {
        return xs
            .contiguous()?
            .apply_op1_no_bwd(&Nearest2d { height, width });
    }
    xs.upsample_nearest2d(height, width)
}

struct Nearest2d {
    height: usize,
    width: usize,
}

/// For each of `to` positions, the source position among `from` that candle's op reads:
/// `⌊i · from / to⌋` in f64, at most `from − 1`.
fn sources(from: usize, to: usize) -> Vec<usize> {
    let scale = from as f64 / to as f64;
    (0..to)
        .map(|index| ((index as f64 * scale) as usize).min(from.saturating_sub(1)))
        .collect()
}

impl CustomOp1 for Nearest2d {
    fn name(&self) -> &'static str {
        "foley-upsample-nearest2d"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let input = contiguous_f32(storage, layout, "upsample input")?;
        let (batch, channels, from_h, from_w) = layout.shape().dims4()?;
        let (to_h, to_w) = (self.height, self.width);
        let shape = Shape::from((batch, channels, to_h, to_w));
        let plane = to_h * to_w;
        let len = batch * channels * plane;
        if len == 0 {
            return Ok((CpuStorage::F32(Vec::new()), shape));
        }
        if from_h == 0 || from_w == 0 {
            candle_core::bail!("upsample: an empty {from_h}×{from_w} image cannot be resized");
        }
        let (rows, columns) = (sources(from_h, to_h), sources(from_w, to_w));
        let doubled = columns
            .iter()
            .enumerate()
            .all(|(x, &source)| source == x / 2);
        let mut output: Vec<f32> = Vec::with_capacity(len);
        output.spare_capacity_mut()[..len]
            .par_chunks_mut(plane)
            .zip(input.par_chunks(from_h * from_w))
            .for_each(|(out, image)| {
                for (y, &source) in rows.iter().enumerate() {
                    let (done, out) = out.split_at_mut(y * to_w);
                    let out = &mut out[..to_w];
                    if y > 0 && rows[y - 1] == source {
                        // The same source row as the row above: copy what was written.
                        out.copy_from_slice(&done[(y - 1) * to_w..]);
                        continue;
                    }
                    let line = &image[source * from_w..][..from_w];
                    if doubled {
                        for (pair, &value) in out.chunks_mut(2).zip(line) {
                            pair.fill(MaybeUninit::new(value));
                        }
                    } else {
                        for (out, &x) in out.iter_mut().zip(&columns) {
                            out.write(line[x]);
                        }
                    }
                }
            });
        // SAFETY: each plane's rows were all written above, each either from its source row or
        // copied from the row before it, and the planes cover `..len`.
        unsafe { output.set_len(len) };
        Ok((CpuStorage::F32(output), shape))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    use super::*;

    /// Equal to candle's op, value for value: doubling, odd and forced sizes (the latent heights
    /// that are not powers of two), shrinking, and a non-contiguous input.
    #[test]
    fn equals_candles_op() {
        let xs = Tensor::arange(0f32, 2.0 * 3.0 * 5.0 * 7.0, &Device::Cpu)
            .unwrap()
            .reshape((2, 3, 5, 7))
            .unwrap();
        for size in [(10, 14), (11, 15), (10, 7), (5, 20), (3, 4), (1, 1)] {
            let ours = nearest2d(&xs, size).unwrap();
            let candle = xs.upsample_nearest2d(size.0, size.1).unwrap();
            assert_eq!(ours.dims(), candle.dims());
            let (ours, candle) = (
                ours.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                candle.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            );
            assert_eq!(ours, candle, "{size:?}");
        }
        let transposed = xs.transpose(2, 3).unwrap();
        let ours = nearest2d(&transposed, (14, 10)).unwrap();
        let candle = transposed.upsample_nearest2d(14, 10).unwrap();
        let difference = (ours - candle).unwrap().abs().unwrap().sum_all().unwrap();
        assert_eq!(difference.to_scalar::<f32>().unwrap(), 0.0);
    }
}

//! A stride-1 convolution's input as the hardware engines read it: bf16 channel pairs side by
//! side in zero-padded planes. With the operand's inner order tap-major (tap, then channel),
//! the pair of rows for one tap and one channel pair is a shifted stretch of such a plane, so
//! each im2col tile is copied from it in runs of whole pairs instead of being filled, rounded
//! and interleaved value by value.

use rayon::prelude::*;

use super::LANES;
use super::pack::{PackedRight, deal_pair};

/// The input's channels in pairs (the last one padded with a zero channel), each plane padded
/// with zeros, each position's pair of bf16 values side by side.
pub struct PairImage {
    data: Vec<u16>,
    pairs: usize,
    height: usize,
    width: usize,
}

/// Which positions of a [`PairImage`] an output position's taps read.
pub struct Taps {
    pub kernel: (usize, usize),
    pub dilation: (usize, usize),
    pub out_width: usize,
}

impl PairImage {
    /// `planes` (`channels × height × width`), through the leaky ReLU of `slope` when given,
    /// rounded, padded by `padding` on each side and paired.
    pub fn new(
        planes: &[f32],
        (channels, height, width): (usize, usize, usize),
        (pad_y, pad_x): (usize, usize),
        slope: Option<f32>,
    ) -> Self {
        let (padded_height, padded_width) = (height + 2 * pad_y, width + 2 * pad_x);
        let pairs = channels.div_ceil(2);
        let plane_len = padded_height * padded_width * 2;
        let mut data = vec![0u16; pairs * plane_len];
        if plane_len > 0 {
            data.par_chunks_mut(plane_len)
                .enumerate()
                .for_each(|(pair, plane)| {
                    let (mut even, mut odd) = (vec![0f32; width], vec![0f32; width]);
                    for y in 0..height {
                        for (channel, row) in [(2 * pair, &mut even), (2 * pair + 1, &mut odd)] {
                            if channel < channels {
                                let start = (channel * height + y) * width;
                                row.copy_from_slice(&planes[start..][..width]);
                                if let Some(slope) = slope {
                                    row.iter_mut()
                                        .filter(|value| **value < 0.0)
                                        .for_each(|value| *value *= slope);
                                }
                            }
                        }
                        let start = ((y + pad_y) * padded_width + pad_x) * 2;
                        // Runs of LANES pairs one after another: the row's pairs in order.
                        deal_pair(&even, &odd, &mut plane[start..][..2 * width], 2 * LANES);
                    }
                });
        }
        Self {
            data,
            pairs,
            height: padded_height,
            width: padded_width,
        }
    }

    /// Rows of the tap-major im2col operand: taps times the channels padded to pairs.
    pub fn depth(&self, taps: &Taps) -> usize {
        taps.kernel.0 * taps.kernel.1 * 2 * self.pairs
    }
}

/// `weight` (`outputs × channels × taps`) as the rows of a left operand over the tap-major
/// inner order, channels padded to pairs with zeros.
pub fn tap_major_weights(weight: &[f32], outputs: usize, channels: usize, taps: usize) -> Vec<f32> {
    let padded = channels.div_ceil(2) * 2;
    let mut rows = vec![0f32; outputs * taps * padded];
    for (output, row) in rows.chunks_exact_mut(taps * padded).enumerate() {
        for channel in 0..channels {
            let kernel = &weight[(output * channels + channel) * taps..][..taps];
            for (tap, &value) in kernel.iter().enumerate() {
                row[tap * padded + channel] = value;
            }
        }
    }
    rows
}

impl PackedRight {
    /// Makes this, for a hardware engine, the tap-major im2col operand of output positions
    /// `start..start + count` of a stride-1 convolution of `image`.
    pub(in crate::engine::kernels) fn refill_shifted(
        &mut self,
        image: &PairImage,
        taps: &Taps,
        (start, count): (usize, usize),
    ) {
        let plane_len = image.height * image.width * 2;
        let (kernel_width, (dilation_y, dilation_x)) = (taps.kernel.1, taps.dilation);
        self.refill_runs((image.depth(taps), count), |first, columns, run| {
            // One stretch of copies for each output row the run's columns lie in.
            let mut segment = (start + first, 0);
            while segment.1 < columns {
                let (position, done) = segment;
                let (oy, ox) = (position / taps.out_width, position % taps.out_width);
                let len = (taps.out_width - ox).min(columns - done);
                for tap in 0..taps.kernel.0 * kernel_width {
                    let (ky, kx) = (tap / kernel_width, tap % kernel_width);
                    let from = ((oy + ky * dilation_y) * image.width + ox + kx * dilation_x) * 2;
                    for pair in 0..image.pairs {
                        let to = (tap * image.pairs + pair) * 2 * LANES + 2 * done;
                        let source = &image.data[pair * plane_len + from..][..2 * len];
                        run[to..][..2 * len].copy_from_slice(source);
                    }
                }
                segment = (position + len, done + len);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::super::Engine;
    use super::super::tests::values;
    use super::*;

    /// The operand copied from a paired image is the one packing the tap-major im2col matrix
    /// (from its definition) value by value gives: odd channel counts, padding, dilation, the
    /// leaky ReLU, tiles that start inside a row and cross rows.
    #[test]
    fn shifted_copies_are_the_packed_im2col_matrix() {
        let cases = [
            // (channels, height, width, kernel, padding, dilation, slope)
            (5, 7, 9, (3, 3), (1, 1), (1, 1), None),
            (4, 6, 40, (3, 3), (2, 2), (2, 2), Some(0.1)),
            (3, 1, 50, (1, 11), (0, 10), (1, 2), Some(0.2)),
            (8, 5, 5, (1, 1), (0, 0), (1, 1), None),
        ];
        for (channels, height, width, kernel, padding, dilation, slope) in cases {
            let planes = values(channels * height * width, 17);
            let image = PairImage::new(&planes, (channels, height, width), padding, slope);
            let span =
                |size: usize, pad: usize, dil: usize, k: usize| size + 2 * pad - dil * (k - 1);
            let out_height = span(height, padding.0, dilation.0, kernel.0);
            let out_width = span(width, padding.1, dilation.1, kernel.1);
            let taps = Taps {
                kernel,
                dilation,
                out_width,
            };
            let padded = channels.div_ceil(2) * 2;
            let definition = |row: usize, position: usize| {
                let (tap, channel) = (row / padded, row % padded);
                let (ky, kx) = (tap / kernel.1, tap % kernel.1);
                let (oy, ox) = (position / out_width, position % out_width);
                let y = (oy + ky * dilation.0) as isize - padding.0 as isize;
                let x = (ox + kx * dilation.1) as isize - padding.1 as isize;
                let inside = (0..height as isize).contains(&y) && (0..width as isize).contains(&x);
                if channel >= channels || !inside {
                    return 0.0;
                }
                let value = planes[(channel * height + y as usize) * width + x as usize];
                match slope {
                    Some(slope) if value < 0.0 => value * slope,
                    _ => value,
                }
            };
            let positions = out_height * out_width;
            let mut shifted = PackedRight::empty(Engine::Amx);
            for (start, count) in [(0, positions), (3, positions - 5), (positions / 2, 1)] {
                shifted.refill_shifted(&image, &taps, (start, count));
                let fill = |row: usize, first: usize, out: &mut [f32]| {
                    for (index, value) in out.iter_mut().enumerate() {
                        *value = definition(row, start + first + index);
                    }
                };
                let packed = PackedRight::from_rows(Engine::Amx, (image.depth(&taps), count), fill);
                let what = format!("{channels}×{height}×{width} {kernel:?} at {start}+{count}");
                assert!(shifted.same_values(&packed), "{what}");
            }
        }
    }
}

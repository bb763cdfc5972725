//! A stride-1 convolution's input as the hardware engines read it: bf16 channel pairs side by
//! side in zero-padded planes. With the operand's inner order tap-major (tap, then channel),
//! the pair of rows for one tap and one channel pair is a shifted stretch of such a plane, so
//! each im2col tile is copied from it in runs of whole pairs instead of being filled, rounded
//! and interleaved value by value; AVX512-BF16's kernel reads a 1-D image's stretches in place
//! ([`PairImage::convolve_in_place`]), with no tile at all.

use rayon::prelude::*;

use super::super::gemm::View;
use super::super::leaky;
use super::super::runs::copy_run;
use super::pack::{PackedLeft, PackedRight, deal_pair};
use super::{BLOCK, Engine, LANES, Left, x86};

/// The input's channels in pairs (the last one padded with a zero channel), each plane padded
/// with zeros, each position's pair of bf16 values side by side.
pub struct PairImage {
    /// The planes one after another, then [`SLACK`] zeros.
    data: Vec<u16>,
    pairs: usize,
    /// Values from one pair's plane to the next ([`plane_stride`]).
    plane: usize,
    height: usize,
    width: usize,
}

/// Values after the last plane: a block of columns read in place at the end of a row runs up
/// to BLOCK − 1 positions past it. Those columns' sums are dropped.
const SLACK: usize = 2 * BLOCK;

/// Blocks of output columns a task of an in-place convolution takes (512 positions): on Zen 4,
/// HiFi-GAN's 128-channel k3 layer 13.0–14.1 ms against 15.1–16.3 with the rows split between
/// the threads, the others level or slightly faster; 32 blocks left 512 channels × 5120
/// positions too few tasks to balance (`cargo bench --bench kernels -- bf16 conv1d`).
const COLUMN_BLOCKS: usize = 16;

/// Positions of a row rounded and paired at a time, so the rows stay in L1.
const CHUNK: usize = 256;

/// Values from one pair's plane to the next for planes of `len` values: an odd count of 64-byte
/// lines' worth, so that one position of successive planes falls in different cache sets
/// (whatever the buffer's alignment, the distance between them is what maps them). HiFi-GAN's
/// planes are a few values over a multiple of 4 KiB: read in place, a block's 128 pairs of one
/// tap shared a sixteenth of L1's sets.
fn plane_stride(len: usize) -> usize {
    /// Values a 64-byte line holds.
    const LINE: usize = 32;
    if len == 0 {
        return 0;
    }
    (len.div_ceil(LINE) | 1) * LINE
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
        let plane = plane_stride(padded_height * padded_width * 2);
        let mut data = vec![0u16; pairs * plane + SLACK];
        if plane > 0 {
            data[..pairs * plane]
                .par_chunks_mut(plane)
                .enumerate()
                .for_each(|(pair, plane)| {
                    let (mut even, mut odd) = ([0f32; CHUNK], [0f32; CHUNK]);
                    for y in 0..height {
                        for first in (0..width).step_by(CHUNK) {
                            let len = CHUNK.min(width - first);
                            for (channel, row) in [(2 * pair, &mut even), (2 * pair + 1, &mut odd)]
                            {
                                let row = &mut row[..len];
                                if channel >= channels {
                                    row.fill(0.0);
                                    continue;
                                }
                                let source = &planes[(channel * height + y) * width + first..];
                                leaky::copy(&source[..len], slope, row);
                            }
                            let start = ((y + pad_y) * padded_width + pad_x + first) * 2;
                            // Runs of LANES pairs one after another: the row's pairs in order.
                            let out = &mut plane[start..][..2 * len];
                            deal_pair(&even[..len], &odd[..len], out, 2 * LANES);
                        }
                    }
                });
        }
        Self {
            data,
            pairs,
            plane,
            height: padded_height,
            width: padded_width,
        }
    }

    /// Whether `engine` multiplies a convolution of this image reading its pairs in place
    /// ([`PairImage::convolve_in_place`]): AVX512-BF16's kernel loads pairs any distance apart,
    /// and in a 1-D image an output block's columns are one stretch of each plane a tap. AMX
    /// loads its tiles from packed runs.
    pub fn reads_in_place(&self, engine: Engine) -> bool {
        engine == Engine::Avx512 && self.height == 1
    }

    /// `out` (`outputs × taps.out_width`) += `left` (the kept tap-major weights) · this 1-D
    /// image's tap-major im2col matrix, each block's taps read in place: no im2col tiles.
    pub fn convolve_in_place(&self, left: &PackedLeft, taps: &Taps, out: &mut [f32]) {
        let (outputs, depth) = left.dims();
        let positions = taps.out_width;
        let (kernel, dilation) = (taps.kernel.1, taps.dilation.1);
        assert!(
            self.reads_in_place(left.engine())
                && taps.kernel.0 == 1
                && depth == self.depth(taps)
                && positions + dilation * (kernel - 1) == self.width
                && out.len() >= outputs * positions,
            "convolution shapes disagree"
        );
        let columns = |first: usize| {
            x86::Columns::shifted(
                &self.data,
                first * 2,
                (self.pairs, self.plane),
                (kernel, dilation * 2),
            )
        };
        let dst = (out.as_mut_ptr(), View::rows(outputs, positions, positions));
        // Each task takes every output row of a stretch of columns, so that stretch of every
        // plane stays in L2 while all the weights pass over it, instead of each task streaming
        // the whole image once for each of its blocks of rows.
        // SAFETY: `out` holds the view (asserted); each block's columns are read from
        // `self.data`, bounds-checked by `Columns::shifted`, over the weights' tap-major order.
        unsafe {
            super::run_blocks(
                dst,
                Left::Kept(left),
                left.engine(),
                columns,
                Some(COLUMN_BLOCKS),
                true,
                true,
            )
        };
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
        let plane_len = image.plane;
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
                        copy_run::<u16, { 2 * LANES }>(&mut run[to..], source);
                    }
                }
                segment = (position + len, done + len);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::values;
    use super::*;
    use crate::engine::kernels::gemm::matmul_kept;

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
            // Rows longer than the pairing's chunks, their last chunk part-filled.
            (3, 1, 600, (1, 7), (0, 9), (1, 3), Some(0.1)),
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

    /// A 1-D convolution read in place gives the very sums of the copied tiles: the same
    /// products in the same order (odd channel counts, outputs and positions off the block
    /// size, dilation, sums added onto the output). On AVX512-BF16 where the CPU has it.
    #[test]
    fn in_place_reads_sum_as_the_copied_tiles() {
        if !super::super::available().contains(&Engine::Avx512) {
            eprintln!("no AVX512-BF16 on this CPU: nothing to check");
            return;
        }
        for (channels, outputs, width, kernel, dilation) in [
            (5, 7, 50, 3, 1),
            (64, 40, 1001, 7, 3),
            (33, 32, 96, 11, 5),
            (4, 64, 31, 1, 1),
        ] {
            let padding = dilation * (kernel - 1) / 2;
            let planes = values(channels * width, 17);
            let image = PairImage::new(&planes, (channels, 1, width), (0, padding), Some(0.2));
            assert!(image.reads_in_place(Engine::Avx512));
            let taps = Taps {
                kernel: (1, kernel),
                dilation: (1, dilation),
                out_width: width,
            };
            let weight = values(outputs * channels * kernel, 5);
            let rows = tap_major_weights(&weight, outputs, channels, kernel);
            let depth = image.depth(&taps);
            let left = PackedLeft::new(Engine::Avx512, &rows, View::rows(outputs, depth, depth));
            let start = values(outputs * width, 7);
            let mut copied = start.clone();
            let mut right = PackedRight::empty(Engine::Avx512);
            right.refill_shifted(&image, &taps, (0, width));
            let dst = View::rows(outputs, width, width);
            matmul_kept((&mut copied, dst), &left, &right, true, true);
            let mut in_place = start;
            image.convolve_in_place(&left, &taps, &mut in_place);
            let what = format!("{channels}→{outputs}×{width} k{kernel} d{dilation}");
            assert_eq!(in_place, copied, "{what}");
        }
    }
}

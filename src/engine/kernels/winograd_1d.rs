//! Stride-1, "same"-padded 1-D convolutions (HiFi-GAN's residual blocks) by Winograd's F(4, 3),
//! the kernel cut into 3-tap pieces.
//!
//! A `k`-tap kernel is ⌈k/3⌉ pieces of 3 taps (the last zero-filled), each an F(4, 3): 6
//! multiplies for 4 outputs instead of 12, so 1.5·⌈k/3⌉ multiplies an output against `k`
//! (11 taps: 6 against 11, 7 taps: 4.5 against 7, 3 taps: 1.5 against 3). The pieces of every
//! input channel stack along the products' inner dimension: one `gemm` product per transformed
//! position, (outputs × pieces·channels) · (pieces·channels × tiles). A dilation `d` splits the
//! signal into `d` phases (positions ≡ r mod d), each an undilated convolution of its own. The
//! transforms are [`super::winograd_f4`]'s 1-D ones.

use rayon::prelude::*;

use super::dispatch::avx2_dispatch;
use super::gemm::position_products;
use super::scratch::Scratch;
use super::winograd_f4::{GROUP, Lanes, at_lanes, bt_lanes, g_lanes, store_lanes};

/// Transformed positions per tile.
const SIDE: usize = 6;

/// Floats the transformed inputs of one chunk of tiles may hold (32 MB).
const CHUNK_FLOATS: usize = 8 << 20;

/// A 1-D convolution this module computes.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub channels: usize,
    pub outputs: usize,
    pub length: usize,
    pub kernel: usize,
    pub dilation: usize,
}

impl Shape {
    /// 3-tap pieces of the kernel.
    fn pieces(&self) -> usize {
        self.kernel.div_ceil(3)
    }

    /// Rows of every product: each input channel's pieces.
    fn depth(&self) -> usize {
        self.pieces() * self.channels
    }
}

/// Whether this path takes a 1-D layer: odd kernels of 3+ taps with "same" padding
/// (`padding = dilation·(kernel − 1)/2`), from 128 channels, on x86 CPUs without the AVX-512
/// direct kernel. Measured on AMD Zen 3 (`cargo bench --bench kernels`, two runs alternating
/// this path with the AVX2 kernels it replaces): HiFi-GAN's [1,512,5120] 11-tap layer 128–143
/// ms against the AVX2 direct kernel's 264–305, its 3-tap one 39–40 against im2col's 65–69,
/// [1,256,20480] 11 taps 151–177 against 203–265. At 128 channels ([1,128,40960], the nine
/// tap/dilation pairs, two runs alternating) 462–490 against 629–649 ms in all, every pair
/// faster; at 64 and 32 channels it lost (525 against 386 ms, 349 against 237). The AVX-512
/// direct kernel runs near its CPU's peak and F(4, 3) has not been measured against it.
pub fn worthwhile(shape: &Shape, padding: usize, previous: bool) -> bool {
    let same = shape.kernel % 2 == 1
        && shape.kernel >= 3
        && Some(padding) == shape.dilation.checked_mul((shape.kernel - 1) / 2);
    same && shape.channels >= 128
        && shape.length >= 4 * shape.dilation
        && !previous
        && super::direct::Kernel::avx2_only()
}

/// `G g` of every 3-tap piece of `weight` (outputs, channels, kernel), laid out (output,
/// position, channel·pieces + piece) so each position's matrix is a strided view.
pub fn transform_weights(weight: &[f32], shape: &Shape) -> Scratch {
    let (channels, kernel, depth) = (shape.channels, shape.kernel, shape.depth());
    let mut transformed = Scratch::new(shape.outputs * SIDE * depth);
    transformed
        .par_chunks_mut(SIDE * depth)
        .enumerate()
        .for_each(|(output, block)| {
            let kernels = &weight[output * channels * kernel..][..channels * kernel];
            transform_kernels(kernels, shape, block);
        });
    transformed
}

avx2_dispatch! {
    /// `G g` of the pieces of one output channel's kernels (`kernels`: channel, tap) into `block`
    /// (position, channel·pieces + piece), [`GROUP`] channels at a time.
    fn transform_kernels = kernels_lanes(kernels: &[f32], shape: &Shape, block: &mut [f32]);
}

#[inline(always)]
fn kernels_lanes(kernels: &[f32], shape: &Shape, block: &mut [f32]) {
    let (channels, kernel, pieces, depth) =
        (shape.channels, shape.kernel, shape.pieces(), shape.depth());
    let mut taps = [[0f32; GROUP]; 3];
    let mut values = [[0f32; GROUP]; SIDE];
    for first in (0..channels).step_by(GROUP) {
        let lanes = GROUP.min(channels - first);
        for piece in 0..pieces {
            for (tap, taps) in taps.iter_mut().enumerate() {
                let at = 3 * piece + tap;
                for (lane, value) in taps.iter_mut().enumerate().take(lanes) {
                    *value = if at < kernel {
                        kernels[(first + lane) * kernel + at]
                    } else {
                        0.0
                    };
                }
            }
            g_lanes([&taps[0], &taps[1], &taps[2]], &mut values);
            for (position, values) in values.iter().enumerate() {
                let row = &mut block[position * depth..][..depth];
                for (lane, &value) in values.iter().enumerate().take(lanes) {
                    row[(first + lane) * pieces + piece] = value;
                }
            }
        }
    }
}

/// Convolves one signal (channels, length) into `out` (outputs, length), which holds the bias
/// already; `weights` come from [`transform_weights`]. With `input_slope`, the input goes
/// through a leaky ReLU first.
pub fn convolve(
    signal: &[f32],
    shape: &Shape,
    weights: &[f32],
    input_slope: Option<f32>,
    out: &mut [f32],
) {
    let Shape {
        outputs,
        length,
        dilation,
        ..
    } = *shape;
    let depth = shape.depth();
    let most_tiles = (CHUNK_FLOATS / (SIDE * depth.max(outputs))).max(GROUP);
    // Phase 0 is the longest; every value of both buffers is written before it is read.
    let largest = most_tiles.min(length.div_ceil(dilation).div_ceil(4));
    let mut inputs = Scratch::new(depth * SIDE * largest);
    let mut products = Scratch::new(outputs * SIDE * largest);
    for phase in 0..dilation {
        // Positions phase, phase + d, … form an undilated signal of their own.
        let span = (length - phase).div_ceil(dilation);
        let tiles = span.div_ceil(4);
        for first in (0..tiles).step_by(most_tiles) {
            let count = most_tiles.min(tiles - first);
            let inputs = &mut inputs[..depth * SIDE * count];
            inputs
                .par_chunks_mut(shape.pieces() * SIDE * count)
                .enumerate()
                .for_each(|(channel, block)| {
                    let line = &signal[channel * length..][..length];
                    let phase_line = Phase {
                        line,
                        phase,
                        dilation,
                        span,
                        input_slope,
                    };
                    transform_inputs(&phase_line, shape, first, count, block);
                });
            let products = &mut products[..outputs * SIDE * count];
            position_products(products, weights, inputs, (SIDE, outputs, depth, count));
            let products = &*products;
            out.par_chunks_mut(length)
                .enumerate()
                .for_each(|(output, line)| {
                    let block = &products[output * SIDE * count..][..SIDE * count];
                    let place = Place {
                        phase,
                        dilation,
                        span,
                        first,
                    };
                    transform_outputs(block, count, &place, line);
                });
        }
    }
}

/// One phase of one input channel: positions `phase + j·dilation` for `j < span`.
struct Phase<'a> {
    line: &'a [f32],
    phase: usize,
    dilation: usize,
    span: usize,
    input_slope: Option<f32>,
}

impl Phase<'_> {
    /// Phase positions `start − half + u` for `u < 4·run` (zero outside the phase, through the
    /// leaky ReLU inside it), dealt into four streams of `run`: stream `m` holds `u = 4j + m`
    /// at `j`. Copied in order first, then dealt: gathering each stream straight from the
    /// signal, with the ReLU as a branch, took nine tenths of the input transform (`perf`,
    /// 128 channels, 11 taps). Inlined so it compiles as its caller's AVX2 code.
    #[inline(always)]
    fn streams(&self, start: usize, half: usize, run: usize) -> Scratch {
        let len = 4 * run;
        // Padded positions `skip..end` lie inside the phase.
        let skip = half.saturating_sub(start).min(len);
        let end = (self.span + half).saturating_sub(start).clamp(skip, len);
        let mut padded = Scratch::new(len);
        padded[..skip].fill(0.0);
        padded[end..].fill(0.0);
        if end > skip {
            let slope = self.input_slope.unwrap_or(1.0);
            let leaky = |value: f32| if value < 0.0 { value * slope } else { value };
            let first = self.phase + (start + skip - half) * self.dilation;
            let targets = padded[skip..end].iter_mut();
            // Undilated phases read one contiguous run, which compiles to vector code.
            if self.dilation == 1 {
                let inside = &self.line[first..][..end - skip];
                targets
                    .zip(inside)
                    .for_each(|(target, &value)| *target = leaky(value));
            } else {
                let inside = self.line[first..].iter().step_by(self.dilation);
                targets
                    .zip(inside)
                    .for_each(|(target, &value)| *target = leaky(value));
            }
        }
        let mut streams = Scratch::new(len);
        let (s0, rest) = streams.split_at_mut(run);
        let (s1, rest) = rest.split_at_mut(run);
        let (s2, s3) = rest.split_at_mut(run);
        for ((((quad, a), b), c), d) in padded
            .chunks_exact(4)
            .zip(s0.iter_mut())
            .zip(s1.iter_mut())
            .zip(s2.iter_mut())
            .zip(s3.iter_mut())
        {
            (*a, *b, *c, *d) = (quad[0], quad[1], quad[2], quad[3]);
        }
        streams
    }
}

/// Where a chunk's outputs go in an output channel.
struct Place {
    phase: usize,
    dilation: usize,
    span: usize,
    first: usize,
}

avx2_dispatch! {
    /// `Bᵀ d` of every piece of tiles `first..first + count` of one channel's phase, written
    /// (piece, position, tile) into `block`.
    ///
    /// Tile `t`'s piece `p` reads phase positions `4t + 3p − h + i` for `i < 6` (`h` the kernel's
    /// half width; outside the phase, zero). The phase is first copied, padded, as four streams by
    /// position mod 4, so each of those reads over consecutive tiles is one contiguous run.
    fn transform_inputs = inputs_lanes(
        phase: &Phase,
        shape: &Shape,
        first: usize,
        count: usize,
        block: &mut [f32],
    );
}

#[inline(always)]
fn inputs_lanes(phase: &Phase, shape: &Shape, first: usize, count: usize, block: &mut [f32]) {
    let pieces = shape.pieces();
    let half = (shape.kernel - 1) / 2;
    // Stream m holds padded position 4j + m at j, where padded position u is phase position
    // 4·first + u − half; enough for the last group's reads past the chunk.
    let run = count.next_multiple_of(GROUP) + pieces + 2;
    let streams = phase.streams(4 * first, half, run);
    let mut values = [[0f32; GROUP]; SIDE];
    for piece in 0..pieces {
        let reads: [&[f32]; SIDE] = std::array::from_fn(|i| {
            let offset = 3 * piece + i;
            &streams[(offset % 4) * run + offset / 4..]
        });
        let taps = &mut block[piece * SIDE * count..][..SIDE * count];
        for start in (0..count).step_by(GROUP) {
            let at = |i: usize| -> &Lanes {
                reads[i][start..start + GROUP]
                    .try_into()
                    .expect("a whole group")
            };
            bt_lanes([at(0), at(1), at(2), at(3), at(4), at(5)], &mut values);
            let lanes = GROUP.min(count - start);
            for (position, values) in values.iter().enumerate() {
                store_lanes(&mut taps[position * count + start..], values, lanes);
            }
        }
    }
}

avx2_dispatch! {
    /// `Aᵀ m` of every tile of one output channel's chunk, added to its phase positions in `line`
    /// (which holds the bias).
    fn transform_outputs = outputs_lanes(
        block: &[f32],
        count: usize,
        place: &Place,
        line: &mut [f32],
    );
}

#[inline(always)]
fn outputs_lanes(block: &[f32], count: usize, place: &Place, line: &mut [f32]) {
    let mut partial = [[0f32; GROUP]; SIDE];
    let mut values = [[0f32; GROUP]; 4];
    for start in (0..count).step_by(GROUP) {
        let lanes = GROUP.min(count - start);
        if lanes < GROUP {
            for (position, values) in partial.iter_mut().enumerate() {
                values[..lanes].copy_from_slice(&block[position * count + start..][..lanes]);
            }
        }
        let m = |position: usize| -> &Lanes {
            if lanes < GROUP {
                &partial[position]
            } else {
                block[position * count + start..][..GROUP]
                    .try_into()
                    .expect("a whole group")
            }
        };
        at_lanes([m(0), m(1), m(2), m(3), m(4), m(5)], &mut values);
        // Tile t's outputs are phase positions 4t..4t + 4: the group's are one run of them.
        let mut ordered = [0f32; 4 * GROUP];
        for (lane, quad) in ordered.chunks_exact_mut(4).enumerate() {
            for (i, value) in quad.iter_mut().enumerate() {
                *value = values[i][lane];
            }
        }
        let at = 4 * (place.first + start);
        let live = place.span.saturating_sub(at).min(4 * lanes);
        let begin = place.phase + at * place.dilation;
        if place.dilation == 1 {
            let targets = &mut line[begin..][..live];
            targets.iter_mut().zip(&ordered).for_each(|(t, v)| *t += v);
        } else {
            let targets = line[begin..].iter_mut().step_by(place.dilation);
            targets.zip(&ordered[..live]).for_each(|(t, v)| *t += v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `len` values in [−1, 1) from a 64-bit LCG: free of the long-range cancellation that
    /// periodic test patterns can give a 1408-term sum.
    fn uniform(len: usize, seed: u64) -> Vec<f32> {
        let mut state = seed;
        (0..len)
            .map(|_| {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect()
    }

    /// F(4, 3) on 3-tap pieces against the definition (f64): 3-, 7- and 11-tap kernels,
    /// dilations 1, 3 and 5, lengths that leave partial tiles and groups, a leaky ReLU input,
    /// and (the last) a signal whose tiles split into two chunks, the second partial.
    #[test]
    fn pieces_match_the_definition() {
        for (channels, outputs, length, kernel, dilation, slope) in [
            (3, 2, 37, 3, 1, None),
            (5, 3, 41, 7, 3, Some(0.1)),
            (4, 2, 29, 11, 5, None),
            (2, 3, 9, 11, 1, Some(0.2)),
            (128, 2, 4_000, 11, 5, Some(0.1)),
            (128, 2, 12_000, 11, 1, None),
        ] {
            let shape = Shape {
                channels,
                outputs,
                length,
                kernel,
                dilation,
            };
            let signal = uniform(channels * length, 1);
            let weight = uniform(outputs * channels * kernel, 2);
            let act = |value: f32| match slope {
                Some(slope) if value < 0.0 => f64::from(value * slope),
                _ => f64::from(value),
            };
            let half = (kernel - 1) / 2;
            let mut reference = vec![0f64; outputs * length];
            for (output, line) in reference.chunks_mut(length).enumerate() {
                for (position, value) in line.iter_mut().enumerate() {
                    for channel in 0..channels {
                        for tap in 0..kernel {
                            let at = (position + tap * dilation).checked_sub(half * dilation);
                            if let Some(at) = at.filter(|&at| at < length) {
                                let w = weight[(output * channels + channel) * kernel + tap];
                                *value += f64::from(w) * act(signal[channel * length + at]);
                            }
                        }
                    }
                }
            }
            let weights = transform_weights(&weight, &shape);
            let mut out = vec![0f32; outputs * length];
            convolve(&signal, &shape, &weights, slope, &mut out);
            let error = super::super::relative_l2_f64(&out, &reference);
            eprintln!("{channels}×{length} k{kernel} d{dilation}: {error:e}");
            // F(4, 3)'s sixths and powers of two cost a little accuracy over long sums (about
            // 1e-6 at 128 channels × 11 taps).
            assert!(
                error < 4e-6,
                "{channels}×{length} k{kernel} d{dilation}: {error:e}"
            );
        }
    }

    /// HiFi-GAN's layers from 128 channels take this path on AVX2-only x86, and nothing else
    /// does: not 64 channels, even kernels, other paddings, the previous kernels, or any
    /// layer on a CPU with the AVX-512 direct kernel.
    #[test]
    fn pieces_take_the_layers_they_win() {
        let on = super::super::direct::Kernel::avx2_only();
        let layer = |channels, kernel, dilation| Shape {
            channels,
            outputs: channels,
            length: 40_960,
            kernel,
            dilation,
        };
        let same = |shape: &Shape| shape.dilation * (shape.kernel - 1) / 2;
        for (channels, kernel, dilation) in [(512, 11, 5), (256, 3, 1), (128, 7, 3), (128, 11, 1)] {
            let shape = layer(channels, kernel, dilation);
            assert_eq!(worthwhile(&shape, same(&shape), false), on, "{shape:?}");
            assert!(!worthwhile(&shape, same(&shape), true), "{shape:?}");
            assert!(!worthwhile(&shape, 0, false), "{shape:?}");
        }
        for shape in [
            layer(64, 11, 1),
            layer(32, 3, 1),
            layer(128, 4, 1),
            layer(128, 1, 1),
        ] {
            assert!(!worthwhile(&shape, same(&shape), false), "{shape:?}");
        }
    }
}

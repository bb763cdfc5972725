//! Output buffers that start as a layer's bias, plus a residual, so a product can be added
//! onto them: the bias and the residual add cost no pass of their own, and the buffer is never
//! zero-filled first.

use std::mem::MaybeUninit;

use rayon::prelude::*;

/// Values written per rayon task, at least.
const CHUNK: usize = 1 << 16;

/// How a bias repeats over a buffer.
#[derive(Clone, Copy, Debug)]
pub enum Repeat {
    /// Every `bias.len()` values are the whole bias: features last, as `nn.Linear` writes.
    Rows,
    /// Each bias value fills `plane` values in turn: channels first, as a convolution writes.
    Planes(usize),
}

/// A new buffer of `len` values: the bias repeated as `repeat` says, plus `residual` (of `len`
/// values) when given.
///
/// Panics if `len` is not a whole number of repeats or `residual` has another length: both are
/// programming errors.
pub fn biased(len: usize, bias: &[f32], repeat: Repeat, residual: Option<&[f32]>) -> Vec<f32> {
    // A segment: one run of values that takes the bias the same way (a row, or one plane).
    let segment = match repeat {
        Repeat::Rows => bias.len(),
        Repeat::Planes(plane) => plane,
    };
    let mut out = Vec::with_capacity(len);
    if len == 0 {
        return out;
    }
    let period = match repeat {
        Repeat::Rows => bias.len(),
        Repeat::Planes(plane) => plane * bias.len(),
    };
    assert!(
        period > 0 && len.is_multiple_of(period),
        "{len} values are not whole repeats of {} biases",
        bias.len()
    );
    if let Some(residual) = residual {
        assert_eq!(residual.len(), len, "residual length");
    }
    let per_chunk = CHUNK.div_ceil(segment) * segment;
    out.spare_capacity_mut()[..len]
        .par_chunks_mut(per_chunk)
        .enumerate()
        .for_each(|(chunk, dst)| {
            let start = chunk * per_chunk;
            for (index, dst) in dst.chunks_mut(segment).enumerate() {
                let at = start + index * segment;
                let residual = residual.map(|residual| &residual[at..at + segment]);
                match repeat {
                    Repeat::Rows => write(dst, bias.iter().copied(), residual),
                    Repeat::Planes(_) => {
                        let value = bias[(at / segment) % bias.len()];
                        write(dst, std::iter::repeat(value), residual)
                    }
                }
            }
        });
    // SAFETY: the chunks cover `..len` and `write` set every value of each.
    unsafe { out.set_len(len) };
    out
}

/// A new buffer of `len` zeros. A large one is written by rayon's threads, each touching its
/// own pages first, instead of by the calling thread alone while they wait: the allocator
/// zero-fills reused memory on the caller, and fresh pages otherwise fault in wherever the
/// first write lands (a VAE layer's 38 MB Winograd weights, an output image).
pub fn zeros(len: usize) -> Vec<f32> {
    if len < PARALLEL_ZEROS {
        return vec![0.0; len];
    }
    let mut out = Vec::with_capacity(len);
    out.spare_capacity_mut()[..len]
        .par_chunks_mut(CHUNK)
        .for_each(|chunk| chunk.fill(MaybeUninit::new(0.0)));
    // SAFETY: the chunks cover `..len` and each was filled.
    unsafe { out.set_len(len) };
    out
}

/// Values from which [`zeros`] writes in parallel (4 MB).
const PARALLEL_ZEROS: usize = 1 << 20;

/// `dst[i] = bias[i] + residual[i]` (or `bias[i]`) over all of `dst`.
fn write(dst: &mut [MaybeUninit<f32>], bias: impl Iterator<Item = f32>, residual: Option<&[f32]>) {
    match residual {
        Some(residual) => {
            for ((dst, bias), &residual) in dst.iter_mut().zip(bias).zip(residual) {
                dst.write(residual + bias);
            }
        }
        None => {
            for (dst, bias) in dst.iter_mut().zip(bias) {
                dst.write(bias);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Zeros at every length, on either side of the parallel floor.
    #[test]
    fn zeros_are_zeros() {
        for len in [0, 5, PARALLEL_ZEROS - 1, PARALLEL_ZEROS + 3 * CHUNK + 7] {
            let out = zeros(len);
            assert_eq!(out.len(), len);
            assert!(out.iter().all(|&value| value == 0.0), "{len}");
        }
    }

    /// Rows and planes, with and without a residual, with chunks that split the buffer
    /// unevenly: each value equals the definition.
    #[test]
    fn each_value_is_its_bias_plus_its_residual() {
        let bias = [1.0, 2.0, 3.0];
        for (repeat, segment) in [(Repeat::Rows, 3), (Repeat::Planes(5), 5)] {
            for copies in [0, 1, 4, 30_000] {
                let len = copies * segment * bias.len();
                let residual: Vec<f32> = (0..len).map(|i| i as f32 * 0.25).collect();
                for with_residual in [false, true] {
                    let out = biased(len, &bias, repeat, with_residual.then_some(&residual[..]));
                    assert_eq!(out.len(), len);
                    for (i, &value) in out.iter().enumerate() {
                        let b = match repeat {
                            Repeat::Rows => bias[i % 3],
                            Repeat::Planes(plane) => bias[(i / plane) % 3],
                        };
                        let expected = if with_residual { residual[i] + b } else { b };
                        assert_eq!(value, expected, "{repeat:?} at {i} of {len}");
                    }
                }
            }
        }
    }
}

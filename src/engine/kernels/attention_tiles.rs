//! Register tiles for one head's attention over a block of queries, scores kept transposed.
//!
//! At the head sizes the UNets use (16–80) `gemm` spends much of an attention call packing: it
//! re-packs a head's keys and values for every block of queries, and a 32-deep product is too
//! short to amortise that (90 GFLOP/s at the UNet's 1024-token level, against ~190 for large
//! products). Here a head's keys are transposed once per batch item and a block's queries once
//! per head, so both products broadcast from one row and load vectors from another, with every
//! sum in a register: the scores come out as (keys × queries), the softmax runs down their
//! columns 8 queries at a time, and `p·v` broadcasts each key's weights for a row of queries.

/// Queries in one block; the transposed buffers keep `BLOCK_STRIDE` columns so a values tile
/// that starts near the end of the block reads zeros, not the next row.
pub const QUERY_BLOCK: usize = 64;
const BLOCK_STRIDE: usize = QUERY_BLOCK + 16;

/// Lanes of an AVX-512 vector.
const LANES: usize = 16;
/// Keys and vectors of queries in a scores tile: 24 of AVX-512's 32 registers hold sums.
const SCORE_KEYS: usize = 6;
const SCORE_VECTORS: usize = 4;
/// Query rows and vectors of values in a values tile (the last columns of a head take one
/// vector at a time).
const VALUE_ROWS: usize = 12;
const VALUE_VECTORS: usize = 2;

/// That this CPU runs the tiles: AVX-512, and AVX2 with FMA for the softmax down the columns.
/// AVX-512 only: with AVX2's 16 registers (3 × 4 and 6 × 2 tiles) they ran slower than `gemm`
/// with the two-pass softmax when forced on AMD Zen 4 (22.4 against 16.6–17.2 ms at the UNet's
/// 1024 tokens, 394–464 against 209–223 ms for the VAE's 4096-token head), so AVX2-only CPUs
/// keep that path.
#[derive(Clone, Copy, Debug)]
pub struct Tiles(());

impl Tiles {
    /// The tiles, if this CPU runs them.
    pub fn detect() -> Option<Self> {
        #[cfg(target_arch = "x86_64")]
        if super::exp::has_avx512() {
            return Some(Self(()));
        }
        None
    }

    /// Whether values of this width fit whole vectors (otherwise the caller uses `gemm`).
    pub fn fits_values(self, value_dim: usize) -> bool {
        value_dim.is_multiple_of(LANES)
    }

    /// `keys` padded to whole scores tiles: the rows [`transpose_keys`] and the scores keep.
    pub fn padded_keys(self, keys: usize) -> usize {
        keys.next_multiple_of(SCORE_KEYS)
    }
}

/// One head of one batch item: its keys transposed, its values in place.
// Only the x86-64 kernels read the tiles' fields (this, ScoreTile, ValueTile); elsewhere they
// never run.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub struct Head<'a> {
    /// Tile by tile (dim × tile keys), from [`transpose_keys`].
    pub keys_t: &'a [f32],
    pub keys: usize,
    /// (keys × value_dim), rows `value_stride` apart.
    pub values: &'a [f32],
    pub value_stride: usize,
    pub value_dim: usize,
    /// One additive bias per key.
    pub bias: Option<&'a [f32]>,
}

/// Scratch of one block of queries, reused across heads.
pub struct Block {
    tiles: Tiles,
    /// (dim × BLOCK_STRIDE): the block's queries of one head, transposed and scaled.
    queries_t: Vec<f32>,
    /// (padded keys × BLOCK_STRIDE): scores, then softmax numerators.
    scores_t: Vec<f32>,
    totals: Vec<f32>,
}

impl Block {
    pub fn new(tiles: Tiles, dim: usize, keys: usize) -> Self {
        Self {
            tiles,
            queries_t: vec![0.0; dim * BLOCK_STRIDE],
            scores_t: vec![0.0; tiles.padded_keys(keys) * BLOCK_STRIDE],
            totals: vec![0.0; QUERY_BLOCK],
        }
    }

    /// `out[r] = softmax(scale · query[r]·kᵀ + bias)·v` for `rows` (≤ [`QUERY_BLOCK`]) queries
    /// `dim` wide whose rows are `query_stride` apart; `out` rows are `out_stride` apart.
    pub fn attend(
        &mut self,
        head: &Head,
        (query, query_stride): (&[f32], usize),
        rows: usize,
        scale: f32,
        (out, out_stride): (&mut [f32], usize),
    ) {
        let tiles = self.tiles;
        let dim = self.queries_t.len() / BLOCK_STRIDE;
        let padded = tiles.padded_keys(head.keys);
        assert!(rows <= QUERY_BLOCK && head.keys_t.len() >= dim * padded);
        assert!(self.scores_t.len() >= padded * BLOCK_STRIDE && tiles.fits_values(head.value_dim));
        assert!(rows == 0 || (rows - 1) * query_stride + dim <= query.len());
        assert!(rows == 0 || (rows - 1) * out_stride + head.value_dim <= out.len());
        assert!(
            head.keys == 0
                || (head.keys - 1) * head.value_stride + head.value_dim <= head.values.len()
        );
        if rows == 0 {
            return;
        }
        for (row, query) in query.chunks(query_stride).take(rows).enumerate() {
            for (d, value) in query[..dim].iter().enumerate() {
                self.queries_t[d * BLOCK_STRIDE + row] = value * scale;
            }
        }
        let group = SCORE_VECTORS * LANES;
        for first_key in (0..padded).step_by(SCORE_KEYS) {
            for column in (0..rows).step_by(group) {
                // SAFETY: `detect` found the features; the tile reads `dim` rows of
                // `queries_t` from `column` to `column + group <= QUERY_BLOCK` and the
                // `dim × SCORE_KEYS` run of `keys_t` at `first_key · dim`, and writes
                // `SCORE_KEYS` rows of `scores_t` inside `padded × BLOCK_STRIDE`.
                unsafe {
                    tiles.scores(ScoreTile {
                        queries_t: self.queries_t.as_ptr().add(column),
                        keys_t: head.keys_t.as_ptr().add(first_key * dim),
                        dim,
                        out: self
                            .scores_t
                            .as_mut_ptr()
                            .add(first_key * BLOCK_STRIDE + column),
                    })
                };
            }
        }
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `detect` checked AVX-512F.
        unsafe {
            super::exp::avx512::softmax_columns(
                (&mut self.scores_t, BLOCK_STRIDE),
                head.keys,
                rows.next_multiple_of(8),
                head.bias,
                &mut self.totals,
            )
        };
        let wide = VALUE_VECTORS * LANES;
        for first in (0..rows).step_by(VALUE_ROWS) {
            let live = VALUE_ROWS.min(rows - first);
            let mut column = 0;
            while column < head.value_dim {
                let whole = head.value_dim - column >= wide;
                let inverse: [f32; VALUE_ROWS] =
                    std::array::from_fn(|row| 1.0 / self.totals[(first + row).min(rows - 1)]);
                // SAFETY: the tile reads `keys` rows of `scores_t` from `first` to
                // `first + VALUE_ROWS < BLOCK_STRIDE` and of the values from `column` to at
                // most `value_dim`, and writes `live` rows of `out` inside the asserted bounds.
                unsafe {
                    tiles.values(
                        ValueTile {
                            weights_t: self.scores_t.as_ptr().add(first),
                            keys: head.keys,
                            values: head.values.as_ptr().add(column),
                            value_stride: head.value_stride,
                            inverse,
                            live,
                            out: out.as_mut_ptr().add(first * out_stride + column),
                            out_stride,
                        },
                        whole,
                    )
                };
                column += if whole { wide } else { LANES };
            }
        }
    }
}

/// `keys` rows of one head (`dim` wide, rows `stride` apart) transposed tile by tile: for each
/// tile of `SCORE_KEYS` keys, `dim` rows of those keys, padding keys zero. The scores tiles then
/// read one contiguous run.
pub fn transpose_keys(
    tiles: Tiles,
    key: &[f32],
    keys: usize,
    dim: usize,
    stride: usize,
) -> Vec<f32> {
    let tile = SCORE_KEYS;
    let mut out = vec![0f32; dim * tiles.padded_keys(keys)];
    for (index, row) in key.chunks(stride).take(keys).enumerate() {
        let first = index / tile * tile * dim + index % tile;
        for (d, value) in row[..dim].iter().enumerate() {
            out[first + d * tile] = *value;
        }
    }
    out
}

/// A scores tile: `SCORE_KEYS` keys against `SCORE_VECTORS` vectors of queries.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
struct ScoreTile {
    queries_t: *const f32,
    /// `dim` rows of the tile's keys, back to back.
    keys_t: *const f32,
    dim: usize,
    out: *mut f32,
}

/// A values tile: up to `VALUE_ROWS` query rows against one or `VALUE_VECTORS` vectors of value
/// columns.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
struct ValueTile {
    weights_t: *const f32,
    keys: usize,
    values: *const f32,
    value_stride: usize,
    inverse: [f32; VALUE_ROWS],
    /// Rows stored; the rest are computed from the padding and dropped.
    live: usize,
    out: *mut f32,
    out_stride: usize,
}

impl Tiles {
    /// # Safety
    /// The tile's pointers cover what it reads and writes (`self` vouches for the CPU).
    unsafe fn scores(self, tile: ScoreTile) {
        #[cfg(target_arch = "x86_64")]
        unsafe {
            avx512::scores(tile)
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = tile;
            unreachable!("no attention tiles on this architecture");
        }
    }

    /// # Safety
    /// As [`Self::scores`]; `whole` picks all of the tile's value vectors, else one.
    unsafe fn values(self, tile: ValueTile, whole: bool) {
        #[cfg(target_arch = "x86_64")]
        unsafe {
            if whole {
                avx512::values::<VALUE_VECTORS>(tile)
            } else {
                avx512::values::<1>(tile)
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (tile, whole);
            unreachable!("no attention tiles on this architecture");
        }
    }
}

/// The AVX-512 kernels. `scores`: `SCORE_KEYS` × `SCORE_VECTORS` sums; each step down the head
/// dimension loads the queries' vectors and adds each key's broadcast element times them.
/// `values`: `VALUE_ROWS` rows × `E` vectors; each key loads its values and adds each row's
/// broadcast weight times them. Stores go through fixed loops with a branch so the sums stay in
/// registers.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{BLOCK_STRIDE, LANES, SCORE_KEYS, SCORE_VECTORS, ScoreTile, VALUE_ROWS, ValueTile};

    /// # Safety
    /// The CPU has AVX-512F; as `Tiles::scores`.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn scores(tile: ScoreTile) {
        let mut sums = [[_mm512_setzero_ps(); SCORE_VECTORS]; SCORE_KEYS];
        // SAFETY (all pointer arithmetic here): inside what the caller vouched for.
        for d in 0..tile.dim {
            let queries = unsafe { tile.queries_t.add(d * BLOCK_STRIDE) };
            let keys = unsafe { tile.keys_t.add(d * SCORE_KEYS) };
            let columns: [__m512; SCORE_VECTORS] =
                std::array::from_fn(|index| unsafe { _mm512_loadu_ps(queries.add(LANES * index)) });
            for (key, sums) in sums.iter_mut().enumerate() {
                let element = _mm512_set1_ps(unsafe { *keys.add(key) });
                for (sum, column) in sums.iter_mut().zip(&columns) {
                    *sum = _mm512_fmadd_ps(element, *column, *sum);
                }
            }
        }
        for (key, sums) in sums.iter().enumerate() {
            let at = unsafe { tile.out.add(key * BLOCK_STRIDE) };
            for (index, sum) in sums.iter().enumerate() {
                unsafe { _mm512_storeu_ps(at.add(LANES * index), *sum) };
            }
        }
    }

    /// # Safety
    /// The CPU has AVX-512F; as `Tiles::values`, for `E` vectors of value columns.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn values<const E: usize>(tile: ValueTile) {
        let mut sums = [[_mm512_setzero_ps(); E]; VALUE_ROWS];
        // SAFETY (all pointer arithmetic here): inside what the caller vouched for.
        for key in 0..tile.keys {
            let weights = unsafe { tile.weights_t.add(key * BLOCK_STRIDE) };
            let values = unsafe { tile.values.add(key * tile.value_stride) };
            let columns: [__m512; E] =
                std::array::from_fn(|index| unsafe { _mm512_loadu_ps(values.add(LANES * index)) });
            for (row, sums) in sums.iter_mut().enumerate() {
                let weight = _mm512_set1_ps(unsafe { *weights.add(row) });
                for (sum, column) in sums.iter_mut().zip(&columns) {
                    *sum = _mm512_fmadd_ps(weight, *column, *sum);
                }
            }
        }
        for (row, sums) in sums.iter().enumerate() {
            if row < tile.live {
                let inverse = _mm512_set1_ps(tile.inverse[row]);
                let at = unsafe { tile.out.add(row * tile.out_stride) };
                for (index, sum) in sums.iter().enumerate() {
                    unsafe {
                        _mm512_storeu_ps(at.add(LANES * index), _mm512_mul_ps(*sum, inverse))
                    };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic values in [-1, 1).
    fn values(count: usize, seed: u64) -> Vec<f32> {
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..count)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// softmax(scale · q·kᵀ + bias)·v in f64, one query row; a row with every key masked
    /// weighs the keys equally.
    fn reference(
        query: &[f32],
        key: &[f32],
        value: &[f32],
        (keys, dim, value_dim): (usize, usize, usize),
        scale: f32,
        bias: Option<&[f32]>,
    ) -> Vec<f64> {
        let scores: Vec<f64> = (0..keys)
            .map(|j| {
                let dot: f64 = (0..dim)
                    .map(|d| query[d] as f64 * key[j * dim + d] as f64)
                    .sum();
                dot * scale as f64 + bias.map_or(0.0, |bias| bias[j] as f64)
            })
            .collect();
        let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let weights: Vec<f64> = if max == f64::NEG_INFINITY {
            vec![1.0; keys]
        } else {
            scores.iter().map(|score| (score - max).exp()).collect()
        };
        let total: f64 = weights.iter().sum();
        (0..value_dim)
            .map(|c| {
                (0..keys)
                    .map(|j| weights[j] * value[j * value_dim + c] as f64)
                    .sum::<f64>()
                    / total
            })
            .collect()
    }

    /// The tile kernels equal the definition over row counts that leave partial
    /// tiles, key counts that need padding, widths of one and several vectors, and a key bias
    /// that masks some keys (and, in one case, every key).
    #[test]
    fn tiles_match_the_definition() {
        // Nothing to check on a CPU without the tiles: attention keeps `gemm` there.
        let Some(tiles) = Tiles::detect() else {
            return;
        };
        for (rows, keys, dim, value_dim, masking) in [
            (64, 130, 32, 32, 0),
            (7, 45, 20, 48, 3),
            (1, 1, 16, 16, 0),
            (13, 6, 80, 80, 2),
            (40, 50, 8, 16, 1),
        ] {
            let query = values(rows * dim, 1);
            let key = values(keys * dim, 2);
            let value = values(keys * value_dim, 3);
            // masking 1: every key masked; 2, 3: every second or third.
            let bias: Option<Vec<f32>> = (masking > 0).then(|| {
                (0..keys)
                    .map(|j| match masking {
                        1 => f32::NEG_INFINITY,
                        m if j % m == 0 => f32::NEG_INFINITY,
                        _ => 0.25,
                    })
                    .collect()
            });
            let scale = 1.0 / (dim as f32).sqrt();
            let keys_t = transpose_keys(tiles, &key, keys, dim, dim);
            let head = Head {
                keys_t: &keys_t,
                keys,
                values: &value,
                value_stride: value_dim,
                value_dim,
                bias: bias.as_deref(),
            };
            let mut out = vec![f32::NAN; rows * value_dim];
            let mut block = Block::new(tiles, dim, keys);
            block.attend(&head, (&query, dim), rows, scale, (&mut out, value_dim));
            for row in 0..rows {
                let expected = reference(
                    &query[row * dim..][..dim],
                    &key,
                    &value,
                    (keys, dim, value_dim),
                    scale,
                    bias.as_deref(),
                );
                for (c, expected) in expected.iter().enumerate() {
                    let got = out[row * value_dim + c] as f64;
                    assert!(
                        (got - expected).abs() < 1e-5,
                        "{tiles:?} rows {rows} keys {keys} dim {dim}×{value_dim}: \
                         [{row}][{c}] {got} against {expected}"
                    );
                }
            }
        }
    }
}

//! 3×3, stride-1, padding-1 convolution by Winograd's F(2×2, 3×3) and F(4×4, 3×3).
//!
//! Each 2×2 block of outputs comes from a 4×4 input tile: transforming tiles and weights turns the
//! 9 multiplies per output into 4, carried out as 16 matrix products (one per transformed tile
//! position) with `gemm`. The transforms only add, subtract and halve, so results differ from a
//! direct convolution by a few ulp, like any other summation order. F(4×4, 3×3)
//! ([`super::winograd_f4`]) takes 6×6 tiles to 4×4 blocks in 36 products: 2.25 multiplies an
//! output, for larger transforms and a little accuracy. 3×3 convolutions are most of a UNet
//! step's convolution work and nearly all of the VAE's.

use rayon::prelude::*;

use super::dispatch::avx2_dispatch;
use super::gemm::position_products;
use super::scratch::Scratch;
use super::winograd_f4;

/// Transformed positions per F(2×2) tile.
const TAPS: usize = 16;

/// Images narrower than this many tiles take their input transform tile by tile.
const ROW_WISE_TILES: usize = 8;

/// Floats the transformed inputs of one chunk of tiles may hold (32 MB).
const CHUNK_FLOATS: usize = 8 << 20;

/// The output block a tile computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tile {
    /// F(2×2, 3×3): 4×4 input tiles, 16 products.
    Two,
    /// F(4×4, 3×3): 6×6 input tiles, 36 products.
    Four,
}

impl Tile {
    /// Outputs along each side of a tile.
    fn side(self) -> usize {
        match self {
            Tile::Two => 2,
            Tile::Four => 4,
        }
    }

    /// Transformed positions per tile: one product each.
    fn taps(self) -> usize {
        match self {
            Tile::Two => TAPS,
            Tile::Four => winograd_f4::TAPS,
        }
    }
}

/// Which Winograd form pays off for a 3×3 layer, if any. Measured on 2-core machines (`cargo
/// bench --bench kernels`): at 256 channels and 1024 positions F(2×2) takes 16 ms where im2col
/// takes 21 (AVX2). At 128 channels it depends on what it replaces (see [`fewest_channels`]).
/// With few tiles the transforms dominate: at the UNet's third level, [2,384,64,4] (64 tiles an
/// image), it took 6.5–10.3 ms against im2col's 12.2–12.8; the tile floor is in
/// [`fewest_tiles`].
///
/// F(4×4) from [`FOUR_TILES`] of its tiles an image. Below that, its weights (36 taps against
/// 16, transformed on every call) outweigh the products it saves: at the UNet's third level,
/// [2,384,64,4] (16 of its tiles an image), 11.5–13.7 against F(2×2)'s 7.6–11.3 ms (AMD Zen 3,
/// two alternating runs; [2,1280,64,4] 255–300 against 185–193); at the second, [2,256,128,8]
/// (64 tiles), 11.8–13.3 against 14.1–15.4. With `previous` ([`super::with_previous_kernels`])
/// it keeps the earlier floors of 256 tiles and 256 channels, and F(2×2) only.
pub fn worthwhile(
    out_h: usize,
    out_w: usize,
    (channels, outputs): (usize, usize),
    previous: bool,
) -> Option<Tile> {
    let fewest = if previous {
        256
    } else {
        fewest_tiles(channels, outputs)
    };
    let two =
        out_h.div_ceil(2) * out_w.div_ceil(2) >= fewest && channels >= fewest_channels(previous);
    let four = !previous
        && out_h.div_ceil(4) * out_w.div_ceil(4) >= FOUR_TILES
        && channels >= fewest_channels(false);
    if four {
        Some(Tile::Four)
    } else {
        two.then_some(Tile::Two)
    }
}

/// F(2×2) tiles an image needs before it beats im2col: 64, and on AVX2-only x86 16 where its
/// transformed weights stay in the scratch pool from one call to the next. With the positions'
/// products in one parallel loop ([`super::gemm::position_products`]) the UNet's fourth level
/// (16 tiles) went over: [2,640,32,2] 9.8 / 8.1 / 7.7 / 7.3 ms through im2col against 7.9 /
/// 6.4 / 6.2 / 5.7, [2,1280,32,2] 20.1 / 15.7 / 16.8 / 15.0 against 12.4 / 11.0 / 10.9 / 10.7,
/// [2,384,32,4] (32 tiles) 5.1 / 5.2 against 3.0 / 3.1 (AMD Zen 3, each form eleven times in
/// turn, medians of two to four runs). At 8 tiles it loses ([2,640,16,2] 3.8 against 5.1), and
/// at [2,1920,32,2] (79 MB of weights, more than the pool keeps, regrown every call) 22.9
/// against 45. AVX-512 machines keep 64 until measured there.
fn fewest_tiles(channels: usize, outputs: usize) -> usize {
    let kept = TAPS * channels * outputs <= super::scratch::LARGEST_KEPT;
    if super::direct::Kernel::avx2_only() && kept {
        16
    } else {
        64
    }
}

/// F(4×4) tiles an image needs before its 36 products (on a quarter of F(2×2)'s tiles) pay for
/// their weights.
const FOUR_TILES: usize = 64;

/// Input channels from which Winograd beats the path it replaces. Where the AVX-512 direct
/// kernel runs, 256: at 128 channels the 16 products are too thin for `gemm` to beat it (25 ms
/// against 15 at the UNet's first level, [2,128,256,16], AMD Zen 4). On AVX2-only x86 a 3×3
/// layer otherwise takes im2col + `gemm`, which Winograd beats at 128 channels too (AMD Zen 3,
/// three alternating runs: [2,128,256,16] 12.7–18.8 against 27.2–29.2 ms, the VAE's
/// [1,128,1024,64] 136–158 against 170–251 ms). Other architectures keep 256, the floor measured
/// against im2col at 128 channels before the transforms were vectorised.
fn fewest_channels(previous: bool) -> usize {
    if !previous && super::direct::Kernel::avx2_only() {
        128
    } else {
        256
    }
}

/// `G g Gᵀ` for every (out, in) pair, laid out (out, tap, in) so each tap's matrix is a strided
/// view. Computed once per call and shared by its images.
pub fn transform_weights(weight: &[f32], outputs: usize, channels: usize, tile: Tile) -> Scratch {
    let taps = tile.taps();
    let mut transformed = Scratch::new(outputs * taps * channels);
    transformed
        .par_chunks_mut(taps * channels)
        .enumerate()
        .for_each(|(out, block)| {
            let kernels = &weight[out * channels * 9..][..channels * 9];
            if tile == Tile::Four {
                return winograd_f4::transform_kernels(kernels, channels, block);
            }
            for (input, g) in kernels.chunks_exact(9).enumerate() {
                let g = g.try_into().expect("nine taps");
                for (tap, value) in weight_taps(g).into_iter().enumerate() {
                    block[tap * channels + input] = value;
                }
            }
        });
    transformed
}

/// F(2×2)'s `G g Gᵀ` of one 3×3 kernel, row-major over the 4×4 taps.
fn weight_taps(g: &[f32; 9]) -> [f32; TAPS] {
    // G g: 4×3, rows (g0, (g0+g1+g2)/2, (g0-g1+g2)/2, g2) over the kernel's rows.
    let mut left = [[0f32; 3]; 4];
    for col in 0..3 {
        let (a, b, c) = (g[col], g[3 + col], g[6 + col]);
        left[0][col] = a;
        left[1][col] = 0.5 * (a + b + c);
        left[2][col] = 0.5 * (a - b + c);
        left[3][col] = c;
    }
    let mut taps = [0f32; TAPS];
    for (row, values) in left.iter().enumerate() {
        let [a, b, c] = *values;
        let values = [a, 0.5 * (a + b + c), 0.5 * (a - b + c), c];
        taps[row * 4..][..4].copy_from_slice(&values);
    }
    taps
}

/// Convolves one image (channels, height, width) into `out` (outputs, height, width), which holds
/// the bias already; `weights` come from [`transform_weights`].
///
/// One image at a time: products spanning both images of a CFG batch measured slower
/// ([2,384,64,4]: 10.4–10.7 against 7.8–8.2 ms), their operands no longer fitting the L2 cache.
pub fn convolve(
    image: &[f32],
    (channels, height, width): (usize, usize, usize),
    (weights, tile): (&[f32], Tile),
    outputs: usize,
    out: &mut [f32],
) {
    let (side, taps) = (tile.side(), tile.taps());
    let (tiles_y, tiles_x) = (height.div_ceil(side), width.div_ceil(side));
    // Whole rows of tiles per chunk, so each chunk writes whole rows of output.
    let rows_per_chunk =
        (CHUNK_FLOATS / (taps * channels.max(outputs) * tiles_x)).clamp(1, tiles_y);
    let chunk_tiles = rows_per_chunk * tiles_x;
    // Every value of both is written before it is read.
    let mut inputs = Scratch::new(channels * taps * chunk_tiles);
    let mut products = Scratch::new(outputs * taps * chunk_tiles);
    for first_row in (0..tiles_y).step_by(rows_per_chunk) {
        let rows = rows_per_chunk.min(tiles_y - first_row);
        let count = rows * tiles_x;
        let inputs = &mut inputs[..channels * taps * count];
        inputs
            .par_chunks_mut(taps * count)
            .enumerate()
            .for_each(|(channel, block)| {
                let plane = &image[channel * height * width..][..height * width];
                match tile {
                    Tile::Four => winograd_f4::transform_inputs(
                        plane,
                        (height, width),
                        first_row,
                        rows,
                        tiles_x,
                        block,
                    ),
                    Tile::Two if tiles_x < ROW_WISE_TILES => {
                        transform_tiles(plane, height, width, first_row, rows, tiles_x, block)
                    }
                    Tile::Two => {
                        transform_inputs(plane, height, width, first_row, rows, tiles_x, block)
                    }
                }
            });
        let products = &mut products[..outputs * taps * count];
        // One product a transformed position; never bf16, whose rounding the transforms would
        // amplify (see `conv`).
        position_products(products, weights, inputs, (taps, outputs, channels, count));
        let products = &*products;
        out.par_chunks_mut(height * width)
            .enumerate()
            .for_each(|(output, plane)| {
                let block = &products[output * taps * count..][..taps * count];
                let size = (height, width);
                match tile {
                    Tile::Four => winograd_f4::transform_outputs(
                        block, count, plane, size, first_row, tiles_x,
                    ),
                    Tile::Two => transform_outputs(block, count, plane, size, first_row, tiles_x),
                }
            });
    }
}

/// `Bᵀ d B` of every tile in rows `first_row..first_row + rows` of one channel, written
/// (tap, tile) into `block`: the same sums as [`transform_inputs`], for images too narrow for
/// its row-wise vectors (the UNet's are 2–4 tiles wide).
///
/// A zero-padded copy of the rows is first split by row and column parity (and the column
/// shifted by one tile), so that the pixel at (dy, dx) of every tile, taken in tile order, is one
/// contiguous run; the transform then runs [`GROUP`] tiles at a time as vector code, each of its
/// 16 taps one contiguous store. Tile by tile, with 16 scattered stores a tile, it took 3–4 % of
/// an AudioLDM 2 step.
fn transform_tiles(
    plane: &[f32],
    height: usize,
    width: usize,
    first_row: usize,
    rows: usize,
    tiles_x: usize,
    block: &mut [f32],
) {
    let count = rows * tiles_x;
    // Padded rows 2·first_row − 1 ..= 2·(first_row + rows), columns −1 ..= 2·tiles_x.
    let padded_width = 2 * tiles_x + 2;
    let mut padded = Scratch::new((2 * rows + 2) * padded_width);
    for (index, line) in padded.chunks_mut(padded_width).enumerate() {
        line.fill(0.0);
        let y = (2 * first_row + index).checked_sub(1);
        if let Some(y) = y.filter(|&y| y < height) {
            line[1..=width].copy_from_slice(&plane[y * width..][..width]);
        }
    }
    // The pixel at (dy, dx) of tile (row, x) is padded pixel (2·row + dy, 2·x + dx), kept in
    // quarter (dx % 2, dx / 2, dy % 2) at position (row + dy / 2)·tiles_x + x. Each quarter
    // has a group's worth of spare room, so whole groups can be read past the last tile.
    let run = (rows + 1) * tiles_x + GROUP;
    let mut quarters = Scratch::new(8 * run);
    for (quarter, out) in quarters.chunks_mut(run).enumerate() {
        let (column_parity, shift, row_parity) = (quarter / 4, quarter / 2 % 2, quarter % 2);
        for half_row in 0..=rows {
            let line = &padded[(2 * half_row + row_parity) * padded_width..][..padded_width];
            let out = &mut out[half_row * tiles_x..][..tiles_x];
            for (tile_x, out) in out.iter_mut().enumerate() {
                *out = line[2 * (tile_x + shift) + column_parity];
            }
        }
        out[(rows + 1) * tiles_x..].fill(0.0);
    }
    let pixels = |dy: usize, dx: usize| {
        let quarter = ((dx % 2) * 2 + dx / 2) * 2 + dy % 2;
        &quarters[quarter * run + (dy / 2) * tiles_x..][..count.next_multiple_of(GROUP)]
    };
    let d: [[&[f32]; 4]; 4] = std::array::from_fn(|dy| std::array::from_fn(|dx| pixels(dy, dx)));
    let taps = &mut block[..TAPS * count];
    transform_groups(&d, count, taps)
}

/// Tiles [`transform_groups`] takes at once: one AVX-512 vector, two AVX2 ones.
const GROUP: usize = 16;

avx2_dispatch! {
    fn transform_groups = transform_group_lanes(
        d: &[[&[f32]; 4]; 4],
        count: usize,
        taps: &mut [f32],
    );
}

/// `Bᵀ d B` of `count` tiles whose pixel (dy, dx) is `d[dy][dx][tile]` (each run readable up to
/// the next whole group), into `taps` laid out
/// (tap, tile): Bᵀ down each column of pixels, then across.
#[inline(always)]
fn transform_group_lanes(d: &[[&[f32]; 4]; 4], count: usize, taps: &mut [f32]) {
    for first in (0..count).step_by(GROUP) {
        let load = |dy: usize, dx: usize| -> [f32; GROUP] {
            let run: &[f32; GROUP] = d[dy][dx][first..first + GROUP]
                .try_into()
                .expect("a whole group");
            *run
        };
        // columns[dx][r]: row r of Bᵀ d for pixel column dx.
        let columns: [[[f32; GROUP]; 4]; 4] = std::array::from_fn(|dx| {
            bt_lanes([load(0, dx), load(1, dx), load(2, dx), load(3, dx)])
        });
        let lanes = GROUP.min(count - first);
        for r in 0..4 {
            let values = bt_lanes(columns.map(|column| column[r]));
            for (col, values) in values.iter().enumerate() {
                winograd_f4::store_lanes(&mut taps[(r * 4 + col) * count + first..], values, lanes);
            }
        }
    }
}

/// Bᵀ applied lane by lane to four vectors: its rows are (d0 − d2, d1 + d2, d2 − d1, d1 − d3).
#[inline(always)]
fn bt_lanes([a, b, c, e]: [[f32; GROUP]; 4]) -> [[f32; GROUP]; 4] {
    let mut rows = [[0f32; GROUP]; 4];
    for lane in 0..GROUP {
        rows[0][lane] = a[lane] - c[lane];
        rows[1][lane] = b[lane] + c[lane];
        rows[2][lane] = c[lane] - b[lane];
        rows[3][lane] = b[lane] - e[lane];
    }
    rows
}

/// `Bᵀ d B` of every tile in rows `first_row..first_row + rows` of one channel, written
/// (tap, tile) into `block`. Pixels outside the image are the zero padding.
///
/// Tiles overlap by two pixels, so a row of tiles reads each input row at even and odd columns:
/// the four input rows are split into those two streams first, after which every tap of a row of
/// tiles is an elementwise sum over contiguous slices, which compiles to vector code.
fn transform_inputs(
    plane: &[f32],
    height: usize,
    width: usize,
    first_row: usize,
    rows: usize,
    tiles_x: usize,
    block: &mut [f32],
) {
    let count = rows * tiles_x;
    // streams[dy] = (pixels at columns 2k - 1, pixels at columns 2k) for k in 0..=tiles_x.
    let mut streams = vec![(vec![0f32; tiles_x + 1], vec![0f32; tiles_x + 1]); 4];
    // Bᵀ d of the row of tiles, (row of Bᵀ, column of d) → tiles.
    let mut across = vec![vec![0f32; tiles_x]; 16];
    for row in 0..rows {
        let top = 2 * (first_row + row) as isize - 1;
        for (dy, (left, right)) in streams.iter_mut().enumerate() {
            let y = top + dy as isize;
            left.fill(0.0);
            right.fill(0.0);
            if y < 0 || y >= height as isize {
                continue;
            }
            let line = &plane[y as usize * width..][..width];
            // Columns 2k and 2k + 1 (= 2(k + 1) - 1) of each pair; an odd width ends on an even
            // column.
            let pairs = line.chunks_exact(2);
            if let [last] = pairs.remainder() {
                right[width / 2] = *last;
            }
            for (k, pair) in pairs.enumerate() {
                right[k] = pair[0];
                left[k + 1] = pair[1];
            }
        }
        let at = |dy: usize, dx: usize| -> &[f32] {
            let (left, right) = &streams[dy];
            match dx {
                0 => &left[..tiles_x],
                1 => &right[..tiles_x],
                2 => &left[1..=tiles_x],
                _ => &right[1..=tiles_x],
            }
        };
        // Bᵀ d B with Bᵀ rows (d0 - d2, d1 + d2, d2 - d1, d1 - d3), applied to rows then columns.
        let combine =
            |a: &[f32], b: &[f32], c: &[f32], e: &[f32], which: usize, out: &mut [f32]| {
                let parts = a.iter().zip(b).zip(c).zip(e);
                for (out, (((&a, &b), &c), &e)) in out.iter_mut().zip(parts) {
                    *out = match which {
                        0 => a - c,
                        1 => b + c,
                        2 => c - b,
                        _ => b - e,
                    };
                }
            };
        for col in 0..4 {
            for r in 0..4 {
                let (a, b, c, e) = (at(0, col), at(1, col), at(2, col), at(3, col));
                combine(a, b, c, e, r, &mut across[r * 4 + col]);
            }
        }
        let start = row * tiles_x;
        for r in 0..4 {
            let [a, b, c, e] = [0, 1, 2, 3].map(|col| across[r * 4 + col].as_slice());
            for col in 0..4 {
                let out = &mut block[(r * 4 + col) * count + start..][..tiles_x];
                combine(a, b, c, e, col, out);
            }
        }
    }
}

avx2_dispatch! {
    /// `Aᵀ m A` of every tile of one output channel, added to `plane` (which holds the bias).
    ///
    /// [`GROUP`] tiles at a time: each tap of a group is one contiguous load (tile by tile, the 16
    /// taps of a tile were 16 loads `count` apart), the four outputs of every tile come out as
    /// vectors, and only the adds into `plane` go tile by tile.
    fn transform_outputs = transform_output_groups(
        block: &[f32],
        count: usize,
        plane: &mut [f32],
        size: (usize, usize),
        first_row: usize,
        tiles_x: usize,
    );
}

#[inline(always)]
fn transform_output_groups(
    block: &[f32],
    count: usize,
    plane: &mut [f32],
    (height, width): (usize, usize),
    first_row: usize,
    tiles_x: usize,
) {
    for first in (0..count).step_by(GROUP) {
        let lanes = GROUP.min(count - first);
        let m = |r: usize, c: usize| -> [f32; GROUP] {
            let run = &block[(r * 4 + c) * count + first..][..lanes];
            <&[f32; GROUP]>::try_from(run).map_or_else(
                |_| {
                    let mut values = [0f32; GROUP];
                    values[..lanes].copy_from_slice(run);
                    values
                },
                |run| *run,
            )
        };
        // Aᵀ m: rows (m0 + m1 + m2, m1 − m2 − m3), then the same across.
        let mut lines = [[[0f32; GROUP]; 4]; 2];
        for col in 0..4 {
            let [m0, m1, m2, m3] = [0, 1, 2, 3].map(|r| m(r, col));
            let [top, bottom] = &mut lines;
            for lane in 0..GROUP {
                top[col][lane] = m0[lane] + m1[lane] + m2[lane];
                bottom[col][lane] = m1[lane] - m2[lane] - m3[lane];
            }
        }
        let mut outputs = [[[0f32; GROUP]; 2]; 2];
        for (line, out) in lines.iter().zip(&mut outputs) {
            for lane in 0..GROUP {
                out[0][lane] = line[0][lane] + line[1][lane] + line[2][lane];
                out[1][lane] = line[1][lane] - line[2][lane] - line[3][lane];
            }
        }
        let (mut row, mut tile_x) = (first / tiles_x, first % tiles_x);
        for lane in 0..lanes {
            let (y, x) = (2 * (first_row + row), 2 * tile_x);
            for (dy, out) in outputs.iter().enumerate() {
                if y + dy >= height {
                    continue;
                }
                for (dx, out) in out.iter().enumerate() {
                    if x + dx < width {
                        plane[(y + dy) * width + x + dx] += out[lane];
                    }
                }
            }
            tile_x += 1;
            if tile_x == tiles_x {
                (row, tile_x) = (row + 1, 0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The grouped output transform adds the tile-by-tile one's values bit for bit: odd and
    /// even sizes, whole and partial groups, a chunk starting at a later row of tiles.
    #[test]
    fn both_output_transforms_agree() {
        for (height, width) in [
            (9usize, 7usize),
            (16, 8),
            (64, 4),
            (5, 1),
            (12, 17),
            (128, 8),
        ] {
            let (tiles_y, tiles_x) = (height.div_ceil(2), width.div_ceil(2));
            for (first_row, rows) in [(0, tiles_y), (tiles_y / 2, tiles_y - tiles_y / 2)] {
                let count = rows * tiles_x;
                let block: Vec<f32> = (0..TAPS * count)
                    .map(|index| ((index * 29 % 83) as f32 - 41.0) * 0.23)
                    .collect();
                let bias: Vec<f32> = (0..height * width)
                    .map(|index| index as f32 * 0.5)
                    .collect();
                let (mut grouped, mut tile_by_tile) = (bias.clone(), bias);
                transform_outputs(
                    &block,
                    count,
                    &mut grouped,
                    (height, width),
                    first_row,
                    tiles_x,
                );
                outputs_tile_by_tile(
                    &block,
                    count,
                    &mut tile_by_tile,
                    height,
                    width,
                    first_row,
                    tiles_x,
                );
                let same = grouped
                    .iter()
                    .zip(&tile_by_tile)
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "{height}×{width}, rows {first_row}+{rows}");
            }
        }
    }

    /// The output transform tile by tile, as it was before the groups: the reference.
    fn outputs_tile_by_tile(
        block: &[f32],
        count: usize,
        plane: &mut [f32],
        height: usize,
        width: usize,
        first_row: usize,
        tiles_x: usize,
    ) {
        for tile in 0..count {
            let (row, tile_x) = (tile / tiles_x, tile % tiles_x);
            let m = |r: usize, c: usize| block[(r * 4 + c) * count + tile];
            // Aᵀ m: rows (m0 + m1 + m2, m1 - m2 - m3).
            let mut top = [0f32; 4];
            let mut bottom = [0f32; 4];
            for col in 0..4 {
                top[col] = m(0, col) + m(1, col) + m(2, col);
                bottom[col] = m(1, col) - m(2, col) - m(3, col);
            }
            let y = 2 * (first_row + row);
            let x = 2 * tile_x;
            for (dy, line) in [top, bottom].into_iter().enumerate() {
                if y + dy >= height {
                    continue;
                }
                let values = [line[0] + line[1] + line[2], line[1] - line[2] - line[3]];
                for (dx, value) in values.into_iter().enumerate() {
                    if x + dx < width {
                        plane[(y + dy) * width + x + dx] += value;
                    }
                }
            }
        }
    }

    /// The UNet's 3×3 layers at 10.24 s: Winograd from the second level (256 channels) through
    /// the third (384, 64 tiles an image), not the fourth (16 tiles); the first (128 channels)
    /// only where it replaces im2col (AVX2 without AVX-512), never with the previous kernels.
    /// F(4×4) where an image has 64 of its tiles, never with the previous kernels.
    #[test]
    fn winograd_takes_the_layers_it_wins() {
        let from_128 = fewest_channels(false) == 128;
        let square = |channels: usize| (channels, channels);
        assert_eq!(
            worthwhile(256, 16, square(128), false),
            from_128.then_some(Tile::Four)
        );
        assert_eq!(worthwhile(256, 16, square(128), true), None);
        assert_eq!(worthwhile(256, 16, square(64), false), None);
        assert_eq!(worthwhile(128, 8, square(256), false), Some(Tile::Four));
        assert_eq!(worthwhile(128, 8, square(256), true), Some(Tile::Two));
        assert_eq!(worthwhile(64, 4, square(384), false), Some(Tile::Two));
        assert_eq!(worthwhile(64, 4, (1024, 384), false), Some(Tile::Two));
        assert_eq!(worthwhile(64, 4, square(384), true), None);
        // The fourth level (16 tiles) on AVX2-only x86, while the weights stay kept.
        let avx2 = super::super::direct::Kernel::avx2_only();
        assert_eq!(
            worthwhile(32, 2, square(640), false),
            avx2.then_some(Tile::Two)
        );
        assert_eq!(
            worthwhile(32, 2, (1280, 640), false),
            avx2.then_some(Tile::Two)
        );
        assert_eq!(worthwhile(32, 2, (1920, 640), false), None);
        assert_eq!(worthwhile(16, 2, square(640), false), None);
        assert_eq!(worthwhile(32, 2, square(640), true), None);
    }

    /// 3×3 correlation with zero padding 1, in f64: the definition both forms are held to.
    fn correlate(
        image: &[f32],
        (channels, height, width): (usize, usize, usize),
        weight: &[f32],
        outputs: usize,
    ) -> Vec<f64> {
        let mut out = vec![0f64; outputs * height * width];
        for (o, plane) in out.chunks_mut(height * width).enumerate() {
            for c in 0..channels {
                let kernel = &weight[(o * channels + c) * 9..][..9];
                let input = &image[c * height * width..][..height * width];
                for y in 0..height {
                    for x in 0..width {
                        let mut sum = 0f64;
                        for (tap, &g) in kernel.iter().enumerate() {
                            let (iy, ix) =
                                ((y + tap / 3).checked_sub(1), (x + tap % 3).checked_sub(1));
                            if let (Some(iy), Some(ix)) = (iy, ix)
                                && iy < height
                                && ix < width
                            {
                                sum += f64::from(g) * f64::from(input[iy * width + ix]);
                            }
                        }
                        plane[y * width + x] += sum;
                    }
                }
            }
        }
        out
    }

    /// Both forms against the definition: partial tiles at the right and bottom, an image one
    /// tile wide, and one whose F(4×4) tiles split into two chunks, the second partial. F(4×4)'s
    /// larger coefficients cost some accuracy; both stay far inside the end-to-end 1e-4.
    #[test]
    fn both_forms_match_the_definition() {
        for (channels, height, width, outputs) in [
            (3, 9, 7, 2),
            (5, 16, 8, 3),
            (4, 5, 1, 2),
            (7, 13, 18, 4),
            (256, 470, 32, 2),
        ] {
            let image: Vec<f32> = (0..channels * height * width)
                .map(|index| ((index * 37 % 101) as f32 - 50.0) * 0.037)
                .collect();
            let weight: Vec<f32> = (0..outputs * channels * 9)
                .map(|index| ((index * 53 % 97) as f32 - 48.0) * 0.011)
                .collect();
            let dims = (channels, height, width);
            let reference = correlate(&image, dims, &weight, outputs);
            for (tile, limit) in [(Tile::Two, 1e-6), (Tile::Four, 1e-5)] {
                let weights = transform_weights(&weight, outputs, channels, tile);
                let mut out = vec![0f32; outputs * height * width];
                convolve(&image, dims, (&weights, tile), outputs, &mut out);
                let error = super::super::relative_l2_f64(&out, &reference);
                eprintln!("{tile:?} {dims:?}: {error:e}");
                assert!(error < limit, "{tile:?} {dims:?}: {error:e}");
            }
        }
    }

    /// The tile-by-tile input transform gives the row-wise one's values bit for bit: even and
    /// odd sizes, the first chunk, a middle one and the last (partial) one.
    #[test]
    fn both_input_transforms_agree() {
        for (height, width) in [(9usize, 7usize), (16, 8), (8, 4), (5, 1), (12, 17)] {
            let plane: Vec<f32> = (0..height * width)
                .map(|index| ((index * 37 % 101) as f32 - 50.0) * 0.37)
                .collect();
            let (tiles_y, tiles_x) = (height.div_ceil(2), width.div_ceil(2));
            for (first_row, rows) in [(0, tiles_y), (1, tiles_y.min(3) - 1), (tiles_y - 1, 1)] {
                let count = rows * tiles_x;
                let mut row_wise = vec![f32::NAN; TAPS * count];
                let mut per_tile = vec![f32::NAN; TAPS * count];
                transform_inputs(
                    &plane,
                    height,
                    width,
                    first_row,
                    rows,
                    tiles_x,
                    &mut row_wise,
                );
                transform_tiles(
                    &plane,
                    height,
                    width,
                    first_row,
                    rows,
                    tiles_x,
                    &mut per_tile,
                );
                let same = row_wise
                    .iter()
                    .zip(&per_tile)
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "{height}×{width}, rows {first_row}+{rows}");
            }
        }
    }
}

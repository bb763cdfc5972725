//! The transforms of Winograd's F(4×4, 3×3), which [`super::winograd`] runs with the same
//! products and chunks as F(2×2, 3×3).
//!
//! Each 4×4 block of outputs comes from a 6×6 input tile: 36 multiplies for 16 outputs, 2.25 an
//! output against F(2×2)'s 4 and a direct convolution's 9. The transforms use the points 0, ±1,
//! ±2 and ∞ (Lavin and Gray, 2016), whose coefficients (4, 5, 8 and sixths of the weights) cost a
//! little accuracy: `winograd` takes this form only where its products are large enough to pay
//! for the larger transforms.

/// Transformed positions per tile.
pub const TAPS: usize = 36;

use super::dispatch::avx2_dispatch;
use super::scratch::Scratch;

/// Tile side in transformed positions.
const SIDE: usize = 6;

/// Tiles transformed at once: one AVX-512 vector, two AVX2 ones.
pub const GROUP: usize = 16;

avx2_dispatch! {
    /// `G g Gᵀ` of the 3×3 kernels one output channel applies to its `channels` inputs (`kernels`:
    /// input, row, column), into `block` laid out (tap, input). [`GROUP`] inputs at a time as
    /// vector code: tap by tap in scalar code it took a quarter of a 512-channel layer at the VAE's
    /// [1,512,256,16].
    pub fn transform_kernels = kernel_groups(kernels: &[f32], channels: usize, block: &mut [f32]);
}

#[inline(always)]
fn kernel_groups(kernels: &[f32], channels: usize, block: &mut [f32]) {
    // g[k][lane]: tap k of input first + lane's kernel.
    let mut g = [[0f32; GROUP]; 9];
    // left[row][col]: (G g)[row][col].
    let mut left = [[[0f32; GROUP]; 3]; SIDE];
    let mut values = [[0f32; GROUP]; SIDE];
    for first in (0..channels).step_by(GROUP) {
        let lanes = GROUP.min(channels - first);
        for (lane, kernel) in kernels[first * 9..][..lanes * 9]
            .chunks_exact(9)
            .enumerate()
        {
            for (tap, &weight) in kernel.iter().enumerate() {
                g[tap][lane] = weight;
            }
        }
        for col in 0..3 {
            g_lanes([&g[col], &g[3 + col], &g[6 + col]], &mut values);
            for (row, values) in left.iter_mut().zip(&values) {
                row[col] = *values;
            }
        }
        for (row, left) in left.iter().enumerate() {
            g_lanes([&left[0], &left[1], &left[2]], &mut values);
            for (col, values) in values.iter().enumerate() {
                store_lanes(
                    &mut block[(row * SIDE + col) * channels + first..],
                    values,
                    lanes,
                );
            }
        }
    }
}

/// G applied lane by lane to three vectors. Its rows: (a/4, −(a+b+c)/6, −(a−b+c)/6,
/// (a/4 + b/2 + c)/6, (a/4 − b/2 + c)/6, c); the quarters and halves are exact.
#[inline(always)]
pub fn g_lanes([a, b, c]: [&Lanes; 3], rows: &mut [Lanes; SIDE]) {
    const SIXTH: f32 = 1.0 / 6.0;
    for lane in 0..GROUP {
        let (a, b, c) = (a[lane], b[lane], c[lane]);
        rows[0][lane] = 0.25 * a;
        rows[1][lane] = -SIXTH * (a + b + c);
        rows[2][lane] = -SIXTH * (a - b + c);
        rows[3][lane] = SIXTH * (0.25 * a + 0.5 * b + c);
        rows[4][lane] = SIXTH * (0.25 * a - 0.5 * b + c);
        rows[5][lane] = c;
    }
}

/// `Bᵀ d B` of every tile in rows `first_row..first_row + rows` of one channel, written (tap,
/// tile) into `block`. Pixels outside the image are the zero padding.
///
/// Tiles overlap by two pixels and step by four, so the pixel at (dy, dx) of tile (row, x) is
/// padded pixel (4·row + dy, 4·x + dx). The padded rows are first split by column phase
/// (dx % 4, shifted by dx / 4 tiles) and row phase (dy % 4), so that pixel (dy, dx) of every
/// tile, taken in tile order, is one contiguous run; the transform then runs [`GROUP`] tiles at a
/// time as vector code, each of its 36 taps one contiguous store.
pub fn transform_inputs(
    plane: &[f32],
    (height, width): (usize, usize),
    first_row: usize,
    rows: usize,
    tiles_x: usize,
    block: &mut [f32],
) {
    let count = rows * tiles_x;
    // Padded columns −1 ..= 4·tiles_x + 2, as tile-wide quads.
    let mut line = vec![[0f32; 4]; tiles_x + 1];
    // Run (dx, phase) holds, at (row + dy / 4)·tiles_x + x, the pixel (dy, dx) of tile (row, x)
    // for dy % 4 = phase, then a group's worth of zeros so whole groups can be read.
    let run = (rows + 1) * tiles_x + GROUP;
    let mut runs = Scratch::new(SIDE * 4 * run);
    for half in 0..=rows {
        for phase in 0..4 {
            let flat = line.as_flattened_mut();
            flat.fill(0.0);
            let y = (4 * (first_row + half) + phase).checked_sub(1);
            if let Some(y) = y.filter(|&y| y < height) {
                flat[1..=width].copy_from_slice(&plane[y * width..][..width]);
            }
            for dx in 0..SIDE {
                let out = &mut runs[(dx * 4 + phase) * run + half * tiles_x..][..tiles_x];
                for (out, quad) in out.iter_mut().zip(&line[dx / 4..]) {
                    *out = quad[dx % 4];
                }
            }
        }
    }
    for tail in runs.chunks_mut(run) {
        tail[(rows + 1) * tiles_x..].fill(0.0);
    }
    let padded = count.next_multiple_of(GROUP);
    let pixels =
        |dy: usize, dx: usize| &runs[(dx * 4 + dy % 4) * run + (dy / 4) * tiles_x..][..padded];
    let d: [[&[f32]; SIDE]; SIDE] =
        std::array::from_fn(|dy| std::array::from_fn(|dx| pixels(dy, dx)));
    let taps = &mut block[..TAPS * count];
    transform_groups(&d, count, taps)
}

avx2_dispatch! {
    fn transform_groups = transform_group_lanes(
        d: &[[&[f32]; SIDE]; SIDE],
        count: usize,
        taps: &mut [f32],
    );
}

/// One value per tile (or input channel) of a group.
pub type Lanes = [f32; GROUP];

/// The first `lanes` of `values` into `out` (a whole group as vector moves).
#[inline(always)]
pub fn store_lanes(out: &mut [f32], values: &Lanes, lanes: usize) {
    super::runs::copy_run::<f32, GROUP>(out, &values[..lanes]);
}

/// The group of lanes starting at `first`.
#[inline(always)]
fn group(run: &[f32], first: usize) -> &Lanes {
    run[first..first + GROUP].try_into().expect("a whole group")
}

/// `Bᵀ d B` of `count` tiles whose pixel (dy, dx) is `d[dy][dx][tile]` (each run readable up to
/// the next whole group), into `taps` laid out (tap, tile): Bᵀ down each column, then across.
#[inline(always)]
fn transform_group_lanes(d: &[[&[f32]; SIDE]; SIDE], count: usize, taps: &mut [f32]) {
    // columns[dx][r]: row r of Bᵀ d for pixel column dx.
    let mut columns = [[[0f32; GROUP]; SIDE]; SIDE];
    let mut values = [[0f32; GROUP]; SIDE];
    for first in (0..count).step_by(GROUP) {
        for (dx, column) in columns.iter_mut().enumerate() {
            let at = |dy: usize| group(d[dy][dx], first);
            bt_lanes([at(0), at(1), at(2), at(3), at(4), at(5)], column);
        }
        let lanes = GROUP.min(count - first);
        for r in 0..SIDE {
            let at = |dx: usize| &columns[dx][r];
            bt_lanes([at(0), at(1), at(2), at(3), at(4), at(5)], &mut values);
            for (col, values) in values.iter().enumerate() {
                store_lanes(&mut taps[(r * SIDE + col) * count + first..], values, lanes);
            }
        }
    }
}

/// Bᵀ applied lane by lane to six vectors. Its rows: (4d0 − 5d2 + d4, −4(d1 + d2) + d3 + d4,
/// 4(d1 − d2) − d3 + d4, 2(d3 − d1) − d2 + d4, 2(d1 − d3) − d2 + d4, 4d1 − 5d3 + d5).
#[inline(always)]
pub fn bt_lanes([d0, d1, d2, d3, d4, d5]: [&Lanes; SIDE], rows: &mut [Lanes; SIDE]) {
    for lane in 0..GROUP {
        let (d0, d1, d2, d3, d4, d5) = (d0[lane], d1[lane], d2[lane], d3[lane], d4[lane], d5[lane]);
        let (even, odd) = (d4 - d2, d3 - d1);
        rows[0][lane] = 4.0 * d0 - 5.0 * d2 + d4;
        rows[1][lane] = even - 4.0 * d1 - 3.0 * d2 + d3;
        rows[2][lane] = even + 4.0 * d1 - 3.0 * d2 - d3;
        rows[3][lane] = even + 2.0 * odd;
        rows[4][lane] = even - 2.0 * odd;
        rows[5][lane] = 4.0 * d1 - 5.0 * d3 + d5;
    }
}

avx2_dispatch! {
    /// `Aᵀ m A` of every tile of one output channel, added to `plane` (which holds the bias):
    /// [`GROUP`] tiles at a time, each tap of a group one contiguous load, only the adds into
    /// `plane` tile by tile.
    pub fn transform_outputs = transform_output_groups(
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
    // A last, partial group is copied here, zero-padded, so every group reads whole vectors.
    let mut partial = [[0f32; GROUP]; TAPS];
    // lines[i][col]: row i of Aᵀ m for tap column col; outputs[dy][dx]: the tiles' outputs.
    let mut lines = [[[0f32; GROUP]; SIDE]; 4];
    let mut column = [[0f32; GROUP]; 4];
    let mut outputs = [[[0f32; GROUP]; 4]; 4];
    for first in (0..count).step_by(GROUP) {
        let lanes = GROUP.min(count - first);
        if lanes < GROUP {
            for (tap, values) in partial.iter_mut().enumerate() {
                values[..lanes].copy_from_slice(&block[tap * count + first..][..lanes]);
            }
        }
        let m = |tap: usize| -> &Lanes {
            if lanes < GROUP {
                &partial[tap]
            } else {
                group(&block[tap * count..], first)
            }
        };
        for col in 0..SIDE {
            let at = |r: usize| m(r * SIDE + col);
            at_lanes([at(0), at(1), at(2), at(3), at(4), at(5)], &mut column);
            for (line, values) in lines.iter_mut().zip(&column) {
                line[col] = *values;
            }
        }
        for (line, out) in lines.iter().zip(&mut outputs) {
            let at = |c: usize| &line[c];
            at_lanes([at(0), at(1), at(2), at(3), at(4), at(5)], out);
        }
        // The group's tiles, a row of tiles at a time: each output row of a run of tiles is
        // one stretch of the plane.
        let mut lane = 0;
        while lane < lanes {
            let (row, x) = ((first + lane) / tiles_x, (first + lane) % tiles_x);
            let run = (tiles_x - x).min(lanes - lane);
            let y = 4 * (first_row + row);
            for (dy, out) in outputs.iter().enumerate().take(height - y) {
                let line = &mut plane[(y + dy) * width..][..width];
                let stretch = &mut line[4 * x..(4 * (x + run)).min(width)];
                let (quads, rest) = stretch.as_chunks_mut::<4>();
                for (tile, quad) in quads.iter_mut().enumerate() {
                    for (dx, value) in quad.iter_mut().enumerate() {
                        *value += out[dx][lane + tile];
                    }
                }
                for (dx, value) in rest.iter_mut().enumerate() {
                    *value += out[dx][lane + quads.len()];
                }
            }
            lane += run;
        }
    }
}

/// Aᵀ applied lane by lane to six vectors. Its rows: (m0 + m1 + m2 + m3 + m4,
/// m1 − m2 + 2(m3 − m4), m1 + m2 + 4(m3 + m4), m1 − m2 + 8(m3 − m4) + m5).
#[inline(always)]
pub fn at_lanes([m0, m1, m2, m3, m4, m5]: [&Lanes; SIDE], rows: &mut [Lanes; 4]) {
    for lane in 0..GROUP {
        let (m0, m1, m2, m3, m4, m5) = (m0[lane], m1[lane], m2[lane], m3[lane], m4[lane], m5[lane]);
        let (sum, difference) = (m1 + m2, m1 - m2);
        let (outer_sum, outer_difference) = (m3 + m4, m3 - m4);
        rows[0][lane] = m0 + sum + outer_sum;
        rows[1][lane] = difference + 2.0 * outer_difference;
        rows[2][lane] = sum + 4.0 * outer_sum;
        rows[3][lane] = difference + 8.0 * outer_difference + m5;
    }
}

//! Products with bf16 operands and f32 sums: the CPU's opt-in fast mode (`--dtype bf16`).
//!
//! Both operands are rounded to bf16 (to nearest, ties to even), as PyTorch's bf16 autocast
//! rounds a matmul's or convolution's inputs; every sum stays f32. With AMX the products run
//! on its tiles (`tdpbf16ps`, 16×16 outputs from 16×32 by 32×16 per instruction), with
//! AVX512-BF16 on `vdpbf16ps`. Elsewhere the rounded operands go through the f32 `gemm`, which
//! gives the same numbers up to the order of the sums: bf16 products are exact in f32. That
//! emulation is what proves the mode's drift on any CPU and what the hardware kernels are
//! tested against.
//!
//! Around the products: operands are rounded and packed into the engines' layouts once where
//! they can be (a layer keeps its weights packed, [`PackedWeights`]: a linear layer's as the
//! right operand, a convolution's as the left, [`PackedLeft`]); a convolution packs its im2col
//! tile as it makes it ([`PackedRight::refill_rows`]), or with stride 1 on the hardware engines
//! copies it from the input's bf16 channel pairs ([`PairImage`]), which AVX512-BF16's kernel
//! reads in place for a 1-D convolution, with no tile at all; the kernels write whole blocks
//! of sums in place.

use std::sync::OnceLock;

use super::gemm::{Rows, View};
use pack::{Form, LeftForm, LeftRows};
use round::extend_rounded;

mod image;
mod pack;
mod round;
#[cfg(target_arch = "x86_64")]
mod x86;

pub use image::{PairImage, Taps, tap_major_weights};
#[cfg(test)]
pub(in crate::engine::kernels) use pack::CALLS_BEFORE_KEEPING;
pub use pack::{PackedLeft, PackedRight, PackedWeights, Prepared};
#[cfg(target_arch = "x86_64")]
pub(in crate::engine::kernels) use round::has_avx512_bf16;
pub(in crate::engine::kernels) use round::round_all;
pub use round::{round, rounded, widen};

/// What computes the products.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    /// AMX tiles (Intel Sapphire Rapids and later).
    Amx,
    /// `vdpbf16ps` on 512-bit vectors (Intel Cooper Lake, AMD Zen 4 and later).
    Avx512,
    /// Rounded operands through the f32 `gemm`: no faster than f32.
    Emulated,
}

impl Engine {
    /// The fastest engine this CPU runs, detected once.
    pub fn detect() -> Engine {
        static DETECTED: OnceLock<Engine> = OnceLock::new();
        *DETECTED.get_or_init(|| {
            let available = available();
            available.first().copied().unwrap_or(Engine::Emulated)
        })
    }

    /// Whether the engine is hardware, so that bf16 runs faster than f32.
    pub fn is_hardware(self) -> bool {
        self != Engine::Emulated
    }

    /// Whether bf16 products replace 2-D Winograd (F(4×4), F(2×2)) for 3×3 convolutions. AMX
    /// multiplies bf16 an order of magnitude faster than f32 FMA, so its im2col products beat
    /// it. `vdpbf16ps` does only twice the multiply-adds of an f32 FMA, which F(4×4)'s 4× fewer
    /// multiplies beat: on Zen 4, bf16 im2col took an s-full-v2 VAE decode from 2.1–2.5 to
    /// 4.1 s. The emulation follows AMX, whose numbers the tests prove. Every engine's bf16
    /// replaces the other f32 kernels (HiFi-GAN's F(4, 3) pieces, the direct kernel,
    /// attention's register tiles): on Zen 4 that took the vocoder from 5.3 to 4.1–4.4 s.
    pub fn replaces_winograd(self) -> bool {
        self != Engine::Avx512
    }
}

/// The hardware engines this CPU runs, fastest first.
pub fn available() -> Vec<Engine> {
    #[cfg(target_arch = "x86_64")]
    {
        let mut engines = Vec::new();
        if x86::amx_usable() {
            engines.push(Engine::Amx);
        }
        if round::has_avx512_bf16() {
            engines.push(Engine::Avx512);
        }
        engines
    }
    #[cfg(not(target_arch = "x86_64"))]
    Vec::new()
}

/// Rows and columns of the output block one kernel call computes: 2×2 AMX tiles.
const BLOCK: usize = 32;
/// Columns of one AMX B tile, or of one 512-bit vector of f32 sums.
const LANES: usize = 16;
/// Inner-dimension elements one AMX tile row holds (64 bytes of bf16).
const DEPTH_STEP: usize = 32;

/// The left operand of a bf16 product: f32 values, rounded and packed for this product, or a
/// layer's weights packed once ([`PackedLeft`]).
#[derive(Clone, Copy)]
pub enum Left<'a> {
    Values(&'a [f32], View),
    Kept(&'a PackedLeft),
}

impl Left<'_> {
    /// Rows and inner dimension.
    pub(super) fn dims(&self) -> (usize, usize) {
        match self {
            Left::Values(_, view) => (view.rows, view.cols),
            Left::Kept(kept) => kept.dims(),
        }
    }
}

/// `dst = left · right` (or `+=` when `accumulate`) on a hardware engine, splitting the rows
/// over rayon's threads when `parallel`.
///
/// # Safety
/// As for the f32 product: `dst` must be valid for writes (and, when `accumulate`, reads) of
/// every element `dst_view` addresses and must not overlap the operands. The left view must
/// fit its slice and the shapes agree (the caller checked them); `right`, and `left` when
/// kept, are packed for this hardware engine.
pub(super) unsafe fn run(
    (dst, dst_view): (*mut f32, View),
    left: Left<'_>,
    right: &PackedRight,
    accumulate: bool,
    parallel: bool,
) {
    let (engine, Form::Pairs(right)) = (right.engine, &right.form) else {
        unreachable!("the emulation multiplies through the f32 gemm")
    };
    let depth = right.depth();
    let columns =
        |first: usize| x86::Columns::packed((right.run(first), right.run(first + LANES)), depth);
    // SAFETY: passed on from the caller; the runs hold every column block's pairs.
    unsafe {
        run_blocks(
            (dst, dst_view),
            left,
            engine,
            columns,
            None,
            accumulate,
            parallel,
        )
    }
}

/// [`run`] with the right operand's column blocks from `columns(first column)`: packed runs
/// or an image's pairs read in place. With `column_blocks`, each task takes every row of at
/// most that many blocks of columns (fewer when that leaves a thread without a task) instead of
/// the rows splitting first.
///
/// # Safety
/// As for [`run`], with `columns` giving the right operand's blocks for `engine`, over the
/// left's inner order.
unsafe fn run_blocks<'a>(
    (dst, dst_view): (*mut f32, View),
    left: Left<'_>,
    engine: Engine,
    columns: impl Fn(usize) -> x86::Columns<'a> + Sync,
    column_blocks: Option<usize>,
    accumulate: bool,
    parallel: bool,
) {
    use rayon::prelude::*;
    let (row_blocks, col_blocks) = (dst_view.rows.div_ceil(BLOCK), dst_view.cols.div_ceil(BLOCK));
    if row_blocks == 0 || col_blocks == 0 {
        return;
    }
    let threads = if parallel {
        rayon::current_num_threads().max(1)
    } else {
        1
    };
    // Unless the caller gives a stretch of column blocks a task, the rows split first: each
    // task packs its own rows of `lhs`, which then stay in cache for every column block. With
    // fewer row blocks than threads (a few tokens through a wide layer) the columns split too,
    // each of those tasks packing the same few rows.
    let (blocks_per_row_task, blocks_per_col_task) = match column_blocks {
        Some(most) => (row_blocks, most.min(col_blocks.div_ceil(threads)).max(1)),
        None => {
            let blocks_per_row_task = row_blocks.div_ceil(threads);
            let row_tasks = row_blocks.div_ceil(blocks_per_row_task);
            (
                blocks_per_row_task,
                col_blocks.div_ceil((threads / row_tasks).max(1)),
            )
        }
    };
    let row_tasks = row_blocks.div_ceil(blocks_per_row_task);
    let col_tasks = col_blocks.div_ceil(blocks_per_col_task);
    let dst = Rows(dst);
    let task = |index: usize| {
        let first = (index / col_tasks) * blocks_per_row_task * BLOCK;
        let rows = (blocks_per_row_task * BLOCK).min(dst_view.rows - first);
        let first_col = (index % col_tasks) * blocks_per_col_task * BLOCK;
        let end_col = (first_col + blocks_per_col_task * BLOCK).min(dst_view.cols);
        // A fresh operand holds this task's rows, a kept one every row.
        let fresh;
        let (left, offset) = match left {
            Left::Values(lhs, lhs_view) => {
                fresh = LeftRows::pack(lhs, lhs_view, first, rows);
                (&fresh, 0)
            }
            Left::Kept(kept) => match &kept.form {
                LeftForm::Rows(all) => (all, first),
                LeftForm::Rounded(..) => {
                    unreachable!("the emulation multiplies through the f32 gemm")
                }
            },
        };
        let mut sums = [0f32; BLOCK * BLOCK];
        let _tiles = (engine == Engine::Amx).then(x86::Tiles::configure);
        for block_row in (0..rows).step_by(BLOCK) {
            let rows_data = &left.data[(offset + block_row) * left.depth..][..BLOCK * left.depth];
            let a = (rows_data, left.depth);
            let valid_rows = BLOCK.min(rows - block_row);
            for block_col in (first_col..end_col).step_by(BLOCK) {
                let b = columns(block_col);
                let valid_cols = BLOCK.min(dst_view.cols - block_col);
                let corner = (first + block_row) * dst_view.row_stride + block_col;
                if dst_view.col_stride == 1 && valid_rows == BLOCK && valid_cols == BLOCK {
                    // A whole block of a row-major output: the kernel reads and writes it in
                    // place, with no pass through `sums`.
                    let out = x86::Out {
                        // SAFETY: the block lies inside `dst_view`; tasks own disjoint blocks.
                        corner: unsafe { dst.get().add(corner) },
                        row_stride: dst_view.row_stride,
                        add: accumulate,
                    };
                    // SAFETY: `block` checks `a`, and `Columns` checked the runs when made;
                    // the engine was detected on this CPU; `out` as above.
                    unsafe { x86::block(engine, a, b, out) };
                    continue;
                }
                let out = x86::Out {
                    corner: sums.as_mut_ptr(),
                    row_stride: BLOCK,
                    add: false,
                };
                // SAFETY: as above, with `sums` as the output block.
                unsafe { x86::block(engine, a, b, out) };
                for (row, sums) in sums.chunks_exact(BLOCK).take(valid_rows).enumerate() {
                    let row_start = (first + block_row + row) * dst_view.row_stride;
                    for (col, &sum) in sums[..valid_cols].iter().enumerate() {
                        let offset = row_start + (block_col + col) * dst_view.col_stride;
                        // SAFETY: the element is inside `dst_view`, which the caller vouches
                        // for; tasks write disjoint blocks.
                        unsafe {
                            let slot = dst.get().add(offset);
                            *slot = if accumulate { *slot + sum } else { sum };
                        }
                    }
                }
            }
        }
    };
    let tasks = row_tasks * col_tasks;
    if parallel && tasks > 1 {
        (0..tasks).into_par_iter().for_each(task);
    } else {
        task(0);
    }
}

/// `values` rounded to bf16 (as f32) and the view to read them through: what the f32 `gemm`
/// multiplies to emulate the mode. A view that covers most of its extent is rounded whole in
/// one vectorised pass and keeps its strides; a sparse one is gathered into a compact matrix.
pub(super) fn rounded_copy(values: &[f32], view: View) -> (Vec<f32>, View) {
    let extent = view.extent();
    let mut copy = Vec::new();
    if extent <= 2 * view.rows * view.cols {
        extend_rounded(&values[..extent], &mut copy);
        return (copy, view);
    }
    copy.reserve(view.rows * view.cols);
    for row in 0..view.rows {
        let start = row * view.row_stride;
        copy.extend((0..view.cols).map(|col| rounded(values[start + col * view.col_stride])));
    }
    (copy, View::rows(view.rows, view.cols, view.cols))
}

#[cfg(not(target_arch = "x86_64"))]
mod x86 {
    use super::Engine;

    pub struct Tiles;

    impl Tiles {
        pub fn configure() -> Tiles {
            unreachable!("AMX is x86-64 only")
        }
    }

    // Built only so the callers compile; `block` never reads it off x86-64.
    #[allow(dead_code)]
    pub struct Out {
        pub corner: *mut f32,
        pub row_stride: usize,
        pub add: bool,
    }

    #[derive(Clone, Copy)]
    pub struct Columns<'a>(std::marker::PhantomData<&'a [u16]>);

    impl<'a> Columns<'a> {
        pub fn packed(_: (&'a [u16], &'a [u16]), _: usize) -> Self {
            unreachable!("the bf16 hardware engines are x86-64 only")
        }

        pub fn shifted(_: &'a [u16], _: usize, _: (usize, usize), _: (usize, usize)) -> Self {
            unreachable!("the bf16 hardware engines are x86-64 only")
        }
    }

    pub unsafe fn block(_: Engine, _: (&[u16], usize), _: Columns<'_>, _: Out) {
        unreachable!("the bf16 hardware engines are x86-64 only")
    }
}

#[cfg(test)]
mod tests {
    use super::super::gemm::{Precision, View, matmul, matmul_kept, matmul_packed};
    use super::*;

    /// A column-major output (an image's planes, as `proj_out` writes them) gets the same
    /// products, on every engine, and nothing between its columns is written.
    #[test]
    fn column_major_outputs_get_the_same_products() {
        let mut engines = available();
        engines.push(Engine::Emulated);
        for engine in engines {
            for (m, k, n) in [(70, 100, 50), (64, 32, 64), (5, 3, 33)] {
                let lhs = values(m * k, 3);
                let rhs = values(k * n, 5);
                let (lhs_view, rhs_view) = (View::rows(m, k, k), View::transposed(k, n, k));
                let dst_view = View::transposed(m, n, m + 2);
                let start = values((m + 2) * n, 7);
                let mut dst = start.clone();
                let operands = ((&lhs[..], lhs_view), (&rhs[..], rhs_view));
                let expected = reference((&dst, dst_view), operands.0, operands.1, true);
                let bf16 = Precision::Bf16(engine);
                matmul(
                    (&mut dst, dst_view),
                    operands.0,
                    operands.1,
                    true,
                    true,
                    bf16,
                );
                for col in 0..n {
                    for row in 0..m {
                        let ours = f64::from(dst[col * (m + 2) + row]);
                        let theirs = expected[row * n + col];
                        assert!(
                            (ours - theirs).abs() <= 1e-5 * (1.0 + k as f64),
                            "{engine:?} {m}×{k}×{n} at ({row}, {col}): {ours} against {theirs}"
                        );
                    }
                    assert_eq!(
                        dst[col * (m + 2) + m..][..2],
                        start[col * (m + 2) + m..][..2]
                    );
                }
            }
        }
    }

    /// `dst (+)= lhs · rhs` in f64 on the operands rounded to bf16.
    fn reference(
        (dst, dst_view): (&[f32], View),
        (lhs, lhs_view): (&[f32], View),
        (rhs, rhs_view): (&[f32], View),
        accumulate: bool,
    ) -> Vec<f64> {
        let at = |values: &[f32], view: View, row: usize, col: usize| {
            f64::from(rounded(
                values[row * view.row_stride + col * view.col_stride],
            ))
        };
        let mut out = Vec::new();
        for row in 0..dst_view.rows {
            for col in 0..dst_view.cols {
                let start = if accumulate {
                    f64::from(dst[row * dst_view.row_stride + col * dst_view.col_stride])
                } else {
                    0.0
                };
                out.push(
                    start
                        + (0..lhs_view.cols)
                            .map(|k| at(lhs, lhs_view, row, k) * at(rhs, rhs_view, k, col))
                            .sum::<f64>(),
                );
            }
        }
        out
    }

    pub(super) fn values(count: usize, seed: u32) -> Vec<f32> {
        let mut state = seed;
        (0..count)
            .map(|_| {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (state >> 8) as f32 / (1 << 24) as f32 * 2.0 - 1.0
            })
            .collect()
    }

    /// Every engine this CPU runs (the emulation everywhere; AMX and AVX512-BF16 where
    /// present, e.g. `tools/emulate/sapphire-rapids.sh`) gives the f64 product of the rounded
    /// operands: row and column counts off the block size, an inner dimension off the tile
    /// depth, transposed operands, a strided output added onto, one thread and many.
    #[test]
    fn every_engine_multiplies_the_rounded_operands() {
        let mut engines = available();
        engines.push(Engine::Emulated);
        eprintln!("bf16 engines on this CPU: {engines:?}");
        for engine in engines {
            for (m, k, n) in [
                (70, 100, 50),
                (64, 96, 64),
                (5, 3, 33),
                (33, 64, 16),
                (1, 0, 7),
            ] {
                for (accumulate, parallel, transposed) in [
                    (false, true, false),
                    (true, false, true),
                    (true, true, true),
                ] {
                    let lhs = values(m * k, 3);
                    let rhs = values(k * n, 5);
                    let (lhs_view, rhs_view) = if transposed {
                        (View::transposed(m, k, m), View::transposed(k, n, k))
                    } else {
                        (View::rows(m, k, k), View::rows(k, n, n))
                    };
                    // Output rows 3 apart from their neighbours' starts: a strided view.
                    let dst_view = View::rows(m, n, n + 3);
                    let mut dst = values(m * (n + 3), 7);
                    let expected = reference(
                        (&dst, dst_view),
                        (&lhs, lhs_view),
                        (&rhs, rhs_view),
                        accumulate,
                    );
                    matmul(
                        (&mut dst, dst_view),
                        (&lhs, lhs_view),
                        (&rhs, rhs_view),
                        accumulate,
                        parallel,
                        Precision::Bf16(engine),
                    );
                    // The right operand packed once and multiplied twice, as a layer's weights.
                    let right = PackedRight::new(engine, &rhs, rhs_view);
                    let mut outputs = vec![("per call", dst)];
                    for call in ["packed, first call", "packed, second call"] {
                        let mut dst = values(m * (n + 3), 7);
                        let lhs = (&lhs[..], lhs_view);
                        matmul_packed((&mut dst, dst_view), lhs, &right, accumulate, parallel);
                        outputs.push((call, dst));
                    }
                    // The left operand kept packed too, as a convolution's weights.
                    let left = PackedLeft::new(engine, &lhs, lhs_view);
                    for call in ["both kept, first call", "both kept, second call"] {
                        let mut dst = values(m * (n + 3), 7);
                        matmul_kept((&mut dst, dst_view), &left, &right, accumulate, parallel);
                        outputs.push((call, dst));
                    }
                    let untouched = values(m * (n + 3), 7);
                    for (how, dst) in outputs {
                        for row in 0..m {
                            for col in 0..n {
                                let ours = f64::from(dst[row * (n + 3) + col]);
                                let theirs = expected[row * n + col];
                                assert!(
                                    (ours - theirs).abs() <= 1e-5 * (1.0 + k as f64),
                                    "{engine:?} {how} {m}×{k}×{n} ({accumulate}, {parallel}, \
                                     {transposed}) at ({row}, {col}): {ours} against {theirs}"
                                );
                            }
                            // The padding between output rows is never written.
                            assert_eq!(
                                dst[row * (n + 3) + n..][..3],
                                untouched[row * (n + 3) + n..][..3]
                            );
                        }
                    }
                }
            }
        }
    }
}

//! f32 products on AVX-512: 8 rows × 32 columns of sums in 16 registers, the left operand read
//! in place (one broadcast a row and step), the right one packed into panels of 32 columns. A
//! few tokens against a layer's weights run transposed, so that the weights are the operand
//! read in place and the tokens the one packed.
//!
//! `gemm`'s kernels here are its AVX2 ones (its `x86-v4` build lost on Zen 4, see
//! docs/PERFORMANCE.md), which fill half of a 512-bit FMA unit. On Zen 4, where AVX-512 runs as
//! two 256-bit halves, this kernel is level with them or a little ahead; on CPUs with full
//! 512-bit FMA units it does twice the multiply-adds an instruction.
//!
//! Each sum adds its products in inner order, one FMA at a time, from zero, and an accumulating
//! product adds the sum to the output last, as `gemm` does within one depth block: the results
//! are the same on every run and thread count, and `gemm`'s where its depth is not split.

use std::cell::RefCell;

use super::gemm::View;

/// Columns of one panel: two 16-lane vectors.
const PANEL: usize = 32;
/// Rows of sums one kernel call holds (16 of the 32 vector registers).
const ROWS: usize = 8;
/// Bytes of packed panels one pass keeps (in L2) while every row of its range reads them.
const PANELS_BYTES: usize = 512 << 10;
/// Output rows a parallel task takes at least, so its packing stays a small share of its work.
const TASK_ROWS: usize = 64;
/// Rows of a column-major right operand packed as one block: a cache line of each column,
/// 2 KiB of the panel.
const TRANSPOSE_ROWS: usize = 16;

/// Whether [`multiply`] runs on this CPU.
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        super::exp::has_avx512()
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Rows (of the output, or of its transpose where that is the row-major one) below which
/// packing the right operand costs more than the kernel saves: with GPT-2's one-token step,
/// 2 rows against 3072 columns, the packing made the product 1.7× slower than `gemm`'s.
const FEWEST_ROWS: usize = 16;

/// Whether an output laid out as `view` can be written: its elements within a row adjacent,
/// or within a column (then the product runs transposed).
fn writes(view: View) -> bool {
    view.col_stride == 1 || view.row_stride == 1
}

/// Whether [`multiply`] writes an output laid out as `view` and is worth running for it.
pub fn pays(view: View) -> bool {
    let rows = if view.col_stride == 1 {
        view.rows
    } else {
        view.cols
    };
    writes(view) && rows >= FEWEST_ROWS
}

thread_local! {
    /// The packed right operand, kept by each thread at the largest size it has needed (at
    /// most [`PANELS_BYTES`] and one panel).
    static PANELS: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// `dst = lhs · rhs`, or `dst += lhs · rhs` when `accumulate`, on this thread, or split over
/// rayon's when `parallel`. `dst` is written without being read unless `accumulate`.
///
/// Panics if an operand does not fit its slice, the shapes disagree, `dst` is neither row- nor
/// column-major or the CPU lacks AVX-512F ([`available`]): all programming errors.
///
/// # Safety
/// `dst` addresses the elements its view lays out, which nothing else reads or writes during
/// the call.
pub unsafe fn multiply(
    (dst, dst_view): (*mut f32, View),
    (lhs, lhs_view): (&[f32], View),
    (rhs, rhs_view): (&[f32], View),
    accumulate: bool,
    parallel: bool,
) {
    let (rows, inner, cols) = (lhs_view.rows, lhs_view.cols, rhs_view.cols);
    assert!(
        rhs_view.rows == inner && dst_view.rows == rows && dst_view.cols == cols,
        "product shapes disagree"
    );
    assert!(
        lhs_view.extent() <= lhs.len() && rhs_view.extent() <= rhs.len(),
        "a product's operand exceeds its buffer"
    );
    assert!(
        writes(dst_view),
        "a product's output is neither row- nor column-major"
    );
    assert!(
        available(),
        "the AVX-512 product runs only where available() says"
    );
    if rows == 0 || cols == 0 {
        return;
    }
    if dst_view.col_stride != 1 {
        // A column-major output's transpose is row-major: dstᵀ = rhsᵀ · lhsᵀ.
        // SAFETY: the same elements, through transposed views.
        unsafe {
            multiply(
                (dst, dst_view.t()),
                (rhs, rhs_view.t()),
                (lhs, lhs_view.t()),
                accumulate,
                parallel,
            )
        };
        return;
    }
    if inner == 0 {
        // No products: the sums are zeros.
        if !accumulate {
            for row in 0..rows {
                // SAFETY: the row's elements, which the caller vouched for, written through
                // the pointer (they may not be initialised yet); all-zero bits are 0.0.
                unsafe { std::ptr::write_bytes(dst.add(row * dst_view.row_stride), 0, cols) };
            }
        }
        return;
    }
    if streams_weights(lhs_view, rhs_view) {
        // SAFETY: passed on from the caller.
        unsafe {
            stream_weights(
                (dst, dst_view),
                (lhs, lhs_view),
                (rhs, rhs_view),
                accumulate,
                parallel,
            )
        };
        return;
    }
    let (rows_each, cols_each) = split(rows, cols, threads(parallel));
    let (row_runs, col_runs) = (rows.div_ceil(rows_each), cols.div_ceil(cols_each));
    let dst = super::gemm::Rows(dst);
    let task = |row_run: usize, col_run: usize| {
        let (top, left) = (row_run * rows_each, col_run * cols_each);
        let (height, width) = (rows_each.min(rows - top), cols_each.min(cols - left));
        let lhs = (
            &lhs[top * lhs_view.row_stride..],
            View {
                rows: height,
                ..lhs_view
            },
        );
        let rhs = (
            &rhs[left * rhs_view.col_stride..],
            View {
                cols: width,
                ..rhs_view
            },
        );
        let out = (
            // SAFETY: the block's first element, inside what the caller vouched for.
            unsafe { dst.get().add(top * dst_view.row_stride + left) },
            View {
                rows: height,
                cols: width,
                ..dst_view
            },
        );
        // SAFETY: each task writes its own block of rows and columns.
        unsafe { multiply_block(out, lhs, rhs, accumulate) };
    };
    if row_runs * col_runs == 1 {
        task(0, 0);
        return;
    }
    use rayon::prelude::*;
    (0..row_runs * col_runs)
        .into_par_iter()
        .for_each(|index| task(index / col_runs, index % col_runs));
}

/// The threads a product splits over: rayon's when `parallel`.
fn threads(parallel: bool) -> usize {
    if parallel {
        rayon::current_num_threads()
    } else {
        1
    }
}

/// Bytes of a left operand packed as panels up to which a product with column-major weights
/// runs transposed ([`stream_weights`]): about an L2 of AVX-512 CPUs. On Zen 4, at 0.13–1 MiB
/// (T5's 32 tokens, the UNet's 128) it was 1.1–1.45× faster than packing the weights, at
/// 2.6 MiB (2048 tokens of 320) 0.8× unless the weights are much larger ([`STREAMED_RATIO`]).
const STREAMED_BYTES: usize = 1 << 20;

/// How many times the packed left operand's bytes weights must have for the product to run
/// transposed whatever its size: AudioLDM 2's level-3 feed-forward out (2.6 MiB of tokens,
/// 26 MiB of weights) ran 1.1× faster so.
const STREAMED_RATIO: usize = 8;

/// Whether `lhs · rhs` runs as `(rhsᵀ · lhsᵀ)ᵀ`: `rhs` is a layer's weights read transposed
/// (each column in one run) and `lhs` a few tokens against them.
fn streams_weights(lhs_view: View, rhs_view: View) -> bool {
    let packed = lhs_view.rows.next_multiple_of(PANEL) * lhs_view.cols * size_of::<f32>();
    let weights = rhs_view.rows * rhs_view.cols * size_of::<f32>();
    rhs_view.is_column_major() && (packed <= STREAMED_BYTES || weights >= STREAMED_RATIO * packed)
}

/// `dst = lhs · rhs` for [`streams_weights`] operands, computed as `dstᵀ = rhsᵀ · lhsᵀ`: the
/// weights' rows are the broadcast operand, read once, in place, as they stream from memory;
/// the tokens are packed once as panels every task shares, and each tile is stored
/// transposed. Packing the weights instead, a few tokens' product spent about as long copying
/// them as multiplying (each weight meets only those few tokens). The sums are the same: each
/// adds its products in inner order, one FMA each.
///
/// # Safety
/// As for [`multiply`], with `dst` row-major.
unsafe fn stream_weights(
    (dst, dst_view): (*mut f32, View),
    (lhs, lhs_view): (&[f32], View),
    (rhs, rhs_view): (&[f32], View),
    accumulate: bool,
    parallel: bool,
) {
    let (dst_view, weights_view, tokens_view) = (dst_view.t(), rhs_view.t(), lhs_view.t());
    // A fresh buffer: the thread-local one may be in use on this thread, by a product whose
    // parallel loop this thread waits in.
    let mut tokens = Vec::new();
    pack((lhs, tokens_view), &mut tokens);
    let rows = weights_view.rows;
    let rows_each = rows.div_ceil(4 * threads(parallel)).next_multiple_of(ROWS);
    let dst = super::gemm::Rows(dst);
    let task = |run: usize| {
        let top = run * rows_each;
        let height = rows_each.min(rows - top);
        let out = (
            // SAFETY: the run's first element, inside what the caller vouched for.
            unsafe { dst.get().add(top * dst_view.row_stride) },
            View {
                rows: height,
                ..dst_view
            },
        );
        let weights = (
            &rhs[top * weights_view.row_stride..],
            View {
                rows: height,
                ..weights_view
            },
        );
        // SAFETY: each run writes its own rows of `dstᵀ`; `tokens` holds every column packed.
        unsafe { run_panels(out, weights, &tokens, accumulate) };
    };
    let runs = rows.div_ceil(rows_each);
    if runs == 1 {
        task(0);
        return;
    }
    use rayon::prelude::*;
    (0..runs).into_par_iter().for_each(task);
}

/// Rows and columns a task takes of a `rows × cols` output for `threads`: whole panels of
/// columns first (each task packs only its own), then rows (whole tiles, at least
/// [`TASK_ROWS`]) until there are four tasks a thread where the rows allow.
fn split(rows: usize, cols: usize, threads: usize) -> (usize, usize) {
    if threads <= 1 {
        return (rows, cols);
    }
    let wanted = 4 * threads;
    let panels = cols.div_ceil(PANEL);
    let panels_each = panels.div_ceil(wanted.min(panels));
    let col_runs = panels.div_ceil(panels_each);
    let row_runs = wanted
        .div_ceil(col_runs)
        .min(rows.div_ceil(TASK_ROWS))
        .max(1);
    (
        rows.div_ceil(row_runs).next_multiple_of(ROWS),
        panels_each * PANEL,
    )
}

/// One task's block, on this thread, `dst` row-major within rows: the columns in passes of
/// [`PANELS_BYTES`] of packed panels, each read by every row of the block.
///
/// # Safety
/// As for [`multiply`], the views checked there.
unsafe fn multiply_block(
    (dst, dst_view): (*mut f32, View),
    (lhs, lhs_view): (&[f32], View),
    (rhs, rhs_view): (&[f32], View),
    accumulate: bool,
) {
    let inner = lhs_view.cols;
    let per_pass = (PANELS_BYTES / (inner.max(1) * PANEL * 4)).max(1) * PANEL;
    PANELS.with_borrow_mut(|panels| {
        for left in (0..rhs_view.cols).step_by(per_pass) {
            let width = per_pass.min(rhs_view.cols - left);
            let rhs = (
                &rhs[left * rhs_view.col_stride..],
                View {
                    cols: width,
                    ..rhs_view
                },
            );
            pack(rhs, panels);
            let out = (
                // SAFETY: inside the block the caller vouched for.
                unsafe { dst.add(left) },
                View {
                    cols: width,
                    ..dst_view
                },
            );
            // SAFETY: passed on from the caller.
            unsafe { run_panels(out, (lhs, lhs_view), panels, accumulate) };
        }
    });
}

/// `rhs` as panels of 32 columns, each `inner` rows of 32 values back to back, at the start of
/// `panels` (grown when short, never zero-filled first); the last panel's missing columns are
/// zeros.
fn pack((rhs, view): (&[f32], View), panels: &mut Vec<f32>) {
    let (inner, cols) = (view.rows, view.cols);
    let len = cols.div_ceil(PANEL) * inner * PANEL;
    if panels.len() < len {
        panels.resize(len, 0.0);
    }
    for (panel, out) in panels[..len].chunks_exact_mut(inner * PANEL).enumerate() {
        let first = panel * PANEL;
        let width = PANEL.min(cols - first);
        if view.row_stride == 1 && view.col_stride != 1 {
            // Column-major (a layer's weights, transposed): a block of rows at a time, each
            // column's stretch of it read in one run and written down the block, which stays
            // in L1. Written down the whole panel (in L2 for a wide layer), a column at a time,
            // T5's 32-token products spent as long packing as multiplying.
            for top in (0..inner).step_by(TRANSPOSE_ROWS) {
                let height = TRANSPOSE_ROWS.min(inner - top);
                let block = &mut out[top * PANEL..][..height * PANEL];
                for col in 0..PANEL {
                    let start = (first + col) * view.col_stride + top;
                    if col < width {
                        let column = &rhs[start..start + height];
                        for (out, &value) in block.chunks_exact_mut(PANEL).zip(column) {
                            out[col] = value;
                        }
                    } else {
                        block.chunks_exact_mut(PANEL).for_each(|out| out[col] = 0.0);
                    }
                }
            }
            continue;
        }
        for (row, out) in out.chunks_exact_mut(PANEL).enumerate() {
            let start = row * view.row_stride + first * view.col_stride;
            if view.col_stride == 1 {
                out[..width].copy_from_slice(&rhs[start..start + width]);
            } else {
                for (col, out) in out[..width].iter_mut().enumerate() {
                    *out = rhs[start + col * view.col_stride];
                }
            }
            out[width..].fill(0.0);
        }
    }
}

/// Every 8-row tile of `lhs` against each packed panel in turn.
///
/// # Safety
/// As for [`multiply`]; `panels` holds `dst_view.cols` columns packed.
#[cfg(not(target_arch = "x86_64"))]
unsafe fn run_panels(_: (*mut f32, View), _: (&[f32], View), _: &[f32], _: bool) {
    unreachable!("available() is false off x86-64")
}

/// Every 8-row tile of `lhs` against each packed panel in turn.
///
/// # Safety
/// As for [`multiply`]; `panels` holds `dst_view.cols` columns packed.
#[cfg(target_arch = "x86_64")]
unsafe fn run_panels(
    (dst, dst_view): (*mut f32, View),
    (lhs, lhs_view): (&[f32], View),
    panels: &[f32],
    accumulate: bool,
) {
    let (rows, inner, cols) = (lhs_view.rows, lhs_view.cols, dst_view.cols);
    for top in (0..rows).step_by(ROWS) {
        for (panel, first) in (0..cols).step_by(PANEL).enumerate() {
            let tile = x86::Tile {
                lhs: lhs[top * lhs_view.row_stride..].as_ptr(),
                lhs_strides: (lhs_view.row_stride, lhs_view.col_stride),
                panel: panels[panel * inner * PANEL..].as_ptr(),
                inner,
                // SAFETY: inside the output the caller vouched for.
                out: unsafe { dst.add(top * dst_view.row_stride + first * dst_view.col_stride) },
                out_strides: (dst_view.row_stride, dst_view.col_stride),
                width: PANEL.min(cols - first),
                accumulate,
            };
            // SAFETY: `available` checked AVX-512F. The tile reads rows `top..top + live` of
            // `lhs` (inside the slice by `extent`), one whole panel, and writes (or adds to)
            // `width` columns of the same rows of `dst`, which the caller vouched for.
            unsafe { x86::tile(tile, ROWS.min(rows - top)) };
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{PANEL, ROWS};

    /// One call's operands: up to 8 rows of `lhs` against one panel.
    pub struct Tile {
        pub lhs: *const f32,
        /// Between rows, and between steps along a row.
        pub lhs_strides: (usize, usize),
        pub panel: *const f32,
        pub inner: usize,
        pub out: *mut f32,
        /// Between rows, and between columns (1, or the tile is stored transposed).
        pub out_strides: (usize, usize),
        /// Columns stored (≤ 32); the panel's zero columns beyond are dropped.
        pub width: usize,
        /// Add the sums to `out` instead of overwriting it.
        pub accumulate: bool,
    }

    /// The tile's `live` rows (1..=8).
    ///
    /// # Safety
    /// The CPU has AVX-512F, and the tile's pointers cover `live` rows of `inner` values of
    /// `lhs`, `inner` rows of 32 of the panel and `live` rows of `width` of `out`.
    pub unsafe fn tile(tile: Tile, live: usize) {
        // One build per row count, so every loop over the rows unrolls into registers.
        unsafe {
            match live {
                8 => rows::<8>(tile),
                7 => rows::<7>(tile),
                6 => rows::<6>(tile),
                5 => rows::<5>(tile),
                4 => rows::<4>(tile),
                3 => rows::<3>(tile),
                2 => rows::<2>(tile),
                _ => rows::<1>(tile),
            }
        }
    }

    /// # Safety
    /// As for [`tile`], with `R` live rows.
    #[target_feature(enable = "avx512f")]
    unsafe fn rows<const R: usize>(tile: Tile) {
        const { assert!(R >= 1 && R <= ROWS) };
        let mut sums = [[_mm512_setzero_ps(); 2]; R];
        // SAFETY: every address is inside what the caller vouched for.
        unsafe {
            let (row_stride, step_stride) = tile.lhs_strides;
            for step in 0..tile.inner {
                let panel = tile.panel.add(step * PANEL);
                let (left, right) = (_mm512_loadu_ps(panel), _mm512_loadu_ps(panel.add(16)));
                let column = tile.lhs.add(step * step_stride);
                for (row, sums) in sums.iter_mut().enumerate() {
                    let value = _mm512_set1_ps(*column.add(row * row_stride));
                    sums[0] = _mm512_fmadd_ps(value, left, sums[0]);
                    sums[1] = _mm512_fmadd_ps(value, right, sums[1]);
                }
            }
            if tile.out_strides.1 != 1 {
                store_scattered(&tile, &sums);
                return;
            }
            let masks = lane_masks(tile.width);
            for (row, sums) in sums.iter().enumerate() {
                let out = tile.out.add(row * tile.out_strides.0);
                for (half, (&sum, mask)) in sums.iter().zip(masks).enumerate() {
                    if mask == 0 {
                        // Nothing kept, and the address may lie past the output's end.
                        continue;
                    }
                    let out = out.add(16 * half);
                    let value = if tile.accumulate {
                        // The output first, as `gemm` adds them (the same sum either way).
                        _mm512_add_ps(_mm512_maskz_loadu_ps(mask, out), sum)
                    } else {
                        sum
                    };
                    _mm512_mask_storeu_ps(out, mask, value);
                }
            }
        }
    }

    /// The sums stored one element at a time, where the output's columns are not adjacent
    /// (a tile of a transposed output). Once a tile, after `inner` steps of 16 FMAs each.
    ///
    /// # Safety
    /// As for [`tile`], with `R` live rows.
    #[target_feature(enable = "avx512f")]
    unsafe fn store_scattered<const R: usize>(tile: &Tile, sums: &[[__m512; 2]; R]) {
        let mut values = [[0f32; PANEL]; R];
        for (values, sums) in values.iter_mut().zip(sums) {
            // SAFETY: 32 values, two vectors of 16.
            unsafe {
                _mm512_storeu_ps(values.as_mut_ptr(), sums[0]);
                _mm512_storeu_ps(values.as_mut_ptr().add(16), sums[1]);
            }
        }
        let (row_stride, col_stride) = tile.out_strides;
        for col in 0..tile.width {
            for (row, values) in values.iter().enumerate() {
                // SAFETY: inside the `live` rows of `width` columns the caller vouched for.
                unsafe {
                    let out = tile.out.add(row * row_stride + col * col_stride);
                    *out = if tile.accumulate {
                        *out + values[col]
                    } else {
                        values[col]
                    };
                }
            }
        }
    }

    /// Store masks for the panel's two vectors when `width` (≤ 32) columns are kept.
    fn lane_masks(width: usize) -> [__mmask16; 2] {
        let mask = |lanes: usize| ((1u32 << lanes.min(16)) - 1) as __mmask16;
        [mask(width), mask(width.saturating_sub(16))]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(len: usize, seed: usize) -> Vec<f32> {
        (0..len)
            .map(|index| ((index * 37 + seed * 11) % 23) as f32 / 11.0 - 1.0)
            .collect()
    }

    /// Element (row, col) of a view into `values`.
    fn at(values: &[f32], view: View, row: usize, col: usize) -> f32 {
        values[row * view.row_stride + col * view.col_stride]
    }

    /// A `rows × cols` view with a gap of 3 after each row (or, transposed, each column).
    fn layout(rows: usize, cols: usize, transposed: bool) -> View {
        if transposed {
            View::transposed(rows, cols, rows + 3)
        } else {
            View::rows(rows, cols, cols + 3)
        }
    }

    #[test]
    fn products_match_f64_at_every_edge_and_layout() {
        if !available() {
            eprintln!("no AVX-512F here: the kernel is not built for this CPU");
            return;
        }
        // Row counts around the 8-row tile, column counts around the 32-column panel and
        // beyond one pass of panels; operands and outputs row- and column-major with gaps;
        // overwriting and adding; on this thread and split over three of rayon's.
        let shapes = [
            (1, 1, 1),
            (3, 0, 5),
            (20, 0, 40),
            (7, 5, 31),
            (8, 16, 32),
            (9, 33, 33),
            (17, 64, 70),
            (130, 3, 96),
            (24, 2100, 97),
            // Tokens too many to stream the (column-major) weights past: they are packed.
            (300, 1000, 40),
        ];
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .expect("a 3-thread pool");
        pool.install(|| check_products(&shapes));
    }

    /// Every layout and mode of [`products_match_f64_at_every_edge_and_layout`] at `shapes`.
    fn check_products(shapes: &[(usize, usize, usize)]) {
        for &(rows, inner, cols) in shapes {
            for case in 0..16 {
                let [lhs_t, rhs_t, dst_t, accumulate] = [1, 2, 4, 8].map(|bit| case & bit != 0);
                let parallel = case % 3 == 0;
                let (lhs_view, rhs_view) = (layout(rows, inner, lhs_t), layout(inner, cols, rhs_t));
                let dst_view = layout(rows, cols, dst_t);
                let lhs = values(lhs_view.extent(), 1);
                let rhs = values(rhs_view.extent(), 2);
                let sentinel = 1234.5;
                let mut dst = vec![sentinel; dst_view.extent() + 3];
                let start = dst.clone();
                // SAFETY: `dst` holds every element its view addresses, and only this call
                // uses it.
                unsafe {
                    multiply(
                        (dst.as_mut_ptr(), dst_view),
                        (&lhs, lhs_view),
                        (&rhs, rhs_view),
                        accumulate,
                        parallel,
                    )
                };
                let mut written = vec![false; dst.len()];
                for row in 0..rows {
                    for col in 0..cols {
                        let mut want = if accumulate { sentinel as f64 } else { 0.0 };
                        for step in 0..inner {
                            want += at(&lhs, lhs_view, row, step) as f64
                                * at(&rhs, rhs_view, step, col) as f64;
                        }
                        let index = row * dst_view.row_stride + col * dst_view.col_stride;
                        written[index] = true;
                        let got = dst[index] as f64;
                        assert!(
                            (got - want).abs() <= 1e-5 * (inner as f64 + want.abs()),
                            "{rows}×{inner}×{cols} case {case} at ({row}, {col}): {got} against {want}"
                        );
                    }
                }
                let untouched =
                    (0..dst.len()).all(|index| written[index] || dst[index] == start[index]);
                assert!(
                    untouched,
                    "{rows}×{inner}×{cols} case {case}: wrote outside its view"
                );
            }
        }
    }

    #[test]
    fn only_outputs_with_enough_rows_pay() {
        assert!(pays(View::rows(16, 3, 3)) && pays(View::transposed(3, 16, 3)));
        assert!(!pays(View::rows(2, 3072, 3072)) && !pays(View::transposed(3072, 2, 3072)));
        let scattered = View {
            rows: 64,
            cols: 64,
            row_stride: 128,
            col_stride: 2,
        };
        assert!(!pays(scattered));
    }

    #[test]
    fn weights_stream_past_few_tokens_only() {
        let weights = |inner, outputs| View::transposed(inner, outputs, inner);
        let tokens = |rows, inner| View::rows(rows, inner, inner);
        // AudioLDM 2's level-3 feed-forward in (640 KiB of tokens) and T5's over a prompt.
        assert!(streams_weights(tokens(128, 1280), weights(1280, 10240)));
        assert!(streams_weights(tokens(32, 1024), weights(1024, 2816)));
        // 2.6 MiB of tokens: against 26 MiB of weights, but not against 3.3 MiB.
        assert!(streams_weights(tokens(128, 5120), weights(5120, 1280)));
        assert!(!streams_weights(tokens(2048, 320), weights(320, 2560)));
        // Row-major weights are read in place by the panels as they are.
        assert!(!streams_weights(
            tokens(32, 1024),
            View::rows(1024, 2816, 2816)
        ));
        // The check in `products_match_f64_at_every_edge_and_layout` that the weights are
        // packed there.
        assert!(!streams_weights(tokens(300, 1000), weights(1000, 40)));
    }

    #[test]
    fn splits_give_every_thread_whole_tiles_to_do() {
        assert_eq!(split(1000, 1000, 1), (1000, 1000));
        // Plenty of panels: columns alone, eight tasks for two threads.
        assert_eq!(split(2048, 2560, 2), (2048, 320));
        // Ten panels go five ways, and the rows two, so no task is left empty.
        assert_eq!(split(2048, 320, 2), (1024, 64));
        // One panel: rows alone.
        assert_eq!(split(4096, 16, 8), (128, 32));
        // Too few rows to split.
        assert_eq!(split(40, 16, 8), (40, 32));
        for &(rows, cols, threads) in &[(2048, 2560, 2), (2048, 320, 2), (9, 33, 4), (130, 96, 2)] {
            let (rows_each, cols_each) = split(rows, cols, threads);
            assert!(rows_each % ROWS == 0 || rows_each == rows);
            assert_eq!(cols_each % PANEL, 0);
            // Four tasks a thread where the rows and panels allow, and never twice that.
            let tasks = rows.div_ceil(rows_each) * cols.div_ceil(cols_each);
            let most = rows.div_ceil(TASK_ROWS) * cols.div_ceil(PANEL);
            let wanted = 4 * threads;
            assert!(
                tasks >= wanted.min(most) && tasks < 2 * wanted,
                "{rows}×{cols}: {tasks} tasks"
            );
        }
    }

    #[test]
    #[should_panic(expected = "exceeds its buffer")]
    fn a_short_operand_is_refused() {
        let (lhs, rhs) = (values(4, 1), values(3, 2));
        let mut dst = [0.0; 4];
        let view = View::rows(2, 2, 2);
        // SAFETY: `dst` holds the 2×2 output; the call refuses `rhs` first.
        unsafe {
            multiply(
                (dst.as_mut_ptr(), view),
                (&lhs, view),
                (&rhs, view),
                false,
                false,
            )
        };
    }
}

//! f32 products on AVX-512: 8 rows × 32 columns of sums in 16 registers, the left operand read
//! in place (one broadcast a row and step), the right one packed into panels of 32 columns. A
//! few tokens against a layer's weights run transposed, so that the weights are the operand
//! read in place and the tokens the one packed; on CPUs with AVX2 but not AVX-512 (and for up
//! to 16 tokens on any) those products take an 8-lane build of the kernel, 6 rows × 16 columns.
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
/// The 8-lane kernel's panel (two AVX2 vectors) and rows (12 of the 16 vector registers).
const NARROW_PANEL: usize = 16;
const NARROW_ROWS: usize = 6;
/// Bytes of packed panels one pass keeps (in L2) while every row of its range reads them.
const PANELS_BYTES: usize = 512 << 10;
/// Output rows a parallel task takes at least, so its packing stays a small share of its work.
const TASK_ROWS: usize = 64;
/// Rows of a column-major right operand packed as one block: a cache line of each column,
/// 2 KiB of the panel.
const TRANSPOSE_ROWS: usize = 16;

/// The register kernel this CPU runs: 8 rows × 32 columns in 16-lane AVX-512 registers, or
/// 6 × 16 in 8-lane AVX2 ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kernel {
    Avx512,
    /// Only for products that stream weights past a few tokens ([`streams_weights`]): `gemm`'s
    /// own 8-lane kernel is as fast elsewhere, but packs the weights for each call.
    Avx2,
}

impl Kernel {
    fn detect() -> Option<Self> {
        #[cfg(target_arch = "x86_64")]
        {
            if super::exp::has_avx512() {
                return Some(Self::Avx512);
            }
            if super::exp::has_avx2() {
                return Some(Self::Avx2);
            }
        }
        None
    }

    /// Columns of one panel: two vectors.
    fn panel(self) -> usize {
        match self {
            Self::Avx512 => PANEL,
            Self::Avx2 => NARROW_PANEL,
        }
    }

    /// Rows of sums one tile holds, two vectors each.
    fn rows(self) -> usize {
        match self {
            Self::Avx512 => ROWS,
            Self::Avx2 => NARROW_ROWS,
        }
    }
}

/// Whether [`multiply`] runs on this CPU (for the products [`pays`] says).
pub fn available() -> bool {
    Kernel::detect().is_some()
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

/// Whether [`multiply`] runs `dst = lhs · rhs` on this CPU and is worth running for it.
pub fn pays(dst: View, lhs: View, rhs: View) -> bool {
    pays_on(Kernel::detect(), dst, lhs, rhs)
}

/// [`pays`] on a CPU whose kernel is `kernel`.
fn pays_on(kernel: Option<Kernel>, dst: View, lhs: View, rhs: View) -> bool {
    let rows = if dst.col_stride == 1 {
        dst.rows
    } else {
        dst.cols
    };
    let worth = writes(dst) && rows >= FEWEST_ROWS;
    match kernel {
        Some(Kernel::Avx512) => worth,
        Some(Kernel::Avx2) => worth && dst.col_stride == 1 && streams_weights(lhs, rhs),
        None => false,
    }
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
/// column-major, the CPU has neither kernel ([`available`]) or only the 8-lane one and the
/// product is not one it takes ([`pays`]): all programming errors.
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
    let Some(kernel) = Kernel::detect() else {
        panic!("the panels' products run only where available() says");
    };
    if rows == 0 || cols == 0 {
        return;
    }
    if kernel == Kernel::Avx2 {
        assert!(
            dst_view.col_stride == 1 && streams_weights(lhs_view, rhs_view),
            "the 8-lane panels take only products that stream weights ([`pays`])"
        );
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
        // Up to 16 tokens fill one 8-lane panel, where a 16-lane one would be half padding
        // (GPT-2's 8 tokens, twice, against the cross-attention weights: 1.7× faster so).
        // (A CPU with the 16-lane kernel has the 8-lane one's AVX2 and FMA.)
        let kernel = if rows <= NARROW_PANEL {
            Kernel::Avx2
        } else {
            kernel
        };
        // SAFETY: passed on from the caller.
        unsafe {
            stream_weights(
                kernel,
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
    kernel: Kernel,
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
    pack((lhs, tokens_view), &mut tokens, kernel.panel());
    let rows = weights_view.rows;
    let rows_each = rows
        .div_ceil(4 * threads(parallel))
        .next_multiple_of(kernel.rows());
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
        unsafe { run_panels(kernel, out, weights, &tokens, accumulate) };
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
            pack(rhs, panels, PANEL);
            let out = (
                // SAFETY: inside the block the caller vouched for.
                unsafe { dst.add(left) },
                View {
                    cols: width,
                    ..dst_view
                },
            );
            // SAFETY: passed on from the caller.
            unsafe { run_panels(Kernel::Avx512, out, (lhs, lhs_view), panels, accumulate) };
        }
    });
}

/// `rhs` as panels of `panel_width` columns, each `inner` rows of them back to back, at the
/// start of `panels` (grown when short, never zero-filled first); the last panel's missing
/// columns are zeros.
fn pack((rhs, view): (&[f32], View), panels: &mut Vec<f32>, panel_width: usize) {
    let (inner, cols) = (view.rows, view.cols);
    let len = cols.div_ceil(panel_width) * inner * panel_width;
    if panels.len() < len {
        panels.resize(len, 0.0);
    }
    for (panel, out) in panels[..len]
        .chunks_exact_mut(inner * panel_width)
        .enumerate()
    {
        let first = panel * panel_width;
        let width = panel_width.min(cols - first);
        if view.is_column_major() {
            // Column-major (a layer's weights, transposed): a block of rows at a time, each
            // column's stretch of it read in one run and written down the block, which stays
            // in L1. Written down the whole panel (in L2 for a wide layer), a column at a time,
            // T5's 32-token products spent as long packing as multiplying.
            for top in (0..inner).step_by(TRANSPOSE_ROWS) {
                let height = TRANSPOSE_ROWS.min(inner - top);
                let block = &mut out[top * panel_width..][..height * panel_width];
                for col in 0..panel_width {
                    let start = (first + col) * view.col_stride + top;
                    if col < width {
                        let column = &rhs[start..start + height];
                        for (out, &value) in block.chunks_exact_mut(panel_width).zip(column) {
                            out[col] = value;
                        }
                    } else {
                        block
                            .chunks_exact_mut(panel_width)
                            .for_each(|out| out[col] = 0.0);
                    }
                }
            }
            continue;
        }
        for (row, out) in out.chunks_exact_mut(panel_width).enumerate() {
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

/// Every tile of `lhs`'s rows against each packed panel in turn.
///
/// # Safety
/// As for [`multiply`]; `panels` holds `dst_view.cols` columns packed for `kernel`.
#[cfg(not(target_arch = "x86_64"))]
unsafe fn run_panels(_: Kernel, _: (*mut f32, View), _: (&[f32], View), _: &[f32], _: bool) {
    unreachable!("available() is false off x86-64")
}

/// Every tile of `lhs`'s rows against each packed panel in turn.
///
/// # Safety
/// As for [`multiply`]; `panels` holds `dst_view.cols` columns packed for `kernel`.
#[cfg(target_arch = "x86_64")]
unsafe fn run_panels(
    kernel: Kernel,
    (dst, dst_view): (*mut f32, View),
    (lhs, lhs_view): (&[f32], View),
    panels: &[f32],
    accumulate: bool,
) {
    let (rows, inner, cols) = (lhs_view.rows, lhs_view.cols, dst_view.cols);
    let (tile_rows, width) = (kernel.rows(), kernel.panel());
    for top in (0..rows).step_by(tile_rows) {
        for (panel, first) in (0..cols).step_by(width).enumerate() {
            let tile = x86::Tile {
                lhs: lhs[top * lhs_view.row_stride..].as_ptr(),
                lhs_strides: (lhs_view.row_stride, lhs_view.col_stride),
                panel: panels[panel * inner * width..].as_ptr(),
                inner,
                // SAFETY: inside the output the caller vouched for.
                out: unsafe { dst.add(top * dst_view.row_stride + first * dst_view.col_stride) },
                out_strides: (dst_view.row_stride, dst_view.col_stride),
                width: width.min(cols - first),
                accumulate,
            };
            let live = tile_rows.min(rows - top);
            // SAFETY: `Kernel::detect` checked the kernel's instructions. The tile reads rows
            // `top..top + live` of `lhs` (inside the slice by `extent`), one whole panel, and
            // writes (or adds to) `width` columns of the same rows of `dst`, which the caller
            // vouched for.
            unsafe {
                match kernel {
                    Kernel::Avx512 => x86::tile(tile, live),
                    Kernel::Avx2 => x86::narrow_tile(tile, live),
                }
            };
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{NARROW_PANEL, NARROW_ROWS, PANEL, ROWS};

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
                let mut values = [[0f32; PANEL]; R];
                for (values, sums) in values.iter_mut().zip(&sums) {
                    _mm512_storeu_ps(values.as_mut_ptr(), sums[0]);
                    _mm512_storeu_ps(values.as_mut_ptr().add(16), sums[1]);
                }
                store_each(&tile, &values);
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

    /// The tile's `live` rows (1..=6) in AVX2 registers: the same steps, 8 lanes a vector.
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA, and the tile's pointers cover `live` rows of `inner` values of
    /// `lhs`, `inner` rows of 16 of the panel and `live` rows of `width` of `out`.
    pub unsafe fn narrow_tile(tile: Tile, live: usize) {
        const { assert!(NARROW_ROWS == 6 && NARROW_PANEL == 16) };
        unsafe {
            match live {
                6 => narrow_rows::<6>(tile),
                5 => narrow_rows::<5>(tile),
                4 => narrow_rows::<4>(tile),
                3 => narrow_rows::<3>(tile),
                2 => narrow_rows::<2>(tile),
                _ => narrow_rows::<1>(tile),
            }
        }
    }

    /// # Safety
    /// As for [`narrow_tile`], with `R` live rows.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn narrow_rows<const R: usize>(tile: Tile) {
        const { assert!(R >= 1 && R <= NARROW_ROWS) };
        let mut sums = [[_mm256_setzero_ps(); 2]; R];
        // SAFETY: every address is inside what the caller vouched for.
        unsafe {
            let (row_stride, step_stride) = tile.lhs_strides;
            for step in 0..tile.inner {
                let panel = tile.panel.add(step * NARROW_PANEL);
                let (left, right) = (_mm256_loadu_ps(panel), _mm256_loadu_ps(panel.add(8)));
                let column = tile.lhs.add(step * step_stride);
                for (row, sums) in sums.iter_mut().enumerate() {
                    let value = _mm256_set1_ps(*column.add(row * row_stride));
                    sums[0] = _mm256_fmadd_ps(value, left, sums[0]);
                    sums[1] = _mm256_fmadd_ps(value, right, sums[1]);
                }
            }
            let mut values = [[0f32; NARROW_PANEL]; R];
            for (values, sums) in values.iter_mut().zip(&sums) {
                _mm256_storeu_ps(values.as_mut_ptr(), sums[0]);
                _mm256_storeu_ps(values.as_mut_ptr().add(8), sums[1]);
            }
            store_each(&tile, &values);
        }
    }

    /// The sums stored one element at a time, for an output whose columns are not adjacent
    /// (a tile of a transposed output) or a tile without masked stores: once a tile, after
    /// `inner` steps of its FMAs.
    ///
    /// # Safety
    /// The tile's `out` covers `values.len()` rows of `width` (≤ N) columns.
    unsafe fn store_each<const N: usize>(tile: &Tile, values: &[[f32; N]]) {
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
        if Kernel::detect() != Some(Kernel::Avx512) {
            // The 8-lane kernel takes only streamed products, which
            // `both_kernels_stream_weights_past_tokens_in_every_layout` covers.
            eprintln!("no AVX-512F here: the 16-lane kernel is not built for this CPU");
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
        pool.install(|| check_layouts(&shapes, multiply, |_, _, _| true));
    }

    /// A product under test: `multiply`'s arguments.
    type Product = unsafe fn((*mut f32, View), (&[f32], View), (&[f32], View), bool, bool);

    /// `product` against f64 sums at `shapes`, in the layouts (left, right and output
    /// transposed or not) that `takes` accepts, overwriting and adding, on this thread and
    /// split over rayon's.
    fn check_layouts(
        shapes: &[(usize, usize, usize)],
        product: Product,
        takes: impl Fn(bool, bool, bool) -> bool,
    ) {
        for &(rows, inner, cols) in shapes {
            for case in 0..16 {
                let [lhs_t, rhs_t, dst_t, accumulate] = [1, 2, 4, 8].map(|bit| case & bit != 0);
                if !takes(lhs_t, rhs_t, dst_t) {
                    continue;
                }
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
                    product(
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

    /// Both kernels' transposed form ([`stream_weights`]) at every layout it takes: weights
    /// column-major, output row-major. The 8-lane kernel runs only there, on CPUs without
    /// AVX-512; on this one it is called directly.
    #[test]
    fn both_kernels_stream_weights_past_tokens_in_every_layout() {
        #[cfg(target_arch = "x86_64")]
        {
            // (No depth 0: `multiply` answers that before choosing a form.)
            let shapes = [
                (1, 1, 1),
                (5, 7, 6),
                (16, 33, 17),
                (33, 64, 70),
                (40, 300, 13),
            ];
            let takes = |_, rhs_t: bool, dst_t: bool| rhs_t && !dst_t;
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(3)
                .build()
                .expect("a 3-thread pool");
            if super::super::exp::has_avx2() {
                // SAFETY: passed on; AVX2 and FMA were just checked.
                let narrow: Product = |dst, lhs, rhs, accumulate, parallel| unsafe {
                    stream_weights(Kernel::Avx2, dst, lhs, rhs, accumulate, parallel)
                };
                pool.install(|| check_layouts(&shapes, narrow, takes));
            }
            if super::super::exp::has_avx512() {
                // SAFETY: passed on; AVX-512F was just checked.
                let wide: Product = |dst, lhs, rhs, accumulate, parallel| unsafe {
                    stream_weights(Kernel::Avx512, dst, lhs, rhs, accumulate, parallel)
                };
                pool.install(|| check_layouts(&shapes, wide, takes));
                // Each sum adds the same products in the same order: equal bits.
                let (rows, inner, cols) = (40, 300, 13);
                let (lhs_view, rhs_view) = (layout(rows, inner, false), layout(inner, cols, true));
                let (lhs, rhs) = (values(lhs_view.extent(), 1), values(rhs_view.extent(), 2));
                let [narrow_out, wide_out] = [Kernel::Avx2, Kernel::Avx512].map(|kernel| {
                    let mut dst = vec![0f32; rows * cols];
                    let out = (dst.as_mut_ptr(), View::rows(rows, cols, cols));
                    let operands = ((&lhs[..], lhs_view), (&rhs[..], rhs_view));
                    // SAFETY: `dst` holds the output, used by this call alone.
                    unsafe { stream_weights(kernel, out, operands.0, operands.1, false, true) };
                    dst
                });
                assert_eq!(narrow_out, wide_out, "the kernels' sums differ");
            }
        }
    }

    #[test]
    fn only_outputs_with_enough_rows_pay() {
        let any = View::rows(1, 1, 1);
        let pays = |dst| pays_on(Some(Kernel::Avx512), dst, any, any);
        assert!(pays(View::rows(16, 3, 3)) && pays(View::transposed(3, 16, 3)));
        assert!(!pays(View::rows(2, 3072, 3072)) && !pays(View::transposed(3072, 2, 3072)));
        let scattered = View {
            rows: 64,
            cols: 64,
            row_stride: 128,
            col_stride: 2,
        };
        assert!(!pays(scattered));
        assert!(!pays_on(None, View::rows(16, 3, 3), any, any));
    }

    #[test]
    fn eight_lanes_take_only_weights_streaming_past_tokens() {
        let narrow = |dst, lhs, rhs| pays_on(Some(Kernel::Avx2), dst, lhs, rhs);
        let (tokens, weights) = (
            View::rows(32, 1024, 1024),
            View::transposed(1024, 2816, 1024),
        );
        assert!(narrow(View::rows(32, 2816, 2816), tokens, weights));
        // Too few rows, a column-major output, row-major weights, too many tokens.
        assert!(!narrow(
            View::rows(2, 2816, 2816),
            View::rows(2, 1024, 1024),
            weights
        ));
        assert!(!narrow(View::transposed(32, 2816, 32), tokens, weights));
        assert!(!narrow(
            View::rows(32, 2816, 2816),
            tokens,
            View::rows(1024, 2816, 2816)
        ));
        let many = View::rows(2048, 320, 320);
        assert!(!narrow(
            View::rows(2048, 2560, 2560),
            many,
            View::transposed(320, 2560, 320)
        ));
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

//! A bounds-checked front to products of strided f32 matrices: [`super::panels`] where the CPU
//! has AVX-512F (and, with AVX2 alone, for few tokens against a layer's weights), the `gemm`
//! crate elsewhere (and for products too thin to pack), and the bf16 engines of [`gemm_bf16`].

use gemm::Parallelism;

use super::gemm_bf16::{self, Engine, Left, PackedLeft, PackedRight};
use super::panels;

/// How a product computes: in f32, or with operands rounded to bf16 and f32 sums (the CPU's
/// opt-in fast mode) on the given engine.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Precision {
    #[default]
    F32,
    Bf16(Engine),
}

/// A strided view of `rows × cols` elements inside a slice.
#[derive(Clone, Copy)]
pub struct View {
    pub rows: usize,
    pub cols: usize,
    pub row_stride: usize,
    pub col_stride: usize,
}

impl View {
    /// A row-major matrix whose rows are `row_stride` apart.
    pub fn rows(rows: usize, cols: usize, row_stride: usize) -> Self {
        Self {
            rows,
            cols,
            row_stride,
            col_stride: 1,
        }
    }

    /// The transpose of a row-major `cols × rows` matrix whose rows are `row_stride` apart.
    pub fn transposed(rows: usize, cols: usize, row_stride: usize) -> Self {
        Self {
            rows,
            cols,
            row_stride: 1,
            col_stride: row_stride,
        }
    }

    /// The same elements read as the transpose.
    pub fn t(self) -> Self {
        Self {
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
        }
    }

    /// Whether each column's elements lie together and the rows do not.
    pub(super) fn is_column_major(&self) -> bool {
        self.row_stride == 1 && self.col_stride != 1
    }

    /// One past the last element the view touches.
    pub(super) fn extent(&self) -> usize {
        if self.rows == 0 || self.cols == 0 {
            return 0;
        }
        (self.rows - 1) * self.row_stride + (self.cols - 1) * self.col_stride + 1
    }
}

/// `dst = lhs · rhs`, or `dst += lhs · rhs` when `accumulate`. Splits the work over rayon's
/// threads when `parallel` (callers already running inside a parallel loop pass `false`).
///
/// Panics if a view does not fit its slice or the shapes disagree: both are programming errors.
pub fn matmul(
    (dst, dst_view): (&mut [f32], View),
    lhs: (&[f32], View),
    rhs: (&[f32], View),
    accumulate: bool,
    parallel: bool,
    precision: Precision,
) {
    assert!(
        dst_view.extent() <= dst.len(),
        "matmul view exceeds its buffer"
    );
    let how = How {
        accumulate,
        parallel,
        precision,
        own_f32: own_f32_products(),
    };
    // SAFETY: the assert keeps every element `dst_view` addresses inside `dst`, which is
    // borrowed mutably, so it cannot alias the operands.
    unsafe { run((dst.as_mut_ptr(), dst_view), lhs, rhs, how) };
}

/// How [`run`] multiplies.
#[derive(Clone, Copy)]
struct How {
    /// Add onto `dst` instead of overwriting it.
    accumulate: bool,
    /// Split the work over rayon's threads.
    parallel: bool,
    precision: Precision,
    /// f32 products may take `kernels::panels` ([`own_f32_products`]).
    own_f32: bool,
}

/// Whether f32 products may take `kernels::panels` (on AVX-512F every product it pays for,
/// on AVX2 few tokens against a layer's weights) instead of `gemm`'s 8-lane kernel: read on
/// the calling thread, since [`super::with_previous_kernels`] is per thread.
fn own_f32_products() -> bool {
    panels::available() && !super::previous_kernels()
}

/// `lhs · rhs` as a new row-major `rows × cols` buffer, split over rayon's threads. `gemm`
/// writes every element without reading it, so the buffer is never zero-filled first.
///
/// Panics if a view does not fit its slice or the shapes disagree: both are programming errors.
pub fn product(
    lhs: (&[f32], View),
    rhs: (&[f32], View),
    (rows, cols): (usize, usize),
    precision: Precision,
) -> Vec<f32> {
    let how = How {
        accumulate: false,
        parallel: true,
        precision,
        own_f32: own_f32_products(),
    };
    // SAFETY: `run` with `accumulate` false writes every element of the view without reading
    // it (zeros when the inner dimension is 0).
    unsafe { new_product(rows, cols, |dst| run(dst, lhs, rhs, how)) }
}

/// [`product`] with the rows of `lhs` (and of the result) split into one run per rayon thread,
/// each multiplied by a single-threaded `gemm`, where that beats `gemm`'s own threading (see
/// [`split_rows_pays`]).
pub fn product_split_rows(
    lhs: (&[f32], View),
    rhs: (&[f32], View),
    (rows, cols): (usize, usize),
    precision: Precision,
) -> Vec<f32> {
    // SAFETY: as in `product`; the runs cover every row.
    unsafe {
        new_product(rows, cols, |dst| {
            run_split_rows(dst, lhs, rhs, false, precision)
        })
    }
}

/// [`matmul`] by `right`, an operand packed once for a bf16 engine (a layer's weights, a
/// head's keys) and used for many products.
///
/// Panics if a view does not fit its slice or the shapes disagree: both are programming errors.
pub fn matmul_packed(
    dst: (&mut [f32], View),
    lhs: (&[f32], View),
    right: &PackedRight,
    accumulate: bool,
    parallel: bool,
) {
    multiply_packed(dst, Left::Values(lhs.0, lhs.1), right, accumulate, parallel);
}

/// [`matmul_packed`] with the left operand packed once too: a convolution's weights, which
/// multiply every im2col tile.
///
/// Panics if a view does not fit its slice, the shapes disagree or the operands were packed
/// for different engines: all programming errors.
pub fn matmul_kept(
    dst: (&mut [f32], View),
    left: &PackedLeft,
    right: &PackedRight,
    accumulate: bool,
    parallel: bool,
) {
    multiply_packed(dst, Left::Kept(left), right, accumulate, parallel);
}

/// The checked front of [`run_packed`] for [`matmul_packed`] and [`matmul_kept`].
fn multiply_packed(
    (dst, dst_view): (&mut [f32], View),
    left: Left<'_>,
    right: &PackedRight,
    accumulate: bool,
    parallel: bool,
) {
    assert!(
        dst_view.extent() <= dst.len(),
        "matmul view exceeds its buffer"
    );
    // SAFETY: as in `matmul`.
    unsafe {
        run_packed(
            (dst.as_mut_ptr(), dst_view),
            left,
            right,
            accumulate,
            parallel,
        )
    };
}

/// [`product`] by `right`, a layer's weights packed once for a bf16 engine.
pub fn product_packed(lhs: (&[f32], View), right: &PackedRight, rows: usize) -> Vec<f32> {
    let cols = right.dims().1;
    let left = Left::Values(lhs.0, lhs.1);
    // SAFETY: as in `product`: without `accumulate` every element is written (zeros when the
    // inner dimension is 0).
    unsafe { new_product(rows, cols, |dst| run_packed(dst, left, right, false, true)) }
}

/// [`product_packed`] with the left operand kept packed too ([`matmul_kept`]).
pub fn product_kept(left: &PackedLeft, right: &PackedRight) -> Vec<f32> {
    let (rows, cols) = (left.dims().0, right.dims().1);
    let left = Left::Kept(left);
    // SAFETY: as in `product`: without `accumulate` every element is written (zeros when the
    // inner dimension is 0).
    unsafe { new_product(rows, cols, |dst| run_packed(dst, left, right, false, true)) }
}

/// A new row-major `rows × cols` buffer that `write` fills through a pointer and view.
///
/// # Safety
/// `write` must write every element the view addresses (it may not read them).
unsafe fn new_product(rows: usize, cols: usize, write: impl FnOnce((*mut f32, View))) -> Vec<f32> {
    let len = rows.checked_mul(cols).expect("product size overflows");
    let mut dst = Vec::with_capacity(len);
    // SAFETY: `dst` has room for the `rows × cols` values the view addresses and aliases
    // nothing; the caller vouches that `write` sets all `len` of them before `set_len`.
    unsafe {
        write((dst.as_mut_ptr(), View::rows(rows, cols, cols)));
        dst.set_len(len);
    }
    dst
}

/// [`matmul`] (threaded) with the rows split as in [`product_split_rows`].
pub fn matmul_split_rows(
    (dst, dst_view): (&mut [f32], View),
    lhs: (&[f32], View),
    rhs: (&[f32], View),
    accumulate: bool,
    precision: Precision,
) {
    assert!(
        dst_view.extent() <= dst.len(),
        "matmul view exceeds its buffer"
    );
    // SAFETY: as in `matmul`.
    unsafe {
        run_split_rows(
            (dst.as_mut_ptr(), dst_view),
            lhs,
            rhs,
            accumulate,
            precision,
        )
    };
}

/// Rows each thread needs before splitting pays.
const SPLIT_ROWS: usize = 256;

/// Whether a `rows × inner · inner × cols` product runs faster with its rows split over the
/// threads ([`product_split_rows`]) than with `gemm`'s own threading. Measured on 2-core Zen 4
/// (median of 15): 2048×1024·1024×256 4.98 against 5.89 ms, 512×1536·1536×384 2.89 against
/// 3.19, 2048×256·256×256 1.34 against 1.47; with 128 rows a thread or 5120 columns it lost
/// (each thread packs all of `rhs`).
pub fn split_rows_pays(rows: usize, cols: usize) -> bool {
    let threads = rayon::current_num_threads();
    threads > 1 && rows / threads >= SPLIT_ROWS && cols <= 2048
}

/// The products of a Winograd transform's positions, side by side: product `p` is `dst_p =
/// lhs_p · rhs_p` with `lhs` laid out (row, position, inner), `rhs` (inner, position, column) and
/// `dst` (row, position, column), for `(positions, rows, inner, cols)`.
///
/// All of them run as one parallel loop of single-threaded products, each position's columns
/// split into blocks where there are too few positions to keep every thread busy. Multiplied one
/// position at a time, each split over the threads by `gemm`, a layer paid two hand-overs
/// between the threads per position (a 3×3 layer 16 or 36 of them per image), and the waiting
/// thread went to sleep in between (see docs/PERFORMANCE.md).
///
/// Panics if a slice is shorter than its layout: a programming error.
pub fn position_products(
    dst: &mut [f32],
    lhs: &[f32],
    rhs: &[f32],
    (positions, rows, inner, cols): (usize, usize, usize, usize),
) {
    use rayon::prelude::*;
    assert!(
        dst.len() >= rows * positions * cols
            && lhs.len() >= rows * positions * inner
            && rhs.len() >= inner * positions * cols,
        "position products exceed their buffers"
    );
    let how = How {
        accumulate: false,
        parallel: false,
        precision: Precision::F32,
        own_f32: own_f32_products(),
    };
    if positions == 0 || cols == 0 || rows == 0 {
        return;
    }
    if inner == 0 {
        // No products: zeros (and no operand to slice per position).
        dst[..rows * positions * cols].fill(0.0);
        return;
    }
    let blocks = column_blocks(positions, cols, rayon::current_num_threads());
    let width = cols.div_ceil(blocks);
    let dst = Rows(dst.as_mut_ptr());
    (0..positions * blocks).into_par_iter().for_each(|task| {
        let (position, first) = (task / blocks, task % blocks * width);
        let width = width.min(cols.saturating_sub(first));
        if width == 0 {
            return;
        }
        let start = position * cols + first;
        let dst_view = View::rows(rows, width, positions * cols);
        let lhs = (
            &lhs[position * inner..],
            View::rows(rows, inner, positions * inner),
        );
        let rhs = (&rhs[start..], View::rows(inner, width, positions * cols));
        // SAFETY: the assert keeps the view inside `dst` (its last element is at most
        // `(rows − 1)·positions·cols + positions·cols − 1`); block `first..first + width` of
        // position `position` in each row is this task's alone, and `dst` is borrowed mutably.
        unsafe { run((dst.get().add(start), dst_view), lhs, rhs, how) };
    });
}

/// Blocks to split each product's columns into so that [`position_products`] has at least four
/// tasks a thread to balance, keeping blocks of at least [`FEWEST_BLOCK_COLUMNS`] columns.
fn column_blocks(positions: usize, cols: usize, threads: usize) -> usize {
    let wanted = (4 * threads).div_ceil(positions);
    wanted.min(cols / FEWEST_BLOCK_COLUMNS).max(1)
}

/// Narrower blocks pack a product's left operand again for too few columns.
const FEWEST_BLOCK_COLUMNS: usize = 64;

/// A pointer handed to rayon's threads, each of which writes its own rows (or blocks) through it.
#[derive(Clone, Copy)]
pub(super) struct Rows(pub(super) *mut f32);

// SAFETY: the runs that share it write disjoint elements.
unsafe impl Send for Rows {}
unsafe impl Sync for Rows {}

impl Rows {
    /// The pointer, read through a method so closures capture the whole `Send` wrapper rather
    /// than its raw-pointer field.
    pub(super) fn get(self) -> *mut f32 {
        self.0
    }
}

/// [`run`] over one run of rows per rayon thread, each single-threaded. The bf16 engines split
/// rows themselves after packing `rhs` once, so they take the threaded path.
///
/// # Safety
/// As for [`run`].
unsafe fn run_split_rows(
    (dst, dst_view): (*mut f32, View),
    (lhs, lhs_view): (&[f32], View),
    rhs: (&[f32], View),
    accumulate: bool,
    precision: Precision,
) {
    use rayon::prelude::*;
    // Each run multiplies single-threaded; a bf16 engine splits the rows itself.
    let how = How {
        accumulate,
        parallel: precision != Precision::F32,
        precision,
        own_f32: own_f32_products(),
    };
    if how.parallel {
        // SAFETY: passed on from the caller.
        unsafe { run((dst, dst_view), (lhs, lhs_view), rhs, how) };
        return;
    }
    let threads = rayon::current_num_threads().max(1);
    let per_run = dst_view.rows.div_ceil(threads).max(1);
    let dst = Rows(dst);
    (0..dst_view.rows.div_ceil(per_run))
        .into_par_iter()
        .for_each(|run_index| {
            let first = run_index * per_run;
            let rows = per_run.min(dst_view.rows - first);
            let dst_rows = View { rows, ..dst_view };
            let lhs_rows = View { rows, ..lhs_view };
            let lhs_first = first * lhs_view.row_stride;
            // SAFETY: rows `first..first + rows` of `dst` are this run's alone, inside what the
            // caller vouched for; `run` checks the operand views against their slices.
            unsafe {
                run(
                    (dst.get().add(first * dst_view.row_stride), dst_rows),
                    (lhs.get(lhs_first..).unwrap_or_default(), lhs_rows),
                    rhs,
                    how,
                )
            };
        });
}

/// `dst (+)= left · right` on the engine `right` (and a kept `left`) was packed for: the
/// emulation multiplies rounded values with the f32 `gemm` (bf16 products are exact in f32, so
/// it gives the hardware's numbers up to the order of the sums), AMX and AVX512-BF16 run
/// [`gemm_bf16::run`].
///
/// # Safety
/// As for [`run`].
unsafe fn run_packed(
    (dst, dst_view): (*mut f32, View),
    left: Left<'_>,
    right: &PackedRight,
    accumulate: bool,
    parallel: bool,
) {
    let ((m, inner), (k, n)) = (left.dims(), right.dims());
    assert!(
        inner == k && dst_view.rows == m && dst_view.cols == n,
        "matmul shapes disagree"
    );
    match left {
        Left::Values(lhs, lhs_view) => assert!(
            lhs_view.extent() <= lhs.len(),
            "matmul view exceeds its buffer"
        ),
        Left::Kept(kept) => assert!(
            kept.engine() == right.engine(),
            "operands packed for different engines"
        ),
    }
    if m == 0 || n == 0 {
        return;
    }
    let Some(rhs) = right.rounded() else {
        // SAFETY: the asserts checked the shapes and `lhs`; `dst` as vouched.
        unsafe { gemm_bf16::run((dst, dst_view), left, right, accumulate, parallel) };
        return;
    };
    let how = How {
        accumulate,
        parallel,
        precision: Precision::F32,
        own_f32: own_f32_products(),
    };
    match left {
        Left::Values(lhs, lhs_view) => {
            let (lhs, lhs_view) = gemm_bf16::rounded_copy(lhs, lhs_view);
            // SAFETY: the copy is read through the view it came with; `dst` as vouched.
            unsafe { run((dst, dst_view), (&lhs, lhs_view), rhs, how) };
        }
        Left::Kept(kept) => {
            let lhs = kept
                .rounded()
                .expect("operands packed for different engines");
            // SAFETY: `run` checks the kept view against its values; `dst` as vouched.
            unsafe { run((dst, dst_view), lhs, rhs, how) };
        }
    }
}

/// `gemm` (or a bf16 engine) on checked operand views into `dst`.
///
/// # Safety
/// `dst` must be valid for writes (and, when `accumulate`, reads) of every element `dst_view`
/// addresses, and must not overlap the operands.
unsafe fn run(
    (dst, dst_view): (*mut f32, View),
    (lhs, lhs_view): (&[f32], View),
    (rhs, rhs_view): (&[f32], View),
    how: How,
) {
    let How {
        accumulate,
        parallel,
        precision,
        own_f32,
    } = how;
    let (m, n, k) = (lhs_view.rows, rhs_view.cols, lhs_view.cols);
    assert!(
        rhs_view.rows == k && dst_view.rows == m && dst_view.cols == n,
        "matmul shapes disagree"
    );
    assert!(
        lhs_view.extent() <= lhs.len() && rhs_view.extent() <= rhs.len(),
        "matmul view exceeds its buffer"
    );
    if m == 0 || n == 0 {
        return;
    }
    match precision {
        Precision::F32 => {}
        Precision::Bf16(engine) if engine.is_hardware() && dst_view.is_column_major() => {
            // The engines write whole rows of sums; a column-major output (an image's planes)
            // would take each sum scattered on its own. Its transpose is row-major:
            // dstᵀ = rhsᵀ · lhsᵀ.
            let transposed = (
                (dst, dst_view.t()),
                (rhs, rhs_view.t()),
                (lhs, lhs_view.t()),
            );
            // SAFETY: the same elements, read and written through transposed views.
            unsafe { run(transposed.0, transposed.1, transposed.2, how) };
            return;
        }
        Precision::Bf16(engine) => {
            let right = PackedRight::new(engine, rhs, rhs_view);
            // SAFETY: passed on from the caller; the asserts checked `lhs`.
            unsafe {
                run_packed(
                    (dst, dst_view),
                    Left::Values(lhs, lhs_view),
                    &right,
                    accumulate,
                    parallel,
                )
            };
            return;
        }
    }
    if own_f32 && panels::pays(dst_view, lhs_view, rhs_view) {
        // SAFETY: passed on from the caller; the asserts checked the operands.
        unsafe {
            panels::multiply(
                (dst, dst_view),
                (lhs, lhs_view),
                (rhs, rhs_view),
                accumulate,
                parallel,
            )
        };
        return;
    }
    let threads = rayon::current_num_threads();
    let parallelism = if parallel && threads > 1 {
        Parallelism::Rayon(threads)
    } else {
        Parallelism::None
    };
    // SAFETY: the asserts keep every element the operand views address inside their slices;
    // the caller vouches for `dst`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            dst_view.col_stride as isize,
            dst_view.row_stride as isize,
            accumulate,
            lhs.as_ptr(),
            lhs_view.col_stride as isize,
            lhs_view.row_stride as isize,
            rhs.as_ptr(),
            rhs_view.col_stride as isize,
            rhs_view.row_stride as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(count: usize, seed: usize) -> Vec<f32> {
        (0..count)
            .map(|index| ((index * seed % 97) as f32 - 48.0) * 0.03)
            .collect()
    }

    fn close(a: &[f32], b: &[f32]) -> bool {
        a.len() == b.len()
            && a.iter()
                .zip(b)
                .all(|(a, b)| (a - b).abs() <= 1e-4 * (1.0 + b.abs()))
    }

    /// Rows split over the threads give `gemm`'s own threaded product: a row count that does
    /// not divide evenly, a transposed left operand, and adding onto a buffer.
    #[test]
    fn split_rows_match_the_threaded_product() {
        let (rows, inner, cols) = (613, 37, 29);
        let lhs = values(rows * inner, 31);
        let rhs = values(inner * cols, 17);
        let rhs_view = View::transposed(inner, cols, inner);
        let f32 = Precision::F32;
        let lhs_rows = (&lhs[..], View::rows(rows, inner, inner));
        let whole = product(lhs_rows, (&rhs, rhs_view), (rows, cols), f32);
        let split = product_split_rows(lhs_rows, (&rhs, rhs_view), (rows, cols), f32);
        assert!(close(&split, &whole));
        // lhs read through a transposed view (as a 1×1 convolution reads an image), added onto
        // a filled buffer.
        let lhs_view = View::transposed(rows, inner, rows);
        let start = values(rows * cols, 7);
        let (mut threaded, mut split) = (start.clone(), start);
        let dst_view = View::rows(rows, cols, cols);
        matmul(
            (&mut threaded, dst_view),
            (&lhs, lhs_view),
            (&rhs, rhs_view),
            true,
            true,
            f32,
        );
        matmul_split_rows(
            (&mut split, dst_view),
            (&lhs, lhs_view),
            (&rhs, rhs_view),
            true,
            f32,
        );
        assert!(close(&split, &threaded));
    }

    /// Splitting takes products with enough rows for every thread and not too many columns.
    #[test]
    fn splitting_rows_needs_rows_for_every_thread() {
        let threads = rayon::current_num_threads();
        assert!(!split_rows_pays(SPLIT_ROWS * threads - 1, 256));
        assert!(!split_rows_pays(SPLIT_ROWS * threads, 5120));
        assert_eq!(split_rows_pays(SPLIT_ROWS * threads, 256), threads > 1);
    }

    /// Every position's product, whether whole or split into column blocks, matches the
    /// definition; elements outside the products' layout are left alone.
    #[test]
    fn position_products_match_the_definition() {
        // The last: no input channels, so every product is zeros.
        let cases = [
            (6, 37, 19, 150),
            (1, 5, 3, 200),
            (36, 8, 16, 9),
            (4, 20, 0, 40),
        ];
        for (positions, rows, inner, cols) in cases {
            let lhs = values(rows * positions * inner, 31);
            let rhs = values(inner * positions * cols, 17);
            let len = rows * positions * cols;
            let mut dst = vec![f32::NAN; len + 3];
            position_products(&mut dst, &lhs, &rhs, (positions, rows, inner, cols));
            let mut expected = vec![0f32; len];
            for p in 0..positions {
                for r in 0..rows {
                    for c in 0..cols {
                        expected[(r * positions + p) * cols + c] = (0..inner)
                            .map(|i| {
                                lhs[(r * positions + p) * inner + i]
                                    * rhs[(i * positions + p) * cols + c]
                            })
                            .sum();
                    }
                }
            }
            assert!(close(&dst[..len], &expected), "{positions} positions");
            assert!(dst[len..].iter().all(|value| value.is_nan()));
        }
        // Blocks: a task each, as many tasks as four a thread wants, no narrower than the floor.
        assert_eq!(column_blocks(6, 150, 2), 2);
        assert_eq!(column_blocks(36, 4096, 2), 1);
        assert_eq!(column_blocks(6, 100, 16), 1);
        assert_eq!(column_blocks(6, 4096, 16), 11);
    }
}

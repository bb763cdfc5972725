//! A bounds-checked front to the `gemm` crate for strided f32 matrices.

use gemm::Parallelism;

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

    /// One past the last element the view touches.
    fn extent(&self) -> usize {
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
) {
    assert!(
        dst_view.extent() <= dst.len(),
        "matmul view exceeds its buffer"
    );
    // SAFETY: the assert keeps every element `dst_view` addresses inside `dst`, which is
    // borrowed mutably, so it cannot alias the operands.
    unsafe { run((dst.as_mut_ptr(), dst_view), lhs, rhs, accumulate, parallel) };
}

/// `lhs · rhs` as a new row-major `rows × cols` buffer, split over rayon's threads. `gemm`
/// writes every element without reading it, so the buffer is never zero-filled first.
///
/// Panics if a view does not fit its slice or the shapes disagree: both are programming errors.
pub fn product(lhs: (&[f32], View), rhs: (&[f32], View), rows: usize, cols: usize) -> Vec<f32> {
    let len = rows.checked_mul(cols).expect("product size overflows");
    let mut dst = Vec::with_capacity(len);
    let dst_view = View::rows(rows, cols, cols);
    // SAFETY: `dst` has room for the `rows × cols` values `dst_view` addresses and aliases
    // nothing; with `accumulate` false `gemm` writes each of them without reading it (zeros
    // when the inner dimension is 0), so all `len` are set before `set_len`.
    unsafe {
        run((dst.as_mut_ptr(), dst_view), lhs, rhs, false, true);
        dst.set_len(len);
    }
    dst
}

/// `gemm` on checked operand views into `dst`.
///
/// # Safety
/// `dst` must be valid for writes (and, when `accumulate`, reads) of every element `dst_view`
/// addresses, and must not overlap the operands.
unsafe fn run(
    (dst, dst_view): (*mut f32, View),
    (lhs, lhs_view): (&[f32], View),
    (rhs, rhs_view): (&[f32], View),
    accumulate: bool,
    parallel: bool,
) {
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

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
        dst_view.extent() <= dst.len()
            && lhs_view.extent() <= lhs.len()
            && rhs_view.extent() <= rhs.len(),
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
    // SAFETY: the asserts above keep every element each view addresses inside its slice, and
    // `dst` is borrowed mutably, so it cannot alias `lhs` or `rhs`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
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

/// `lhs · rhs` as a new row-major `rows × cols` buffer, split over rayon's threads. `gemm`
/// writes every element without reading it, so the buffer is never zero-filled first.
///
/// Panics if a view does not fit its slice or the shapes disagree: both are programming errors.
pub fn product(
    (lhs, lhs_view): (&[f32], View),
    (rhs, rhs_view): (&[f32], View),
    rows: usize,
    cols: usize,
) -> Vec<f32> {
    let k = lhs_view.cols;
    assert!(
        lhs_view.rows == rows && rhs_view.cols == cols && rhs_view.rows == k,
        "product shapes disagree"
    );
    assert!(
        lhs_view.extent() <= lhs.len() && rhs_view.extent() <= rhs.len(),
        "product view exceeds its buffer"
    );
    let len = rows.checked_mul(cols).expect("product size overflows");
    let mut dst = Vec::with_capacity(len);
    if len == 0 {
        return dst;
    }
    let threads = rayon::current_num_threads();
    let parallelism = if threads > 1 {
        Parallelism::Rayon(threads)
    } else {
        Parallelism::None
    };
    // SAFETY: the asserts keep every element the operand views address inside their slices;
    // `dst` has room for `rows × cols` values at unit column stride and `cols` row stride, and
    // with `read_dst` false `gemm` writes each of them (zeros when `k` is 0) before `set_len`.
    unsafe {
        gemm::gemm(
            rows,
            cols,
            k,
            dst.as_mut_ptr(),
            1,
            cols as isize,
            false,
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
        dst.set_len(len);
    }
    dst
}

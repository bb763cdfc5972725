//! f32 products on AVX-512 for Winograd's position products: 8 rows × 32 columns of sums in 16
//! registers, the left operand (a layer's transformed weights) read in place one broadcast a
//! row and step, the right one packed into panels of 32 columns.
//!
//! `gemm`'s kernels here are its AVX2 ones (its `x86-v4` build lost on Zen 4, see
//! docs/PERFORMANCE.md), which use half of a 512-bit FMA unit. On Zen 4, where AVX-512 runs as
//! two 256-bit halves, this kernel is level with them or a little ahead; on CPUs with full
//! 512-bit FMA units it does twice the multiply-adds an instruction.
//!
//! Each sum adds its products in inner order, one FMA at a time, so the result is the same on
//! every run and thread count (it differs from `gemm`'s by reassociation only).

use std::cell::RefCell;

/// Columns of one panel: two 16-lane vectors.
const PANEL: usize = 32;
/// Rows of sums one kernel call holds (16 of the 32 vector registers).
#[cfg(target_arch = "x86_64")]
const ROWS: usize = 8;

/// Whether [`multiply`] runs on this CPU.
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        super::exp::has_avx512()
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// A row-major matrix inside a slice: `rows × cols`, rows `stride` apart.
#[derive(Clone, Copy)]
pub struct Strided<'a> {
    pub values: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub stride: usize,
}

impl Strided<'_> {
    /// Whether every element lies inside `values`.
    fn fits(&self) -> bool {
        self.rows == 0
            || self.cols == 0
            || (self.cols <= self.stride || self.rows == 1)
                && (self.rows - 1) * self.stride + self.cols <= self.values.len()
    }
}

thread_local! {
    /// The packed right operand, kept by each thread at the largest size it has needed (a few
    /// MB at most: a layer's channels by one block of Winograd tiles).
    static PANELS: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// `dst = lhs · rhs` with `dst` `lhs.rows × rhs.cols`, rows `dst_stride` apart, written without
/// being read. Single-threaded: the callers run it on each of rayon's threads, each on its own
/// elements of one interleaved output (a Winograd position's columns), hence the pointer.
///
/// Panics if an operand does not fit its slice, the shapes disagree or the CPU lacks AVX-512F
/// ([`available`]): all programming errors.
///
/// # Safety
/// `dst` addresses `lhs.rows` rows of `rhs.cols` elements, `dst_stride` apart, that nothing
/// else reads or writes during the call.
pub unsafe fn multiply((dst, dst_stride): (*mut f32, usize), lhs: Strided<'_>, rhs: Strided<'_>) {
    assert_eq!(lhs.cols, rhs.rows, "inner dimensions differ");
    assert!(
        lhs.fits() && rhs.fits(),
        "a product's operand exceeds its buffer"
    );
    assert!(
        available(),
        "the AVX-512 product runs only where available() says"
    );
    if lhs.rows == 0 || rhs.cols == 0 {
        return;
    }
    PANELS.with_borrow_mut(|panels| {
        pack(rhs, panels);
        // SAFETY: passed on from the caller.
        unsafe { multiply_packed((dst, dst_stride), lhs, panels, rhs.cols) };
    });
}

/// [`multiply`] with `rhs` already packed; its arguments checked there.
#[cfg(not(target_arch = "x86_64"))]
unsafe fn multiply_packed(_: (*mut f32, usize), _: Strided<'_>, _: &[f32], _: usize) {
    unreachable!("available() is false off x86-64")
}

/// [`multiply`] with `rhs` already packed; its arguments checked there.
///
/// # Safety
/// As for [`multiply`].
#[cfg(target_arch = "x86_64")]
unsafe fn multiply_packed(
    (dst, dst_stride): (*mut f32, usize),
    lhs: Strided<'_>,
    panels: &[f32],
    cols: usize,
) {
    let (rows, inner) = (lhs.rows, lhs.cols);
    for (panel, first) in (0..cols).step_by(PANEL).enumerate() {
        let width = PANEL.min(cols - first);
        let panel = &panels[panel * inner * PANEL..][..inner * PANEL];
        for top in (0..rows).step_by(ROWS) {
            let tile = x86::Tile {
                lhs: lhs.values[top * lhs.stride..].as_ptr(),
                lhs_stride: lhs.stride,
                panel: panel.as_ptr(),
                inner,
                // SAFETY: inside the rows and columns the caller vouched for.
                out: unsafe { dst.add(top * dst_stride + first) },
                out_stride: dst_stride,
                width,
            };
            // SAFETY: `available` checked AVX-512F. The tile reads rows `top..top + live` of
            // `lhs` (columns `..inner`, inside the slice by `fits`) and the whole panel, and
            // writes `width` columns of the same rows of `dst`, which the caller vouched for.
            unsafe { x86::tile(tile, ROWS.min(rows - top)) };
        }
    }
}

/// `rhs` as panels of 32 columns, each `inner` rows of 32 values back to back, at the start of
/// `panels` (grown when short, never zero-filled first); the last panel's missing columns are
/// zeros.
fn pack(rhs: Strided<'_>, panels: &mut Vec<f32>) {
    let (inner, cols) = (rhs.rows, rhs.cols);
    let len = cols.div_ceil(PANEL) * inner * PANEL;
    if panels.len() < len {
        panels.resize(len, 0.0);
    }
    for (panel, out) in panels[..len].chunks_exact_mut(inner * PANEL).enumerate() {
        let first = panel * PANEL;
        let width = PANEL.min(cols - first);
        for (row, out) in out.chunks_exact_mut(PANEL).enumerate() {
            let start = row * rhs.stride + first;
            out[..width].copy_from_slice(&rhs.values[start..start + width]);
            out[width..].fill(0.0);
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
        pub lhs_stride: usize,
        pub panel: *const f32,
        pub inner: usize,
        pub out: *mut f32,
        pub out_stride: usize,
        /// Columns stored (≤ 32); the panel's zero columns beyond are dropped.
        pub width: usize,
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
            for step in 0..tile.inner {
                let panel = tile.panel.add(step * PANEL);
                let (left, right) = (_mm512_loadu_ps(panel), _mm512_loadu_ps(panel.add(16)));
                for (row, sums) in sums.iter_mut().enumerate() {
                    let value = _mm512_set1_ps(*tile.lhs.add(row * tile.lhs_stride + step));
                    sums[0] = _mm512_fmadd_ps(value, left, sums[0]);
                    sums[1] = _mm512_fmadd_ps(value, right, sums[1]);
                }
            }
            let (first, second) = lane_masks(tile.width);
            for (row, sums) in sums.iter().enumerate() {
                let out = tile.out.add(row * tile.out_stride);
                _mm512_mask_storeu_ps(out, first, sums[0]);
                _mm512_mask_storeu_ps(out.add(16), second, sums[1]);
            }
        }
    }

    /// Store masks for the panel's two vectors when `width` (≤ 32) columns are kept.
    fn lane_masks(width: usize) -> (__mmask16, __mmask16) {
        let mask = |lanes: usize| ((1u32 << lanes.min(16)) - 1) as __mmask16;
        (mask(width), mask(width.saturating_sub(16)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `lhs · rhs` in f64, row-major and dense.
    fn reference(lhs: &[f32], rhs: &[f32], (rows, inner, cols): (usize, usize, usize)) -> Vec<f64> {
        let mut out = vec![0.0; rows * cols];
        for row in 0..rows {
            for step in 0..inner {
                let left = lhs[row * inner + step] as f64;
                for col in 0..cols {
                    out[row * cols + col] += left * rhs[step * cols + col] as f64;
                }
            }
        }
        out
    }

    fn values(len: usize, seed: usize) -> Vec<f32> {
        (0..len)
            .map(|index| ((index * 37 + seed * 11) % 23) as f32 / 11.0 - 1.0)
            .collect()
    }

    #[test]
    fn products_match_f64_at_every_edge() {
        if !available() {
            eprintln!("no AVX-512F here: the kernel is not built for this CPU");
            return;
        }
        // Row counts around the 8-row tile, column counts around the 32-column panel, and
        // strided operands and output (a Winograd position inside its interleaved layout).
        for &(rows, inner, cols) in &[
            (1, 1, 1),
            (7, 5, 31),
            (8, 16, 32),
            (9, 33, 33),
            (17, 64, 70),
            (24, 3, 96),
        ] {
            let pad = 3;
            let lhs = values(rows * (inner + pad), 1);
            let rhs = values(inner * (cols + pad), 2);
            let dense_lhs: Vec<f32> = (0..rows)
                .flat_map(|row| lhs[row * (inner + pad)..][..inner].to_vec())
                .collect();
            let dense_rhs: Vec<f32> = (0..inner)
                .flat_map(|row| rhs[row * (cols + pad)..][..cols].to_vec())
                .collect();
            let sentinel = 1234.5;
            let mut dst = vec![sentinel; rows * (cols + pad)];
            // SAFETY: `dst` holds `rows` rows of `cols + pad`, and only this call uses it.
            unsafe {
                multiply(
                    (dst.as_mut_ptr(), cols + pad),
                    Strided {
                        values: &lhs,
                        rows,
                        cols: inner,
                        stride: inner + pad,
                    },
                    Strided {
                        values: &rhs,
                        rows: inner,
                        cols,
                        stride: cols + pad,
                    },
                )
            };
            let expected = reference(&dense_lhs, &dense_rhs, (rows, inner, cols));
            for row in 0..rows {
                for col in 0..cols + pad {
                    let got = dst[row * (cols + pad) + col];
                    if col >= cols {
                        assert_eq!(got, sentinel, "{rows}×{inner}×{cols}: wrote past the row");
                        continue;
                    }
                    let want = expected[row * cols + col];
                    assert!(
                        (got as f64 - want).abs() <= 1e-5 * (1.0 + want.abs()),
                        "{rows}×{inner}×{cols} at ({row}, {col}): {got} against {want}"
                    );
                }
            }
        }
    }

    #[test]
    #[should_panic(expected = "exceeds its buffer")]
    fn a_short_operand_is_refused() {
        let (lhs, rhs) = (values(4, 1), values(3, 2));
        let mut dst = [0.0; 4];
        let operand = |values| Strided {
            values,
            rows: 2,
            cols: 2,
            stride: 2,
        };
        // SAFETY: `dst` holds the 2×2 output; the call refuses `rhs` first.
        unsafe { multiply((dst.as_mut_ptr(), 2), operand(&lhs), operand(&rhs)) };
    }
}

//! Products with bf16 operands and f32 sums: the CPU's opt-in fast mode (`--dtype bf16`).
//!
//! Both operands are rounded to bf16 (to nearest, ties to even), as PyTorch's bf16 autocast
//! rounds a matmul's or convolution's inputs; every sum stays f32. With AMX the products run
//! on its tiles (`tdpbf16ps`, 16×16 outputs from 16×32 by 32×16 per instruction), with
//! AVX512-BF16 on `vdpbf16ps`. Elsewhere the rounded operands go through the f32 `gemm`, which
//! gives the same numbers up to the order of the sums: bf16 products are exact in f32. That
//! emulation is what proves the mode's drift on any CPU and what the hardware kernels are
//! tested against.

use std::sync::OnceLock;

use super::gemm::{Rows, View};

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

    /// Whether convolutions leave Winograd and the direct kernel for bf16 im2col products.
    /// AMX multiplies bf16 an order of magnitude faster than f32 FMA, so its products beat
    /// both. `vdpbf16ps` does only twice the multiply-adds of an f32 FMA, which F(4×4)'s 4×
    /// fewer multiplies beat (Zen 3: F(4×4) ran [2,320,256,16] at 425 effective GFLOP/s, the
    /// f32 reference product at 107–173), so with AVX512-BF16 convolutions keep their f32 paths
    /// and bf16 takes the products f32 also hands to `gemm`. The emulation follows AMX, whose
    /// numbers the tests prove.
    pub fn convolves_in_bf16(self) -> bool {
        self != Engine::Avx512
    }
}

/// The hardware engines this CPU runs, fastest first.
pub fn available() -> Vec<Engine> {
    let mut engines = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        if x86::amx_usable() {
            engines.push(Engine::Amx);
        }
        if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bf16") {
            engines.push(Engine::Avx512);
        }
    }
    engines
}

/// Rounds `value` to the nearest bf16, ties to even, as bits; a NaN stays a (quiet) NaN.
pub fn round(value: f32) -> u16 {
    let bits = value.to_bits();
    if value.is_nan() {
        return (bits >> 16) as u16 | 0x0040;
    }
    let tie_to_even = 0x7fff + ((bits >> 16) & 1);
    (bits.wrapping_add(tie_to_even) >> 16) as u16
}

/// The f32 a bf16 stands for.
pub fn widen(half: u16) -> f32 {
    f32::from_bits(u32::from(half) << 16)
}

/// `value` rounded to the nearest bf16, as an f32.
pub fn rounded(value: f32) -> f32 {
    widen(round(value))
}

/// Rows and columns of the output block one kernel call computes: 2×2 AMX tiles.
const BLOCK: usize = 32;
/// Columns of one AMX B tile, or of one 512-bit vector of f32 sums.
const LANES: usize = 16;
/// Inner-dimension elements one AMX tile row holds (64 bytes of bf16).
const DEPTH_STEP: usize = 32;

/// A left operand as row-major bf16 rows, padded with zeros to whole blocks.
struct LeftRows {
    data: Vec<u16>,
    /// Inner dimension padded to [`DEPTH_STEP`].
    depth: usize,
}

impl LeftRows {
    /// Rows `first..first + rows` of the `m × k` matrix `lhs`.
    fn pack(lhs: &[f32], view: View, first: usize, rows: usize) -> Self {
        let depth = view.cols.div_ceil(DEPTH_STEP) * DEPTH_STEP;
        let mut data = vec![0u16; rows.div_ceil(BLOCK) * BLOCK * depth];
        for row in 0..rows {
            let packed = &mut data[row * depth..][..view.cols];
            let start = (first + row) * view.row_stride;
            for (col, slot) in packed.iter_mut().enumerate() {
                *slot = round(lhs[start + col * view.col_stride]);
            }
        }
        Self { data, depth }
    }
}

/// A right operand in the layout AMX's B tiles and `vdpbf16ps` read: for each run of
/// [`LANES`] columns, for each pair of inner elements, the pair of every column side by side
/// (64 bytes). Columns are padded to whole blocks, the inner dimension to [`DEPTH_STEP`].
struct RightPairs {
    data: Vec<u16>,
    depth: usize,
}

impl RightPairs {
    fn pack(rhs: &[f32], view: View) -> Self {
        let depth = view.rows.div_ceil(DEPTH_STEP) * DEPTH_STEP;
        let runs = view.cols.div_ceil(BLOCK) * (BLOCK / LANES);
        let mut data = vec![0u16; runs * depth * LANES];
        for col in 0..view.cols {
            let run = &mut data[(col / LANES) * depth * LANES..][..depth * LANES];
            let lane = col % LANES;
            for inner in 0..view.rows {
                let value = rhs[inner * view.row_stride + col * view.col_stride];
                run[(inner / 2) * 2 * LANES + lane * 2 + inner % 2] = round(value);
            }
        }
        Self { data, depth }
    }

    /// The packed run holding columns `first..first + LANES`.
    fn run(&self, first: usize) -> &[u16] {
        &self.data[(first / LANES) * self.depth * LANES..][..self.depth * LANES]
    }
}

/// `dst = lhs · rhs` (or `+=` when `accumulate`) on a hardware `engine`, splitting the rows
/// over rayon's threads when `parallel`.
///
/// # Safety
/// As for the f32 product: `dst` must be valid for writes (and, when `accumulate`, reads) of
/// every element `dst_view` addresses and must not overlap the operands. The operand views
/// must fit their slices (the caller checked them).
pub(super) unsafe fn run(
    engine: Engine,
    (dst, dst_view): (*mut f32, View),
    (lhs, lhs_view): (&[f32], View),
    (rhs, rhs_view): (&[f32], View),
    accumulate: bool,
    parallel: bool,
) {
    use rayon::prelude::*;
    let right = RightPairs::pack(rhs, rhs_view);
    let blocks = dst_view.rows.div_ceil(BLOCK);
    let threads = if parallel {
        rayon::current_num_threads().max(1)
    } else {
        1
    };
    // Each task packs its own rows of `lhs`, so they stay in cache for every column block.
    let per_task = blocks.div_ceil(threads).max(1);
    let dst = Rows(dst);
    let task = |index: usize| {
        let first = index * per_task * BLOCK;
        let rows = (per_task * BLOCK).min(dst_view.rows - first);
        let left = LeftRows::pack(lhs, lhs_view, first, rows);
        let mut sums = [0f32; BLOCK * BLOCK];
        let _tiles = (engine == Engine::Amx).then(x86::Tiles::configure);
        for block_row in (0..rows).step_by(BLOCK) {
            let a = &left.data[block_row * left.depth..][..BLOCK * left.depth];
            for block_col in (0..dst_view.cols).step_by(BLOCK) {
                let (b0, b1) = (right.run(block_col), right.run(block_col + LANES));
                // SAFETY: `a` holds BLOCK rows of `depth` values, `b0` and `b1` `depth` pairs
                // of LANES columns each; the engine was detected on this CPU.
                unsafe { x86::block(engine, a, left.depth, (b0, b1), &mut sums) };
                let valid_rows = BLOCK.min(rows - block_row);
                let valid_cols = BLOCK.min(dst_view.cols - block_col);
                for (row, sums) in sums.chunks_exact(BLOCK).take(valid_rows).enumerate() {
                    let row_start = (first + block_row + row) * dst_view.row_stride;
                    for (col, &sum) in sums[..valid_cols].iter().enumerate() {
                        let offset = row_start + (block_col + col) * dst_view.col_stride;
                        // SAFETY: the element is inside `dst_view`, which the caller vouches
                        // for; tasks write disjoint rows.
                        unsafe {
                            let slot = dst.get().add(offset);
                            *slot = if accumulate { *slot + sum } else { sum };
                        }
                    }
                }
            }
        }
    };
    let tasks = blocks.div_ceil(per_task);
    if tasks > 1 {
        (0..tasks).into_par_iter().for_each(task);
    } else if tasks == 1 {
        task(0);
    }
}

/// Copies of the operands rounded to bf16, as compact row-major f32 matrices: what the f32
/// `gemm` multiplies to emulate the mode.
pub(super) fn rounded_copy(values: &[f32], view: View) -> Vec<f32> {
    let mut copy = Vec::with_capacity(view.rows * view.cols);
    for row in 0..view.rows {
        let start = row * view.row_stride;
        copy.extend((0..view.cols).map(|col| rounded(values[start + col * view.col_stride])));
    }
    copy
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::asm;
    use std::arch::x86_64::*;

    use super::{BLOCK, DEPTH_STEP, Engine, LANES};

    /// Whether the CPU has AMX-TILE and AMX-BF16 and the OS lets this process use the tiles.
    pub fn amx_usable() -> bool {
        // CPUID leaf 7, subleaf 0: structured extended features.
        let leaf7 = __cpuid_count(7, 0);
        let amx_bf16 = leaf7.edx & (1 << 22) != 0;
        let amx_tile = leaf7.edx & (1 << 24) != 0;
        amx_bf16 && amx_tile && tile_data_permitted()
    }

    /// Linux keeps AMX's 8 KiB of tile state off until a process asks for it.
    #[cfg(target_os = "linux")]
    fn tile_data_permitted() -> bool {
        const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
        const XFEATURE_XTILEDATA: libc::c_long = 18;
        // SAFETY: arch_prctl with these arguments only changes this process's permissions.
        unsafe {
            libc::syscall(
                libc::SYS_arch_prctl,
                ARCH_REQ_XCOMP_PERM,
                XFEATURE_XTILEDATA,
            ) == 0
        }
    }

    #[cfg(not(target_os = "linux"))]
    fn tile_data_permitted() -> bool {
        false
    }

    /// This thread's tile configuration, released when dropped.
    pub struct Tiles;

    impl Tiles {
        /// Eight tiles of 16 rows × 64 bytes: four of sums, two of A, two of B.
        pub fn configure() -> Tiles {
            #[repr(C, align(64))]
            struct Config([u8; 64]);
            let mut config = Config([0; 64]);
            config.0[0] = 1; // palette 1
            for tile in 0..8 {
                config.0[16 + 2 * tile] = 64; // bytes a row (little-endian u16)
                config.0[48 + tile] = 16; // rows
            }
            // SAFETY: only built where `amx_usable` held; the config is a valid palette-1
            // layout, read before this returns.
            unsafe {
                asm!("ldtilecfg [{}]", in(reg) config.0.as_ptr(), options(nostack, readonly))
            };
            Tiles
        }
    }

    impl Drop for Tiles {
        fn drop(&mut self) {
            // SAFETY: releases the configuration `configure` loaded on this thread.
            unsafe { asm!("tilerelease", options(nostack, nomem)) };
        }
    }

    /// `sums` (BLOCK × BLOCK, row-major) = `a` (BLOCK rows of `depth`) · the two column runs.
    ///
    /// # Safety
    /// `engine` must run on this CPU (and for AMX, [`Tiles::configure`] be live on this
    /// thread); the slices must be as long as described.
    pub unsafe fn block(
        engine: Engine,
        a: &[u16],
        depth: usize,
        (b0, b1): (&[u16], &[u16]),
        sums: &mut [f32; BLOCK * BLOCK],
    ) {
        assert!(a.len() >= BLOCK * depth && b0.len() >= depth * LANES && b1.len() >= depth * LANES);
        match engine {
            // SAFETY: passed on from the caller.
            Engine::Amx => unsafe { amx(a, depth, (b0, b1), sums) },
            Engine::Avx512 => unsafe { avx512(a, depth, (b0, b1), sums) },
            Engine::Emulated => unreachable!("the emulation multiplies through the f32 gemm"),
        }
    }

    /// Four tiles of sums (rows 0–15 / 16–31 × columns 0–15 / 16–31), each step loading two A
    /// tiles (16 rows × 32 inner) and two B tiles (16 inner pairs × 16 columns).
    unsafe fn amx(a: &[u16], depth: usize, (b0, b1): (&[u16], &[u16]), sums: &mut [f32]) {
        let a = a.as_ptr();
        let a_stride = depth * 2;
        // SAFETY (all blocks below): the pointers stay inside the slices `block` checked;
        // the tiles were configured by the caller.
        unsafe {
            asm!(
                "tilezero tmm0",
                "tilezero tmm1",
                "tilezero tmm2",
                "tilezero tmm3",
                options(nostack, nomem)
            );
            for step in 0..depth / DEPTH_STEP {
                asm!(
                    "tileloadd tmm4, [{a0} + {a_stride}*1]",
                    "tileloadd tmm5, [{a1} + {a_stride}*1]",
                    "tileloadd tmm6, [{b0} + {b_stride}*1]",
                    "tileloadd tmm7, [{b1} + {b_stride}*1]",
                    "tdpbf16ps tmm0, tmm4, tmm6",
                    "tdpbf16ps tmm1, tmm4, tmm7",
                    "tdpbf16ps tmm2, tmm5, tmm6",
                    "tdpbf16ps tmm3, tmm5, tmm7",
                    a0 = in(reg) a.add(step * DEPTH_STEP),
                    a1 = in(reg) a.add(LANES * depth + step * DEPTH_STEP),
                    a_stride = in(reg) a_stride,
                    b0 = in(reg) b0.as_ptr().add(step * DEPTH_STEP * LANES),
                    b1 = in(reg) b1.as_ptr().add(step * DEPTH_STEP * LANES),
                    b_stride = in(reg) 2 * LANES * 2,
                    options(nostack, readonly)
                );
            }
            let c = sums.as_mut_ptr();
            asm!(
                "tilestored [{c00} + {stride}*1], tmm0",
                "tilestored [{c01} + {stride}*1], tmm1",
                "tilestored [{c10} + {stride}*1], tmm2",
                "tilestored [{c11} + {stride}*1], tmm3",
                c00 = in(reg) c,
                c01 = in(reg) c.add(LANES),
                c10 = in(reg) c.add(LANES * BLOCK),
                c11 = in(reg) c.add(LANES * BLOCK + LANES),
                stride = in(reg) BLOCK * 4,
                options(nostack)
            );
        }
    }

    /// Eight rows at a time: 16 vectors of sums, each inner pair one broadcast of a row's pair
    /// against the two column runs.
    #[target_feature(enable = "avx512f,avx512bf16")]
    unsafe fn avx512(a: &[u16], depth: usize, (b0, b1): (&[u16], &[u16]), sums: &mut [f32]) {
        const ROWS: usize = 8;
        let (a, b0, b1) = (a.as_ptr(), b0.as_ptr(), b1.as_ptr());
        for first in (0..BLOCK).step_by(ROWS) {
            let mut acc = [[_mm512_setzero_ps(); 2]; ROWS];
            for pair in 0..depth / 2 {
                // SAFETY: `block` checked that both runs hold `depth` pairs of LANES columns
                // and `a` BLOCK rows of `depth`; the transmutes reinterpret whole vectors.
                unsafe {
                    let x0 = std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(
                        b0.add(pair * 2 * LANES).cast(),
                    ));
                    let x1 = std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(
                        b1.add(pair * 2 * LANES).cast(),
                    ));
                    for (row, acc) in acc.iter_mut().enumerate() {
                        let at = a.add((first + row) * depth + pair * 2);
                        let both = at.cast::<i32>().read_unaligned();
                        let pairs =
                            std::mem::transmute::<__m512i, __m512bh>(_mm512_set1_epi32(both));
                        acc[0] = _mm512_dpbf16_ps(acc[0], pairs, x0);
                        acc[1] = _mm512_dpbf16_ps(acc[1], pairs, x1);
                    }
                }
            }
            for (row, acc) in acc.iter().enumerate() {
                let out = &mut sums[(first + row) * BLOCK..][..BLOCK];
                // SAFETY: `out` holds two vectors of f32.
                unsafe {
                    _mm512_storeu_ps(out.as_mut_ptr(), acc[0]);
                    _mm512_storeu_ps(out.as_mut_ptr().add(LANES), acc[1]);
                }
            }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod x86 {
    use super::{BLOCK, Engine};

    pub struct Tiles;

    impl Tiles {
        pub fn configure() -> Tiles {
            unreachable!("AMX is x86-64 only")
        }
    }

    pub unsafe fn block(
        _: Engine,
        _: &[u16],
        _: usize,
        _: (&[u16], &[u16]),
        _: &mut [f32; BLOCK * BLOCK],
    ) {
        unreachable!("the bf16 hardware engines are x86-64 only")
    }
}

#[cfg(test)]
mod tests {
    use super::super::gemm::{Precision, View, matmul};
    use super::*;

    #[test]
    fn rounding_is_to_nearest_with_ties_to_even() {
        assert_eq!(round(1.0), 0x3f80);
        assert_eq!(round(-2.5), 0xc020);
        // Halfway between 0x3f80 and 0x3f81: to the even one; just above: up.
        assert_eq!(round(f32::from_bits(0x3f80_8000)), 0x3f80);
        assert_eq!(round(f32::from_bits(0x3f81_8000)), 0x3f82);
        assert_eq!(round(f32::from_bits(0x3f80_8001)), 0x3f81);
        assert_eq!(round(f32::MAX), 0x7f80, "past the largest bf16: infinity");
        assert_eq!(round(f32::INFINITY), 0x7f80);
        assert!(widen(round(f32::NAN)).is_nan());
        assert!(
            widen(round(f32::from_bits(0x7f80_0001))).is_nan(),
            "a NaN never becomes inf"
        );
        assert_eq!(widen(round(3.0)), 3.0);
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

    fn values(count: usize, seed: u32) -> Vec<f32> {
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
            for (m, k, n) in [(70, 100, 50), (5, 3, 33), (33, 64, 16), (1, 0, 7)] {
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
                    for row in 0..m {
                        for col in 0..n {
                            let ours = f64::from(dst[row * (n + 3) + col]);
                            let theirs = expected[row * n + col];
                            assert!(
                                (ours - theirs).abs() <= 1e-5 * (1.0 + k as f64),
                                "{engine:?} {m}×{k}×{n} ({accumulate}, {parallel}, {transposed}) at \
                                 ({row}, {col}): {ours} against {theirs}"
                            );
                        }
                    }
                    // The padding between output rows is never written.
                    let untouched = values(m * (n + 3), 7);
                    for row in 0..m {
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

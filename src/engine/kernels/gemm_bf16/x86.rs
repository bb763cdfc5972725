//! The hardware engines' kernels: AMX tiles and AVX512-BF16 vectors, one 32×32 block of
//! sums a call.

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
        unsafe { asm!("ldtilecfg [{}]", in(reg) config.0.as_ptr(), options(nostack, readonly)) };
        Tiles
    }
}

impl Drop for Tiles {
    fn drop(&mut self) {
        // SAFETY: releases the configuration `configure` loaded on this thread.
        unsafe { asm!("tilerelease", options(nostack, nomem)) };
    }
}

/// Where a kernel call leaves its BLOCK × BLOCK sums: rows `row_stride` floats apart from
/// `corner`, added onto what is there when `add`.
pub struct Out {
    pub corner: *mut f32,
    pub row_stride: usize,
    pub add: bool,
}

/// The BLOCK columns a kernel call multiplies: two runs of LANES columns, each inner pair of
/// a run its LANES columns' two values side by side. Each run's pairs come `pairs` a tap, one
/// `pair_stride` values after the other, each tap's first `tap_stride` values after the one
/// before: packed runs hold one tap of pairs one after another ([`Columns::packed`]); a 1-D
/// convolution reads each tap's pairs in place from its input's bf16 channel pairs, the taps
/// shifts of one stretch ([`Columns::shifted`]).
#[derive(Clone, Copy)]
pub struct Columns<'a> {
    runs: (&'a [u16], &'a [u16]),
    pairs: usize,
    pair_stride: usize,
    taps: usize,
    tap_stride: usize,
}

impl<'a> Columns<'a> {
    /// Two packed runs of `depth` inner values.
    pub fn packed(runs: (&'a [u16], &'a [u16]), depth: usize) -> Self {
        Self::checked(runs, (depth / 2, 2 * LANES), (1, 0))
    }

    /// BLOCK consecutive columns of planes of pairs `plane` values apart, from `data[start..]`,
    /// `taps` taps `tap_stride` values apart.
    pub fn shifted(
        data: &'a [u16],
        start: usize,
        (pairs, plane): (usize, usize),
        (taps, tap_stride): (usize, usize),
    ) -> Self {
        let runs = (&data[start..], &data[start + 2 * LANES..]);
        Self::checked(runs, (pairs, plane), (taps, tap_stride))
    }

    /// Panics unless both runs hold every pair read from them.
    fn checked(
        runs: (&'a [u16], &'a [u16]),
        (pairs, pair_stride): (usize, usize),
        (taps, tap_stride): (usize, usize),
    ) -> Self {
        if pairs > 0 && taps > 0 {
            // Checked arithmetic: a stride so large that the bound wraps must not pass.
            let read = ((taps - 1).checked_mul(tap_stride))
                .zip((pairs - 1).checked_mul(pair_stride))
                .and_then(|(taps, pairs)| taps.checked_add(pairs)?.checked_add(2 * LANES));
            assert!(
                read.is_some_and(|read| runs.0.len() >= read && runs.1.len() >= read),
                "bf16 columns out of bounds"
            );
        }
        Self {
            runs,
            pairs,
            pair_stride,
            taps,
            tap_stride,
        }
    }

    /// Inner values the runs hold.
    fn depth(&self) -> usize {
        2 * self.pairs * self.taps
    }
}

/// `out` (+)= `a` (BLOCK rows, `a_stride` values apart) · `b`, whose inner order `a`'s rows
/// follow from their starts.
///
/// # Safety
/// `engine` must run on this CPU (and for AMX, [`Tiles::configure`] be live on this
/// thread); `out` must address BLOCK rows of BLOCK floats valid for writes (and reads when
/// `add`) that nothing else touches.
pub unsafe fn block(engine: Engine, (a, a_stride): (&[u16], usize), b: Columns<'_>, out: Out) {
    assert!(a_stride >= b.depth() && a.len() >= (BLOCK - 1) * a_stride + b.depth());
    match engine {
        Engine::Amx => {
            assert!(
                b.taps == 1
                    && b.pair_stride == 2 * LANES
                    && a_stride == b.depth()
                    && b.depth().is_multiple_of(DEPTH_STEP),
                "AMX multiplies packed runs of whole tile depths only"
            );
            // SAFETY: passed on from the caller; `a` was checked above, the runs when
            // `Columns` was made.
            unsafe { amx(a, a_stride, b.runs, out) }
        }
        // SAFETY: passed on from the caller; `a` was checked above, the runs when `Columns`
        // was made.
        Engine::Avx512 => unsafe { avx512((a, a_stride), b, out) },
        Engine::Emulated => unreachable!("the emulation multiplies through the f32 gemm"),
    }
}

/// Four tiles of sums (rows 0–15 / 16–31 × columns 0–15 / 16–31), each step loading two A
/// tiles (16 rows × 32 inner) and two B tiles (16 inner pairs × 16 columns).
unsafe fn amx(a: &[u16], depth: usize, (b0, b1): (&[u16], &[u16]), out: Out) {
    let a = a.as_ptr();
    let a_stride = depth * 2;
    let c_stride = out.row_stride * 4;
    // SAFETY (all blocks below): the pointers stay inside the slices `block` checked and
    // the output block the caller vouched for; the tiles were configured by the caller.
    unsafe {
        // The four 16×16 tiles' corners in the output block.
        let c = out.corner;
        let [c00, c01, c10, c11] = [
            0,
            LANES,
            LANES * out.row_stride,
            LANES * out.row_stride + LANES,
        ]
        .map(|offset| c.add(offset));
        if out.add {
            asm!(
                "tileloadd tmm0, [{c00} + {stride}*1]",
                "tileloadd tmm1, [{c01} + {stride}*1]",
                "tileloadd tmm2, [{c10} + {stride}*1]",
                "tileloadd tmm3, [{c11} + {stride}*1]",
                c00 = in(reg) c00,
                c01 = in(reg) c01,
                c10 = in(reg) c10,
                c11 = in(reg) c11,
                stride = in(reg) c_stride,
                options(nostack, readonly)
            );
        } else {
            asm!(
                "tilezero tmm0",
                "tilezero tmm1",
                "tilezero tmm2",
                "tilezero tmm3",
                options(nostack, nomem)
            );
        }
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
        asm!(
            "tilestored [{c00} + {stride}*1], tmm0",
            "tilestored [{c01} + {stride}*1], tmm1",
            "tilestored [{c10} + {stride}*1], tmm2",
            "tilestored [{c11} + {stride}*1], tmm3",
            c00 = in(reg) c00,
            c01 = in(reg) c01,
            c10 = in(reg) c10,
            c11 = in(reg) c11,
            stride = in(reg) c_stride,
            options(nostack)
        );
    }
}

/// Eight rows at a time: 16 vectors of sums, each inner pair one broadcast of a row's pair
/// against the two column runs.
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn avx512((a, a_stride): (&[u16], usize), b: Columns<'_>, out: Out) {
    const ROWS: usize = 8;
    let (a, b0, b1) = (a.as_ptr(), b.runs.0.as_ptr(), b.runs.1.as_ptr());
    for first in (0..BLOCK).step_by(ROWS) {
        let mut acc = [[_mm512_setzero_ps(); 2]; ROWS];
        if out.add {
            for (row, acc) in acc.iter_mut().enumerate() {
                // SAFETY: the caller vouched for BLOCK rows of BLOCK floats at `corner`.
                unsafe {
                    let c = out.corner.add((first + row) * out.row_stride);
                    *acc = [_mm512_loadu_ps(c), _mm512_loadu_ps(c.add(LANES))];
                }
            }
        }
        for tap in 0..b.taps {
            for pair in 0..b.pairs {
                let at = tap * b.tap_stride + pair * b.pair_stride;
                let inner = 2 * (tap * b.pairs + pair);
                // SAFETY: `Columns` checked that both runs hold every pair read here and
                // `block` that `a` holds BLOCK rows of the inner values; the transmutes
                // reinterpret whole vectors.
                unsafe {
                    let x0 = std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(
                        b0.add(at).cast(),
                    ));
                    let x1 = std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(
                        b1.add(at).cast(),
                    ));
                    for (row, acc) in acc.iter_mut().enumerate() {
                        let at = a.add((first + row) * a_stride + inner);
                        let both = at.cast::<i32>().read_unaligned();
                        let pairs =
                            std::mem::transmute::<__m512i, __m512bh>(_mm512_set1_epi32(both));
                        acc[0] = _mm512_dpbf16_ps(acc[0], pairs, x0);
                        acc[1] = _mm512_dpbf16_ps(acc[1], pairs, x1);
                    }
                }
            }
        }
        for (row, acc) in acc.iter().enumerate() {
            // SAFETY: as for the loads above.
            unsafe {
                let c = out.corner.add((first + row) * out.row_stride);
                _mm512_storeu_ps(c, acc[0]);
                _mm512_storeu_ps(c.add(LANES), acc[1]);
            }
        }
    }
}

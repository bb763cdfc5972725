//! Rounding f32 to bf16 (to nearest, ties to even) and back, one value or a slice at a time.

use super::super::dispatch::avx2_dispatch;

/// Rounds `value` to the nearest bf16, ties to even, as bits; a NaN stays a (quiet) NaN.
pub fn round(value: f32) -> u16 {
    round_bits(value.to_bits())
}

/// [`round`] on an f32's bits, without branches so that loops over it vectorise.
#[inline(always)]
pub(super) fn round_bits(bits: u32) -> u16 {
    let nearest = bits.wrapping_add(0x7fff + ((bits >> 16) & 1)) >> 16;
    let quiet_nan = (bits >> 16) | 0x0040;
    let is_nan = bits & 0x7fff_ffff > 0x7f80_0000;
    (if is_nan { quiet_nan } else { nearest }) as u16
}

/// The f32 a bf16 stands for.
#[inline(always)]
pub fn widen(half: u16) -> f32 {
    f32::from_bits(u32::from(half) << 16)
}

/// `value` rounded to the nearest bf16, as an f32.
pub fn rounded(value: f32) -> f32 {
    widen(round(value))
}

#[inline(always)]
fn round_all_body(values: &[f32], out: &mut [u16]) {
    for (slot, value) in out.iter_mut().zip(values) {
        *slot = round_bits(value.to_bits());
    }
}

avx2_dispatch! {
    /// [`round`] on each of `values` into `out`, eight at a time where the CPU has AVX2.
    fn round_all_avx2 = round_all_body(values: &[f32], out: &mut [u16]);
}

/// Whether this CPU has AVX-512F and AVX512-BF16: the `vdpbf16ps` engine and the conversions
/// its packers round with.
#[cfg(target_arch = "x86_64")]
pub(in crate::engine::kernels) fn has_avx512_bf16() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512bf16")
}

/// [`round`] on each of `values` into `out`: with AVX512-BF16's conversion where the CPU has
/// it (16 values an instruction; about twice the AVX2 rounding's rate on Zen 4 for a row in
/// L1, 1.5× from memory), else eight at a time with AVX2.
pub(in crate::engine::kernels) fn round_all(values: &[f32], out: &mut [u16]) {
    #[cfg(target_arch = "x86_64")]
    if has_avx512_bf16() {
        // SAFETY: the CPU was just checked to support AVX-512F and AVX512-BF16.
        return unsafe { converting::round_all(values, out) };
    }
    round_all_avx2(values, out)
}

/// Rounding with `vcvtneps2bf16`, which rounds to nearest even and quiets NaNs as [`round`]
/// does but flushes subnormals to zero: a block holding one takes the portable rounding, so
/// every value gets `round`'s bits. (Not `vcvtne2ps2bf16`, two blocks an instruction: Bochs
/// 3.0, which the emulated Sapphire Rapids runs, fills its upper half from the wrong lanes.)
#[cfg(target_arch = "x86_64")]
pub(super) mod converting {
    use std::arch::x86_64::*;

    /// [`super::round`] on each of `values` into `out`.
    ///
    /// # Safety
    /// The CPU has AVX-512F and AVX512-BF16.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(in super::super) unsafe fn round_all(values: &[f32], out: &mut [u16]) {
        let len = values.len().min(out.len());
        let whole = len / 16 * 16;
        for start in (0..whole).step_by(16) {
            // SAFETY: `start + 16 <= whole <= len`, within both slices.
            unsafe {
                let block = _mm512_loadu_ps(values.as_ptr().add(start));
                if has_subnormal(block) {
                    super::round_all_body(&values[start..][..16], &mut out[start..][..16]);
                    continue;
                }
                out.as_mut_ptr()
                    .add(start)
                    .cast::<__m256bh>()
                    .write_unaligned(_mm512_cvtneps_pbh(block));
            }
        }
        super::round_all_body(&values[whole..len], &mut out[whole..len]);
    }

    /// Each lane of `block` rounded, as 16-bit halves in 32-bit lanes (the upper halves zero).
    ///
    /// # Safety
    /// The CPU has AVX-512F and AVX512-BF16.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(in super::super) fn widened(block: __m512) -> __m512i {
        let halves = _mm512_cvtneps_pbh(block);
        // SAFETY: a reinterpretation of a whole 256-bit vector.
        _mm512_cvtepu16_epi32(unsafe { std::mem::transmute::<__m256bh, __m256i>(halves) })
    }

    /// Whether a lane is subnormal: nonzero bits under the exponent, so |bits| − 1 is below
    /// the largest subnormal's bits.
    #[target_feature(enable = "avx512f")]
    pub(in super::super) fn has_subnormal(block: __m512) -> bool {
        let magnitude =
            _mm512_and_si512(_mm512_castps_si512(block), _mm512_set1_epi32(0x7fff_ffff));
        let below = _mm512_sub_epi32(magnitude, _mm512_set1_epi32(1));
        _mm512_cmplt_epu32_mask(below, _mm512_set1_epi32(0x007f_ffff)) != 0
    }
}

#[inline(always)]
fn extend_rounded_body(values: &[f32], out: &mut Vec<f32>) {
    out.extend(
        values
            .iter()
            .map(|value| widen(round_bits(value.to_bits()))),
    );
}

avx2_dispatch! {
    /// Appends each of `values` rounded to bf16 (as f32) to `out`.
    pub(super) fn extend_rounded = extend_rounded_body(values: &[f32], out: &mut Vec<f32>);
}

#[inline(always)]
fn round_in_place_body(values: &mut [f32]) {
    for value in values {
        *value = widen(round_bits(value.to_bits()));
    }
}

avx2_dispatch! {
    /// Rounds each of `values` to bf16 (as f32).
    pub(super) fn round_in_place = round_in_place_body(values: &mut [f32]);
}

#[cfg(test)]
mod tests {
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

    /// The vectorised rounding gives the scalar one's bits: ties, NaNs with and without
    /// payloads, infinities, the largest finite values, subnormals, and random patterns. The
    /// first two blocks of 16 hold no subnormal (AVX512-BF16's conversion rounds them), the
    /// third five (the portable rounding takes it).
    #[test]
    fn rounding_a_slice_rounds_each_value() {
        let mut bits: Vec<u32> = vec![
            0x3f80_8000,
            0x3f81_8000,
            0xbf80_8001,
            0x7fc0_0000,
            0x7f80_0001,
            0xffbf_ffff,
            0x7f80_0000,
            0xff80_0000,
            0x7f7f_ffff,
            0xff7f_8000,
            0x0080_0000,
            0x8000_0000,
        ];
        bits.resize(32, 0x3f80_0000);
        // Subnormals that round to zero, to a subnormal, and up to the smallest normal.
        bits.extend([
            0x0000_0001,
            0x8000_8000,
            0x0001_0000,
            0x0000_8001,
            0x807f_ffff,
        ]);
        bits.resize(64, 0x4000_0000);
        let mut state = 12_345u32;
        bits.extend((0..1000).map(|_| {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            state
        }));
        let values: Vec<f32> = bits.iter().map(|&bits| f32::from_bits(bits)).collect();
        let mut halves = vec![0u16; values.len()];
        round_all(&values, &mut halves);
        let mut widened = Vec::new();
        extend_rounded(&values, &mut widened);
        for ((&value, &half), &wide) in values.iter().zip(&halves).zip(&widened) {
            assert_eq!(half, round(value), "{:#010x}", value.to_bits());
            assert_eq!(wide.to_bits(), rounded(value).to_bits());
        }
    }
}

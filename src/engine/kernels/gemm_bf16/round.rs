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
    pub(super) fn round_all = round_all_body(values: &[f32], out: &mut [u16]);
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
    /// payloads, infinities, subnormals, the largest finite values, and random patterns.
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
            0x0000_0001,
            0x8000_8000,
            0x7f7f_ffff,
            0xff7f_8000,
        ];
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

//! Vectorisable exp for softmax and SiLU.
//!
//! `f32::exp` is a libm call per element that LLVM cannot vectorise; softmax over the UNet's
//! 1024×1024 attention scores spent 15 % of a step in it. This is the Cephes single-precision
//! polynomial (within 2 ulp on the range softmax uses, like PyTorch's own SLEEF kernels), written so
//! the loops below compile to 8-wide AVX2 code when the CPU has it.

use super::dispatch::avx2_dispatch;

/// Lanes the reductions keep apart so they vectorise.
const LANES: usize = 8;

#[inline(always)]
fn exp(x: f32) -> f32 {
    let x = x.clamp(EXP_LOWEST, EXP_HIGHEST);
    let n = (x * std::f32::consts::LOG2_E + 0.5).floor();
    let r = x - n * LN2_HIGH - n * LN2_LOW;
    let p = EXP_POLYNOMIAL[1..]
        .iter()
        .fold(EXP_POLYNOMIAL[0], |p, &coefficient| p * r + coefficient);
    let y = p * r * r + r + 1.0;
    y * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// Below `EXP_LOWEST` the result is under f32's smallest normal; softmax treats it as 0 anyway.
const EXP_LOWEST: f32 = -87.336_54;
const EXP_HIGHEST: f32 = 88.0;
/// ln 2 split in two so n·ln 2 is subtracted without losing r's low bits.
const LN2_HIGH: f32 = 0.693_359_4;
const LN2_LOW: f32 = -2.121_944_4e-4;
/// Cephes' polynomial for (exp(r) − 1 − r) / r², highest power first.
const EXP_POLYNOMIAL: [f32; 6] = [
    1.987_569_1e-4,
    1.398_199_9e-3,
    8.333_452e-3,
    4.166_579_6e-2,
    1.666_666_5e-1,
    0.5,
];

#[inline(always)]
fn max_of(row: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let chunks = row.chunks_exact(LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        for (lane, value) in lanes.iter_mut().zip(chunk) {
            *lane = lane.max(*value);
        }
    }
    tail.iter()
        .chain(&lanes)
        .fold(f32::NEG_INFINITY, |m, v| m.max(*v))
}

#[inline(always)]
fn softmax_body(row: &mut [f32], scale: f32, bias: Option<&[f32]>) {
    match bias {
        Some(bias) => row
            .iter_mut()
            .zip(bias)
            .for_each(|(value, bias)| *value = *value * scale + bias),
        None => row.iter_mut().for_each(|value| *value *= scale),
    }
    let max = max_of(row);
    if max == f32::NEG_INFINITY {
        // Every key masked: PyTorch returns NaN here; a uniform row keeps the output finite.
        let uniform = 1.0 / row.len() as f32;
        row.fill(uniform);
        return;
    }
    let mut sums = [0f32; LANES];
    let mut chunks = row.chunks_exact_mut(LANES);
    for chunk in &mut chunks {
        for (sum, value) in sums.iter_mut().zip(chunk.iter_mut()) {
            *value = exp(*value - max);
            *sum += *value;
        }
    }
    let mut total: f32 = 0.0;
    for value in chunks.into_remainder() {
        *value = exp(*value - max);
        total += *value;
    }
    let total = sums.iter().sum::<f32>() + total;
    let inverse = 1.0 / total;
    row.iter_mut().for_each(|value| *value *= inverse);
}

#[inline(always)]
fn silu_body(values: &mut [f32]) {
    values
        .iter_mut()
        .for_each(|value| *value /= 1.0 + exp(-*value));
}

/// Whether this CPU has AVX2 and FMA, which the 8-lane kernels here and in `direct` need.
#[cfg(target_arch = "x86_64")]
pub(super) fn has_avx2() -> bool {
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
}

/// Whether this CPU has AVX-512F besides AVX2 and FMA: the 16-lane kernels here and the
/// attention tiles.
#[cfg(target_arch = "x86_64")]
pub(super) fn has_avx512() -> bool {
    has_avx2() && std::arch::is_x86_feature_detected!("avx512f")
}

avx2_dispatch! {
    /// In place: `row ← softmax(row · scale + bias)`.
    pub fn softmax_row = softmax_body(row: &mut [f32], scale: f32, bias: Option<&[f32]>);
}

/// In place: `row ← exp(row · scale + bias − max)`, the numerators of the softmax; returns their
/// sum, by which the caller divides. Attention divides its output rows (a head size of values)
/// instead of the row of scores (thousands), and the scaling rides on the max pass, so the row
/// is swept twice instead of four times (with a bias, or a scale that is not positive, the first
/// pass also writes the scaled row). A row with every key masked comes back all ones (a uniform
/// softmax; PyTorch would give NaN).
pub fn softmax_numerators(row: &mut [f32], scale: f32, bias: Option<&[f32]>) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if has_avx512() {
        // SAFETY: the CPU was just checked to support AVX-512F, AVX2 and FMA.
        return unsafe { avx512::softmax_numerators(row, scale, bias) };
    }
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the CPU was just checked to support AVX2 and FMA.
        return unsafe { avx2::softmax_numerators(row, scale, bias) };
    }
    let prescaled = prescaled(scale, bias);
    // Unscaled, the row's max times the scale is the scaled max: `numerator_shift` scales it.
    prescale(row, scale, bias, prescaled);
    let Some(shift) = numerator_shift(prescaled, scale, max_of(row)) else {
        row.fill(1.0);
        return row.len() as f32;
    };
    tail_numerators(row, shift, 0.0)
}

/// [`softmax_numerators`] with the numerators rounded to bf16 into `out` (at least the row's
/// length) instead of written back to `row`, which is left as scratch: the left operand of
/// attention's bf16 `p·v`, made with no pass to round it. Returns the sum of the numerators
/// before rounding, as autocast's attention divides by.
pub fn softmax_numerators_rounded(
    row: &mut [f32],
    out: &mut [u16],
    scale: f32,
    bias: Option<&[f32]>,
) -> f32 {
    assert!(
        out.len() >= row.len(),
        "softmax output shorter than its row"
    );
    #[cfg(target_arch = "x86_64")]
    if has_avx512() && super::gemm_bf16::has_avx512_bf16() {
        // SAFETY: the CPU was just checked to support AVX-512F, AVX512-BF16, AVX2 and FMA.
        return unsafe { avx512::softmax_numerators_rounded(row, out, scale, bias) };
    }
    let total = softmax_numerators(row, scale, bias);
    super::gemm_bf16::round_all(row, out);
    total
}

/// `(factor, shift)` for the numerators pass, `exp(x · factor − shift)`, from the max of the
/// row (of the scaled row when `prescaled`); `None` when every key is masked.
fn numerator_shift(prescaled: bool, scale: f32, max: f32) -> Option<(f32, f32)> {
    let (factor, shift) = if prescaled {
        (1.0, max)
    } else {
        (scale, max * scale)
    };
    (shift != f32::NEG_INFINITY).then_some((factor, shift))
}

/// The numerators of `tail` one at a time (a row past its vector steps, or a whole row without
/// them); returns `total` with each added in order.
fn tail_numerators(tail: &mut [f32], (factor, shift): (f32, f32), mut total: f32) -> f32 {
    for value in tail {
        *value = exp(*value * factor - shift);
        total += *value;
    }
    total
}

/// The first pass's writes, one value at a time (a row past its vector steps, or a whole row
/// without them): `values · scale + bias` with a bias, `values · scale` when `prescaled`
/// without one, else nothing.
fn prescale(values: &mut [f32], scale: f32, bias: Option<&[f32]>, prescaled: bool) {
    match bias {
        Some(bias) => values
            .iter_mut()
            .zip(bias)
            .for_each(|(value, bias)| *value = *value * scale + bias),
        None if prescaled => values.iter_mut().for_each(|value| *value *= scale),
        None => {}
    }
}

/// Whether the softmax's first pass writes the scaled row: with a bias, or when the max of the
/// scaled row is not the scaled max (a scale that is not positive).
fn prescaled(scale: f32, bias: Option<&[f32]>) -> bool {
    bias.is_some() || scale.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater)
}

#[cfg(target_arch = "x86_64")]
pub(super) mod avx2 {
    use std::arch::x86_64::*;

    use super::{EXP_HIGHEST, EXP_LOWEST, EXP_POLYNOMIAL, LN2_HIGH, LN2_LOW};

    /// `exp` of 8 lanes: the same Cephes polynomial as the scalar `super::exp`.
    #[target_feature(enable = "avx2,fma")]
    fn exp8(x: __m256) -> __m256 {
        let x = _mm256_min_ps(
            _mm256_max_ps(x, _mm256_set1_ps(EXP_LOWEST)),
            _mm256_set1_ps(EXP_HIGHEST),
        );
        let n = _mm256_floor_ps(_mm256_fmadd_ps(
            x,
            _mm256_set1_ps(std::f32::consts::LOG2_E),
            _mm256_set1_ps(0.5),
        ));
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_HIGH), x);
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_LOW), r);
        let mut p = _mm256_set1_ps(EXP_POLYNOMIAL[0]);
        for &coefficient in &EXP_POLYNOMIAL[1..] {
            p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(coefficient));
        }
        let y = _mm256_add_ps(
            _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r),
            _mm256_set1_ps(1.0),
        );
        let exponent = _mm256_slli_epi32::<23>(_mm256_add_epi32(
            _mm256_cvttps_epi32(n),
            _mm256_set1_epi32(127),
        ));
        _mm256_mul_ps(y, _mm256_castsi256_ps(exponent))
    }

    /// `super::silu` in 8-lane steps.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn silu(values: &mut [f32]) {
        let lanes = values.len() / 8 * 8;
        let pointer = values.as_mut_ptr();
        let one = _mm256_set1_ps(1.0);
        for start in (0..lanes).step_by(8) {
            // SAFETY: `start + 8 <= lanes <= values.len()`.
            unsafe {
                let x = _mm256_loadu_ps(pointer.add(start));
                let denominator = _mm256_add_ps(one, exp8(_mm256_sub_ps(_mm256_setzero_ps(), x)));
                _mm256_storeu_ps(pointer.add(start), _mm256_div_ps(x, denominator));
            }
        }
        super::silu_body(&mut values[lanes..]);
    }

    /// `out[i] = hidden[i] · gelu(gate[i])` with the exact (erf) GELU; erf is Abramowitz and
    /// Stegun 7.1.26 (absolute error below 1.5e-7), the formula PyTorch's vectorised CPU erf
    /// evaluates, so diffusers' CPU GELU computes the same approximation.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn geglu(out: &mut [f32], hidden: &[f32], gate: &[f32]) {
        assert!(hidden.len() >= out.len() && gate.len() >= out.len());
        let lanes = out.len() / 8 * 8;
        let splat = |value: f32| _mm256_set1_ps(value);
        let sign_bit = splat(-0.0);
        for start in (0..lanes).step_by(8) {
            // SAFETY: `start + 8 <= lanes <= out.len() <= hidden.len(), gate.len()`.
            unsafe {
                let g = _mm256_loadu_ps(gate.as_ptr().add(start));
                let x = _mm256_mul_ps(g, splat(std::f32::consts::FRAC_1_SQRT_2));
                let sign = _mm256_and_ps(x, sign_bit);
                let magnitude = _mm256_andnot_ps(sign_bit, x);
                let t = _mm256_div_ps(
                    splat(1.0),
                    _mm256_fmadd_ps(splat(0.327_591_1), magnitude, splat(1.0)),
                );
                let mut poly = splat(1.061_405_4);
                for coefficient in [-1.453_152_1, 1.421_413_8, -0.284_496_74, 0.254_829_6] {
                    poly = _mm256_fmadd_ps(poly, t, splat(coefficient));
                }
                poly = _mm256_mul_ps(poly, t);
                let decay = exp8(_mm256_sub_ps(
                    _mm256_setzero_ps(),
                    _mm256_mul_ps(magnitude, magnitude),
                ));
                let erf = _mm256_or_ps(_mm256_fnmadd_ps(poly, decay, splat(1.0)), sign);
                let gelu =
                    _mm256_mul_ps(_mm256_mul_ps(_mm256_add_ps(erf, splat(1.0)), splat(0.5)), g);
                let h = _mm256_loadu_ps(hidden.as_ptr().add(start));
                _mm256_storeu_ps(out.as_mut_ptr().add(start), _mm256_mul_ps(h, gelu));
            }
        }
        super::geglu_body(&mut out[lanes..], &hidden[lanes..], &gate[lanes..]);
    }

    /// `super::softmax_numerators` in 8-lane steps.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn softmax_numerators(row: &mut [f32], scale: f32, bias: Option<&[f32]>) -> f32 {
        let lanes = row.len() / 8 * 8;
        let pointer = row.as_mut_ptr();
        let mut maxima = _mm256_set1_ps(f32::NEG_INFINITY);
        let prescaled = super::prescaled(scale, bias);
        // SAFETY (all blocks below): `start + 8 <= lanes <= row.len()`, and `bias` has at least
        // the row's length (attention checks it), so every 8-lane access is in bounds.
        match bias {
            Some(bias) => {
                assert!(bias.len() >= row.len());
                let scales = _mm256_set1_ps(scale);
                for start in (0..lanes).step_by(8) {
                    unsafe {
                        let value = _mm256_fmadd_ps(
                            _mm256_loadu_ps(pointer.add(start)),
                            scales,
                            _mm256_loadu_ps(bias.as_ptr().add(start)),
                        );
                        _mm256_storeu_ps(pointer.add(start), value);
                        maxima = _mm256_max_ps(maxima, value);
                    }
                }
            }
            None if prescaled => {
                let scales = _mm256_set1_ps(scale);
                for start in (0..lanes).step_by(8) {
                    unsafe {
                        let value = _mm256_mul_ps(_mm256_loadu_ps(pointer.add(start)), scales);
                        _mm256_storeu_ps(pointer.add(start), value);
                        maxima = _mm256_max_ps(maxima, value);
                    }
                }
            }
            None => {
                for start in (0..lanes).step_by(8) {
                    maxima = _mm256_max_ps(maxima, unsafe { _mm256_loadu_ps(pointer.add(start)) });
                }
            }
        }
        super::prescale(
            &mut row[lanes..],
            scale,
            bias.map(|bias| &bias[lanes..]),
            prescaled,
        );
        let mut folded = [0f32; 8];
        unsafe { _mm256_storeu_ps(folded.as_mut_ptr(), maxima) };
        let max = folded
            .iter()
            .chain(&row[lanes..])
            .fold(f32::NEG_INFINITY, |max, value| max.max(*value));
        let Some((row_scale, shift)) = super::numerator_shift(prescaled, scale, max) else {
            row.fill(1.0);
            return row.len() as f32;
        };
        let (scales, shifts) = (_mm256_set1_ps(row_scale), _mm256_set1_ps(-shift));
        let mut sums = _mm256_setzero_ps();
        for start in (0..lanes).step_by(8) {
            unsafe {
                let value = _mm256_loadu_ps(pointer.add(start));
                let numerator = exp8(_mm256_fmadd_ps(value, scales, shifts));
                _mm256_storeu_ps(pointer.add(start), numerator);
                sums = _mm256_add_ps(sums, numerator);
            }
        }
        unsafe { _mm256_storeu_ps(folded.as_mut_ptr(), sums) };
        let total: f32 = folded.iter().sum();
        super::tail_numerators(&mut row[lanes..], (row_scale, shift), total)
    }

    /// Softmax numerators down the columns of `scores`: for each of the first `columns` (a
    /// multiple of 8, at most 64) columns, `exp(scores[j][c] + bias[j] − max_j)` over the first
    /// `keys` rows (`stride` apart), in place; `totals[c]` gets each column's sum. A column with
    /// every key masked comes back all ones, as in `softmax_numerators`.
    ///
    /// The attention tiles run only on AVX-512 and call [`super::avx512::softmax_columns`];
    /// this form stays as the reference that one is tested against bit for bit.
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA.
    #[cfg(test)]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn softmax_columns(
        (scores, stride): (&mut [f32], usize),
        keys: usize,
        columns: usize,
        bias: Option<&[f32]>,
        totals: &mut [f32],
    ) {
        const GROUPS: usize = 8;
        assert!(columns.is_multiple_of(8) && columns <= 8 * GROUPS && columns <= stride);
        assert!(keys == 0 || (keys - 1) * stride + columns <= scores.len());
        assert!(totals.len() >= columns && bias.is_none_or(|bias| bias.len() >= keys));
        let groups = columns / 8;
        let pointer = scores.as_mut_ptr();
        let mut maxima = [_mm256_set1_ps(f32::NEG_INFINITY); GROUPS];
        // SAFETY (all blocks below): row `key < keys` and lane `8 · group + 8 <= columns` are
        // inside `scores` by the asserts.
        for key in 0..keys {
            let row = unsafe { pointer.add(key * stride) };
            let shift = _mm256_set1_ps(bias.map_or(0.0, |bias| bias[key]));
            for (group, maximum) in maxima.iter_mut().enumerate().take(groups) {
                unsafe {
                    let mut value = _mm256_loadu_ps(row.add(8 * group));
                    if bias.is_some() {
                        value = _mm256_add_ps(value, shift);
                        _mm256_storeu_ps(row.add(8 * group), value);
                    }
                    *maximum = _mm256_max_ps(*maximum, value);
                }
            }
        }
        let lowest = _mm256_set1_ps(f32::NEG_INFINITY);
        let masked: [__m256; GROUPS] =
            std::array::from_fn(|group| _mm256_cmp_ps::<_CMP_EQ_OQ>(maxima[group], lowest));
        for (maximum, masked) in maxima.iter_mut().zip(&masked) {
            *maximum = _mm256_andnot_ps(*masked, *maximum);
        }
        let (one, mut sums) = (_mm256_set1_ps(1.0), [_mm256_setzero_ps(); GROUPS]);
        for key in 0..keys {
            let row = unsafe { pointer.add(key * stride) };
            for group in 0..groups {
                unsafe {
                    let value = _mm256_sub_ps(_mm256_loadu_ps(row.add(8 * group)), maxima[group]);
                    let numerator = _mm256_blendv_ps(exp8(value), one, masked[group]);
                    _mm256_storeu_ps(row.add(8 * group), numerator);
                    sums[group] = _mm256_add_ps(sums[group], numerator);
                }
            }
        }
        for (group, sum) in sums.iter().enumerate().take(groups) {
            unsafe { _mm256_storeu_ps(totals.as_mut_ptr().add(8 * group), *sum) };
        }
    }
}

/// The AVX-512 forms of the AVX2 kernels above, for code that already runs only on AVX-512
/// (the attention tiles). Each lane takes the same operations in the same order as in
/// [`avx2`], so the results are bit-identical; a 16-lane step issues about a third fewer
/// instructions per value than two 8-lane ones (the softmax was 4.5 % of an AudioLDM 2 step).
#[cfg(target_arch = "x86_64")]
pub(super) mod avx512 {
    use std::arch::x86_64::*;

    use super::{EXP_HIGHEST, EXP_LOWEST, EXP_POLYNOMIAL, LN2_HIGH, LN2_LOW};

    /// `exp` of 16 lanes: [`super::avx2`]'s `exp8`, with `2ⁿ` applied by `vscalefps` (exact for
    /// the clamped range, as the multiply by the built power of two is).
    #[target_feature(enable = "avx512f")]
    pub(super) fn exp16(x: __m512) -> __m512 {
        let x = _mm512_min_ps(
            _mm512_max_ps(x, _mm512_set1_ps(EXP_LOWEST)),
            _mm512_set1_ps(EXP_HIGHEST),
        );
        let n =
            _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC }>(_mm512_fmadd_ps(
                x,
                _mm512_set1_ps(std::f32::consts::LOG2_E),
                _mm512_set1_ps(0.5),
            ));
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_HIGH), x);
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_LOW), r);
        let mut p = _mm512_set1_ps(EXP_POLYNOMIAL[0]);
        for &coefficient in &EXP_POLYNOMIAL[1..] {
            p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(coefficient));
        }
        let y = _mm512_add_ps(
            _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r),
            _mm512_set1_ps(1.0),
        );
        _mm512_scalef_ps(y, n)
    }

    /// Where a 16-lane softmax step starts: steps of 16 over the first `lanes` values, the last
    /// one 8 wide when `lanes` is not a multiple of 16 (the 8-lane kernel's steps, two a time).
    fn step_mask(start: usize, lanes: usize) -> __mmask16 {
        if start + 16 <= lanes { 0xffff } else { 0x00ff }
    }

    /// The first pass of the 16-lane row softmaxes: the AVX2 kernel's, 16 values a step. Writes
    /// the scaled row where it is `prescaled` and returns where the vector steps end (the rest
    /// is the scalar tail's) with the numerators' `(factor, shift)`, `None` when every key is
    /// masked.
    ///
    /// # Safety
    /// The CPU has AVX-512F, AVX2 and FMA.
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn first_pass(
        row: &mut [f32],
        scale: f32,
        bias: Option<&[f32]>,
    ) -> (usize, Option<(f32, f32)>) {
        let lanes = row.len() / 8 * 8;
        let pointer = row.as_mut_ptr();
        let lowest = _mm512_set1_ps(f32::NEG_INFINITY);
        let mut maxima = lowest;
        let prescaled = super::prescaled(scale, bias);
        if let Some(bias) = bias {
            assert!(bias.len() >= row.len());
        }
        let scales = _mm512_set1_ps(scale);
        // SAFETY (all blocks below): a step's lanes lie below `lanes <= row.len()`, and `bias`
        // has at least the row's length (asserted), so every masked access is in bounds.
        for start in (0..lanes).step_by(16) {
            let mask = step_mask(start, lanes);
            unsafe {
                let at = pointer.add(start);
                let value = match bias {
                    Some(bias) => _mm512_fmadd_ps(
                        _mm512_maskz_loadu_ps(mask, at),
                        scales,
                        _mm512_maskz_loadu_ps(mask, bias.as_ptr().add(start)),
                    ),
                    None if prescaled => _mm512_mul_ps(_mm512_maskz_loadu_ps(mask, at), scales),
                    None => _mm512_mask_loadu_ps(lowest, mask, at),
                };
                if prescaled {
                    _mm512_mask_storeu_ps(at, mask, value);
                }
                maxima = _mm512_mask_max_ps(maxima, mask, maxima, value);
            }
        }
        super::prescale(
            &mut row[lanes..],
            scale,
            bias.map(|bias| &bias[lanes..]),
            prescaled,
        );
        let max = row[lanes..]
            .iter()
            .fold(_mm512_reduce_max_ps(maxima), |max, value| max.max(*value));
        (lanes, super::numerator_shift(prescaled, scale, max))
    }

    /// The AVX2 `softmax_numerators` 16 values a step, with its results bit for bit: each
    /// lane takes the same operations, and the sum adds each step's halves in the order the
    /// 8-lane kernel adds them (on Zen 4 a 1024-key row took 0.37 against 0.53 ns a value).
    ///
    /// # Safety
    /// The CPU has AVX-512F, AVX2 and FMA.
    #[target_feature(enable = "avx512f,avx2,fma")]
    pub unsafe fn softmax_numerators(row: &mut [f32], scale: f32, bias: Option<&[f32]>) -> f32 {
        // SAFETY: the caller vouches for the features.
        let (lanes, Some((row_scale, shift))) = (unsafe { first_pass(row, scale, bias) }) else {
            row.fill(1.0);
            return row.len() as f32;
        };
        let pointer = row.as_mut_ptr();
        let (scales, shifts) = (_mm512_set1_ps(row_scale), _mm512_set1_ps(-shift));
        let mut sums = _mm256_setzero_ps();
        for start in (0..lanes).step_by(16) {
            let mask = step_mask(start, lanes);
            // SAFETY: the step's lanes lie below `lanes <= row.len()`.
            unsafe {
                let at = pointer.add(start);
                let value = _mm512_maskz_loadu_ps(mask, at);
                let numerator = exp16(_mm512_fmadd_ps(value, scales, shifts));
                _mm512_mask_storeu_ps(at, mask, numerator);
                sums = _mm256_add_ps(sums, _mm512_castps512_ps256(numerator));
                if mask == 0xffff {
                    sums = _mm256_add_ps(sums, _mm512_extractf32x8_ps::<1>(numerator));
                }
            }
        }
        let mut folded = [0f32; 8];
        unsafe { _mm256_storeu_ps(folded.as_mut_ptr(), sums) };
        let total: f32 = folded.iter().sum();
        super::tail_numerators(&mut row[lanes..], (row_scale, shift), total)
    }

    /// [`softmax_numerators`] with the numerators rounded to bf16 into `out` as they are made,
    /// each to the bits `round` gives it (the same numerators as that kernel's; `row` is left
    /// as scratch). The total sums each lane apart and then the lanes, so it can differ from
    /// that kernel's in its last bits. `vcvtneps2bf16` rounds as `round` does but would flush
    /// a subnormal, which a numerator never is: exp's clamp keeps it at or above f32's smallest
    /// normal (`numerators_are_never_subnormal`). On Zen 4 it made this pass 0.26 ns a value
    /// against 0.35 with `round`'s arithmetic on the bits (f32 stores: 0.24).
    ///
    /// # Safety
    /// The CPU has AVX-512F, AVX512-BF16, AVX2 and FMA.
    #[target_feature(enable = "avx512f,avx512bf16,avx2,fma")]
    pub unsafe fn softmax_numerators_rounded(
        row: &mut [f32],
        out: &mut [u16],
        scale: f32,
        bias: Option<&[f32]>,
    ) -> f32 {
        let out = &mut out[..row.len()];
        // SAFETY: the caller vouches for the features.
        let (lanes, Some((row_scale, shift))) = (unsafe { first_pass(row, scale, bias) }) else {
            out.fill(super::super::gemm_bf16::round(1.0));
            return row.len() as f32;
        };
        let (scales, shifts) = (_mm512_set1_ps(row_scale), _mm512_set1_ps(-shift));
        let mut sums = _mm512_setzero_ps();
        for start in (0..lanes).step_by(16) {
            let mask = step_mask(start, lanes);
            // SAFETY: the step's lanes lie below `lanes <= row.len() == out.len()`.
            unsafe {
                let value = _mm512_maskz_loadu_ps(mask, row.as_ptr().add(start));
                let numerator = exp16(_mm512_fmadd_ps(value, scales, shifts));
                sums = _mm512_mask_add_ps(sums, mask, sums, numerator);
                let halves: __m256i = std::mem::transmute(_mm512_cvtneps_pbh(numerator));
                let at = out.as_mut_ptr().add(start);
                // A step is 16 lanes or, last, 8.
                if mask == 0xffff {
                    _mm256_storeu_si256(at.cast(), halves);
                } else {
                    _mm_storeu_si128(at.cast(), _mm256_castsi256_si128(halves));
                }
            }
        }
        let tail = &mut row[lanes..];
        let total = super::tail_numerators(tail, (row_scale, shift), _mm512_reduce_add_ps(sums));
        super::super::gemm_bf16::round_all(tail, &mut out[lanes..]);
        total
    }

    /// The AVX2 `softmax_columns` 16 columns at a time: the same contract and results.
    ///
    /// # Safety
    /// The CPU has AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn softmax_columns(
        (scores, stride): (&mut [f32], usize),
        keys: usize,
        columns: usize,
        bias: Option<&[f32]>,
        totals: &mut [f32],
    ) {
        const GROUPS: usize = 4;
        assert!(columns.is_multiple_of(8) && columns <= 16 * GROUPS && columns <= stride);
        assert!(keys == 0 || (keys - 1) * stride + columns <= scores.len());
        assert!(totals.len() >= columns && bias.is_none_or(|bias| bias.len() >= keys));
        let groups = columns.div_ceil(16);
        // Lanes of each group inside `columns`: all 16, or 8 for a last half group.
        let lanes: [__mmask16; GROUPS] = std::array::from_fn(|group| {
            let live = columns.saturating_sub(16 * group).min(16);
            ((1u32 << live) - 1) as __mmask16
        });
        let pointer = scores.as_mut_ptr();
        let mut maxima = [_mm512_set1_ps(f32::NEG_INFINITY); GROUPS];
        // SAFETY (all blocks below): row `key < keys` and the `lanes` of group `group` lie
        // below `16 · group + live <= columns`, inside `scores` by the asserts.
        for key in 0..keys {
            let row = unsafe { pointer.add(key * stride) };
            let shift = _mm512_set1_ps(bias.map_or(0.0, |bias| bias[key]));
            for group in 0..groups {
                unsafe {
                    let at = row.add(16 * group);
                    let mut value = _mm512_maskz_loadu_ps(lanes[group], at);
                    if bias.is_some() {
                        value = _mm512_add_ps(value, shift);
                        _mm512_mask_storeu_ps(at, lanes[group], value);
                    }
                    maxima[group] = _mm512_max_ps(maxima[group], value);
                }
            }
        }
        // Columns whose every score is −∞ (all keys masked) take 1 for each numerator.
        let masked: [__mmask16; GROUPS] = std::array::from_fn(|group| {
            _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(maxima[group], _mm512_set1_ps(f32::NEG_INFINITY))
        });
        for (maximum, masked) in maxima.iter_mut().zip(masked) {
            *maximum = _mm512_mask_mov_ps(*maximum, masked, _mm512_setzero_ps());
        }
        let (one, mut sums) = (_mm512_set1_ps(1.0), [_mm512_setzero_ps(); GROUPS]);
        for key in 0..keys {
            let row = unsafe { pointer.add(key * stride) };
            for group in 0..groups {
                unsafe {
                    let at = row.add(16 * group);
                    let value =
                        _mm512_sub_ps(_mm512_maskz_loadu_ps(lanes[group], at), maxima[group]);
                    let numerator = _mm512_mask_mov_ps(exp16(value), masked[group], one);
                    _mm512_mask_storeu_ps(at, lanes[group], numerator);
                    sums[group] = _mm512_add_ps(sums[group], numerator);
                }
            }
        }
        for (group, sum) in sums.iter().enumerate().take(groups) {
            unsafe {
                _mm512_mask_storeu_ps(totals.as_mut_ptr().add(16 * group), lanes[group], *sum)
            };
        }
    }
}

/// `out[i] = hidden[i] · gelu_erf(gate[i])`: on AVX2 an 8-lane erf (see `avx2::geglu`), else
/// libm's `erff`, as candle's `gelu_erf`.
pub fn geglu(out: &mut [f32], hidden: &[f32], gate: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the CPU was just checked to support AVX2 and FMA.
        return unsafe { avx2::geglu(out, hidden, gate) };
    }
    geglu_body(out, hidden, gate)
}

pub(super) fn geglu_body(out: &mut [f32], hidden: &[f32], gate: &[f32]) {
    for ((out, h), g) in out.iter_mut().zip(hidden).zip(gate) {
        *out = h * (libm::erff(g * std::f32::consts::FRAC_1_SQRT_2) + 1.0) * 0.5 * g;
    }
}

/// In place: `x ← x · sigmoid(x)`.
pub fn silu(values: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the CPU was just checked to support AVX2 and FMA.
        return unsafe { avx2::silu(values) };
    }
    silu_body(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_within_two_ulp_of_libm_where_softmax_uses_it() {
        let mut worst = 0f32;
        for i in 0..=200_000 {
            let x = -87.0 + 87.0 * i as f32 / 200_000.0;
            let (ours, libm) = (exp(x), x.exp());
            worst = worst.max((ours - libm).abs() / libm);
        }
        assert!(worst < 2.5 * f32::EPSILON, "relative error {worst}");
    }

    #[test]
    fn softmax_matches_the_definition_with_scale_bias_and_masks() {
        let scores: Vec<f32> = (0..37).map(|i| (i as f32 * 0.37).sin() * 9.0).collect();
        let bias: Vec<f32> = (0..37)
            .map(|i| if i % 5 == 0 { f32::NEG_INFINITY } else { 0.25 })
            .collect();
        let mut ours = scores.clone();
        softmax_row(&mut ours, 0.5, Some(&bias));
        let shifted: Vec<f64> = scores
            .iter()
            .zip(&bias)
            .map(|(s, b)| f64::from(*s) * 0.5 + f64::from(*b))
            .collect();
        let max = shifted.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let total: f64 = shifted.iter().map(|v| (v - max).exp()).sum();
        for (value, s) in ours.iter().zip(&shifted) {
            let expected = (s - max).exp() / total;
            assert!(
                (f64::from(*value) - expected).abs() < 1e-6,
                "{value} vs {expected}"
            );
        }
        let mut masked = vec![f32::NEG_INFINITY; 3];
        softmax_row(&mut masked, 1.0, None);
        assert!(masked.iter().all(|v| v.is_finite()));
    }

    #[test]
    fn numerators_over_their_sum_are_the_softmax() {
        for length in [37, 1024, 5] {
            let scores: Vec<f32> = (0..length).map(|i| (i as f32 * 0.37).sin() * 9.0).collect();
            let bias: Vec<f32> = (0..length)
                .map(|i| if i % 5 == 0 { f32::NEG_INFINITY } else { 0.25 })
                .collect();
            for (bias, scale) in [(None, 0.5), (Some(bias.as_slice()), 0.5), (None, -0.5)] {
                let mut ours = scores.clone();
                let total = softmax_numerators(&mut ours, scale, bias);
                let mut expected = scores.clone();
                softmax_row(&mut expected, scale, bias);
                for (value, expected) in ours.iter().zip(&expected) {
                    assert!(
                        (value / total - expected).abs() < 1e-6,
                        "{value} vs {expected}"
                    );
                }
            }
        }
        let mut masked = vec![0.0; 11];
        let total = softmax_numerators(&mut masked, 1.0, Some(&[f32::NEG_INFINITY; 11]));
        assert!(masked.iter().all(|&value| value / total == 1.0 / 11.0));
    }

    /// Row lengths off both vector widths: a last step of 8, a scalar tail, none.
    const ROW_LENGTHS: [usize; 10] = [1, 7, 8, 15, 16, 24, 37, 64, 1024, 1031];

    /// Scores of a row of `length`, a bias masking every third key, and one masking all.
    fn row_cases(length: usize) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let scores = (0..length)
            .map(|index| ((index * 53 % 97) as f32 - 48.0) * 0.41)
            .collect();
        let masking = (0..length)
            .map(|key| if key % 3 == 0 { f32::NEG_INFINITY } else { 0.5 })
            .collect();
        (scores, masking, vec![f32::NEG_INFINITY; length])
    }

    /// The AVX-512 row softmax gives the AVX2 one's numerators and total bit for bit: lengths
    /// off both vector widths (a last step of 8, a scalar tail), a bias masking some keys, a
    /// scale that is not positive, and a row with every key masked.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn both_row_softmaxes_agree() {
        if !has_avx512() {
            return;
        }
        for length in ROW_LENGTHS {
            let (scores, masking, all_masked) = row_cases(length);
            let cases = [
                (None, 0.125),
                (None, -0.5),
                (Some(masking.as_slice()), 0.125),
                (Some(all_masked.as_slice()), 1.0),
            ];
            for (bias, scale) in cases {
                let (mut wide, mut narrow) = (scores.clone(), scores.clone());
                // SAFETY: the features were checked above.
                let (wide_total, narrow_total) = unsafe {
                    (
                        avx512::softmax_numerators(&mut wide, scale, bias),
                        avx2::softmax_numerators(&mut narrow, scale, bias),
                    )
                };
                let what = format!("{length} keys, scale {scale}, bias {}", bias.is_some());
                assert_eq!(
                    wide_total.to_bits(),
                    narrow_total.to_bits(),
                    "total, {what}"
                );
                let same = wide
                    .iter()
                    .zip(&narrow)
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "numerators, {what}");
            }
        }
    }

    /// exp never returns a subnormal: its clamp at `EXP_LOWEST` keeps every result at or above
    /// f32's smallest normal, which lets the rounded numerators use `vcvtneps2bf16` (that
    /// flushes subnormals). Every f32 from −90 to −86 (past the clamp), and −∞, scalar and
    /// 16 lanes at a time.
    #[test]
    fn numerators_are_never_subnormal() {
        let (low, high) = ((-90f32).to_bits(), (-86f32).to_bits());
        let mut inputs: Vec<f32> = (high..=low).map(f32::from_bits).collect();
        inputs.push(f32::NEG_INFINITY);
        for x in &inputs {
            assert!(exp(*x).is_normal(), "exp({x}) = {}", exp(*x));
        }
        #[cfg(target_arch = "x86_64")]
        if has_avx512() {
            use std::arch::x86_64::*;
            for chunk in inputs.chunks_exact(16) {
                // SAFETY: the CPU was just checked to support AVX-512F; both are 16 values.
                let lanes: [f32; 16] =
                    unsafe { std::mem::transmute(avx512::exp16(_mm512_loadu_ps(chunk.as_ptr()))) };
                assert!(lanes.iter().all(|value| value.is_normal()), "{chunk:?}");
            }
        }
    }

    /// The rounded numerators are `round` of the f32 kernel's, bit for bit, and the totals the
    /// same up to the order of the sum: lengths off both vector widths, a bias masking some
    /// keys, a scale that is not positive, every key masked, and keys down past exp's lowest
    /// input (numerators at and just above f32's smallest normal).
    #[test]
    fn rounded_numerators_are_the_numerators_rounded() {
        use super::super::gemm_bf16::round;
        for length in ROW_LENGTHS {
            let (scores, masking, all_masked) = row_cases(length);
            // From the max at 0 down past exp's lowest input (−87.34).
            let far: Vec<f32> = (0..length)
                .map(|index| {
                    if index == 0 {
                        0.0
                    } else {
                        -86.8 - 0.01 * index as f32
                    }
                })
                .collect();
            let cases = [
                (&scores, None, 0.125),
                (&scores, None, -0.5),
                (&scores, Some(masking.as_slice()), 0.125),
                (&scores, Some(all_masked.as_slice()), 1.0),
                (&far, None, 1.0),
            ];
            for (scores, bias, scale) in cases {
                let (mut numerators, mut scratch) = (scores.clone(), scores.clone());
                let total = softmax_numerators(&mut numerators, scale, bias);
                let mut rounded = vec![0u16; length];
                let rounded_total =
                    softmax_numerators_rounded(&mut scratch, &mut rounded, scale, bias);
                let what = format!("{length} keys, scale {scale}, bias {}", bias.is_some());
                let expected: Vec<u16> = numerators.iter().map(|value| round(*value)).collect();
                assert_eq!(rounded, expected, "numerators, {what}");
                assert!(
                    (rounded_total - total).abs() <= 1e-6 * total,
                    "total {rounded_total} against {total}, {what}"
                );
            }
        }
    }

    /// The AVX-512 column softmax gives the AVX2 one's numerators and totals bit for bit:
    /// whole and half groups of 16 columns, no keys, a bias masking some keys, and columns
    /// whose every key is masked.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn both_column_softmaxes_agree() {
        if !has_avx512() {
            return;
        }
        let stride = 72;
        for (keys, columns) in [(37usize, 64usize), (5, 8), (1, 24), (0, 16), (130, 40)] {
            let scores: Vec<f32> = (0..keys.max(1) * stride)
                .map(|index| ((index * 53 % 97) as f32 - 48.0) * 0.41)
                .collect();
            let masking: Vec<f32> = (0..keys)
                .map(|key| if key % 3 == 0 { f32::NEG_INFINITY } else { 0.5 })
                .collect();
            let all_masked = vec![f32::NEG_INFINITY; keys];
            for bias in [None, Some(masking.as_slice()), Some(all_masked.as_slice())] {
                let (mut wide, mut narrow) = (scores.clone(), scores.clone());
                let (mut wide_totals, mut narrow_totals) = (vec![0f32; 64], vec![0f32; 64]);
                // SAFETY: both features were checked above.
                unsafe {
                    avx512::softmax_columns(
                        (&mut wide, stride),
                        keys,
                        columns,
                        bias,
                        &mut wide_totals,
                    );
                    avx2::softmax_columns(
                        (&mut narrow, stride),
                        keys,
                        columns,
                        bias,
                        &mut narrow_totals,
                    );
                }
                let same =
                    |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same(&wide, &narrow), "numerators, {keys} keys × {columns}");
                assert!(
                    same(&wide_totals, &narrow_totals),
                    "totals, {keys} keys × {columns}"
                );
            }
        }
    }

    #[test]
    fn silu_matches_the_definition() {
        let mut values: Vec<f32> = (-400..400).map(|i| i as f32 * 0.05).collect();
        let expected: Vec<f32> = values.iter().map(|x| x / (1.0 + (-x).exp())).collect();
        silu(&mut values);
        for (v, e) in values.iter().zip(&expected) {
            assert!(
                (v - e).abs() <= 4.0 * f32::EPSILON * e.abs().max(1e-30),
                "{v} vs {e}"
            );
        }
    }
}

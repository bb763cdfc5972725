//! Vectorisable exp for softmax and SiLU.
//!
//! `f32::exp` is a libm call per element that LLVM cannot vectorise; softmax over the UNet's
//! 1024×1024 attention scores spent 15 % of a step in it. This is the Cephes single-precision
//! polynomial (within 2 ulp on the range softmax uses, like PyTorch's own SLEEF kernels), written so
//! the loops below compile to 8-wide AVX2 code when the CPU has it.

/// Lanes the reductions keep apart so they vectorise.
const LANES: usize = 8;

#[inline(always)]
fn exp(x: f32) -> f32 {
    // Below this the result is under f32's smallest normal; softmax treats it as 0 anyway.
    let x = x.clamp(-87.336_54, 88.0);
    let n = (x * std::f32::consts::LOG2_E + 0.5).floor();
    // ln 2 split in two so n·ln2 is subtracted without losing r's low bits.
    let r = x - n * 0.693_359_4 - n * -2.121_944_4e-4;
    let p = 1.987_569_1e-4_f32;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 0.5;
    let y = p * r * r + r + 1.0;
    y * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

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

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn softmax_avx2(row: &mut [f32], scale: f32, bias: Option<&[f32]>) {
    softmax_body(row, scale, bias)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn silu_avx2(values: &mut [f32]) {
    silu_body(values)
}

#[cfg(target_arch = "x86_64")]
fn has_avx2() -> bool {
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
}

/// In place: `row ← softmax(row · scale + bias)`.
pub fn softmax_row(row: &mut [f32], scale: f32, bias: Option<&[f32]>) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the CPU was just checked to support AVX2 and FMA.
        return unsafe { softmax_avx2(row, scale, bias) };
    }
    softmax_body(row, scale, bias)
}

/// In place: `x ← x · sigmoid(x)`.
pub fn silu(values: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the CPU was just checked to support AVX2 and FMA.
        return unsafe { silu_avx2(values) };
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

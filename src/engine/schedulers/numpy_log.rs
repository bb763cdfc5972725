//! numpy's float32 `np.log` on x86-64 (its AVX2/AVX512F kernel): a rational approximation that
//! differs from libm's `logf` in the last bit for about one input in six. diffusers takes float32
//! logs with numpy when it maps σ back to timesteps and in DEIS's coefficients; fractional
//! timesteps amplify that last bit, so Foley reproduces the kernel exactly.

// numpy's coefficients (NPY_COEFF_{P,Q}k_LOGf) as the float32 values its kernel uses.
const P: [f32; 6] = [
    0.0,
    1.0,
    2.112_677_6,
    1.480_000_6,
    0.380_883_78,
    0.025_899_792,
];
const Q: [f32; 6] = [
    1.0,
    2.612_677_6,
    2.453_006,
    0.986_494_3,
    0.154_647_63,
    0.005_875_095_3,
];

/// `np.log` of a float32.
pub(crate) fn log_f32(value: f32) -> f32 {
    if value.is_nan() {
        return value;
    }
    if value < 0.0 {
        return f32::NAN;
    }
    if value == 0.0 {
        return f32::NEG_INFINITY;
    }
    if value == f32::INFINITY {
        return value;
    }
    // Subnormals are scaled by 2^100 first, as numpy does.
    let (scaled, offset) = if value < f32::MIN_POSITIVE {
        (value * f32::from_bits(0x7180_0000), 100.0)
    } else {
        (value, 0.0)
    };
    let bits = scaled.to_bits();
    // Mantissa in [0.5, 1) and the matching exponent.
    let mut exponent = ((bits >> 23) as i32 - 126) as f32 - offset;
    let mut x = f32::from_bits((bits & 0x007F_FFFF) | (126 << 23));
    if x <= std::f32::consts::FRAC_1_SQRT_2 {
        x += x;
        exponent -= 1.0;
    }
    x -= 1.0;
    let mut numerator = P[5].mul_add(x, P[4]);
    let mut denominator = Q[5].mul_add(x, Q[4]);
    for k in (0..4).rev() {
        numerator = numerator.mul_add(x, P[k]);
        denominator = denominator.mul_add(x, Q[k]);
    }
    exponent.mul_add(std::f32::consts::LN_2, numerator / denominator)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_numpy_where_libm_differs() {
        // σ(653) of the cvssp schedule: numpy gives 0x3fe5834a, libm's logf one ulp more.
        assert_eq!(log_f32(6.007_863_5).to_bits(), 0x3fe5_834a);
        assert_eq!(log_f32(1.0), 0.0);
        assert_eq!(log_f32(0.0), f32::NEG_INFINITY);
        assert!((log_f32(1e-40) - (1e-40f64).ln() as f32).abs() < 1e-5);
        for value in [0.01f32, 0.5, 0.75, 1.5, 2.0, 33.0, 1e10] {
            assert!(
                (log_f32(value) - value.ln()).abs()
                    <= 4.0 * f32::EPSILON * value.ln().abs().max(1.0)
            );
        }
    }
}

//! A small complex FFT for the feature extractor and the plots.

use std::f64::consts::PI;

/// In-place complex DFT in f64: iterative radix-2 for powers of two, a direct sum otherwise.
pub(crate) struct Fft {
    size: usize,
    /// `exp(-2πi·k/size)` for k < size.
    twiddles: Vec<(f64, f64)>,
}

impl Fft {
    pub(crate) fn new(size: usize) -> Self {
        let twiddles = (0..size)
            .map(|k| {
                let angle = -2.0 * PI * k as f64 / size as f64;
                (angle.cos(), angle.sin())
            })
            .collect();
        Self { size, twiddles }
    }

    pub(crate) fn forward(&self, data: &mut [(f64, f64)]) {
        let n = self.size;
        if !n.is_power_of_two() {
            let input = data.to_vec();
            for (k, out) in data.iter_mut().enumerate() {
                let mut sum = (0.0, 0.0);
                for (j, &(re, im)) in input.iter().enumerate() {
                    let (c, s) = self.twiddles[(j * k) % n];
                    sum.0 += re * c - im * s;
                    sum.1 += re * s + im * c;
                }
                *out = sum;
            }
            return;
        }
        let bits = n.trailing_zeros();
        for i in 0..n {
            let j = i.reverse_bits() >> (usize::BITS - bits);
            if j > i {
                data.swap(i, j);
            }
        }
        let mut len = 2;
        while len <= n {
            let stride = n / len;
            for start in (0..n).step_by(len) {
                for k in 0..len / 2 {
                    let (c, s) = self.twiddles[k * stride];
                    let (re, im) = data[start + k + len / 2];
                    let product = (re * c - im * s, re * s + im * c);
                    let even = data[start + k];
                    data[start + k] = (even.0 + product.0, even.1 + product.1);
                    data[start + k + len / 2] = (even.0 - product.0, even.1 - product.1);
                }
            }
            len *= 2;
        }
    }
}

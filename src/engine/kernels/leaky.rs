//! Copying a row of a convolution's input through the leaky ReLU that HiFi-GAN puts before
//! each convolution, as the kernels that gather their input read it.

use super::dispatch::avx2_dispatch;

/// `out` = `source`, through the leaky ReLU of `slope` when given (negative values times
/// `slope`, as `F.leaky_relu` computes them).
pub(super) fn copy(source: &[f32], slope: Option<f32>, out: &mut [f32]) {
    match slope {
        Some(slope) => leaky_copy(source, slope, out),
        None => out.copy_from_slice(source),
    }
}

#[inline(always)]
fn leaky_copy_body(source: &[f32], slope: f32, out: &mut [f32]) {
    for (out, &value) in out.iter_mut().zip(source) {
        *out = if value < 0.0 { value * slope } else { value };
    }
}

avx2_dispatch! {
    /// `out` = the leaky ReLU of `source`, a vectorised select.
    fn leaky_copy = leaky_copy_body(source: &[f32], slope: f32, out: &mut [f32]);
}

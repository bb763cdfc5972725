//! Signal processing the models need, shared with `audio` (which may use the engine, never the
//! reverse): FFT, resamplers, CLAP's feature extractor and the editing front-end.

pub mod clap_features;
pub mod fft;
pub mod frontend;
pub mod mel_filters;
pub mod resample;
pub mod sinc_resample;

/// `from` and `to` divided by their greatest common divisor: (input step, output step) of a
/// polyphase resampler.
pub(crate) fn reduced_rates(from: u32, to: u32) -> (usize, usize) {
    fn gcd(a: u64, b: u64) -> u64 {
        if b == 0 { a } else { gcd(b, a % b) }
    }
    let divisor = gcd(from as u64, to as u64).max(1);
    (
        (from as u64 / divisor) as usize,
        (to as u64 / divisor) as usize,
    )
}

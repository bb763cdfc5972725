//! Signal processing the models need, shared with `audio` (which may use the engine, never the
//! reverse): FFT, resamplers, CLAP's feature extractor and the editing front-end.

pub mod block_mel;
pub mod clap_features;
pub mod fft;
pub mod frontend;
pub mod mel_filters;
pub mod resample;
pub mod sinc_resample;
pub mod synthetic;

/// Highest sample rate anything in Foley accepts (8× 96 kHz). Both resamplers return nothing
/// for rates outside 1..=this, so a corrupt rate can never size their filters; the places that
/// read rates (WAV headers, sidecars, configs) refuse such values with a message first.
pub const MAX_SAMPLE_RATE: u32 = 768_000;

/// Whether both rates are ones the resamplers accept.
pub(crate) fn rates_supported(from: u32, to: u32) -> bool {
    (1..=MAX_SAMPLE_RATE).contains(&from) && (1..=MAX_SAMPLE_RATE).contains(&to)
}

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

/// Frames of `channels` interleaved samples as one vector per channel.
pub fn deinterleave(samples: &[f32], channels: usize) -> Vec<Vec<f32>> {
    let channels = channels.max(1);
    (0..channels)
        .map(|channel| {
            samples
                .iter()
                .skip(channel)
                .step_by(channels)
                .copied()
                .collect()
        })
        .collect()
}

/// The mean of each frame of `channels` interleaved samples: a mono fold-down (what CLAP hears
/// of a stereo clip).
pub fn fold_down(samples: &[f32], channels: usize) -> Vec<f32> {
    if channels <= 1 {
        return samples.to_vec();
    }
    samples
        .chunks_exact(channels)
        .map(|frame| frame.iter().sum::<f32>() / channels as f32)
        .collect()
}

/// The channels' float32 mean per frame (`x.mean(0)` in torch); channels of equal length.
pub fn downmix(channels: &[Vec<f32>]) -> Vec<f32> {
    let count = channels.len() as f32;
    let frames = channels.first().map_or(0, Vec::len);
    (0..frames)
        .map(|index| channels.iter().map(|channel| channel[index]).sum::<f32>() / count)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fold_down_averages_each_frame() {
        assert_eq!(fold_down(&[1.0, 0.0, 0.5, -0.5], 2), [0.5, 0.0]);
        assert_eq!(fold_down(&[0.25, 0.5], 1), [0.25, 0.5]);
    }
}

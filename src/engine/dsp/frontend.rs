//! The waveform → log-mel front-end of the editing tasks (research/editing.md §1.2.3): AudioLDM's
//! `wav_to_fbank`, with a downmix instead of channel 0, trimming before normalising and silence
//! left alone instead of turned into NaN.

use super::fft::Fft;
use super::mel_filters::mel_filters;
use super::sinc_resample::resample;
use crate::error::{FoleyError, Result};

/// AudioLDM asserts more than 100 samples at the model's rate (`tools.py` `pad_wav`).
pub const MIN_INPUT_SAMPLES: usize = 101;
/// `ln(1e-5)`: the floor of every log-mel value (`dynamic_range_compression`).
const CLAMP: f64 = 1e-5;

/// STFT and mel settings of one checkpoint: the vocoder's rate, hop (product of its upsample
/// rates) and mel bins (`model_in_dim`); 1024-point FFT for the real 160-sample hop.
#[derive(Debug, Clone)]
pub struct MelFrontEnd {
    /// Hz of the model's audio.
    pub sample_rate: u32,
    /// Samples per mel frame.
    pub hop: usize,
    /// FFT and window length in samples.
    pub n_fft: usize,
    pub n_mels: usize,
    /// Frame counts must be a multiple of this (the VAE's downsampling factor).
    pub frame_multiple: usize,
    /// (n_mels × (n_fft/2 + 1)) Slaney filters from 0 Hz to Nyquist.
    filters: Vec<f32>,
    /// Periodic Hann window of `n_fft` samples.
    window: Vec<f64>,
}

/// The VAE input for one clip and the gain that normalised it.
#[derive(Debug, Clone)]
pub struct LogMel {
    /// (frames × n_mels) row-major natural-log mel magnitudes.
    pub values: Vec<f32>,
    pub frames: usize,
    pub n_mels: usize,
    /// Factor applied to the waveform (peak 0.5); 1 for silence. Dividing the model's output by
    /// it restores the input's level.
    pub gain: f32,
}

impl MelFrontEnd {
    /// The front-end for a checkpoint: `n_fft` is the smallest power of two ≥ 6 hops
    /// (1024 for the real 160-sample hop), the mel range 0 Hz to Nyquist (8 kHz at 16 kHz).
    pub fn for_checkpoint(
        sample_rate: u32,
        hop: usize,
        n_mels: usize,
        frame_multiple: usize,
    ) -> Result<Self> {
        if sample_rate == 0 || hop == 0 || n_mels == 0 || frame_multiple == 0 {
            return Err(FoleyError::Unsupported(format!(
                "mel front-end with rate {sample_rate} Hz, hop {hop}, {n_mels} mel bins, frame multiple {frame_multiple}"
            )));
        }
        let n_fft = (6 * hop).next_power_of_two();
        let window = periodic_hann(n_fft);
        Ok(Self {
            sample_rate,
            hop,
            n_fft,
            n_mels,
            frame_multiple,
            filters: mel_filters(sample_rate, n_fft, n_mels, 0.0, sample_rate as f64 / 2.0),
            window,
        })
    }

    /// `channels` (equal lengths) at `rate` Hz → `frames` log-mel frames at the model's rate.
    pub fn fbank(&self, channels: &[Vec<f32>], rate: u32, frames: usize) -> Result<LogMel> {
        let invalid = |reason: String| Err(FoleyError::InvalidRequest(reason));
        let Some(first) = channels.first() else {
            return invalid("the input audio has no channels".into());
        };
        if channels.iter().any(|channel| channel.len() != first.len()) {
            return invalid("the input audio's channels differ in length".into());
        }
        if rate == 0 {
            return invalid("the input audio's sample rate is 0 Hz".into());
        }
        if channels.iter().flatten().any(|sample| !sample.is_finite()) {
            return invalid("the input audio contains NaN or infinite samples".into());
        }
        if frames == 0 || !frames.is_multiple_of(self.frame_multiple) {
            return invalid(format!(
                "{frames} mel frames is not a positive multiple of {}",
                self.frame_multiple
            ));
        }
        let length = frames * self.hop;
        if length <= self.n_fft / 2 {
            return invalid(format!(
                "{frames} mel frames are too short for a {}-point STFT",
                self.n_fft
            ));
        }

        // 1. Downmix (torch's float32 mean), 2. resample to the model's rate.
        let mut samples = resample(&super::downmix(channels), rate, self.sample_rate);
        // AudioLDM asserts this after resampling (`pad_wav`).
        if samples.len() < MIN_INPUT_SAMPLES {
            return invalid(format!(
                "the input audio is {} samples long at {} Hz; at least {MIN_INPUT_SAMPLES} are needed",
                samples.len(),
                self.sample_rate
            ));
        }
        // 3. Trim or zero-pad to the frames asked for, before measuring the level.
        samples.resize(length, 0.0);
        // 4. Remove DC and normalise the peak to 0.5 in f64, as AudioLDM's numpy code does.
        let (samples, gain) = normalise(&samples);
        // 5. Clip, STFT magnitude, mel, log.
        let samples: Vec<f64> = samples
            .iter()
            .map(|&sample| sample.clamp(-1.0, 1.0) as f64)
            .collect();
        Ok(LogMel {
            values: self.log_mel(&samples, frames),
            frames,
            n_mels: self.n_mels,
            gain,
        })
    }

    /// `log(clamp(melW @ |stft(x)|, 1e-5))` for the first `frames` frames of a reflect-padded,
    /// centred STFT.
    fn log_mel(&self, samples: &[f64], frames: usize) -> Vec<f32> {
        let half = self.n_fft / 2;
        let bins = half + 1;
        let length = samples.len() as isize;
        // Reflect padding never repeats the edge sample (torch's "reflect").
        let at = |position: isize| -> f64 {
            let mut index = position;
            if index < 0 {
                index = -index;
            }
            if index >= length {
                index = 2 * (length - 1) - index;
            }
            samples[index as usize]
        };
        let fft = Fft::new(self.n_fft);
        let mut buffer = vec![(0.0, 0.0); self.n_fft];
        let mut magnitudes = vec![0f64; bins];
        let mut output = Vec::with_capacity(frames * self.n_mels);
        for frame in 0..frames {
            let start = (frame * self.hop) as isize - half as isize;
            for (offset, slot) in buffer.iter_mut().enumerate() {
                *slot = (at(start + offset as isize) * self.window[offset], 0.0);
            }
            push_log_mel(
                &fft,
                &mut buffer,
                &self.filters,
                &mut magnitudes,
                &mut output,
            );
        }
        output
    }
}

/// A periodic Hann window of `n` samples (`torch.hann_window(n)`).
pub(super) fn periodic_hann(n: usize) -> Vec<f64> {
    (0..n)
        .map(|k| 0.5 - 0.5 * (2.0 * std::f64::consts::PI * k as f64 / n as f64).cos())
        .collect()
}

/// Appends one log-mel column: `ln(max(filters @ |fft(buffer)|, 1e-5))` of the windowed frame
/// in `buffer` (transformed in place); `filters` holds one row of `magnitudes.len()` weights
/// per mel band.
pub(super) fn push_log_mel(
    fft: &Fft,
    buffer: &mut [(f64, f64)],
    filters: &[f32],
    magnitudes: &mut [f64],
    output: &mut Vec<f32>,
) {
    fft.forward(buffer);
    for (magnitude, &(re, im)) in magnitudes.iter_mut().zip(buffer.iter()) {
        *magnitude = (re * re + im * im).sqrt();
    }
    for row in filters.chunks_exact(magnitudes.len()) {
        let energy: f64 = row
            .iter()
            .zip(magnitudes.iter())
            .map(|(&weight, &magnitude)| weight as f64 * magnitude)
            .sum();
        output.push(energy.max(CLAMP).ln() as f32);
    }
}

/// DC removal and AudioLDM's two peak normalisations (`0.5·x/(max|x| + 1e-8)`, then
/// `0.5·x/max|x|`); a silent input is returned unchanged with gain 1.
fn normalise(samples: &[f32]) -> (Vec<f32>, f32) {
    let mean = samples.iter().map(|&sample| sample as f64).sum::<f64>() / samples.len() as f64;
    let mut centred: Vec<f64> = samples.iter().map(|&sample| sample as f64 - mean).collect();
    let peak = |values: &[f64]| {
        values
            .iter()
            .fold(0f64, |peak, value| peak.max(value.abs()))
    };
    let first_peak = peak(&centred);
    if first_peak < 1e-8 {
        return (centred.iter().map(|&value| value as f32).collect(), 1.0);
    }
    let first_gain = 0.5 / (first_peak + 1e-8);
    centred.iter_mut().for_each(|value| *value *= first_gain);
    let second_gain = 0.5 / peak(&centred);
    centred.iter_mut().for_each(|value| *value *= second_gain);
    (
        centred.iter().map(|&value| value as f32).collect(),
        (first_gain * second_gain) as f32,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn real() -> MelFrontEnd {
        MelFrontEnd::for_checkpoint(16_000, 160, 64, 4).unwrap()
    }

    #[test]
    fn real_checkpoint_geometry() {
        let front = real();
        assert_eq!(front.n_fft, 1024);
        assert_eq!(
            MelFrontEnd::for_checkpoint(16_000, 4, 8, 2).unwrap().n_fft,
            32
        );
    }

    #[test]
    fn silence_is_the_log_floor_not_nan() {
        let mel = real().fbank(&[vec![0.0; 3000]], 16_000, 16).unwrap();
        assert_eq!(mel.gain, 1.0);
        assert!(mel.values.iter().all(|&v| v == (1e-5f64).ln() as f32));
    }

    #[test]
    fn stereo_of_one_signal_equals_mono() {
        let signal: Vec<f32> = (0..5000).map(|i| (i as f32 * 0.05).sin() * 0.3).collect();
        let mono = real()
            .fbank(std::slice::from_ref(&signal), 22_050, 16)
            .unwrap();
        let stereo = real().fbank(&[signal.clone(), signal], 22_050, 16).unwrap();
        assert_eq!(mono.values, stereo.values);
    }

    #[test]
    fn bad_inputs_are_refused() {
        let front = real();
        assert!(front.fbank(&[vec![0.1; 100]], 16_000, 16).is_err());
        assert!(front.fbank(&[vec![f32::NAN; 1000]], 16_000, 16).is_err());
        assert!(front.fbank(&[vec![0.1; 1000]], 16_000, 15).is_err());
        assert!(
            front
                .fbank(&[vec![0.1; 1000], vec![0.1; 999]], 16_000, 16)
                .is_err()
        );
        assert!(front.fbank(&[], 16_000, 16).is_err());
        assert!(front.fbank(&[vec![0.1; 1000]], 0, 16).is_err());
    }
}

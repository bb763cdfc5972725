//! transformers' `ClapFeatureExtractor`: 48 kHz waveforms → log-mel `input_features`
//! (N, channels, frames, mel bins) for the CLAP audio encoder.
//!
//! Follows `feature_extraction_clap.py` and `audio_utils.spectrogram` step by step: periodic Hann
//! window, `center=True` reflect padding, power 2, mel filter bank, `10·log10(max(x, 1e-10))`.
//! The STFT runs in f64 like numpy; its bins are rounded to complex64 before the power, as numpy
//! stores them in a complex64 array, and the dB values are rounded to f32 at the end.

use std::f64::consts::PI;

use candle_core::{Device, Result, Tensor};
use serde::Deserialize;

use super::fft::Fft;

fn default_feature_size() -> usize {
    64
}
fn default_sampling_rate() -> u32 {
    48_000
}
fn default_hop_length() -> usize {
    480
}
fn default_max_length_s() -> f64 {
    10.0
}
fn default_fft_window_size() -> usize {
    1024
}
fn default_frequency_max() -> f64 {
    14_000.0
}
fn default_truncation() -> String {
    "fusion".into()
}
fn default_padding() -> String {
    "repeatpad".into()
}

/// `feature_extractor/preprocessor_config.json` of a `ClapFeatureExtractor`.
///
/// `nb_max_samples` and `nb_frequency_bins` in the file are ignored: transformers recomputes them
/// from `max_length_s · sampling_rate` and `fft_window_size`. `top_db` is ignored too, because
/// `ClapFeatureExtractor` never passes it on to the spectrogram.
#[derive(Debug, Clone, Deserialize)]
pub struct ClapFeatureExtractorConfig {
    #[serde(default = "default_feature_size")]
    pub feature_size: usize,
    #[serde(default = "default_sampling_rate")]
    pub sampling_rate: u32,
    #[serde(default = "default_hop_length")]
    pub hop_length: usize,
    #[serde(default = "default_max_length_s")]
    pub max_length_s: f64,
    #[serde(default = "default_fft_window_size")]
    pub fft_window_size: usize,
    #[serde(default)]
    pub frequency_min: f64,
    #[serde(default = "default_frequency_max")]
    pub frequency_max: f64,
    #[serde(default)]
    pub top_db: Option<f64>,
    /// `"fusion"` (HTK filter bank, four stacked mels) or `"rand_trunc"` (Slaney filter bank, one).
    #[serde(default = "default_truncation")]
    pub truncation: String,
    /// `"repeatpad"`, `"repeat"` or `"pad"` for clips shorter than `nb_max_samples`.
    #[serde(default = "default_padding")]
    pub padding: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Truncation {
    Fusion,
    RandTrunc,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Padding {
    RepeatPad,
    Repeat,
    Pad,
}

/// Mel scale of a filter bank: HTK (`norm=None`) for fusion, Slaney (`norm="slaney"`) otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MelScale {
    Htk,
    Slaney,
}

/// A configured `ClapFeatureExtractor` with its window and filter bank precomputed.
#[derive(Debug, Clone)]
pub struct ClapFeatureExtractor {
    truncation: Truncation,
    padding: Padding,
    max_samples: usize,
    hop_length: usize,
    fft_size: usize,
    mel_bins: usize,
    sampling_rate: u32,
    window: Vec<f64>,
    /// (frequency bins, mel bins), row-major, of the filter bank the truncation mode uses.
    mel_filters: Vec<f64>,
}

impl ClapFeatureExtractor {
    pub fn new(config: &ClapFeatureExtractorConfig) -> Result<Self> {
        let truncation = match config.truncation.as_str() {
            "fusion" => Truncation::Fusion,
            "rand_trunc" => Truncation::RandTrunc,
            other => candle_core::bail!("unsupported CLAP feature extractor truncation {other:?}"),
        };
        let padding = match config.padding.as_str() {
            "repeatpad" => Padding::RepeatPad,
            "repeat" => Padding::Repeat,
            "pad" => Padding::Pad,
            other => candle_core::bail!("unsupported CLAP feature extractor padding {other:?}"),
        };
        let max_samples = config.max_length_s * config.sampling_rate as f64;
        if max_samples < 1.0 || max_samples.fract() != 0.0 {
            candle_core::bail!(
                "CLAP feature extractor: max_length_s {} × sampling_rate {} is not a whole number of samples",
                config.max_length_s,
                config.sampling_rate
            );
        }
        if config.fft_window_size < 2 || config.hop_length == 0 || config.feature_size == 0 {
            candle_core::bail!(
                "CLAP feature extractor: fft_window_size, hop_length and feature_size must be positive"
            );
        }
        if config.frequency_min > config.frequency_max {
            candle_core::bail!(
                "CLAP feature extractor: frequency_min {} > frequency_max {}",
                config.frequency_min,
                config.frequency_max
            );
        }
        let scale = match truncation {
            Truncation::Fusion => MelScale::Htk,
            Truncation::RandTrunc => MelScale::Slaney,
        };
        Ok(Self {
            truncation,
            padding,
            max_samples: max_samples as usize,
            hop_length: config.hop_length,
            fft_size: config.fft_window_size,
            mel_bins: config.feature_size,
            sampling_rate: config.sampling_rate,
            window: hann_window(config.fft_window_size),
            mel_filters: mel_filter_bank(
                config.fft_window_size / 2 + 1,
                config.feature_size,
                config.frequency_min,
                config.frequency_max,
                config.sampling_rate,
                scale,
            ),
        })
    }

    /// The rate the waveforms must have.
    pub fn sampling_rate(&self) -> u32 {
        self.sampling_rate
    }

    /// Channels of `input_features`: 4 stacked mels for fusion, 1 otherwise.
    pub fn channels(&self) -> usize {
        match self.truncation {
            Truncation::Fusion => 4,
            Truncation::RandTrunc => 1,
        }
    }

    /// Frames of each mel: `nb_max_samples / hop_length + 1` (centred STFT).
    pub fn frames(&self) -> usize {
        self.max_samples / self.hop_length + 1
    }

    /// `ClapFeatureExtractor(list(waveforms), sampling_rate=…, return_tensors="pt").input_features`
    /// as f32 (N, channels, frames, mel bins).
    ///
    /// Clips up to `nb_max_samples` follow transformers exactly. Longer clips are cropped at a
    /// random offset in transformers (`np.random.randint` / `np.random.choice`); here the choice
    /// is deterministic: `rand_trunc` takes the centre crop (offset `overflow / 2`), and `fusion`
    /// takes the middle candidate (index `len / 2`) of each of its three offset ranges.
    pub fn input_features(&self, waveforms: &[&[f32]], device: &Device) -> Result<Tensor> {
        let per_clip = self.channels() * self.frames() * self.mel_bins;
        let mut data = Vec::with_capacity(waveforms.len() * per_clip);
        for waveform in waveforms {
            let mel = self.clip_features(waveform)?;
            if mel.len() != per_clip {
                candle_core::bail!("CLAP features: unexpected feature size {}", mel.len());
            }
            data.extend(mel);
        }
        Tensor::from_vec(
            data,
            (
                waveforms.len(),
                self.channels(),
                self.frames(),
                self.mel_bins,
            ),
            device,
        )
    }

    /// `_get_input_mel` for one clip: (channels, frames, mel bins), flattened.
    fn clip_features(&self, waveform: &[f32]) -> Result<Vec<f32>> {
        if waveform.is_empty() {
            candle_core::bail!("CLAP features: empty waveform");
        }
        // transformers converts every clip to float64 before anything else.
        let waveform: Vec<f64> = waveform.iter().map(|&x| x as f64).collect();
        let max = self.max_samples;
        if waveform.len() > max {
            return match self.truncation {
                Truncation::RandTrunc => {
                    let start = (waveform.len() - max) / 2;
                    self.log_mel(&waveform[start..start + max])
                }
                Truncation::Fusion => self.fusion_of_long_clip(&waveform),
            };
        }
        let padded = self.pad(waveform);
        let mel = self.log_mel(&padded)?;
        Ok(match self.truncation {
            Truncation::Fusion => mel.repeat(4),
            Truncation::RandTrunc => mel,
        })
    }

    /// Pads a clip of at most `nb_max_samples` to exactly that length.
    fn pad(&self, waveform: Vec<f64>) -> Vec<f64> {
        let max = self.max_samples;
        // `int(max_length / len(waveform))` with Python's float division.
        let repeats = (max as f64 / waveform.len() as f64) as usize;
        let mut padded = match self.padding {
            _ if waveform.len() == max => waveform,
            Padding::RepeatPad => waveform.repeat(repeats),
            Padding::Repeat => {
                let mut tiled = waveform.repeat(repeats + 1);
                tiled.truncate(max);
                tiled
            }
            Padding::Pad => waveform,
        };
        // np.pad with zeros (not `padding_value`).
        padded.resize(max, 0.0);
        padded
    }

    /// `truncation="fusion"` for a clip longer than `nb_max_samples`: a shrunk copy of the whole
    /// mel plus front, middle and back crops (`_random_mel_fusion`).
    fn fusion_of_long_clip(&self, waveform: &[f64]) -> Result<Vec<f32>> {
        let mel = self.log_mel(waveform)?;
        let bins = self.mel_bins;
        let total = mel.len() / bins;
        let chunk = self.frames();
        if total == chunk {
            // Longer than nb_max_samples by less than a hop: transformers stacks the whole mel.
            return Ok(mel.repeat(4));
        }
        if bins != 64 {
            // transformers hard-codes 64 mel bins when shrinking (`size=[chunk_frames, 64]`).
            candle_core::bail!("CLAP fusion of long clips needs feature_size 64, got {bins}");
        }
        let ranges = split_in_three(total - chunk + 1);
        let mut out = shrink_frames(&mel, total, chunk, bins);
        for range in ranges {
            let start = range.start + range.len() / 2;
            out.extend_from_slice(&mel[start * bins..(start + chunk) * bins]);
        }
        Ok(out)
    }

    /// `_np_extract_fbank_features`: (frames, mel bins) log-mel of `waveform`, flattened.
    fn log_mel(&self, waveform: &[f64]) -> Result<Vec<f32>> {
        let n = self.fft_size;
        let half = n / 2;
        if waveform.len() < 2 {
            candle_core::bail!("CLAP features: waveform too short for reflect padding");
        }
        let padded: Vec<f64> = (0..waveform.len() + 2 * half)
            .map(|index| waveform[reflect(index as isize - half as isize, waveform.len())])
            .collect();
        let frames = 1 + (padded.len() - n) / self.hop_length;
        let bins = n / 2 + 1;
        let fft = Fft::new(n);
        let mut power = vec![0f64; bins];
        let mut buffer = vec![(0f64, 0f64); n];
        let mut out = Vec::with_capacity(frames * self.mel_bins);
        for frame in 0..frames {
            let start = frame * self.hop_length;
            for (slot, (sample, weight)) in buffer
                .iter_mut()
                .zip(padded[start..start + n].iter().zip(&self.window))
            {
                *slot = (sample * weight, 0.0);
            }
            fft.forward(&mut buffer);
            for (bin, value) in power.iter_mut().enumerate() {
                // numpy keeps the STFT in a complex64 array, then takes |·|² in float64.
                let (re, im) = buffer[bin];
                let magnitude = (re as f32 as f64).hypot(im as f32 as f64);
                *value = magnitude * magnitude;
            }
            for mel in 0..self.mel_bins {
                let energy: f64 = power
                    .iter()
                    .enumerate()
                    .map(|(bin, p)| self.mel_filters[bin * self.mel_bins + mel] * p)
                    .sum();
                // power_to_db with reference 1 and min_value 1e-10 (mel_floor is also 1e-10).
                out.push((10.0 * energy.max(1e-10).log10()) as f32);
            }
        }
        Ok(out)
    }
}

/// `np.pad(mode="reflect")` source index for a position `index` relative to the clip start.
fn reflect(index: isize, len: usize) -> usize {
    let period = 2 * (len as isize - 1);
    let folded = index.rem_euclid(period);
    if folded < len as isize {
        folded as usize
    } else {
        (period - folded) as usize
    }
}

/// `np.array_split(range(count), 3)`, with transformers' fallback of `[0]` for empty sections.
fn split_in_three(count: usize) -> [std::ops::Range<usize>; 3] {
    let base = count / 3;
    let extra = count % 3;
    let mut start = 0;
    let mut ranges = [0..0, 0..0, 0..0];
    for (section, range) in ranges.iter_mut().enumerate() {
        let len = base + usize::from(section < extra);
        *range = start..start + len;
        start += len;
    }
    for range in &mut ranges[1..] {
        if range.start == range.end {
            *range = 0..1;
        }
    }
    ranges
}

/// `F.interpolate(mel, size=[chunk, bins], mode="bilinear", align_corners=False)` in f32; the mel
/// axis keeps its size, so only frames are interpolated.
fn shrink_frames(mel: &[f32], total: usize, chunk: usize, bins: usize) -> Vec<f32> {
    let scale = total as f32 / chunk as f32;
    let mut out = Vec::with_capacity(chunk * bins);
    for frame in 0..chunk {
        let source = (scale * (frame as f32 + 0.5) - 0.5).max(0.0);
        let first = (source.floor() as usize).min(total - 1);
        let lambda = (source - first as f32).clamp(0.0, 1.0);
        let second = if first < total - 1 { first + 1 } else { first };
        for bin in 0..bins {
            let a = mel[first * bins + bin];
            let b = mel[second * bins + bin];
            out.push((1.0 - lambda) * a + lambda * b);
        }
    }
    out
}

/// `window_function(n, "hann")`: periodic, i.e. `np.hanning(n + 1)[:-1]`.
fn hann_window(n: usize) -> Vec<f64> {
    let m = (n + 1) as f64;
    (0..n)
        .map(|k| {
            // np.hanning evaluates 0.5 + 0.5·cos(π·k'/(M-1)) with k' = 1-M, 3-M, …
            let centred = 1.0 - m + 2.0 * k as f64;
            0.5 + 0.5 * (PI * centred / (m - 1.0)).cos()
        })
        .collect()
}

fn hertz_to_mel(freq: f64, scale: MelScale) -> f64 {
    match scale {
        MelScale::Htk => 2595.0 * (1.0 + freq / 700.0).log10(),
        MelScale::Slaney => {
            if freq >= 1000.0 {
                15.0 + (freq / 1000.0).ln() * (27.0 / 6.4f64.ln())
            } else {
                3.0 * freq / 200.0
            }
        }
    }
}

fn mel_to_hertz(mel: f64, scale: MelScale) -> f64 {
    match scale {
        MelScale::Htk => 700.0 * (10f64.powf(mel / 2595.0) - 1.0),
        MelScale::Slaney => {
            if mel >= 15.0 {
                1000.0 * ((6.4f64.ln() / 27.0) * (mel - 15.0)).exp()
            } else {
                200.0 * mel / 3.0
            }
        }
    }
}

/// `np.linspace(start, stop, num)`: `i·step + start`, the last value exactly `stop`.
fn linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    let step = (stop - start) / (num - 1) as f64;
    let mut values: Vec<f64> = (0..num).map(|i| i as f64 * step + start).collect();
    if let Some(last) = values.last_mut() {
        *last = stop;
    }
    values
}

/// `audio_utils.mel_filter_bank`: (frequency bins, mel bins) row-major triangular filters, HTK
/// without normalisation or Slaney with area normalisation.
fn mel_filter_bank(
    frequency_bins: usize,
    mel_bins: usize,
    min_frequency: f64,
    max_frequency: f64,
    sampling_rate: u32,
    scale: MelScale,
) -> Vec<f64> {
    let mel_points = linspace(
        hertz_to_mel(min_frequency, scale),
        hertz_to_mel(max_frequency, scale),
        mel_bins + 2,
    );
    let filter_freqs: Vec<f64> = mel_points
        .iter()
        .map(|&mel| mel_to_hertz(mel, scale))
        .collect();
    // `sampling_rate // 2` is an integer division in transformers.
    let fft_freqs = linspace(0.0, (sampling_rate / 2) as f64, frequency_bins);
    let mut filters = vec![0f64; frequency_bins * mel_bins];
    for (bin, &freq) in fft_freqs.iter().enumerate() {
        for mel in 0..mel_bins {
            let down = -(filter_freqs[mel] - freq) / (filter_freqs[mel + 1] - filter_freqs[mel]);
            let up =
                (filter_freqs[mel + 2] - freq) / (filter_freqs[mel + 2] - filter_freqs[mel + 1]);
            let mut weight = down.min(up).max(0.0);
            if scale == MelScale::Slaney {
                weight *= 2.0 / (filter_freqs[mel + 2] - filter_freqs[mel]);
            }
            filters[bin * mel_bins + mel] = weight;
        }
    }
    filters
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fft_matches_direct_sum() {
        let input: Vec<(f64, f64)> = (0..16).map(|k| ((k as f64 * 0.7).sin(), 0.0)).collect();
        let mut fast = input.clone();
        Fft::new(16).forward(&mut fast);
        for (k, value) in fast.iter().enumerate() {
            let mut expected = (0.0, 0.0);
            for (j, (re, _)) in input.iter().enumerate() {
                let angle = -2.0 * PI * (j * k) as f64 / 16.0;
                expected.0 += re * angle.cos();
                expected.1 += re * angle.sin();
            }
            assert!((value.0 - expected.0).abs() < 1e-12 && (value.1 - expected.1).abs() < 1e-12);
        }
    }

    #[test]
    fn reflect_matches_numpy() {
        // np.pad([0, 1, 2, 3], 5, mode="reflect") = [1 2 3 2 1 | 0 1 2 3 | 2 1 0 1 2]
        let mapped: Vec<usize> = (-5..9).map(|i| reflect(i, 4)).collect();
        assert_eq!(mapped, [1, 2, 3, 2, 1, 0, 1, 2, 3, 2, 1, 0, 1, 2]);
    }

    #[test]
    fn array_split_in_three() {
        assert_eq!(split_in_three(7), [0..3, 3..5, 5..7]);
        assert_eq!(split_in_three(1), [0..1, 0..1, 0..1]);
    }
}

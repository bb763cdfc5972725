//! EBU R128 loudness of a clip (ITU-R BS.1770-4 through the `ebur128` crate): integrated
//! loudness, the loudest short-term (3 s) and momentary (400 ms) windows, loudness range and
//! true peak, as a sound designer reads them off a meter.

use ebur128::{EbuR128, Mode};
use serde::{Deserialize, Serialize};

/// A clip's loudness. `None` where the measure is undefined (silence, or a clip shorter than
/// the window).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Loudness {
    /// Integrated (gated) loudness over the whole clip, in LUFS.
    pub integrated_lufs: Option<f64>,
    /// The loudest 3 s window, in LUFS.
    pub short_term_max_lufs: Option<f64>,
    /// The loudest 400 ms window, in LUFS.
    pub momentary_max_lufs: Option<f64>,
    /// Loudness range (EBU Tech 3342), in LU.
    pub range_lu: Option<f64>,
    /// The highest true (4× oversampled) peak over the channels, in dBTP.
    pub true_peak_dbtp: Option<f64>,
}

/// Frames between two reads of the sliding short-term and momentary windows (100 ms at
/// 48 kHz, the meters' usual update).
const WINDOW_STEP_SECONDS: f64 = 0.1;

fn finite(value: f64) -> Option<f64> {
    value.is_finite().then_some(value)
}

/// Measures `samples` (frames of `channels` interleaved) at `sample_rate`.
pub fn measure(samples: &[f32], channels: usize, sample_rate: u32) -> Result<Loudness, String> {
    let channels = channels.max(1);
    let mut meter = EbuR128::new(
        channels as u32,
        sample_rate,
        Mode::I | Mode::S | Mode::M | Mode::LRA | Mode::TRUE_PEAK,
    )
    .map_err(|error| format!("loudness meter: {error}"))?;
    let step = ((sample_rate as f64 * WINDOW_STEP_SECONDS) as usize).max(1) * channels;
    let (mut short_term, mut momentary) = (f64::NEG_INFINITY, f64::NEG_INFINITY);
    let mut fed = 0;
    for chunk in samples.chunks(step) {
        let whole = chunk.len() - chunk.len() % channels;
        meter
            .add_frames_f32(&chunk[..whole])
            .map_err(|error| format!("loudness meter: {error}"))?;
        fed += whole / channels;
        // The windows are only full once that much audio has gone in.
        if fed as f64 >= 3.0 * sample_rate as f64 {
            short_term = short_term.max(meter.loudness_shortterm().unwrap_or(f64::NEG_INFINITY));
        }
        if fed as f64 >= 0.4 * sample_rate as f64 {
            momentary = momentary.max(meter.loudness_momentary().unwrap_or(f64::NEG_INFINITY));
        }
    }
    let true_peak = (0..channels as u32)
        .filter_map(|channel| meter.true_peak(channel).ok())
        .fold(0f64, f64::max);
    Ok(Loudness {
        integrated_lufs: meter.loudness_global().ok().and_then(finite),
        short_term_max_lufs: finite(short_term),
        momentary_max_lufs: finite(momentary),
        range_lu: meter.loudness_range().ok().and_then(finite),
        true_peak_dbtp: (true_peak > 0.0).then(|| 20.0 * true_peak.log10()),
    })
}

/// The gain in dB that brings a clip of `loudness` to `target_lufs` without its true peak
/// going above `ceiling_dbtp`; `None` for a silent clip. The ceiling wins: a clip whose peaks
/// would clip ends up quieter than the target.
pub fn normalising_gain_db(
    loudness: &Loudness,
    target_lufs: f64,
    ceiling_dbtp: f64,
) -> Option<f64> {
    let gain = target_lufs - loudness.integrated_lufs?;
    Some(match loudness.true_peak_dbtp {
        Some(peak) => gain.min(ceiling_dbtp - peak),
        None => gain,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `a·sin(2π f n / rate)` in f64, rounded to f32 (as the reference script builds it).
    fn sine(frequency: f64, amplitude: f64, rate: u32, seconds: f64) -> Vec<f32> {
        (0..(rate as f64 * seconds) as usize)
            .map(|n| {
                (amplitude
                    * (2.0 * std::f64::consts::PI * frequency * n as f64 / rate as f64).sin())
                    as f32
            })
            .collect()
    }

    fn interleave(left: &[f32], right: &[f32]) -> Vec<f32> {
        left.iter().zip(right).flat_map(|(l, r)| [*l, *r]).collect()
    }

    /// References from pyloudnorm 0.2.0 (`Meter(rate).integrated_loudness(x)`) on the same
    /// signals: -23.035 (the EBU Tech 3341 case: a stereo 1 kHz sine at -23 dBFS), -9.756,
    /// -14.040.
    #[test]
    fn integrated_loudness_matches_pyloudnorm_and_ebu_3341() {
        let ebu = sine(1000.0, 10f64.powf(-23.0 / 20.0), 48_000, 20.0);
        let cases = [
            (interleave(&ebu, &ebu), 2, 48_000, -23.035),
            (sine(440.0, 0.5, 44_100, 5.0), 1, 44_100, -9.756),
            (
                interleave(
                    &sine(100.0, 0.3, 48_000, 4.0),
                    &sine(3000.0, 0.1, 48_000, 4.0),
                ),
                2,
                48_000,
                -14.040,
            ),
        ];
        for (samples, channels, rate, expected) in cases {
            let loudness = measure(&samples, channels, rate).unwrap();
            let integrated = loudness.integrated_lufs.unwrap();
            assert!(
                (integrated - expected).abs() <= 0.1,
                "{integrated} LUFS, pyloudnorm {expected}"
            );
            // A steady tone is as loud in every window.
            assert!((loudness.short_term_max_lufs.unwrap() - integrated).abs() < 0.2);
            assert!((loudness.momentary_max_lufs.unwrap() - integrated).abs() < 0.2);
        }
    }

    #[test]
    fn true_peak_sees_between_the_samples() {
        // A quarter-rate sine at 45°: every sample sits at 0.707 of the true peak of 0.5.
        let samples: Vec<f32> = (0..44_100)
            .map(|n| {
                (0.5 * (std::f64::consts::FRAC_PI_2 * n as f64 + std::f64::consts::FRAC_PI_4).sin())
                    as f32
            })
            .collect();
        let loudness = measure(&samples, 1, 44_100).unwrap();
        let peak = loudness.true_peak_dbtp.unwrap();
        let sample_peak = 20.0 * (0.5f64 * std::f64::consts::FRAC_1_SQRT_2).log10();
        assert!((peak - 20.0 * 0.5f64.log10()).abs() < 0.5, "{peak} dBTP");
        assert!(
            peak > sample_peak + 2.0,
            "{peak} dBTP vs sample peak {sample_peak}"
        );
    }

    #[test]
    fn silence_has_no_loudness_and_the_ceiling_wins() {
        let silence = measure(&vec![0.0; 48_000], 1, 48_000).unwrap();
        assert_eq!(silence.integrated_lufs, None);
        assert_eq!(silence.true_peak_dbtp, None);
        assert_eq!(normalising_gain_db(&silence, -14.0, -1.0), None);
        let loud = Loudness {
            integrated_lufs: Some(-20.0),
            true_peak_dbtp: Some(-3.0),
            ..Default::default()
        };
        assert_eq!(normalising_gain_db(&loud, -23.0, -1.0), Some(-3.0));
        assert_eq!(normalising_gain_db(&loud, -14.0, -1.0), Some(2.0));
    }
}

//! `torchaudio.functional.resample` with its defaults (`sinc_interp_hann`, `lowpass_filter_width`
//! 6, `rolloff` 0.99): the resampler AudioLDM's front-end runs on every input file.
//!
//! torchaudio builds a dense `(new, 2·width + orig)` kernel and convolves with stride `orig`
//! (rates reduced by their gcd). Outside `|t| ≤ 6` its taps are the clamped edge value
//! `sinc(6π)·cos²(π/2)` ≈ 1e-16, so only the band around each phase's centre is kept here:
//! co-prime rates such as 44 101 → 16 000 stay cheap instead of needing a 2.8 GB kernel.

use std::f64::consts::PI;

const LOWPASS_FILTER_WIDTH: f64 = 6.0;
const ROLLOFF: f64 = 0.99;

/// One output phase: taps `weights` applied from padded position `first` on.
struct Phase {
    first: usize,
    weights: Vec<f64>,
}

/// Resamples `input` from `from` Hz to `to` Hz; both must be non-zero. Returns the input
/// unchanged when the rates are equal, and `ceil(to·len/from)` samples otherwise.
pub fn resample(input: &[f32], from: u32, to: u32) -> Vec<f32> {
    if !super::rates_supported(from, to) {
        return Vec::new();
    }
    if from == to || input.is_empty() {
        return input.to_vec();
    }
    let (orig, new) = super::reduced_rates(from, to);
    let base = orig.min(new) as f64 * ROLLOFF;
    let width = (LOWPASS_FILTER_WIDTH * orig as f64 / base).ceil() as usize;
    let taps = 2 * width + orig;
    let phases: Vec<Phase> = (0..new)
        .map(|j| phase(j, orig, new, base, width, taps))
        .collect();

    let length = input.len();
    // Python's `ceil(new * length / orig)` in float64.
    let target = (new as f64 * length as f64 / orig as f64).ceil() as usize;
    let padded = |position: usize| -> f32 {
        position
            .checked_sub(width)
            .and_then(|index| input.get(index))
            .copied()
            .unwrap_or(0.0)
    };
    let mut output = Vec::with_capacity(target);
    'frames: for frame in 0.. {
        for phase in &phases {
            if output.len() == target {
                break 'frames;
            }
            let start = frame * orig + phase.first;
            let sum: f64 = phase
                .weights
                .iter()
                .enumerate()
                .map(|(k, &weight)| weight * padded(start + k) as f64)
                .sum();
            output.push(sum as f32);
        }
    }
    output
}

/// The non-negligible taps of phase `j`, in f64 (torchaudio builds them in the input's dtype;
/// f64 keeps the stop band clean of float32 rounding, and float32 inputs still agree to 1e-6).
fn phase(j: usize, orig: usize, new: usize, base: f64, width: usize, taps: usize) -> Phase {
    let position = |i: usize| -> f64 {
        ((i as f64 - width as f64) / orig as f64 - j as f64 / new as f64) * base
    };
    // |t| < 6 ⇔ i within ±6·orig/base of the phase centre.
    let centre = width as f64 + j as f64 * orig as f64 / new as f64;
    let reach = LOWPASS_FILTER_WIDTH * orig as f64 / base + 1.0;
    let first = (centre - reach).floor().max(0.0) as usize;
    let last = ((centre + reach).ceil() as usize).min(taps - 1);
    let weights = (first..=last)
        .map(|i| {
            let t = position(i).clamp(-LOWPASS_FILTER_WIDTH, LOWPASS_FILTER_WIDTH);
            let window = (t * PI / LOWPASS_FILTER_WIDTH / 2.0).cos().powi(2);
            let sinc = if t == 0.0 {
                1.0
            } else {
                (t * PI).sin() / (t * PI)
            };
            sinc * window * (base / orig as f64)
        })
        .collect();
    Phase { first, weights }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_follow_torchaudio() {
        assert_eq!(resample(&[0.5; 441], 44_100, 16_000).len(), 160);
        assert_eq!(resample(&[0.5; 1000], 44_100, 16_000).len(), 363);
        assert_eq!(resample(&[0.5; 100], 16_000, 48_000).len(), 300);
        assert_eq!(resample(&[0.5; 7], 16_000, 16_000), vec![0.5; 7]);
    }

    #[test]
    fn a_constant_stays_constant_away_from_the_edges() {
        let output = resample(&vec![1.0; 4410], 44_100, 16_000);
        for value in &output[100..1500] {
            assert!((value - 1.0).abs() < 2e-3, "{value}");
        }
    }

    #[test]
    fn co_prime_rates_are_cheap() {
        let output = resample(&vec![0.25; 44_101], 44_101, 16_000);
        assert_eq!(output.len(), 16_000);
        assert!((output[8000] - 0.25).abs() < 1e-3);
    }
}

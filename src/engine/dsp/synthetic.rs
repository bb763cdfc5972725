//! Deterministic synthetic sounds (noise bursts, sweeps, clicks, tones, rumble, silence) at
//! several levels: probe signals for fitting the step preview's latent → mel projection without
//! shipping or downloading any audio.

use std::f64::consts::TAU;

/// Kinds of segment a probe signal is made of; a variant starts the cycle at another kind.
const KINDS: usize = 8;
/// Segment levels in dB full scale, so the probe spans loud to nearly silent.
const LEVELS_DB: [f64; 8] = [-3.0, -14.0, -28.0, -8.0, -40.0, -20.0, -6.0, -50.0];

/// SplitMix64: a tiny generator whose stream depends on the seed alone (never on time).
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [low, high).
    fn between(&mut self, low: f64, high: f64) -> f64 {
        low + (high - low) * self.unit()
    }

    /// Uniform in [−1, 1).
    fn signed(&mut self) -> f64 {
        2.0 * self.unit() - 1.0
    }
}

/// `samples` samples at `sample_rate` Hz of eight back-to-back segments, each a different kind
/// of sound at a different level; `variant` reorders the kinds and redraws every parameter, so
/// variants are distinct probes. Peak at most about 0.7.
pub fn probe_signal(samples: usize, sample_rate: u32, variant: u64) -> Vec<f32> {
    let mut random = SplitMix(0xF01E_5EED ^ variant.wrapping_mul(0x2545_F491_4F6C_DD1D));
    let rate = sample_rate.max(1) as f64;
    let nyquist = rate / 2.0;
    let segment = samples.div_ceil(KINDS).max(1);
    let mut output = Vec::with_capacity(samples);
    for index in 0..KINDS {
        let start = index * segment;
        let length = segment.min(samples.saturating_sub(start));
        let kind = (index + variant as usize) % KINDS;
        let level = 10f64.powf(LEVELS_DB[(index * 3 + variant as usize) % LEVELS_DB.len()] / 20.0);
        let seconds = |n: usize| n as f64 / rate;
        let mut phase = 0.0;
        let mut state = 0.0;
        // Every segment draws all parameters, used or not: simpler than per-kind draws.
        let (low, high) = (random.between(0.01, 0.05), random.between(0.25, 0.45));
        let decay = random.between(2.0, 12.0) / seconds(length).max(1e-9);
        let clicks = 3 + (random.unit() * 10.0) as usize;
        let fundamental = random.between(0.005, 0.05) * rate;
        let smoothing = random.between(0.02, 0.3);
        let modulation = random.between(2.0, 12.0) / seconds(length).max(1e-9);
        for n in 0..length {
            let t = seconds(n);
            let progress = n as f64 / length as f64;
            let noise = random.signed();
            let value = match kind {
                0 => noise * (-decay * t).exp(),
                1 => {
                    // Exponential sweep from `low` to `high` of the sample rate.
                    let frequency = rate * low * (high / low).powf(progress);
                    phase += TAU * frequency / rate;
                    phase.sin()
                }
                2 => {
                    let spacing = (length / clicks).max(1);
                    let since = n % spacing;
                    let strength = 1.0 - 0.8 * ((n / spacing) % 4) as f64 / 3.0;
                    noise * strength * (-(since as f64) / 3.0).exp()
                }
                3 => {
                    let mut sum = 0.0;
                    for partial in 1..=8 {
                        let frequency = fundamental * partial as f64;
                        if frequency < nyquist {
                            sum += (TAU * frequency * t).sin() / partial as f64;
                        }
                    }
                    sum * 0.5
                }
                4 => noise * 1e-4,
                5 => {
                    state += smoothing * (noise - state);
                    state * 3.0
                }
                6 => {
                    let carrier = (TAU * high * 0.5 * rate * t).sin();
                    carrier * 0.5 * (1.0 + (modulation * t).sin())
                }
                _ => {
                    // High-passed noise under a steady tone.
                    let high_passed = noise - state;
                    state = noise;
                    0.4 * high_passed + 0.5 * (TAU * fundamental * 4.0 * t).sin()
                }
            };
            output.push((level * value.clamp(-1.0, 1.0)) as f32);
        }
    }
    output
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_are_deterministic_bounded_and_distinct() {
        let first = probe_signal(8000, 16_000, 0);
        assert_eq!(first, probe_signal(8000, 16_000, 0));
        assert_eq!(first.len(), 8000);
        assert!(first.iter().all(|s| s.is_finite() && s.abs() <= 0.71));
        assert_ne!(first, probe_signal(8000, 16_000, 1));
        assert_eq!(probe_signal(5, 16_000, 3).len(), 5);
        assert!(probe_signal(0, 16_000, 0).is_empty());
    }
}

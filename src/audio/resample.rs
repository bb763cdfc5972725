//! Band-limited sample-rate conversion (polyphase windowed sinc) for export at 44.1/48 kHz.

use std::f64::consts::PI;

/// Zero crossings of the sinc kernel on each side; 32 keeps ripple far below 16-bit noise.
const HALF_TAPS: usize = 32;
const KAISER_BETA: f64 = 8.6;

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Modified Bessel function of the first kind, order 0 (series), for the Kaiser window.
fn bessel_i0(x: f64) -> f64 {
    let mut sum = 1.0;
    let mut term = 1.0;
    let half = x / 2.0;
    for k in 1..50 {
        term *= (half / k as f64).powi(2);
        sum += term;
        if term < 1e-12 * sum {
            break;
        }
    }
    sum
}

/// Resamples `input` from `from_rate` to `to_rate`; lengths scale by `to_rate / from_rate`
/// (rounded down). Equal rates return the input unchanged.
pub fn resample(input: &[f32], from_rate: u32, to_rate: u32) -> Vec<f32> {
    if from_rate == to_rate || input.is_empty() {
        return input.to_vec();
    }
    let divisor = gcd(from_rate as u64, to_rate as u64);
    let up = (to_rate as u64 / divisor) as usize;
    let down = (from_rate as u64 / divisor) as usize;
    // Cut off at the lower Nyquist frequency, relative to the input rate.
    let cutoff = (to_rate as f64 / from_rate as f64).min(1.0);
    let half_width = (HALF_TAPS as f64 / cutoff).ceil() as isize;
    let norm = bessel_i0(KAISER_BETA);

    // One filter per output phase: taps at input offsets -half_width+1 ..= half_width.
    let taps = (2 * half_width) as usize;
    let filters: Vec<Vec<f64>> = (0..up)
        .map(|phase| {
            let fraction = phase as f64 / up as f64;
            (0..taps)
                .map(|tap| {
                    let distance = (tap as isize - half_width + 1) as f64 - fraction;
                    let x = distance * cutoff;
                    let sinc = if x.abs() < 1e-12 {
                        1.0
                    } else {
                        (PI * x).sin() / (PI * x)
                    };
                    let position = distance / half_width as f64;
                    let window = if position.abs() >= 1.0 {
                        0.0
                    } else {
                        bessel_i0(KAISER_BETA * (1.0 - position * position).sqrt()) / norm
                    };
                    cutoff * sinc * window
                })
                .collect()
        })
        .collect();

    let output_len = input.len() * up / down;
    (0..output_len)
        .map(|index| {
            let position = index * down;
            let base = (position / up) as isize;
            let filter = &filters[position % up];
            let mut sum = 0.0;
            for (tap, weight) in filter.iter().enumerate() {
                let source = base + tap as isize - half_width + 1;
                if source >= 0 && (source as usize) < input.len() {
                    sum += weight * input[source as usize] as f64;
                }
            }
            sum as f32
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(freq: f64, rate: u32, seconds: f64) -> Vec<f32> {
        let count = (rate as f64 * seconds) as usize;
        (0..count)
            .map(|n| (2.0 * PI * freq * n as f64 / rate as f64).sin() as f32)
            .collect()
    }

    #[test]
    fn keeps_a_sine_wave_a_sine_wave() {
        for to_rate in [44_100, 48_000] {
            let output = resample(&sine(1000.0, 16_000, 0.5), 16_000, to_rate);
            let expected = sine(1000.0, to_rate, 0.5);
            assert_eq!(output.len(), expected.len());
            // Away from the edges the error is tiny.
            let margin = to_rate as usize / 100;
            let worst = output[margin..output.len() - margin]
                .iter()
                .zip(&expected[margin..])
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(worst < 2e-3, "{to_rate}: {worst}");
        }
    }

    #[test]
    fn same_rate_is_identity() {
        let input = vec![0.5, -0.25, 0.125];
        assert_eq!(resample(&input, 16_000, 16_000), input);
    }
}

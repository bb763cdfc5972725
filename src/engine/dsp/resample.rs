//! Band-limited sample-rate conversion (polyphase windowed sinc) for export at 44.1/48 kHz and
//! for CLAP scoring at 48 kHz.
//!
//! The filter is the one libsoxr designs for its "HQ" recipe (`librosa.resample`'s default
//! `res_type="soxr_hq"`): a linear-phase Kaiser-windowed sinc with 20-bit precision (126.4 dB
//! stop-band attenuation), pass band to 91.37 % and stop band from 100 % of the lower Nyquist
//! frequency. For small rational ratios such as 16 → 48 kHz libsoxr runs exactly this filter in a
//! single stage, so the output matches soxr up to its float32 FFT rounding (~1e-7). Other ratios
//! (e.g. 16 → 44.1 kHz) use several stages in libsoxr; here they get the same response in one
//! polyphase stage. Samples outside the input count as zero, as in soxr's one-shot resampling.

use std::f64::consts::PI;

/// libsoxr's `SOXR_HQ` precision in bits.
const PRECISION_BITS: f64 = 20.0;

fn linear_to_db(x: f64) -> f64 {
    x.log10() * 20.0
}

/// Modified Bessel function of the first kind, order 0 (series), for the Kaiser window.
fn bessel_i0(x: f64) -> f64 {
    let mut sum = 1.0;
    let mut term = 1.0;
    let half = x / 2.0;
    for k in 1..500 {
        term *= (half / k as f64).powi(2);
        sum += term;
        if term < 1e-17 * sum {
            break;
        }
    }
    sum
}

/// libsoxr `lsx_inv_f_resp`: normalised frequency at which the response has dropped `drop` dB,
/// for a stop-band attenuation `att`.
fn inverse_frequency_response(drop: f64, att: f64) -> f64 {
    let phi = ((2.0517e-07 * att - 1.1303e-04) * att + 0.023154) * att + 0.55924;
    let power = 0.5f64.ln() / (phi * 0.5).sin().ln();
    let drop = (drop * (std::f64::consts::LN_10 * 0.05)).exp();
    let s = if drop > 0.5 { 1.0 - drop } else { drop };
    let x = s.powf(1.0 / power).asin() / phi;
    if drop > 0.5 { x } else { 1.0 - x }
}

/// libsoxr `lsx_kaiser_beta`: Kaiser β for attenuation `att` (≥ 60 dB) and relative transition
/// width `transition`, from soxr's fitted polynomials.
fn kaiser_beta(att: f64, transition: f64) -> f64 {
    const COEFS: [[f64; 4]; 10] = [
        [-6.784957e-10, 1.02856e-05, 0.1087556, -0.8988365 + 0.001],
        [-6.897885e-10, 1.027433e-05, 0.10876, -0.8994658 + 0.002],
        [-1.000683e-09, 1.030092e-05, 0.1087677, -0.9007898 + 0.003],
        [-3.654474e-10, 1.040631e-05, 0.1087085, -0.8977766 + 0.006],
        [8.106988e-09, 6.983091e-06, 0.1091387, -0.9172048 + 0.015],
        [9.519571e-09, 7.272678e-06, 0.1090068, -0.9140768 + 0.025],
        [-5.626821e-09, 1.342186e-05, 0.1083999, -0.9065452 + 0.05],
        [-9.965946e-08, 5.073548e-05, 0.1040967, -0.7672778 + 0.085],
        [1.604808e-07, -5.856462e-05, 0.1185998, -1.34824 + 0.1],
        [-1.511964e-07, 6.363034e-05, 0.1064627, -0.9876665 + 0.18],
    ];
    let realm = (transition / 0.0005).ln() / 2f64.ln();
    let whole = realm as i64;
    let pick = |index: i64| COEFS[index.clamp(0, COEFS.len() as i64 - 1) as usize];
    let eval = |c: [f64; 4]| ((c[0] * att + c[1]) * att + c[2]) * att + c[3];
    let b0 = eval(pick(whole));
    let b1 = eval(pick(whole + 1));
    b0 + (b1 - b0) * (realm - whole as f64)
}

/// The prototype low-pass filter at `fn_ratio` times the lower rate, as libsoxr's
/// `lsx_design_lpf(Fp, Fs, Fn, att, 0, -4, -1)` + `lsx_make_lpf`, scaled by `gain`.
/// Returns an odd number of taps, symmetric around the centre.
fn design_filter(fn_ratio: f64, gain: f64) -> Vec<f64> {
    let rejection = PRECISION_BITS * linear_to_db(2.0);
    let att = (PRECISION_BITS + 1.0) * linear_to_db(2.0);
    // soxr_quality_spec: passband_end = 1 - 0.05 / lsx_to_3dB(rej); stop band begins at 1.
    let to_3db = 1.0 - inverse_frequency_response(-3.0, rejection);
    let stop_begin = 1.0;
    let pass_end = 1.0 - 0.05 / to_3db;
    // `tighten()` with a factor of 1 still rounds like this in soxr.
    let pass_end = stop_begin - (stop_begin - pass_end);

    let pass = pass_end / fn_ratio;
    let stop = stop_begin / fn_ratio;
    let transition = (0.5 * (stop - pass)).min(0.5 * stop);
    let cutoff = stop - transition;
    let beta = kaiser_beta(att, transition * 0.5 / cutoff);
    let length_factor =
        ((0.0007528358 - 1.577737e-05 * beta) * beta + 0.6248022) * beta + 0.06186902;
    let taps = (length_factor / transition + 1.0).ceil() as usize;
    // num_taps ≡ 1 (mod 4).
    let taps = (taps + 2) / 4 * 4 + 1;

    let m = taps - 1;
    let norm = gain / bessel_i0(beta);
    // ρ = 0.5 for a single-phase design.
    let inverse_half_width = 1.0 / (0.5 * m as f64 + 0.5);
    let mut h = vec![0.0; taps];
    for i in 0..=m / 2 {
        let z = i as f64 - 0.5 * m as f64;
        let x = z * PI;
        let y = z * inverse_half_width;
        let sinc = if x != 0.0 {
            (cutoff * x).sin() / x
        } else {
            cutoff
        };
        let value = sinc * bessel_i0(beta * (1.0 - y * y).sqrt()) * norm;
        h[i] = value;
        h[m - i] = value;
    }
    h
}

/// Resamples interleaved frames of `channels` channels, each channel on its own.
pub fn resample_frames(input: &[f32], channels: usize, from_rate: u32, to_rate: u32) -> Vec<f32> {
    if channels <= 1 {
        return resample(input, from_rate, to_rate);
    }
    let resampled: Vec<Vec<f32>> = (0..channels)
        .map(|channel| {
            let plane: Vec<f32> = input
                .iter()
                .skip(channel)
                .step_by(channels)
                .copied()
                .collect();
            resample(&plane, from_rate, to_rate)
        })
        .collect();
    let frames = resampled.iter().map(Vec::len).min().unwrap_or(0);
    (0..frames)
        .flat_map(|frame| resampled.iter().map(move |plane| plane[frame]))
        .collect()
}

/// Resamples `input` from `from_rate` to `to_rate`; the output has `ceil(len · to / from)`
/// samples, as `librosa.resample` returns. Equal rates return the input unchanged.
pub fn resample(input: &[f32], from_rate: u32, to_rate: u32) -> Vec<f32> {
    if !super::rates_supported(from_rate, to_rate) {
        return Vec::new();
    }
    if from_rate == to_rate || input.is_empty() {
        return input.to_vec();
    }
    let (down, up) = super::reduced_rates(from_rate, to_rate);
    // Designed at `up` times the input rate; the Nyquist frequency of the lower rate is
    // 1 / max(up, down) of that rate's Nyquist frequency. Gain `up` restores the level after
    // zero-stuffing.
    let filter = design_filter(up.max(down) as f64, up as f64);
    let centre = (filter.len() / 2) as isize;

    let output_len = (input.len() * up).div_ceil(down);
    (0..output_len)
        .map(|index| {
            // Output `index` sits at `index · down` on the `up`-times grid, input `n` at `n · up`;
            // the filter tap between them is `index · down - n · up + centre`.
            let position = (index * down) as isize;
            let first = (position - centre).max(0).div_euclid(up as isize)
                + isize::from((position - centre).max(0) % up as isize != 0);
            let last = ((position + centre).div_euclid(up as isize)).min(input.len() as isize - 1);
            let mut sum = 0.0;
            for source in first..=last {
                let tap = (position - source * up as isize + centre) as usize;
                sum += filter[tap] * input[source as usize] as f64;
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

    #[test]
    fn soxr_hq_design_for_16_to_48_khz() {
        // Values printed by libsoxr 0.1.3 (python-soxr 1.1.0) for a unit impulse, 16 → 48 kHz.
        let filter = design_filter(3.0, 3.0);
        assert_eq!(filter.len(), 581);
        let centre = filter.len() / 2;
        for (offset, expected) in [
            (0, 0.956_871_75),
            (1, 0.804_533_5),
            (2, 0.433_217_05),
            (3, 0.042_967_617),
            (10, -0.053_172_63),
            (100, -0.001_430_121_5),
        ] {
            let value = filter[centre + offset];
            assert!(
                (value - expected).abs() < 2e-7,
                "{offset}: {value} vs {expected}"
            );
        }
    }

    #[test]
    fn downsampling_keeps_a_low_sine() {
        let output = resample(&sine(1000.0, 48_000, 0.5), 48_000, 16_000);
        let expected = sine(1000.0, 16_000, 0.5);
        assert_eq!(output.len(), expected.len());
        let worst = output[200..output.len() - 200]
            .iter()
            .zip(&expected[200..])
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(worst < 1e-4, "{worst}");
    }
}

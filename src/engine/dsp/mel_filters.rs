//! `librosa.filters.mel(sr, n_fft, n_mels, fmin, fmax)` with its defaults (`htk=False`,
//! `norm="slaney"`): Slaney's mel scale and area-normalised triangles, computed in f64 and
//! stored in float32 the way librosa's numpy code rounds them.

/// Slaney's scale: linear below 1 kHz (200/3 Hz per mel), logarithmic above.
const F_SP: f64 = 200.0 / 3.0;
const MIN_LOG_HZ: f64 = 1000.0;
const MIN_LOG_MEL: f64 = MIN_LOG_HZ / F_SP;

fn log_step() -> f64 {
    6.4f64.ln() / 27.0
}

pub fn hz_to_mel(hz: f64) -> f64 {
    if hz >= MIN_LOG_HZ {
        MIN_LOG_MEL + (hz / MIN_LOG_HZ).ln() / log_step()
    } else {
        hz / F_SP
    }
}

pub fn mel_to_hz(mel: f64) -> f64 {
    if mel >= MIN_LOG_MEL {
        MIN_LOG_HZ * (log_step() * (mel - MIN_LOG_MEL)).exp()
    } else {
        F_SP * mel
    }
}

/// `librosa.mel_frequencies(count, fmin, fmax)`: band edges equally spaced in mel.
pub fn mel_frequencies(count: usize, fmin: f64, fmax: f64) -> Vec<f64> {
    let (low, high) = (hz_to_mel(fmin), hz_to_mel(fmax));
    if count == 1 {
        return vec![mel_to_hz(low)];
    }
    // np.linspace: i·step + start, the end point pinned.
    let step = (high - low) / (count - 1) as f64;
    (0..count)
        .map(|index| {
            let mel = if index + 1 == count {
                high
            } else {
                index as f64 * step + low
            };
            mel_to_hz(mel)
        })
        .collect()
}

/// The filter bank, `n_mels` rows of `n_fft / 2 + 1` weights, row-major.
pub fn mel_filters(
    sample_rate: u32,
    n_fft: usize,
    n_mels: usize,
    fmin: f64,
    fmax: f64,
) -> Vec<f32> {
    let bins = n_fft / 2 + 1;
    // np.fft.rfftfreq(n_fft, d=1/sr): i · (1 / (n · d)).
    let spacing = 1.0 / (n_fft as f64 * (1.0 / sample_rate as f64));
    let edges = mel_frequencies(n_mels + 2, fmin, fmax);
    let mut weights = vec![0f32; n_mels * bins];
    for mel in 0..n_mels {
        let (low, centre, high) = (edges[mel], edges[mel + 1], edges[mel + 2]);
        let norm = 2.0 / (high - low);
        for bin in 0..bins {
            let frequency = bin as f64 * spacing;
            let rising = -(low - frequency) / (centre - low);
            let falling = (high - frequency) / (high - centre);
            // Stored as float32, then scaled in f64 and rounded again (`weights *= enorm`).
            let triangle = rising.min(falling).max(0.0) as f32;
            weights[mel * bins + bin] = (triangle as f64 * norm) as f32;
        }
    }
    weights
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_is_continuous_at_one_kilohertz() {
        assert!((hz_to_mel(1000.0) - 15.0).abs() < 1e-12);
        assert!((mel_to_hz(hz_to_mel(4321.0)) - 4321.0).abs() < 1e-9);
    }

    #[test]
    fn real_bank_has_the_published_centres() {
        let edges = mel_frequencies(66, 0.0, 8000.0);
        // editing.md §1.2.3: centres 46, 93, …, 7626 Hz.
        assert_eq!(edges[1].round(), 46.0);
        assert_eq!(edges[64].round(), 7626.0);
        let filters = mel_filters(16_000, 1024, 64, 0.0, 8000.0);
        assert_eq!(filters.len(), 64 * 513);
        assert!(filters.iter().all(|w| w.is_finite() && *w >= 0.0));
    }
}

//! One log-mel column per block of `hop` samples: what the step preview shows for a latent frame
//! of a waveform VAE (Stable Audio 3's SAME covers 4096 samples with one frame).

use super::fft::Fft;
use super::frontend::{periodic_hann, push_log_mel};
use super::mel_filters::mel_filters;
/// Smallest FFT, so short blocks (the tiny fixtures) still resolve the low mel bands.
const MIN_FFT: usize = 256;

/// Hann-windowed STFT magnitude → Slaney mel → natural log, one frame per block, the window
/// centred on the block.
pub struct BlockMel {
    /// Samples per block (one column).
    pub hop: usize,
    /// Mel bands per column.
    pub bins: usize,
    /// FFT and window length in samples.
    n_fft: usize,
    /// (bins × (n_fft/2 + 1)) filters from 0 Hz to Nyquist.
    filters: Vec<f32>,
    window: Vec<f64>,
    fft: Fft,
}

impl BlockMel {
    /// `hop` and `bins` are clamped to at least 1.
    pub fn new(sample_rate: u32, hop: usize, bins: usize) -> Self {
        let (hop, bins) = (hop.max(1), bins.max(1));
        let n_fft = hop.next_power_of_two().max(MIN_FFT);
        let window = periodic_hann(n_fft);
        Self {
            hop,
            bins,
            n_fft,
            filters: mel_filters(sample_rate, n_fft, bins, 0.0, sample_rate as f64 / 2.0),
            window,
            fft: Fft::new(n_fft),
        }
    }

    /// (frames × bins) row-major log-mel of `mono`, zero outside the signal.
    pub fn columns(&self, mono: &[f32], frames: usize) -> Vec<f32> {
        let spectrum_bins = self.n_fft / 2 + 1;
        let mut buffer = vec![(0.0, 0.0); self.n_fft];
        let mut magnitudes = vec![0f64; spectrum_bins];
        let mut output = Vec::with_capacity(frames * self.bins);
        for frame in 0..frames {
            let start = (frame * self.hop + self.hop / 2) as isize - (self.n_fft / 2) as isize;
            for (offset, slot) in buffer.iter_mut().enumerate() {
                let position = start + offset as isize;
                let sample = usize::try_from(position)
                    .ok()
                    .and_then(|index| mono.get(index))
                    .map_or(0.0, |&sample| sample as f64);
                *slot = (sample * self.window[offset], 0.0);
            }
            // The same log-mel as the editing front-end (floor ln 1e-5).
            push_log_mel(
                &self.fft,
                &mut buffer,
                &self.filters,
                &mut magnitudes,
                &mut output,
            );
        }
        output
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tone_lights_its_band_and_silence_is_the_floor() {
        let block = BlockMel::new(16_000, 512, 32);
        let tone: Vec<f32> = (0..4096)
            .map(|n| (std::f32::consts::TAU * 2000.0 * n as f32 / 16_000.0).sin() * 0.5)
            .collect();
        let columns = block.columns(&tone, 8);
        assert_eq!(columns.len(), 8 * 32);
        let middle = &columns[4 * 32..5 * 32];
        let loudest = (0..32)
            .max_by(|&a, &b| middle[a].total_cmp(&middle[b]))
            .unwrap();
        let centre = super::super::mel_filters::mel_frequencies(34, 0.0, 8000.0)[loudest + 1];
        assert!((centre - 2000.0).abs() < 300.0, "band at {centre} Hz");
        let silent = block.columns(&[0.0; 1024], 2);
        assert!(silent.iter().all(|&v| v == (1e-5f64.ln() as f32)));
    }
}

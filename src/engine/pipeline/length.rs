//! diffusers' seconds → mel frames → latent rows arithmetic (float64, as numpy does it).

use crate::error::{FoleyError, Result};

use super::MAX_DURATION_SECONDS;

/// How long the generated audio is, in every unit the pipeline needs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AudioLength {
    pub seconds: f64,
    /// Mel frames the VAE produces (a multiple of the VAE scale factor).
    pub mel_frames: usize,
    pub latent_height: usize,
    /// Samples kept after the vocoder (`int(seconds * sampling_rate)`).
    pub samples: usize,
}

impl AudioLength {
    /// `seconds_per_frame` is `prod(upsample_rates) / sampling_rate`; `default_frames` is
    /// `unet.sample_size * vae_scale_factor`.
    pub fn resolve(
        requested: Option<f64>,
        seconds_per_frame: f64,
        vae_scale_factor: usize,
        default_frames: usize,
        sampling_rate: u32,
    ) -> Result<Self> {
        let seconds = requested.unwrap_or(default_frames as f64 * seconds_per_frame);
        let minimum = seconds_per_frame * vae_scale_factor as f64;
        check_seconds(seconds, minimum)?;
        let mut mel_frames = (seconds / seconds_per_frame) as usize;
        if !mel_frames.is_multiple_of(vae_scale_factor) {
            mel_frames = mel_frames.div_ceil(vae_scale_factor) * vae_scale_factor;
        }
        Ok(Self {
            seconds,
            mel_frames,
            latent_height: mel_frames / vae_scale_factor,
            samples: (seconds * sampling_rate as f64) as usize,
        })
    }
}

/// A clip length every model accepts: a positive, finite number of seconds from `minimum` to
/// `MAX_DURATION_SECONDS`.
pub(crate) fn check_seconds(seconds: f64, minimum: f64) -> Result<()> {
    if !seconds.is_finite() || seconds <= 0.0 {
        return Err(FoleyError::InvalidRequest(format!(
            "duration must be a positive number of seconds, got {seconds}"
        )));
    }
    if seconds < minimum {
        return Err(FoleyError::InvalidRequest(format!(
            "duration {seconds} s is below this model's minimum of {minimum} s"
        )));
    }
    if seconds > MAX_DURATION_SECONDS {
        return Err(FoleyError::InvalidRequest(format!(
            "duration {seconds} s is over the maximum of {MAX_DURATION_SECONDS} s"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn real(seconds: f64) -> AudioLength {
        AudioLength::resolve(Some(seconds), 160.0 / 16000.0, 4, 1024, 16000).unwrap()
    }

    #[test]
    fn matches_diffusers_rounding() {
        assert_eq!(real(10.24).latent_height, 256);
        assert_eq!(real(10.0).latent_height, 250);
        assert_eq!(real(5.0).latent_height, 125);
        assert_eq!(real(2.5).mel_frames, 252);
        assert_eq!(real(7.3).latent_height, 183);
        assert_eq!(real(10.24).samples, 163_840);
    }

    #[test]
    fn rejects_bad_durations() {
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY, 0.01, 500.0] {
            assert!(
                AudioLength::resolve(Some(bad), 0.01, 4, 1024, 16000).is_err(),
                "{bad}"
            );
        }
    }
}

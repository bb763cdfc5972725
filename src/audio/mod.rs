//! Audio files and sample-rate conversion.

pub mod clap_features;
pub mod export;
mod fft;
pub mod playback;
pub mod plot;
pub mod resample;
pub mod wav;

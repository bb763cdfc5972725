//! Audio files and sample-rate conversion.

pub mod clap_features;
pub mod export;
pub mod playback;
pub mod resample;
pub mod wav;

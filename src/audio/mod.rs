//! Audio files and sample-rate conversion.

pub mod resample;
pub mod wav;

//! Audio files, playback and pictures (the DSP they share with the engine is `engine::dsp`).

pub mod colormap;
pub mod loudness;
pub mod peaks;
#[cfg(feature = "studio")]
pub mod playback;
pub mod plot;
pub mod wav;
pub mod wav_in;

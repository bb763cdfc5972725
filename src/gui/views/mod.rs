//! Panels of the studio, each a small piece with its own `ui` function.

pub mod clip;
pub mod spectrogram;
pub mod step_preview;
pub mod time_window;
mod timeline;

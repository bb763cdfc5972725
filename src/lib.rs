//! Foley: text-to-audio generation (AudioLDM 2 and relatives) in candle, usable without a window.

pub mod atomic_file;
pub mod audio;
pub mod batch;
pub mod cli;
pub mod engine;
pub mod error;
#[cfg(feature = "studio")]
pub mod gui;
pub mod library;
pub mod mapped_alloc;
pub mod mimalloc_options;

pub use error::{FoleyError, Result};

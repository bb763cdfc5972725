//! The inference engine: models, schedulers, noise and pipelines. No UI or audio-device code.

mod config_checks;
pub mod device;
pub mod dsp;
pub mod hub;
pub mod kernels;
pub mod limits;
mod mapped_safetensors;
pub mod models;
pub mod noise;
pub mod pipeline;
pub mod schedulers;
pub mod text_tokenizer;
pub mod weights;

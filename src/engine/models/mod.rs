//! Neural components, one file per diffusers/transformers class; `VarBuilder` paths mirror the
//! PyTorch keys so checkpoints load unchanged.

pub mod clap_audio;
pub mod clap_text;
pub mod gpt2;
pub mod hifigan;
pub mod layers;
pub mod projection;
pub mod t5;
pub mod unet;
pub mod vae;
pub mod vae_encoder;

//! Neural components, one file per diffusers/transformers class; `VarBuilder` paths mirror the
//! PyTorch keys so checkpoints load unchanged.

pub mod autoencoder_same;
pub mod clap_audio;
pub mod clap_text;
pub mod differential_attention;
pub mod gpt2;
pub mod hifigan;
pub mod layers;
pub mod projection;
pub mod stable_audio3_dit;
pub mod stable_audio3_duration;
pub mod t5;
pub mod t5gemma;
pub mod unet;
pub mod vae;
pub mod vae_encoder;

//! Signal processing the models need, shared with `audio` (which may use the engine, never the
//! reverse): FFT, resamplers, CLAP's feature extractor and the editing front-end.

pub mod clap_features;
pub mod fft;
pub mod frontend;
pub mod mel_filters;
pub mod resample;
pub mod sinc_resample;

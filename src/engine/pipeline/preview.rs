//! The studio's step preview: a linear map from one latent position's channels to the patch of
//! log-mel values it covers, fitted once per VAE by least squares on synthetic probe sounds, so
//! partially denoised latents can be shown as a spectrogram every few steps without running the
//! VAE decoder (or vocoder) mid-generation.

use std::sync::{Arc, OnceLock};

use candle_core::{DType, Device, Tensor};

mod least_squares;

use least_squares::{LinearFit, RIDGES, least_squares};

use super::stages::AudioDecoder;
use crate::engine::dsp::block_mel::BlockMel;
use crate::engine::dsp::synthetic::probe_signal;
use crate::engine::models::autoencoder_same::AutoencoderSame;
use crate::error::{FoleyError, Result};

/// Mel bands of a waveform VAE's preview (the mel families show their VAE's own bands).
pub const WAVEFORM_PREVIEW_BINS: usize = 64;
/// Probe draws (`probe_signal` variants 0, 1, …) played back to back as the one clip a fit
/// encodes: one batch item is cheaper than several on the CPU.
const PROBES: u64 = 2;
/// Mel frames of each probe for a mel VAE: the clip is 2.56 s at the real 160-sample hop, 1024
/// latent positions for at most 9 unknowns per output.
const PROBE_MEL_FRAMES: usize = 128;
/// Latent frames of each probe for a waveform VAE: the clip is 5.9 s through the real SAME
/// encoder (4096 samples a frame), the costliest part of any fit.
const PROBE_WAVEFORM_FRAMES: usize = 32;

/// What one latent position covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// (batch, channels, rows, columns) latents of a mel VAE that downsamples by `factor`: a
    /// position covers a `factor`×`factor` patch of frames × bins.
    MelPatches { factor: usize },
    /// (batch, channels, frames) latents of a waveform VAE: a frame becomes one column of
    /// `bins` mel values.
    Frames { bins: usize },
}

impl Layout {
    /// Mel values one position maps to.
    fn outputs(self) -> usize {
        match self {
            Self::MelPatches { factor } => factor * factor,
            Self::Frames { bins } => bins,
        }
    }
}

/// The fitted latent → log-mel map of one VAE.
#[derive(Debug, Clone)]
pub struct PreviewProjection {
    layout: Layout,
    /// Latent channels it reads.
    channels: usize,
    /// (channels × outputs) row-major: each channel's contribution to each value of a patch
    /// (patch values row-major: frame offset, then bin offset).
    weights: Vec<f32>,
    /// Per patch value, in log-mel units.
    bias: Vec<f32>,
}

/// A preview spectrogram: natural-log mel magnitudes like `Clip::mels`.
#[derive(Debug, Clone, PartialEq)]
pub struct PreviewMel {
    /// (frames × bins) row-major.
    pub values: Vec<f32>,
    pub bins: usize,
}

impl PreviewMel {
    pub fn frames(&self) -> usize {
        self.values.len().checked_div(self.bins).unwrap_or(0)
    }
}

impl PreviewProjection {
    /// Fits a mel VAE's map from its scaled latents (batch, channels, rows, columns) and the
    /// mels they encode, (batch × rows·factor × columns·factor) row-major.
    pub fn fit_mel_patches(latents: &Tensor, mels: &[f32], factor: usize) -> Result<Self> {
        let (batch, channels, rows, columns) = latents.dims4()?;
        let (frames, bins) = (rows * factor, columns * factor);
        if factor == 0 || mels.len() != batch * frames * bins {
            return Err(FoleyError::Unsupported(format!(
                "step preview: {} mel values do not match latents {:?} at downsampling {factor}",
                mels.len(),
                latents.dims()
            )));
        }
        let latents = host_values(latents)?;
        let positions = batch * rows * columns;
        let outputs = factor * factor;
        let mut inputs = Vec::with_capacity(positions * channels);
        let mut targets = Vec::with_capacity(positions * outputs);
        for item in 0..batch {
            for row in 0..rows {
                for column in 0..columns {
                    inputs.extend((0..channels).map(|channel| {
                        latents[((item * channels + channel) * rows + row) * columns + column]
                            as f64
                    }));
                    for frame in row * factor..(row + 1) * factor {
                        let start = (item * frames + frame) * bins + column * factor;
                        targets.extend(mels[start..start + factor].iter().map(|&v| v as f64));
                    }
                }
            }
        }
        let fit = least_squares(&inputs, &targets, channels, outputs, &RIDGES)?;
        Ok(Self::from_fit(Layout::MelPatches { factor }, channels, fit))
    }

    /// Fits a waveform VAE's map from its latents (batch, channels, frames) and one log-mel
    /// column per frame, (batch × frames × bins) row-major.
    pub fn fit_frames(latents: &Tensor, columns: &[f32], bins: usize) -> Result<Self> {
        let (batch, channels, frames) = latents.dims3()?;
        if bins == 0 || columns.len() != batch * frames * bins {
            return Err(FoleyError::Unsupported(format!(
                "step preview: {} mel values do not match latents {:?} with {bins} bins",
                columns.len(),
                latents.dims()
            )));
        }
        let latents = host_values(latents)?;
        let mut inputs = Vec::with_capacity(batch * frames * channels);
        for item in 0..batch {
            for frame in 0..frames {
                inputs.extend(
                    (0..channels).map(|channel| {
                        latents[(item * channels + channel) * frames + frame] as f64
                    }),
                );
            }
        }
        let targets: Vec<f64> = columns.iter().map(|&v| v as f64).collect();
        let fit = least_squares(&inputs, &targets, channels, bins, &RIDGES)?;
        Ok(Self::from_fit(Layout::Frames { bins }, channels, fit))
    }

    fn from_fit(layout: Layout, channels: usize, fit: LinearFit) -> Self {
        let narrow = |values: Vec<f64>| values.into_iter().map(|v| v as f32).collect();
        Self {
            layout,
            channels,
            weights: narrow(fit.weights),
            bias: narrow(fit.bias),
        }
    }

    /// Latent channels the map reads.
    pub fn channels(&self) -> usize {
        self.channels
    }

    /// The preview of the first item of a batch of the pipeline's latents (as the step callback
    /// sees them: scaled, any device and dtype).
    pub fn project(&self, latents: &Tensor) -> Result<PreviewMel> {
        let dims = latents.dims();
        let rank = match self.layout {
            Layout::MelPatches { .. } => 4,
            Layout::Frames { .. } => 3,
        };
        if dims.len() != rank || dims[0] == 0 || dims[1] != self.channels {
            return Err(FoleyError::Unsupported(format!(
                "step preview: latents of shape {dims:?} do not fit a projection for {} channels ({:?})",
                self.channels, self.layout
            )));
        }
        let values = host_values(&latents.narrow(0, 0, 1)?)?;
        let outputs = self.layout.outputs();
        let mut patch = vec![0f32; outputs];
        match self.layout {
            Layout::MelPatches { factor } => {
                let (rows, columns) = (dims[2], dims[3]);
                let bins = columns * factor;
                let mut mel = vec![0f32; rows * factor * bins];
                for row in 0..rows {
                    for column in 0..columns {
                        self.patch_at(&values, row * columns + column, rows * columns, &mut patch);
                        for (offset, patch_row) in patch.chunks_exact(factor).enumerate() {
                            let start = (row * factor + offset) * bins + column * factor;
                            mel[start..start + factor].copy_from_slice(patch_row);
                        }
                    }
                }
                Ok(PreviewMel { values: mel, bins })
            }
            Layout::Frames { bins } => {
                let frames = dims[2];
                let mut mel = Vec::with_capacity(frames * bins);
                for frame in 0..frames {
                    self.patch_at(&values, frame, frames, &mut patch);
                    mel.extend_from_slice(&patch);
                }
                Ok(PreviewMel { values: mel, bins })
            }
        }
    }

    /// The patch at `position` of latents laid out (channel, position) with `positions` each.
    fn patch_at(&self, latents: &[f32], position: usize, positions: usize, patch: &mut [f32]) {
        let outputs = patch.len();
        patch.copy_from_slice(&self.bias);
        for channel in 0..self.channels {
            let x = latents[channel * positions + position];
            let row = &self.weights[channel * outputs..(channel + 1) * outputs];
            for (value, &weight) in patch.iter_mut().zip(row) {
                *value += x * weight;
            }
        }
    }
}

/// A tensor's values as f32 on the host, in row-major order.
fn host_values(tensor: &Tensor) -> Result<Vec<f32>> {
    Ok(tensor
        .to_dtype(DType::F32)?
        .to_device(&Device::Cpu)?
        .flatten_all()?
        .to_vec1::<f32>()?)
}

/// What a pipeline keeps of its preview fit: the map, or why there is none (kept too, so a
/// model whose fit fails does not try again on every generation).
pub(crate) type PreviewCell = OnceLock<std::result::Result<Arc<PreviewProjection>, String>>;

/// The map in `cell`, fitted by `fit` on the first call.
pub(crate) fn cached(
    cell: &PreviewCell,
    fit: impl FnOnce() -> Result<PreviewProjection>,
) -> Result<Arc<PreviewProjection>> {
    cell.get_or_init(|| fit().map(Arc::new).map_err(|error| error.to_string()))
        .clone()
        .map_err(|reason| FoleyError::Unsupported(format!("no step preview: {reason}")))
}

/// The probe draws back to back, `samples` of each.
fn probe_clip(samples: usize, sample_rate: u32) -> Vec<f32> {
    (0..PROBES)
        .flat_map(|variant| probe_signal(samples, sample_rate, variant))
        .collect()
}

/// Encodes the probe clip's mel with the VAE encoder (posterior mean, scaled like the
/// pipeline's latents) and fits each latent position to the mel patch it covers.
pub(crate) fn fit_mel_vae(decoder: &AudioDecoder, device: &Device) -> Result<PreviewProjection> {
    let front = decoder.front_end()?;
    let factor = decoder.vae_config.scale_factor();
    // Whole latent rows per probe, so no position straddles two probes.
    let probe_frames = PROBE_MEL_FRAMES.div_ceil(factor) * factor;
    let frames = PROBES as usize * probe_frames;
    let audio = probe_clip(probe_frames * front.hop, front.sample_rate);
    let mel = front.fbank(&[audio], front.sample_rate, frames)?.values;
    let input = Tensor::from_slice(&mel, (1, 1, frames, front.n_mels), device)?;
    let posterior = decoder.encoder()?.encode(&input)?;
    let latents = (posterior.mode() * decoder.vae_config.scaling_factor)?;
    PreviewProjection::fit_mel_patches(&latents, &mel, factor)
}

/// Encodes the probe clip with the SAME encoder and fits each latent frame to the log-mel
/// column of the `downsampling_ratio` samples it covers (of the channels' mean).
pub(crate) fn fit_waveform_vae(
    vae: &AutoencoderSame,
    device: &Device,
) -> Result<PreviewProjection> {
    let config = vae.config();
    let hop = config.downsampling_ratio();
    let frames = PROBES as usize * PROBE_WAVEFORM_FRAMES;
    let mono = probe_clip(PROBE_WAVEFORM_FRAMES * hop, config.sampling_rate);
    let samples = mono.len();
    let channels = config.audio_channels.max(1);
    // A slow pan, so the fit sees differences between the channels as well as their sum; the
    // pans cancel in the mean the mel is taken of.
    let audio: Vec<f32> = (0..channels)
        .flat_map(|channel| {
            let side = match (channels, channel % 2) {
                (1, _) => 0.0,
                (_, 0) => 1.0,
                _ => -1.0,
            };
            mono.iter().enumerate().map(move |(n, &sample)| {
                let pan = 0.3 * (std::f32::consts::TAU * 3.0 * n as f32 / samples as f32).sin();
                sample * (1.0 + side * pan)
            })
        })
        .collect();
    let block = BlockMel::new(config.sampling_rate, hop, WAVEFORM_PREVIEW_BINS);
    let columns = block.columns(&mono, frames);
    let input = Tensor::from_vec(audio, (1, channels, samples), device)?;
    let latents = vae.encode(&input)?;
    let latents = latents.narrow(2, 0, frames.min(latents.dim(2)?))?;
    PreviewProjection::fit_frames(&latents, &columns, WAVEFORM_PREVIEW_BINS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn projection_lays_patches_out_like_the_mel() {
        // Two channels, factor 2: channel 0 lights the patch's top row, channel 1 the bottom.
        let projection = PreviewProjection {
            layout: Layout::MelPatches { factor: 2 },
            channels: 2,
            weights: vec![1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0],
            bias: vec![0.5; 4],
        };
        // (1, 2, rows 1, columns 2): position (0, 1) has channel 0 = 3, channel 1 = 4.
        let latents =
            Tensor::from_vec(vec![1f32, 3.0, 2.0, 4.0], (1, 2, 1, 2), &Device::Cpu).unwrap();
        let mel = projection.project(&latents).unwrap();
        assert_eq!((mel.frames(), mel.bins), (2, 4));
        assert_eq!(mel.values, [1.5, 1.5, 3.5, 3.5, 2.5, 2.5, 4.5, 4.5]);
        let wrong = Tensor::zeros((1, 3, 1, 2), DType::F32, &Device::Cpu).unwrap();
        assert!(projection.project(&wrong).is_err());
        let flat = Tensor::zeros((1, 2, 4), DType::F32, &Device::Cpu).unwrap();
        assert!(projection.project(&flat).is_err());
    }

    #[test]
    fn fit_then_project_reproduces_an_affine_mel_encoder() {
        // Latents whose patch is an exact affine function: the fit must reproduce the mel.
        let (channels, rows, columns, factor) = (3, 4, 2, 2);
        let latent_values: Vec<f32> = (0..channels * rows * columns)
            .map(|n| ((n * 7919) % 13) as f32 - 6.0 + (n % 3) as f32 * 0.25)
            .collect();
        let latents = Tensor::from_vec(
            latent_values.clone(),
            (1, channels, rows, columns),
            &Device::Cpu,
        )
        .unwrap();
        let (frames, bins) = (rows * factor, columns * factor);
        let mut mel = vec![0f32; frames * bins];
        for frame in 0..frames {
            for bin in 0..bins {
                let (row, column) = (frame / factor, bin / factor);
                let offset = (frame % factor) * factor + bin % factor;
                let at = |channel: usize| latent_values[(channel * rows + row) * columns + column];
                mel[frame * bins + bin] =
                    offset as f32 - 1.0 + at(0) * 0.5 - at(1) * (offset as f32) + at(2) * 0.1;
            }
        }
        let projection = PreviewProjection::fit_mel_patches(&latents, &mel, factor).unwrap();
        let preview = projection.project(&latents).unwrap();
        let worst = preview
            .values
            .iter()
            .zip(&mel)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(worst < 0.05, "{worst}");
    }

    #[test]
    fn fit_then_project_reproduces_an_affine_frame_encoder() {
        // (2, 3, 20) latents; each frame's 5-bin column is an affine function of its channels.
        let (batch, channels, frames, bins) = (2, 3, 20, 5);
        let latent_values: Vec<f32> = (0..batch * channels * frames)
            .map(|n| ((n * 37) % 11) as f32 * 0.3 - (n % 7) as f32)
            .collect();
        let latents = Tensor::from_vec(
            latent_values.clone(),
            (batch, channels, frames),
            &Device::Cpu,
        )
        .unwrap();
        let column = |item: usize, frame: usize, bin: usize| {
            let at = |channel: usize| latent_values[(item * channels + channel) * frames + frame];
            bin as f32 - 3.0 + at(0) * (bin as f32 * 0.2) - at(1) + at(2) * 0.5
        };
        let columns: Vec<f32> = (0..batch)
            .flat_map(|item| {
                (0..frames).flat_map(move |frame| (0..bins).map(move |bin| (item, frame, bin)))
            })
            .map(|(item, frame, bin)| column(item, frame, bin))
            .collect();
        let projection = PreviewProjection::fit_frames(&latents, &columns, bins).unwrap();
        assert_eq!(projection.channels(), channels);
        // The first batch item only.
        let preview = projection.project(&latents).unwrap();
        assert_eq!((preview.frames(), preview.bins), (frames, bins));
        let worst = preview
            .values
            .iter()
            .zip(&columns)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(worst < 1e-3, "{worst}");
    }
}

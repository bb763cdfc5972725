//! How each task starts the shared denoising loop and what it does with the result
//! (research/editing.md §2.5, §4.4, §4.6): the start latents and the first schedule entry, the
//! keep mask blended back after every step, and the splicing of continuations and loops.
//!
//! RNG order, for every task: the start noise ε is draw #1 (so a seed gives text-to-audio's ε at
//! any strength), the posterior sample is draw #2 (only with `EncodeMode::Sample` when the input
//! is encoded), then the stochastic schedulers' step noise.

use std::time::Instant;

use candle_core::{DType, Device, Tensor};

use super::stages::AudioDecoder;
use super::task::{EncodeMode, InputAudio, Regions, Task};
use super::{AudioLength, Timings};
use crate::engine::dsp::frontend::{MIN_INPUT_SAMPLES, MelFrontEnd};
use crate::engine::dsp::mel_filters::mel_frequencies;
use crate::engine::dsp::sinc_resample::resample;
use crate::engine::noise::TorchGenerator;
use crate::engine::schedulers::{Scheduler, add_noise};
use crate::error::{FoleyError, Result};

/// Crossfade where a continuation or loop joins the user's audio to the model's.
const SPLICE_FADE_SECONDS: f64 = 0.05;

/// Where the loop starts and what it blends back.
pub(crate) struct LoopStart {
    /// Latents entering the first step (already scaled or noised).
    pub latents: Tensor,
    /// Index into `scheduler.timesteps()` of the first step; `None` skips the loop entirely
    /// (strength below one step, or nothing to regenerate): `latents` are then final.
    pub begin: Option<usize>,
    pub blend: Option<Blend>,
}

/// diffusers' zero-shot inpainting blend: after each step the kept region is replaced by the
/// clean latents noised to the next step's level with the start noise, and by the clean
/// latents themselves after the last step.
pub(crate) struct Blend {
    /// (1, 1, rows, columns): 1 keeps the input, 0 regenerates.
    pub keep: Tensor,
    pub regenerate: Tensor,
    pub clean: Tensor,
    pub noise: Tensor,
}

impl Blend {
    pub(crate) fn apply(
        &self,
        latents: &Tensor,
        scheduler: &dyn Scheduler,
        next_entry: Option<usize>,
    ) -> Result<Tensor> {
        let known = match next_entry {
            Some(entry) => add_noise(&self.clean, &self.noise, scheduler.noise_level(entry))?,
            None => self.clean.clone(),
        };
        let kept = self.keep.broadcast_mul(&known)?;
        let regenerated = self.regenerate.broadcast_mul(latents)?;
        Ok((kept + regenerated)?)
    }
}

/// How the decoded window becomes the clip: as is, or spliced onto the user's audio.
pub(crate) enum Assembly {
    AsDecoded,
    /// `source` (mono, model rate) followed by the window from `context` samples on.
    Continue {
        source: Vec<f32>,
        context: usize,
        gain: f32,
    },
    /// `source`, then the bridge `[context, context + bridge)` of the window; the window's
    /// last `context` samples re-render the source's start, so the file wraps without a seam.
    Loop {
        source: Vec<f32>,
        context: usize,
        bridge: usize,
        gain: f32,
    },
}

/// Everything the task decided before denoising.
pub(crate) struct Plan {
    pub start: LoopStart,
    pub length: AudioLength,
    pub assembly: Assembly,
}

/// Plans in f32 whatever the model's dtype: latents, noise and masks are what the scheduler
/// works on, and its math stays in f32 (the UNet, VAE and vocoder cast at their inputs).
pub(crate) struct Planner<'a> {
    pub decoder: &'a AudioDecoder,
    pub device: &'a Device,
    pub latent_channels: usize,
    /// The model's own clip length in seconds (the UNet's `sample_size`).
    pub default_seconds: f64,
}

impl Planner<'_> {
    /// Draws ε, encodes the input if the task has one and picks the loop's start.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn plan(
        &self,
        task: &Task,
        length: AudioLength,
        steps: usize,
        waveforms: usize,
        scheduler: &dyn Scheduler,
        generator: &mut TorchGenerator,
        timings: &mut Timings,
    ) -> Result<Plan> {
        // Built only for the tasks that read audio: text-to-audio never pays for the filter bank.
        let front = || self.decoder.front_end();
        match task {
            Task::AudioToAudioFromNoise { .. } => Err(FoleyError::InvalidRequest(
                "--init-noise-level is Stable Audio 3's audio-to-audio; the AudioLDM family \
                 takes --strength"
                    .into(),
            )),
            Task::TextToAudio | Task::Variation { .. } => {
                let noise = self.noise(generator, waveforms, &length)?;
                Ok(Plan {
                    start: pure_noise(&noise, scheduler)?,
                    length,
                    assembly: Assembly::AsDecoded,
                })
            }
            Task::AudioToAudio {
                input,
                strength,
                encode_mode,
            } => {
                let noise = self.noise(generator, waveforms, &length)?;
                let (begin, runs) = truncation(steps, *strength, scheduler);
                if *strength >= 1.0 {
                    // Pure noise: the input is not even encoded, so this is text-to-audio.
                    return Ok(Plan {
                        start: pure_noise(&noise, scheduler)?,
                        length,
                        assembly: Assembly::AsDecoded,
                    });
                }
                let (clean, _) = self.encode(
                    &front()?,
                    input,
                    &length,
                    waveforms,
                    *encode_mode,
                    generator,
                    timings,
                )?;
                let start = if runs == 0 {
                    LoopStart {
                        latents: clean,
                        begin: None,
                        blend: None,
                    }
                } else {
                    LoopStart {
                        latents: add_noise(&clean, &noise, scheduler.noise_level(begin))?,
                        begin: Some(begin),
                        blend: None,
                    }
                };
                Ok(Plan {
                    start,
                    length,
                    assembly: Assembly::AsDecoded,
                })
            }
            Task::Inpaint {
                input,
                regions,
                strength,
                encode_mode,
            } => {
                let (start, _) = self.inpaint(
                    &front()?,
                    input,
                    regions,
                    *strength,
                    *encode_mode,
                    &length,
                    steps,
                    waveforms,
                    scheduler,
                    generator,
                    timings,
                )?;
                Ok(Plan {
                    start,
                    length,
                    assembly: Assembly::AsDecoded,
                })
            }
            Task::Continue {
                input,
                seconds,
                encode_mode,
            }
            | Task::Loop {
                input,
                seconds,
                encode_mode,
            } => {
                let front = front()?;
                let sample_rate = front.sample_rate;
                let looped = matches!(task, Task::Loop { .. });
                let source = mono_at(input, sample_rate)?;
                let added = seconds_to_samples(*seconds, sample_rate)?;
                let default = (self.default_seconds * sample_rate as f64).round() as usize;
                // A continuation sees up to one model length of the input's end; a loop half a
                // length of its end and, after the bridge, of its start.
                let context = if looped {
                    (source.len() / 2).min(default / 2)
                } else {
                    source.len().min(default)
                }
                .max(1);
                let mut window = source[source.len() - context..].to_vec();
                window.resize(context + added, 0.0);
                if looped {
                    window.extend_from_slice(&source[..context]);
                }
                let (length, window_input) = self.window(window, input, sample_rate)?;
                let rate = sample_rate as f64;
                let regions = Regions {
                    time: vec![(context as f64 / rate, (context + added) as f64 / rate)],
                    above_hz: None,
                };
                let (start, gain) = self.inpaint(
                    &front,
                    &window_input,
                    &regions,
                    1.0,
                    *encode_mode,
                    &length,
                    steps,
                    waveforms,
                    scheduler,
                    generator,
                    timings,
                )?;
                let assembly = if looped {
                    Assembly::Loop {
                        source,
                        context,
                        bridge: added,
                        gain,
                    }
                } else {
                    Assembly::Continue {
                        source,
                        context,
                        gain,
                    }
                };
                Ok(Plan {
                    start,
                    length,
                    assembly,
                })
            }
        }
    }

    /// The window a continuation or loop inpaints, as model-rate audio, and its length.
    fn window(
        &self,
        window: Vec<f32>,
        input: &InputAudio,
        sample_rate: u32,
    ) -> Result<(AudioLength, InputAudio)> {
        let seconds = window.len() as f64 / sample_rate as f64;
        let length = self.decoder.audio_length_for(seconds)?;
        Ok((
            length,
            InputAudio::new(vec![window], sample_rate, input.name.clone()),
        ))
    }

    #[allow(clippy::too_many_arguments)]
    fn inpaint(
        &self,
        front: &MelFrontEnd,
        input: &InputAudio,
        regions: &Regions,
        strength: f64,
        encode_mode: EncodeMode,
        length: &AudioLength,
        steps: usize,
        waveforms: usize,
        scheduler: &dyn Scheduler,
        generator: &mut TorchGenerator,
        timings: &mut Timings,
    ) -> Result<(LoopStart, f32)> {
        let noise = self.noise(generator, waveforms, length)?;
        let (clean, gain) = self.encode(
            front,
            input,
            length,
            waveforms,
            encode_mode,
            generator,
            timings,
        )?;
        let (_, _, rows, columns) = clean.dims4()?;
        let grid = LatentGrid::new(front, rows, columns);
        let keep = grid.keep_mask(regions)?;
        let (begin, runs) = truncation(steps, strength, scheduler);
        if runs == 0 || keep.iter().all(|&value| value == 1.0) {
            // Nothing to regenerate, or no step to run: the input through the VAE (INP-2).
            let start = LoopStart {
                latents: clean,
                begin: None,
                blend: None,
            };
            return Ok((start, gain));
        }
        let latents = if strength >= 1.0 {
            (&noise * scheduler.init_noise_sigma())?
        } else {
            add_noise(&clean, &noise, scheduler.noise_level(begin))?
        };
        let keep = Tensor::from_vec(keep, (1, 1, rows, columns), self.device)?;
        let regenerate = (1.0 - &keep)?;
        let start = LoopStart {
            latents,
            begin: Some(begin),
            blend: Some(Blend {
                keep,
                regenerate,
                clean,
                noise,
            }),
        };
        Ok((start, gain))
    }

    /// ε: `randn(waveforms, channels, rows, columns)`, the same draw as text-to-audio.
    fn noise(
        &self,
        generator: &mut TorchGenerator,
        waveforms: usize,
        length: &AudioLength,
    ) -> Result<Tensor> {
        self.decoder.initial_latents(
            generator,
            waveforms,
            self.latent_channels,
            length,
            self.device,
            DType::F32,
        )
    }

    /// `scaling_factor · z` of the input's posterior, one copy per waveform, and the
    /// front-end's gain. `timings.encoding` gets the front-end and the encoder's forward, not
    /// the loading of its weights on first use.
    #[allow(clippy::too_many_arguments)]
    fn encode(
        &self,
        front: &MelFrontEnd,
        input: &InputAudio,
        length: &AudioLength,
        waveforms: usize,
        mode: EncodeMode,
        generator: &mut TorchGenerator,
        timings: &mut Timings,
    ) -> Result<(Tensor, f32)> {
        let encoder = self.decoder.encoder()?;
        let started = Instant::now();
        let mel = front
            .fbank(&input.channels, input.sample_rate, length.mel_frames)
            .map_err(|error| named(input, error))?;
        let tensor = Tensor::from_vec(mel.values, (1, 1, mel.frames, mel.n_mels), self.device)?
            .repeat((waveforms, 1, 1, 1))?;
        let posterior = encoder.encode(&tensor)?;
        let expected = (waveforms, self.latent_channels, length.latent_height);
        let (batch, channels, rows, _) = posterior.mean.dims4()?;
        if (batch, channels, rows) != expected {
            return Err(FoleyError::Unsupported(format!(
                "the VAE encodes to {channels} channels × {rows} rows, the UNet expects {} × {}",
                expected.1, expected.2
            )));
        }
        let latents = match mode {
            EncodeMode::Mean => posterior.mode().clone(),
            EncodeMode::Sample => {
                let noise = crate::engine::schedulers::randn_like(&posterior.mean, generator)?;
                posterior.sample_with(&noise)?
            }
        };
        let clean = (latents * self.decoder.vae_config.scaling_factor)?;
        if clean
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?
            .iter()
            .any(|v| !v.is_finite())
        {
            return Err(FoleyError::InvalidRequest(format!(
                "{}: the VAE encoder produced non-finite latents",
                input.name
            )));
        }
        timings.encoding += super::stages::stage_seconds(started, self.device)?;
        Ok((clean, mel.gain))
    }
}

/// Puts the input's name in front of a front-end complaint.
fn named(input: &InputAudio, error: FoleyError) -> FoleyError {
    match error {
        FoleyError::InvalidRequest(reason) => {
            FoleyError::InvalidRequest(format!("{}: {reason}", input.name))
        }
        other => other,
    }
}

/// Start from noise scaled by the scheduler's initial σ, running every step.
fn pure_noise(noise: &Tensor, scheduler: &dyn Scheduler) -> Result<LoopStart> {
    Ok(LoopStart {
        latents: (noise * scheduler.init_noise_sigma())?,
        begin: Some(0),
        blend: None,
    })
}

/// diffusers' `get_timesteps`: `n = min(int(N·strength), N)` steps are run, from schedule entry
/// `(N − n)·order`. The product is f64, as in Python (f32 disagrees for e.g. N = 100, s = 0.29).
pub fn truncation(steps: usize, strength: f64, scheduler: &dyn Scheduler) -> (usize, usize) {
    let runs = ((steps as f64 * strength).floor() as usize).min(steps);
    let begin = (steps - runs) * scheduler.order();
    (begin.min(scheduler.timesteps().len()), runs)
}

fn seconds_to_samples(seconds: f64, sample_rate: u32) -> Result<usize> {
    let samples = (seconds * sample_rate as f64).round();
    if samples < 1.0 {
        return Err(FoleyError::InvalidRequest(format!(
            "{seconds} s is shorter than one sample"
        )));
    }
    Ok(samples as usize)
}

/// The input downmixed (float32 mean) and resampled to the model's rate; continuations and loops
/// splice onto it, so it must be as long as the front-end requires.
fn mono_at(input: &InputAudio, sample_rate: u32) -> Result<Vec<f32>> {
    let resampled = resample(&input.mono(), input.sample_rate, sample_rate);
    if resampled.len() < MIN_INPUT_SAMPLES {
        return Err(FoleyError::InvalidRequest(format!(
            "{}: the input audio is {} samples long at {sample_rate} Hz; at least {MIN_INPUT_SAMPLES} are needed",
            input.name,
            resampled.len()
        )));
    }
    Ok(resampled)
}

/// Latent rows and columns in the user's units: seconds and Hz.
pub struct LatentGrid {
    pub rows: usize,
    pub columns: usize,
    pub rows_per_second: f64,
    /// The `n_mels + 2` band edges of the mel filter bank, in Hz.
    mel_edges: Vec<f64>,
    /// Mel bins per latent column.
    bins_per_column: usize,
    nyquist: f64,
}

impl LatentGrid {
    pub fn new(front: &MelFrontEnd, rows: usize, columns: usize) -> Self {
        let nyquist = front.sample_rate as f64 / 2.0;
        Self {
            rows,
            columns,
            rows_per_second: front.sample_rate as f64
                / front.hop as f64
                / front.frame_multiple as f64,
            mel_edges: mel_frequencies(front.n_mels + 2, 0.0, nyquist),
            bins_per_column: (front.n_mels / columns.max(1)).max(1),
            nyquist,
        }
    }

    /// Latent rows `[r0, r1)` a time range touches (§4.4: a row is regenerated if it overlaps
    /// the range; ±1e-9 keeps exact row boundaries in place). A range running past the end is
    /// clamped; one wholly outside the clip is an error.
    pub fn rows_of(&self, start: f64, end: f64) -> Result<(usize, usize)> {
        let first = (start * self.rows_per_second + 1e-9).floor();
        let last = ((end * self.rows_per_second - 1e-9).ceil()).min(self.rows as f64);
        if first >= self.rows as f64 {
            return Err(FoleyError::InvalidRequest(format!(
                "inpaint range {start}:{end} s lies outside the clip ({:.3} s)",
                self.rows as f64 / self.rows_per_second
            )));
        }
        if last <= first {
            return Err(FoleyError::InvalidRequest(format!(
                "inpaint range {start}:{end} s is shorter than one latent row ({:.0} ms)",
                1000.0 / self.rows_per_second
            )));
        }
        Ok((first as usize, last as usize))
    }

    /// Columns kept by super-resolution: those whose mel bins all lie wholly below `hz`.
    pub fn kept_columns(&self, hz: f64) -> Result<usize> {
        if !hz.is_finite() || hz <= 0.0 || hz >= self.nyquist {
            return Err(FoleyError::InvalidRequest(format!(
                "regenerate-above-hz must be between 0 and the model's Nyquist frequency ({} Hz), got {hz}",
                self.nyquist
            )));
        }
        let bins_below = (0..self.mel_edges.len() - 2)
            .filter(|&bin| self.mel_edges[bin + 2] <= hz)
            .count();
        Ok((bins_below / self.bins_per_column).min(self.columns))
    }

    /// The keep mask, (rows × columns) row-major: 1 keeps the input, 0 regenerates.
    pub fn keep_mask(&self, regions: &Regions) -> Result<Vec<f32>> {
        let mut keep = vec![1f32; self.rows * self.columns];
        for &(start, end) in &regions.time {
            let (first, last) = self.rows_of(start, end)?;
            keep[first * self.columns..last * self.columns].fill(0.0);
        }
        if let Some(hz) = regions.above_hz {
            let kept = self.kept_columns(hz)?;
            for row in keep.chunks_mut(self.columns) {
                row[kept..].fill(0.0);
            }
        }
        Ok(keep)
    }
}

/// Joins the decoded window to the user's audio (continuations and loops), restoring the
/// input's level; other tasks keep the decoded waveforms.
pub(crate) fn assemble(
    assembly: &Assembly,
    waveforms: Vec<Vec<f32>>,
    sample_rate: u32,
) -> Vec<Vec<f32>> {
    let fade_for = |limit: usize| {
        ((SPLICE_FADE_SECONDS * sample_rate as f64).round() as usize)
            .min(limit)
            .max(1)
    };
    match assembly {
        Assembly::AsDecoded => waveforms,
        Assembly::Continue {
            source,
            context,
            gain,
        } => waveforms
            .into_iter()
            .map(|window| {
                let window = level(&window, *gain, *context + 1);
                let fade = fade_for(*context);
                let keep = source.len() - fade;
                let mut out = source[..keep].to_vec();
                out.extend(crossfade(
                    &source[keep..],
                    &window[context - fade..*context],
                ));
                out.extend_from_slice(&window[(*context).min(window.len())..]);
                out
            })
            .collect(),
        Assembly::Loop {
            source,
            context,
            bridge,
            gain,
        } => waveforms
            .into_iter()
            .map(|window| {
                let end = context + bridge;
                let fade = fade_for(*context);
                let window = level(&window, *gain, end + fade);
                // The file starts on the window's re-rendering of the source's start, which
                // the bridge runs into, and fades to the source itself.
                let mut out = crossfade(&window[end..end + fade], &source[..fade]);
                out.extend_from_slice(&source[fade..source.len() - fade]);
                out.extend(crossfade(
                    &source[source.len() - fade..],
                    &window[context - fade..*context],
                ));
                out.extend_from_slice(&window[*context..end]);
                out
            })
            .collect(),
    }
}

/// Divides by the front-end gain and pads with silence to at least `minimum` samples (the
/// vocoder's output can be a sample short of the window after `int(seconds · rate)`).
fn level(window: &[f32], gain: f32, minimum: usize) -> Vec<f32> {
    let mut out: Vec<f32> = window.iter().map(|&sample| sample / gain).collect();
    if out.len() < minimum {
        out.resize(minimum, 0.0);
    }
    out
}

/// Linear crossfade from `from` to `to` (equal lengths): correlated renditions of one sound.
fn crossfade(from: &[f32], to: &[f32]) -> Vec<f32> {
    let count = from.len().min(to.len());
    (0..count)
        .map(|index| {
            let weight = (index as f32 + 0.5) / count as f32;
            from[index] * (1.0 - weight) + to[index] * weight
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid(rows: usize) -> LatentGrid {
        let front = MelFrontEnd::for_checkpoint(16_000, 160, 64, 4).unwrap();
        LatentGrid::new(&front, rows, 16)
    }

    /// INP-5: seconds → rows as A1's ratio (0.10, 0.15) of 256 rows, and exact boundaries.
    #[test]
    fn seconds_map_to_latent_rows() {
        let grid = grid(256);
        assert_eq!(grid.rows_of(1.0, 1.52).unwrap(), (25, 38));
        assert_eq!(grid.rows_of(4.08, 6.12).unwrap(), (102, 153));
        assert_eq!(grid.rows_of(10.0, 99.0).unwrap(), (250, 256));
        assert!(grid.rows_of(10.24, 11.0).is_err());
    }

    /// INP-5: the bandwidth table of editing.md §4.4.
    #[test]
    fn hertz_map_to_kept_columns() {
        let grid = grid(256);
        for (hz, kept) in [
            (2000.0, 8),
            (3000.0, 10),
            (4000.0, 12),
            (5512.5, 14),
            (7000.0, 15),
        ] {
            assert_eq!(grid.kept_columns(hz).unwrap(), kept, "{hz} Hz");
        }
        assert!(grid.kept_columns(8000.0).is_err());
        assert!(grid.kept_columns(0.0).is_err());
    }

    #[test]
    fn crossfade_moves_from_one_to_the_other() {
        let faded = crossfade(&[1.0; 4], &[0.0; 4]);
        assert!(faded.windows(2).all(|pair| pair[0] > pair[1]));
        assert!(faded[0] > 0.8 && faded[3] < 0.2);
    }
}

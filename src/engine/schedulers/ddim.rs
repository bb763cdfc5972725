//! diffusers' `DDIMScheduler` (η = 0 as the audio pipelines call it; η > 0 draws noise).

use candle_core::Tensor;

use super::{
    NoiseLevel, Scheduler, SchedulerConfig, alphas_cumprod, check_steps, numpy_linspace,
    trailing_timesteps,
};
use crate::engine::noise::TorchGenerator;
use crate::error::{FoleyError, Result};

#[derive(Debug, Clone, Copy, PartialEq)]
enum Prediction {
    Epsilon,
    Sample,
    Velocity,
}

impl Prediction {
    fn parse(name: &str) -> Result<Self> {
        match name {
            "epsilon" => Ok(Self::Epsilon),
            "sample" => Ok(Self::Sample),
            "v_prediction" => Ok(Self::Velocity),
            other => Err(FoleyError::Unsupported(format!(
                "prediction_type '{other}'"
            ))),
        }
    }
}

#[derive(Debug)]
pub struct DdimScheduler {
    timesteps: Vec<u32>,
    alphas_cumprod: Vec<f32>,
    final_alpha_cumprod: f32,
    step_ratio: usize,
    prediction: Prediction,
    clip_sample: Option<f64>,
    eta: f64,
}

impl DdimScheduler {
    pub fn new(config: &SchedulerConfig, steps: usize) -> Result<Self> {
        config.reject_unsupported_common()?;
        check_steps(steps, config)?;
        let train = config.num_train_timesteps();
        let alphas_cumprod = alphas_cumprod(config)?;
        let final_alpha_cumprod = if config.set_alpha_to_one.unwrap_or(true) {
            1.0
        } else {
            alphas_cumprod[0]
        };
        let spacing = config
            .timestep_spacing
            .clone()
            .unwrap_or_else(|| "leading".into());
        let timesteps = ddim_timesteps(&spacing, train, steps, config.steps_offset())?;
        let clip_sample = config
            .clip_sample
            .unwrap_or(true)
            .then(|| config.clip_sample_range.unwrap_or(1.0));
        Ok(Self {
            timesteps,
            alphas_cumprod,
            final_alpha_cumprod,
            step_ratio: train / steps,
            prediction: Prediction::parse(&config.prediction_type())?,
            clip_sample,
            eta: 0.0,
        })
    }

    /// Sets DDIM's η; noise is then drawn from the generator at every step, as diffusers does.
    pub fn with_eta(mut self, eta: f64) -> Self {
        self.eta = eta;
        self
    }
}

/// The timestep list of `set_timesteps` for each `timestep_spacing`.
fn ddim_timesteps(spacing: &str, train: usize, steps: usize, offset: u32) -> Result<Vec<u32>> {
    Ok(match spacing {
        "leading" => {
            let ratio = train / steps;
            (0..steps)
                .rev()
                .map(|index| (index * ratio) as u32 + offset)
                .collect()
        }
        "trailing" => trailing_timesteps(train, steps),
        "linspace" => numpy_linspace((train - 1) as f64, steps)
            .into_iter()
            .rev()
            .map(|timestep| timestep.round_ties_even() as u32)
            .collect(),
        other => {
            return Err(FoleyError::Unsupported(format!(
                "timestep_spacing '{other}'"
            )));
        }
    })
}

impl Scheduler for DdimScheduler {
    fn timesteps(&self) -> Vec<f64> {
        self.timesteps
            .iter()
            .map(|&timestep| timestep as f64)
            .collect()
    }

    fn init_noise_sigma(&self) -> f64 {
        1.0
    }

    fn noise_level(&self, schedule_index: usize) -> NoiseLevel {
        NoiseLevel::AlphaCumprod(self.alphas_cumprod[self.timesteps[schedule_index] as usize])
    }

    fn scale_model_input(&self, sample: Tensor, _step_index: usize) -> Result<Tensor> {
        Ok(sample)
    }

    fn step(
        &mut self,
        model_output: &Tensor,
        step_index: usize,
        sample: &Tensor,
        generator: &mut TorchGenerator,
    ) -> Result<Tensor> {
        let timestep = self.timesteps[step_index] as usize;
        let alpha_prod = self.alphas_cumprod[timestep];
        let alpha_prod_prev = timestep
            .checked_sub(self.step_ratio)
            .map_or(self.final_alpha_cumprod, |previous| {
                self.alphas_cumprod[previous]
            });
        let beta_prod = 1.0 - alpha_prod;
        let (sqrt_alpha, sqrt_beta) = (alpha_prod.sqrt() as f64, beta_prod.sqrt() as f64);

        let (mut original, epsilon) = match self.prediction {
            Prediction::Epsilon => {
                let original = ((sample - (model_output * sqrt_beta)?)? / sqrt_alpha)?;
                (original, model_output.clone())
            }
            Prediction::Sample => {
                let epsilon = ((sample - (model_output * sqrt_alpha)?)? / sqrt_beta)?;
                (model_output.clone(), epsilon)
            }
            Prediction::Velocity => {
                let original = ((sample * sqrt_alpha)? - (model_output * sqrt_beta)?)?;
                let epsilon = ((model_output * sqrt_alpha)? + (sample * sqrt_beta)?)?;
                (original, epsilon)
            }
        };
        if let Some(range) = self.clip_sample {
            original = original.clamp(-range, range)?;
        }
        let beta_prod_prev = 1.0 - alpha_prod_prev;
        let variance = (beta_prod_prev / beta_prod) * (1.0 - alpha_prod / alpha_prod_prev);
        let std_dev = self.eta as f32 * variance.sqrt();
        let direction_scale = (1.0 - alpha_prod_prev - std_dev * std_dev).sqrt() as f64;
        let previous =
            ((original * alpha_prod_prev.sqrt() as f64)? + (epsilon * direction_scale)?)?;
        if self.eta > 0.0 {
            let shape = model_output.shape().clone();
            let noise = generator.randn_f32(shape.elem_count());
            let noise = Tensor::from_vec(noise, shape, model_output.device())?
                .to_dtype(model_output.dtype())?;
            return Ok((previous + (noise * std_dev as f64)?)?);
        }
        Ok(previous)
    }
}

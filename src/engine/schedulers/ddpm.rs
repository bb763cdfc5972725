//! diffusers' `DDPMScheduler`: ancestral sampling along the spaced timesteps, drawing noise on
//! every step whose timestep is above zero.

use candle_core::Tensor;

use super::{
    NoiseLevel, Scheduler, SchedulerConfig, alphas_cumprod, check_steps, div_scalar,
    numpy_linspace, randn_like, reject, trailing_timesteps,
};
use crate::engine::noise::TorchGenerator;
use crate::error::{FoleyError, Result};

#[derive(Debug, Clone, Copy, PartialEq)]
enum Variance {
    FixedSmall,
    FixedLarge,
}

#[derive(Debug)]
pub struct DdpmScheduler {
    timesteps: Vec<u32>,
    alphas_cumprod: Vec<f32>,
    variance: Variance,
    clip_sample: Option<f64>,
}

impl DdpmScheduler {
    pub fn new(config: &SchedulerConfig, steps: usize) -> Result<Self> {
        config.reject_unsupported_common()?;
        check_steps(steps, config)?;
        let mut problems = Vec::new();
        config.require_epsilon(&mut problems);
        let variance = match config.variance_type.as_deref().unwrap_or("fixed_small") {
            "fixed_small" => Variance::FixedSmall,
            "fixed_large" => Variance::FixedLarge,
            other => {
                problems.push(format!("variance_type '{other}'"));
                Variance::FixedSmall
            }
        };
        reject("DDPM", problems)?;

        let train = config.num_train_timesteps();
        let spacing = config.timestep_spacing_or("leading");
        let timesteps = match spacing.as_str() {
            "leading" => {
                let ratio = train / steps;
                (0..steps)
                    .rev()
                    .map(|index| (index * ratio) as u32 + config.steps_offset())
                    .collect()
            }
            "linspace" => numpy_linspace((train - 1) as f64, steps)
                .into_iter()
                .rev()
                .map(|timestep| timestep.round_ties_even() as u32)
                .collect(),
            "trailing" => trailing_timesteps(train, steps),
            other => {
                return Err(FoleyError::Unsupported(format!(
                    "timestep_spacing '{other}'"
                )));
            }
        };
        let clip_sample = config
            .clip_sample
            .unwrap_or(true)
            .then(|| config.clip_sample_range.unwrap_or(1.0));
        Ok(Self {
            timesteps,
            alphas_cumprod: alphas_cumprod(config)?,
            variance,
            clip_sample,
        })
    }

    fn alpha(&self, timestep: u32) -> Result<f32> {
        self.alphas_cumprod
            .get(timestep as usize)
            .copied()
            .ok_or_else(|| {
                FoleyError::InvalidRequest(format!("timestep {timestep} outside the schedule"))
            })
    }
}

impl Scheduler for DdpmScheduler {
    fn timesteps(&self) -> Vec<f64> {
        self.timesteps.iter().map(|&t| t as f64).collect()
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
        let timestep = self.timesteps[step_index];
        let alpha_prod = self.alpha(timestep)?;
        // The next timestep of the list; past the last one ᾱ is one.
        let alpha_prod_prev = match self.timesteps.get(step_index + 1) {
            Some(&previous) => self.alpha(previous)?,
            None => 1.0,
        };
        let beta_prod = 1.0 - alpha_prod;
        let beta_prod_prev = 1.0 - alpha_prod_prev;
        let current_alpha = alpha_prod / alpha_prod_prev;
        let current_beta = 1.0 - current_alpha;

        let mut original = div_scalar(
            &(sample - (model_output * beta_prod.sqrt() as f64)?)?,
            alpha_prod.sqrt(),
        )?;
        if let Some(range) = self.clip_sample {
            original = original.clamp(-range, range)?;
        }
        let original_coeff = alpha_prod_prev.sqrt() * current_beta / beta_prod;
        let sample_coeff = current_alpha.sqrt() * beta_prod_prev / beta_prod;
        let mean = ((original * original_coeff as f64)? + (sample * sample_coeff as f64)?)?;
        if timestep == 0 {
            return Ok(mean);
        }
        let noise = randn_like(model_output, generator)?;
        let variance = match self.variance {
            // Clamped as diffusers does, so a last step onto ᾱ = 1 still draws (scaled by 1e-10).
            Variance::FixedSmall => {
                ((1.0 - alpha_prod_prev) / (1.0 - alpha_prod) * current_beta).max(1e-20)
            }
            Variance::FixedLarge => current_beta,
        };
        Ok((mean + (noise * variance.sqrt() as f64)?)?)
    }
}

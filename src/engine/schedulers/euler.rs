//! diffusers' `EulerDiscreteScheduler` as the pipelines call it (no churn: `s_churn` = 0, so
//! `step` never draws noise although it takes a generator).

use candle_core::Tensor;

use super::sigma_schedule::{
    FinalSigma, Respacing, SigmaSchedule, init_noise_sigma, reject_sigma_options, scale_by_sigma,
    sigma_table_accessors,
};
use super::{Scheduler, SchedulerConfig, alphas_cumprod, check_steps, div_scalar, reject};
use crate::engine::noise::TorchGenerator;
use crate::error::Result;

#[derive(Debug)]
pub struct EulerScheduler {
    timesteps: Vec<f32>,
    /// σ per step plus the final σ.
    sigmas: Vec<f32>,
    init_noise_sigma: f32,
}

impl EulerScheduler {
    pub fn new(config: &SchedulerConfig, steps: usize) -> Result<Self> {
        config.reject_unsupported_common()?;
        check_steps(steps, config)?;
        let mut problems = Vec::new();
        reject_sigma_options(config, &mut problems);
        let karras = config.use_karras_sigmas == Some(true);
        if karras && (config.sigma_min.is_some() || config.sigma_max.is_some()) {
            problems.push("sigma_min / sigma_max".to_string());
        }
        let interpolation = config.interpolation_type.as_deref().unwrap_or("linear");
        if interpolation != "linear" {
            problems.push(format!("interpolation_type '{interpolation}'"));
        }
        let timestep_type = config.timestep_type.as_deref().unwrap_or("discrete");
        if timestep_type != "discrete" {
            problems.push(format!("timestep_type '{timestep_type}'"));
        }
        let final_sigma = match config.final_sigmas_type.as_deref().unwrap_or("zero") {
            "zero" => FinalSigma::Zero,
            "sigma_min" => FinalSigma::SigmaMin,
            other => {
                problems.push(format!("final_sigmas_type '{other}'"));
                FinalSigma::Zero
            }
        };
        reject("Euler", problems)?;

        let spacing = config.timestep_spacing_or("linspace");
        let respacing = if karras {
            Respacing::Karras
        } else {
            Respacing::None
        };
        let schedule = SigmaSchedule::new(
            config,
            &alphas_cumprod(config)?,
            steps,
            &spacing,
            respacing,
            final_sigma,
        )?;
        Ok(Self {
            init_noise_sigma: init_noise_sigma(&spacing, &schedule.sigmas),
            timesteps: schedule.timesteps,
            sigmas: schedule.sigmas,
        })
    }
}

impl Scheduler for EulerScheduler {
    sigma_table_accessors!();

    fn scale_model_input(&self, sample: Tensor, step_index: usize) -> Result<Tensor> {
        scale_by_sigma(&sample, self.sigmas[step_index])
    }

    fn step(
        &mut self,
        model_output: &Tensor,
        step_index: usize,
        sample: &Tensor,
        _generator: &mut TorchGenerator,
    ) -> Result<Tensor> {
        let sigma = self.sigmas[step_index];
        // Kept as diffusers writes it (x0, then the ODE derivative) so that rounding matches.
        let original = (sample - (model_output * sigma as f64)?)?;
        let derivative = div_scalar(&(sample - original)?, sigma)?;
        let dt = self.sigmas[step_index + 1] - sigma;
        Ok((sample + (derivative * dt as f64)?)?)
    }
}

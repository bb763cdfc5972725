//! diffusers' `EulerAncestralDiscreteScheduler`: an Euler step to σ_down plus fresh noise of
//! σ_up, drawn on every step (the last one included, where σ_up is zero).

use candle_core::Tensor;

use super::sigma_schedule::{
    FinalSigma, Respacing, SigmaSchedule, init_noise_sigma, scale_by_sigma, sigma_table_accessors,
};
use super::{
    Scheduler, SchedulerConfig, alphas_cumprod, check_steps, div_scalar, randn_like, reject,
};
use crate::engine::noise::TorchGenerator;
use crate::error::Result;

#[derive(Debug)]
pub struct EulerAncestralScheduler {
    timesteps: Vec<f32>,
    /// σ per step plus the final zero.
    sigmas: Vec<f32>,
    init_noise_sigma: f32,
}

impl EulerAncestralScheduler {
    pub fn new(config: &SchedulerConfig, steps: usize) -> Result<Self> {
        config.reject_unsupported_common()?;
        check_steps(steps, config)?;
        // The class has no σ-respacing options: such keys in the file are inert, as in diffusers.
        let mut problems = Vec::new();
        config.require_epsilon(&mut problems);
        reject("Euler ancestral", problems)?;

        let spacing = config.timestep_spacing_or("linspace");
        let schedule = SigmaSchedule::new(
            config,
            &alphas_cumprod(config)?,
            steps,
            &spacing,
            Respacing::None,
            FinalSigma::Zero,
        )?;
        Ok(Self {
            init_noise_sigma: init_noise_sigma(&spacing, &schedule.sigmas),
            timesteps: schedule.timesteps,
            sigmas: schedule.sigmas,
        })
    }
}

impl Scheduler for EulerAncestralScheduler {
    sigma_table_accessors!();

    fn scale_model_input(&self, sample: Tensor, step_index: usize) -> Result<Tensor> {
        scale_by_sigma(&sample, self.sigmas[step_index])
    }

    fn step(
        &mut self,
        model_output: &Tensor,
        step_index: usize,
        sample: &Tensor,
        generator: &mut TorchGenerator,
    ) -> Result<Tensor> {
        let sigma = self.sigmas[step_index];
        let sigma_to = self.sigmas[step_index + 1];
        let original = (sample - (model_output * sigma as f64)?)?;
        let sigma_up =
            (sigma_to * sigma_to * (sigma * sigma - sigma_to * sigma_to) / (sigma * sigma)).sqrt();
        let sigma_down = (sigma_to * sigma_to - sigma_up * sigma_up).sqrt();
        let derivative = div_scalar(&(sample - original)?, sigma)?;
        let dt = sigma_down - sigma;
        let previous = (sample + (derivative * dt as f64)?)?;
        let noise = randn_like(model_output, generator)?;
        Ok((previous + (noise * sigma_up as f64)?)?)
    }
}

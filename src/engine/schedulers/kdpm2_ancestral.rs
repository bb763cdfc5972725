//! diffusers' `KDPM2AncestralDiscreteScheduler`: KDPM2 towards σ_down, the log-midpoint taken
//! between σ_i and σ_down, plus fresh noise of σ_up after each second evaluation (N - 1 draws).

use candle_core::Tensor;

use super::kdpm2::{expand_pairs, karras_respacing, log_midpoint};
use super::sigma_schedule::{
    FinalSigma, SigmaSchedule, init_noise_sigma, reject_sigma_options, scale_by_sigma,
    sigma_table_accessors, sigma_to_t_f32,
};
use super::{
    Scheduler, SchedulerConfig, alphas_cumprod, check_steps, div_scalar, randn_like, reject,
};
use crate::engine::noise::TorchGenerator;
use crate::error::Result;

#[derive(Debug)]
pub struct Kdpm2AncestralScheduler {
    timesteps: Vec<f32>,
    /// These four laid out one entry per model evaluation, as `kdpm2::expand_pairs` does.
    sigmas: Vec<f32>,
    sigmas_interpol: Vec<f32>,
    sigmas_up: Vec<f32>,
    sigmas_down: Vec<f32>,
    init_noise_sigma: f32,
    /// The sample the current step started from, between its two evaluations.
    first_sample: Option<Tensor>,
}

impl Kdpm2AncestralScheduler {
    pub fn new(config: &SchedulerConfig, steps: usize) -> Result<Self> {
        config.reject_unsupported_common()?;
        check_steps(steps, config)?;
        let mut problems = Vec::new();
        reject_sigma_options(config, &mut problems);
        reject("KDPM2 ancestral", problems)?;

        let spacing = config.timestep_spacing_or("linspace");
        let schedule = SigmaSchedule::new(
            config,
            &alphas_cumprod(config)?,
            steps,
            &spacing,
            karras_respacing(config),
            FinalSigma::Zero,
        )?;
        let sigmas = &schedule.sigmas;
        let count = sigmas.len();
        let mut up = Vec::with_capacity(count);
        let mut down = Vec::with_capacity(count);
        for (k, &sigma) in sigmas.iter().enumerate() {
            let next = sigmas.get(k + 1).copied().unwrap_or(0.0);
            // 0/0 on the final zero gives NaN, as in diffusers; that entry is never used.
            let sigma_up = (next * next * (sigma * sigma - next * next) / (sigma * sigma)).sqrt();
            up.push(sigma_up);
            down.push(if k + 1 == count {
                0.0
            } else {
                (next * next - sigma_up * sigma_up).sqrt()
            });
        }
        let mut interpol: Vec<f32> = sigmas
            .iter()
            .zip(&down)
            .map(|(&sigma, &sigma_down)| log_midpoint(sigma, sigma_down))
            .collect();
        for value in interpol.iter_mut().skip(count.saturating_sub(2)) {
            *value = 0.0;
        }
        let midpoint_timesteps: Vec<f32> = interpol
            .iter()
            .map(|&sigma| sigma_to_t_f32(sigma, &schedule.log_sigmas))
            .collect();
        let mut timesteps = vec![schedule.timesteps[0]];
        for (midpoint, timestep) in midpoint_timesteps[..count - 2]
            .iter()
            .zip(&schedule.timesteps[1..])
        {
            timesteps.extend([*midpoint, *timestep]);
        }
        let sigmas = expand_pairs(sigmas);
        Ok(Self {
            init_noise_sigma: init_noise_sigma(&spacing, &sigmas),
            timesteps,
            sigmas,
            sigmas_interpol: expand_pairs(&interpol),
            sigmas_up: expand_pairs(&up),
            sigmas_down: expand_pairs(&down),
            first_sample: None,
        })
    }
}

impl Scheduler for Kdpm2AncestralScheduler {
    sigma_table_accessors!();

    fn order(&self) -> usize {
        2
    }

    fn scale_model_input(&self, sample: Tensor, step_index: usize) -> Result<Tensor> {
        let sigma = if self.first_sample.is_none() {
            self.sigmas[step_index]
        } else {
            self.sigmas_interpol[step_index - 1]
        };
        scale_by_sigma(&sample, sigma)
    }

    fn step(
        &mut self,
        model_output: &Tensor,
        step_index: usize,
        sample: &Tensor,
        generator: &mut TorchGenerator,
    ) -> Result<Tensor> {
        match self.first_sample.take() {
            None => {
                let sigma = self.sigmas[step_index];
                let midpoint = self.sigmas_interpol[step_index];
                let original = (sample - (model_output * sigma as f64)?)?;
                let derivative = div_scalar(&(sample - original)?, sigma)?;
                self.first_sample = Some(sample.clone());
                Ok((sample + (derivative * (midpoint - sigma) as f64)?)?)
            }
            Some(first_sample) => {
                let sigma = self.sigmas[step_index - 1];
                let midpoint = self.sigmas_interpol[step_index - 1];
                let sigma_up = self.sigmas_up[step_index - 1];
                let sigma_down = self.sigmas_down[step_index - 1];
                let original = (sample - (model_output * midpoint as f64)?)?;
                let derivative = div_scalar(&(sample - original)?, midpoint)?;
                let previous = (first_sample + (derivative * (sigma_down - sigma) as f64)?)?;
                let noise = randn_like(model_output, generator)?;
                Ok((previous + (noise * sigma_up as f64)?)?)
            }
        }
    }
}

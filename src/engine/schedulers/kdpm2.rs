//! diffusers' `KDPM2DiscreteScheduler` (k-diffusion's DPM-Solver-2): each step evaluates the
//! model at σ_i and at the log-midpoint of σ_i and σ_i+1. The midpoint timesteps come from
//! `sigma_to_t` and are fractional; the list is [t0, t½, t1, t1½, t2, …, tN-1].

use candle_core::Tensor;

use super::sigma_schedule::{
    FinalSigma, Respacing, SigmaSchedule, init_noise_sigma, reject_sigma_options, scale_by_sigma,
    sigma_table_accessors, sigma_to_t_f32,
};
use super::{Scheduler, SchedulerConfig, alphas_cumprod, check_steps, div_scalar, reject};
use crate::engine::noise::TorchGenerator;
use crate::error::Result;

#[derive(Debug)]
pub struct Kdpm2Scheduler {
    timesteps: Vec<f32>,
    /// σ per model evaluation: [σ0, σ1, σ1, …, σN, σN, σN] with σN = 0.
    sigmas: Vec<f32>,
    /// Log-midpoints laid out like `sigmas`.
    sigmas_interpol: Vec<f32>,
    init_noise_sigma: f32,
    /// The sample the current step started from, between its two evaluations.
    first_sample: Option<Tensor>,
}

impl Kdpm2Scheduler {
    pub fn new(config: &SchedulerConfig, steps: usize) -> Result<Self> {
        config.reject_unsupported_common()?;
        check_steps(steps, config)?;
        let mut problems = Vec::new();
        reject_sigma_options(config, &mut problems);
        reject("KDPM2", problems)?;

        let spacing = config.timestep_spacing_or("linspace");
        let schedule = SigmaSchedule::new(
            config,
            &alphas_cumprod(config)?,
            steps,
            &spacing,
            karras_respacing(config),
            FinalSigma::Zero,
        )?;
        // exp(lerp(ln σ_k, ln σ_k-1, ½)), σ_-1 being the final zero as torch's roll makes it.
        let count = schedule.sigmas.len();
        let interpol: Vec<f32> = (0..count)
            .map(|k| {
                let previous = schedule.sigmas[(k + count - 1) % count];
                log_midpoint(schedule.sigmas[k], previous)
            })
            .collect();
        let midpoint_timesteps: Vec<f32> = interpol
            .iter()
            .map(|&sigma| sigma_to_t_f32(sigma, &schedule.log_sigmas))
            .collect();
        let mut timesteps = vec![schedule.timesteps[0]];
        for (midpoint, timestep) in midpoint_timesteps[1..count - 1]
            .iter()
            .zip(&schedule.timesteps[1..])
        {
            timesteps.extend([*midpoint, *timestep]);
        }
        let sigmas = expand_pairs(&schedule.sigmas);
        Ok(Self {
            init_noise_sigma: init_noise_sigma(&spacing, &sigmas),
            timesteps,
            sigmas,
            sigmas_interpol: expand_pairs(&interpol),
            first_sample: None,
        })
    }
}

/// Karras respacing as the KDPM2 schedulers do it (mapped timesteps rounded).
pub(super) fn karras_respacing(config: &SchedulerConfig) -> Respacing {
    if config.use_karras_sigmas == Some(true) {
        Respacing::KarrasRounded
    } else {
        Respacing::None
    }
}

/// `exp(lerp(ln a, ln b, 0.5))` in float32 as torch evaluates it (`b - (b - a) * 0.5`).
pub(super) fn log_midpoint(a: f32, b: f32) -> f32 {
    let (a, b) = (a.ln(), b.ln());
    (b - (b - a) * 0.5).exp()
}

/// [a0, a1, …, aN] → [a0, a1, a1, …, aN, aN, aN]: one entry per model evaluation.
pub(super) fn expand_pairs(values: &[f32]) -> Vec<f32> {
    let mut expanded = values[..1].to_vec();
    expanded.extend(values[1..].iter().flat_map(|&value| [value, value]));
    expanded.extend(values.last());
    expanded
}

impl Scheduler for Kdpm2Scheduler {
    sigma_table_accessors!();

    fn order(&self) -> usize {
        2
    }

    fn scale_model_input(&self, sample: Tensor, step_index: usize) -> Result<Tensor> {
        let sigma = if self.first_sample.is_none() {
            self.sigmas[step_index]
        } else {
            self.sigmas_interpol[step_index]
        };
        scale_by_sigma(&sample, sigma)
    }

    fn step(
        &mut self,
        model_output: &Tensor,
        step_index: usize,
        sample: &Tensor,
        _generator: &mut TorchGenerator,
    ) -> Result<Tensor> {
        match self.first_sample.take() {
            None => {
                // To the midpoint with the derivative at σ_i.
                let sigma = self.sigmas[step_index];
                let midpoint = self.sigmas_interpol[step_index + 1];
                let original = (sample - (model_output * sigma as f64)?)?;
                let derivative = div_scalar(&(sample - original)?, sigma)?;
                self.first_sample = Some(sample.clone());
                Ok((sample + (derivative * (midpoint - sigma) as f64)?)?)
            }
            Some(first_sample) => {
                // The whole step from σ_i to σ_i+1 with the derivative at the midpoint.
                let sigma = self.sigmas[step_index - 1];
                let midpoint = self.sigmas_interpol[step_index];
                let sigma_next = self.sigmas[step_index];
                let original = (sample - (model_output * midpoint as f64)?)?;
                let derivative = div_scalar(&(sample - original)?, midpoint)?;
                Ok((first_sample + (derivative * (sigma_next - sigma) as f64)?)?)
            }
        }
    }
}

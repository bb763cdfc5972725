//! diffusers' `HeunDiscreteScheduler`: Heun's second-order method in σ. Every step but the first
//! takes two model evaluations, so the timestep list repeats each later timestep:
//! [t0, t1, t1, t2, t2, …], and σ likewise: [σ0, σ1, σ1, …, σN-1, σN-1, 0].

use candle_core::Tensor;

use super::sigma_schedule::{
    FinalSigma, Respacing, SigmaSchedule, init_noise_sigma, reject_sigma_options, scale_by_sigma,
    sigma_table_accessors,
};
use super::{Scheduler, SchedulerConfig, alphas_cumprod, check_steps, div_scalar, reject};
use crate::engine::noise::TorchGenerator;
use crate::error::Result;

/// What the first (Euler) half of a step leaves for the correction.
#[derive(Debug)]
struct EulerHalf {
    derivative: Tensor,
    dt: f32,
    sample: Tensor,
}

#[derive(Debug)]
pub struct HeunScheduler {
    timesteps: Vec<f32>,
    /// σ per model evaluation plus the final zero.
    sigmas: Vec<f32>,
    init_noise_sigma: f32,
    clip_sample: Option<f64>,
    /// Set between the Euler half and the correction: diffusers' "second order" state.
    pending: Option<EulerHalf>,
}

impl HeunScheduler {
    pub fn new(config: &SchedulerConfig, steps: usize) -> Result<Self> {
        config.reject_unsupported_common()?;
        check_steps(steps, config)?;
        let mut problems = Vec::new();
        reject_sigma_options(config, &mut problems);
        reject("Heun", problems)?;

        let spacing = config.timestep_spacing_or("linspace");
        let respacing = if config.use_karras_sigmas == Some(true) {
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
            FinalSigma::Zero,
        )?;
        let timesteps = repeat_after_first(&schedule.timesteps);
        // σ: the first once, the inner ones twice, the final zero once.
        let inner = &schedule.sigmas[1..schedule.sigmas.len() - 1];
        let mut sigmas = vec![schedule.sigmas[0]];
        sigmas.extend(inner.iter().flat_map(|&sigma| [sigma, sigma]));
        sigmas.push(0.0);
        let clip_sample = config
            .clip_sample
            .unwrap_or(false)
            .then(|| config.clip_sample_range.unwrap_or(1.0));
        Ok(Self {
            init_noise_sigma: init_noise_sigma(&spacing, &sigmas),
            timesteps,
            sigmas,
            clip_sample,
            pending: None,
        })
    }
}

/// [a, b, c] → [a, b, b, c, c].
fn repeat_after_first(values: &[f32]) -> Vec<f32> {
    let mut repeated = values[..1].to_vec();
    repeated.extend(values[1..].iter().flat_map(|&value| [value, value]));
    repeated
}

impl Scheduler for HeunScheduler {
    sigma_table_accessors!();

    fn order(&self) -> usize {
        2
    }

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
        // The Euler half evaluates at σ_i; the correction at σ_i+1 (stored at this index).
        let sigma_input = self.sigmas[step_index];
        let mut original = (sample - (model_output * sigma_input as f64)?)?;
        if let Some(range) = self.clip_sample {
            original = original.clamp(-range, range)?;
        }
        let derivative = div_scalar(&(sample - original)?, sigma_input)?;
        match self.pending.take() {
            None => {
                let dt = self.sigmas[step_index + 1] - sigma_input;
                let previous = (sample + (&derivative * dt as f64)?)?;
                self.pending = Some(EulerHalf {
                    derivative,
                    dt,
                    sample: sample.clone(),
                });
                Ok(previous)
            }
            Some(half) => {
                let derivative = div_scalar(&(half.derivative + derivative)?, 2.0)?;
                Ok((half.sample + (derivative * half.dt as f64)?)?)
            }
        }
    }
}

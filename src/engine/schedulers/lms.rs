//! diffusers' `LMSDiscreteScheduler`: linear multistep in σ over up to four past derivatives,
//! the coefficients integrals of Lagrange basis polynomials.

use std::collections::VecDeque;

use candle_core::Tensor;

use super::sigma_schedule::{
    FinalSigma, Respacing, SigmaSchedule, init_noise_sigma, reject_sigma_options, scale_by_sigma,
    sigma_table_accessors,
};
use super::{Scheduler, SchedulerConfig, alphas_cumprod, check_steps, div_scalar, reject};
use crate::engine::noise::TorchGenerator;
use crate::error::Result;

/// `step`'s default `order`; the pipelines never pass another.
const MAX_ORDER: usize = 4;

#[derive(Debug)]
pub struct LmsScheduler {
    timesteps: Vec<f32>,
    /// σ per step plus the final zero.
    sigmas: Vec<f32>,
    init_noise_sigma: f32,
    /// ODE derivatives of the most recent steps, oldest first.
    derivatives: VecDeque<Tensor>,
}

impl LmsScheduler {
    pub fn new(config: &SchedulerConfig, steps: usize) -> Result<Self> {
        config.reject_unsupported_common()?;
        check_steps(steps, config)?;
        let mut problems = Vec::new();
        reject_sigma_options(config, &mut problems);
        reject("LMS", problems)?;

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
        Ok(Self {
            init_noise_sigma: init_noise_sigma(&spacing, &schedule.sigmas),
            timesteps: schedule.timesteps,
            sigmas: schedule.sigmas,
            derivatives: VecDeque::with_capacity(MAX_ORDER + 1),
        })
    }

    /// ∫ over [σ_t, σ_t+1] of the Lagrange basis polynomial of node `t - current` among the
    /// nodes σ_t, σ_t-1, …, σ_t-order+1. diffusers integrates numerically (scipy's quad); the
    /// integrand is a polynomial of degree < 4, which Gauss–Legendre integrates exactly.
    fn coefficient(&self, order: usize, t: usize, current: usize) -> f64 {
        let sigma = |index: usize| self.sigmas[index] as f64;
        let basis = |tau: f64| {
            (0..order)
                .filter(|&k| k != current)
                .map(|k| (tau - sigma(t - k)) / (sigma(t - current) - sigma(t - k)))
                .product::<f64>()
        };
        gauss_legendre(sigma(t), sigma(t + 1), basis)
    }
}

/// Nodes of the Gauss–Legendre rule; eight are exact for polynomials of degree < 16.
const GAUSS_POINTS: usize = 8;

/// ∫_a^b f by Gauss–Legendre quadrature, nodes found by Newton's method on P_n.
fn gauss_legendre(a: f64, b: f64, f: impl Fn(f64) -> f64) -> f64 {
    let n = GAUSS_POINTS;
    let (middle, half) = ((a + b) / 2.0, (b - a) / 2.0);
    let mut total = 0.0;
    for root in 0..n {
        let mut x = (std::f64::consts::PI * (root as f64 + 0.75) / (n as f64 + 0.5)).cos();
        let mut slope = 1.0;
        for _ in 0..100 {
            let (value, derivative) = legendre(n, x);
            slope = derivative;
            let delta = value / derivative;
            x -= delta;
            if delta.abs() < 1e-16 {
                break;
            }
        }
        let weight = 2.0 / ((1.0 - x * x) * slope * slope);
        total += weight * f(middle + half * x);
    }
    total * half
}

/// P_n(x) and P_n'(x) by the three-term recurrence.
fn legendre(n: usize, x: f64) -> (f64, f64) {
    let (mut previous, mut current) = (1.0, x);
    for degree in 2..=n {
        let next = ((2 * degree - 1) as f64 * x * current - (degree - 1) as f64 * previous)
            / degree as f64;
        previous = current;
        current = next;
    }
    let derivative = n as f64 * (x * current - previous) / (x * x - 1.0);
    (current, derivative)
}

impl Scheduler for LmsScheduler {
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
        let original = (sample - (model_output * sigma as f64)?)?;
        let derivative = div_scalar(&(sample - original)?, sigma)?;
        self.derivatives.push_back(derivative);
        if self.derivatives.len() > MAX_ORDER {
            self.derivatives.pop_front();
        }
        let order = (step_index + 1).min(MAX_ORDER);
        let mut update: Option<Tensor> = None;
        for (current, derivative) in self.derivatives.iter().rev().take(order).enumerate() {
            let term = (derivative * self.coefficient(order, step_index, current))?;
            update = Some(match update {
                Some(sum) => (sum + term)?,
                None => term,
            });
        }
        Ok(match update {
            Some(update) => (sample + update)?,
            None => sample.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gauss_legendre_is_exact_for_cubics() {
        let integral = gauss_legendre(0.5, 2.0, |x| 3.0 * x * x * x - x + 1.0);
        let exact = |x: f64| 0.75 * x.powi(4) - 0.5 * x * x + x;
        assert!((integral - (exact(2.0) - exact(0.5))).abs() < 1e-13);
    }
}

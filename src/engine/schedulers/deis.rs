//! diffusers' `DEISMultistepScheduler` with its defaults: log-ρ DEIS of order 2 on noise
//! predictions. Unlike DPM-Solver its last σ is σ(t=0), not zero; the final step drops to first
//! order only below 15 steps (`lower_order_final`).

use candle_core::Tensor;

use super::numpy_log::log_f32;
use super::vp::{alpha_sigma_lambda, sigmas_at, solver_accessors, solver_timesteps};
use super::{Scheduler, SchedulerConfig, alphas_cumprod, check_steps, div_scalar, reject};
use crate::engine::noise::TorchGenerator;
use crate::error::Result;

#[derive(Debug)]
pub struct DeisMultistepScheduler {
    timesteps: Vec<u32>,
    /// σ per step plus σ(t=0).
    sigmas: Vec<f32>,
    solver_order: usize,
    lower_order_final: bool,
    /// Noise predictions of the previous and current step.
    model_outputs: [Option<Tensor>; 2],
    lower_order_nums: usize,
}

impl DeisMultistepScheduler {
    pub fn new(config: &SchedulerConfig, steps: usize) -> Result<Self> {
        config.reject_unsupported_common()?;
        check_steps(steps, config)?;
        let mut problems = Vec::new();
        config.require_epsilon(&mut problems);
        let solver_order = config.solver_order.unwrap_or(2);
        if !(1..=2).contains(&solver_order) {
            problems.push(format!("solver_order {solver_order}"));
        }
        // diffusers maps the other solvers' names onto its own.
        let algorithm = config.algorithm_type.as_deref().unwrap_or("deis");
        if !matches!(algorithm, "deis" | "dpmsolver" | "dpmsolver++") {
            problems.push(format!("algorithm_type '{algorithm}'"));
        }
        let solver = config.solver_type.as_deref().unwrap_or("logrho");
        if !matches!(solver, "logrho" | "midpoint" | "heun" | "bh1" | "bh2") {
            problems.push(format!("solver_type '{solver}'"));
        }
        config.reject_flags(
            &[
                (config.use_karras_sigmas, "use_karras_sigmas"),
                (config.use_exponential_sigmas, "use_exponential_sigmas"),
                (config.use_beta_sigmas, "use_beta_sigmas"),
                (config.use_flow_sigmas, "use_flow_sigmas"),
                (config.use_dynamic_shifting, "use_dynamic_shifting"),
            ],
            &mut problems,
        );
        reject("DEIS", problems)?;

        let timesteps = solver_timesteps(
            &config.timestep_spacing_or("linspace"),
            config.num_train_timesteps(),
            steps,
            config.steps_offset(),
        )?;
        let alphas_cumprod = alphas_cumprod(config)?;
        let mut sigmas = sigmas_at(&timesteps, &alphas_cumprod);
        sigmas.extend(sigmas_at(&[0], &alphas_cumprod));
        Ok(Self {
            timesteps,
            sigmas,
            solver_order,
            lower_order_final: config.lower_order_final.unwrap_or(true),
            model_outputs: [None, None],
            lower_order_nums: 0,
        })
    }
}

/// ∫ (ln τ − ln c) / (ln b − ln c) dτ at τ = t: the log-ρ Lagrange basis integral, in f32
/// with numpy's log as diffusers evaluates it.
fn basis_integral(t: f32, b: f32, c: f32) -> f32 {
    t * (-log_f32(c) + log_f32(t) - 1.0) / (log_f32(b) - log_f32(c))
}

impl Scheduler for DeisMultistepScheduler {
    solver_accessors!();

    fn step(
        &mut self,
        model_output: &Tensor,
        step_index: usize,
        sample: &Tensor,
        _generator: &mut TorchGenerator,
    ) -> Result<Tensor> {
        let steps = self.timesteps.len();
        let lower_order_final = step_index + 1 == steps && self.lower_order_final && steps < 15;

        // The noise prediction, round-tripped through x0 as diffusers does.
        let (alpha_s0, sigma_s0, lambda_s0) = alpha_sigma_lambda(self.sigmas[step_index]);
        let original = div_scalar(&(sample - (model_output * sigma_s0 as f64)?)?, alpha_s0)?;
        let noise = div_scalar(&(sample - (original * alpha_s0 as f64)?)?, sigma_s0)?;
        self.model_outputs.swap(0, 1);
        self.model_outputs[1] = Some(noise.clone());

        let (alpha_t, sigma_t, lambda_t) = alpha_sigma_lambda(self.sigmas[step_index + 1]);
        let first_order = self.solver_order == 1 || self.lower_order_nums < 1 || lower_order_final;
        let previous = match (&self.model_outputs[0], first_order) {
            (Some(earlier), false) => {
                let (alpha_s1, sigma_s1, _) = alpha_sigma_lambda(self.sigmas[step_index - 1]);
                let (rho_t, rho_s0, rho_s1) =
                    (sigma_t / alpha_t, sigma_s0 / alpha_s0, sigma_s1 / alpha_s1);
                let coef_current =
                    basis_integral(rho_t, rho_s0, rho_s1) - basis_integral(rho_s0, rho_s0, rho_s1);
                let coef_earlier =
                    basis_integral(rho_t, rho_s1, rho_s0) - basis_integral(rho_s0, rho_s1, rho_s0);
                let sum = ((div_scalar(sample, alpha_s0)? + (&noise * coef_current as f64)?)?
                    + (earlier * coef_earlier as f64)?)?;
                (sum * alpha_t as f64)?
            }
            _ => {
                let h = lambda_t - lambda_s0;
                ((sample * (alpha_t / alpha_s0) as f64)?
                    - (&noise * (sigma_t * (h.exp() - 1.0)) as f64)?)?
            }
        };
        if self.lower_order_nums < self.solver_order {
            self.lower_order_nums += 1;
        }
        Ok(previous)
    }
}

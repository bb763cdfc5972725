//! diffusers' `DPMSolverSinglestepScheduler` with its defaults: DPM-Solver++ (midpoint) in
//! pairs of a first- and a second-order step that both start from the pair's first sample.
//! It has no `timestep_spacing`: timesteps are always `linspace(0, T-1, N+1)` minus the zero.
//! Its order list is built with `lower_order_final` forced on, as `set_timesteps` does when the
//! final σ is zero.

use candle_core::Tensor;

use super::vp::{alpha_sigma_lambda, linspace_timesteps, sigmas_at, solver_accessors};
use super::{Scheduler, SchedulerConfig, alphas_cumprod, check_steps, div_scalar, reject};
use crate::engine::noise::TorchGenerator;
use crate::error::Result;

#[derive(Debug)]
pub struct DpmSolverSinglestepScheduler {
    timesteps: Vec<u32>,
    /// σ per step plus the final zero.
    sigmas: Vec<f32>,
    /// Solver order of each step.
    orders: Vec<usize>,
    /// Data (x0) predictions of the previous and current step.
    model_outputs: [Option<Tensor>; 2],
    /// The sample the current pair of steps started from.
    pair_sample: Option<Tensor>,
}

impl DpmSolverSinglestepScheduler {
    pub fn new(config: &SchedulerConfig, steps: usize) -> Result<Self> {
        config.reject_unsupported_common()?;
        check_steps(steps, config)?;
        let mut problems = Vec::new();
        config.require_epsilon(&mut problems);
        let order = config.solver_order.unwrap_or(2);
        if !(1..=2).contains(&order) {
            problems.push(format!("solver_order {order}"));
        }
        // diffusers maps the other solvers' names onto its own.
        let algorithm = config.algorithm_type.as_deref().unwrap_or("dpmsolver++");
        if !matches!(algorithm, "dpmsolver++" | "deis") {
            problems.push(format!("algorithm_type '{algorithm}'"));
        }
        let solver = config.solver_type.as_deref().unwrap_or("midpoint");
        if !matches!(solver, "midpoint" | "logrho" | "bh1" | "bh2") {
            problems.push(format!("solver_type '{solver}'"));
        }
        let final_sigmas = config.final_sigmas_type.as_deref().unwrap_or("zero");
        if final_sigmas != "zero" {
            problems.push(format!("final_sigmas_type '{final_sigmas}'"));
        }
        if let Some(variance @ ("learned" | "learned_range")) = config.variance_type.as_deref() {
            problems.push(format!("variance_type '{variance}'"));
        }
        if config.lambda_min_clipped.is_some_and(f64::is_finite) {
            problems.push("lambda_min_clipped".to_string());
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
        reject("DPM-Solver++ singlestep", problems)?;

        let timesteps = linspace_timesteps(config.num_train_timesteps(), steps);
        let mut sigmas = sigmas_at(&timesteps, &alphas_cumprod(config)?);
        sigmas.push(0.0);
        Ok(Self {
            timesteps,
            sigmas,
            orders: order_list(steps, order),
            model_outputs: [None, None],
            pair_sample: None,
        })
    }
}

/// `get_order_list` with `lower_order_final` on and a zero final σ (last step first order).
fn order_list(steps: usize, order: usize) -> Vec<usize> {
    let mut orders: Vec<usize> = if order == 1 {
        vec![1; steps]
    } else {
        let mut orders: Vec<usize> = (0..steps / 2 * 2).map(|index| index % 2 + 1).collect();
        if steps.is_multiple_of(2) {
            // The last pair becomes two first-order steps.
            orders[steps - 1] = 1;
        } else {
            orders.push(1);
        }
        orders
    };
    if let Some(last) = orders.last_mut() {
        *last = 1;
    }
    orders
}

impl Scheduler for DpmSolverSinglestepScheduler {
    solver_accessors!();

    fn step(
        &mut self,
        model_output: &Tensor,
        step_index: usize,
        sample: &Tensor,
        _generator: &mut TorchGenerator,
    ) -> Result<Tensor> {
        let (alpha_s0, sigma_s0, lambda_s0) = alpha_sigma_lambda(self.sigmas[step_index]);
        let data = div_scalar(&(sample - (model_output * sigma_s0 as f64)?)?, alpha_s0)?;
        self.model_outputs.swap(0, 1);
        self.model_outputs[1] = Some(data.clone());

        let mut order = self.orders[step_index];
        if order == 2 && self.model_outputs[0].is_none() {
            order = 1;
        }
        if order == 1 {
            self.pair_sample = Some(sample.clone());
        }
        let start = self.pair_sample.clone().unwrap_or_else(|| sample.clone());
        let (alpha_t, sigma_t, lambda_t) = alpha_sigma_lambda(self.sigmas[step_index + 1]);
        match (&self.model_outputs[0], order) {
            (Some(earlier), 2) => {
                // From the pair's start σ_s1 to σ_t, with the slope between the two predictions.
                let (_, sigma_s1, lambda_s1) = alpha_sigma_lambda(self.sigmas[step_index - 1]);
                let h = lambda_t - lambda_s1;
                let r0 = (lambda_s0 - lambda_s1) / h;
                let derivative = ((&data - earlier)? * (1.0 / r0) as f64)?;
                let decay = alpha_t * ((-h).exp() - 1.0);
                Ok(((start * (sigma_t / sigma_s1) as f64)?
                    - (earlier * decay as f64)?
                    - (derivative * (0.5 * decay) as f64)?)?)
            }
            _ => {
                let h = lambda_t - lambda_s0;
                let decay = alpha_t * ((-h).exp() - 1.0);
                Ok(((start * (sigma_t / sigma_s0) as f64)? - (&data * decay as f64)?)?)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_list_matches_diffusers() {
        assert_eq!(order_list(6, 2), [1, 2, 1, 2, 1, 1]);
        assert_eq!(order_list(5, 2), [1, 2, 1, 2, 1]);
        assert_eq!(order_list(1, 2), [1]);
        assert_eq!(order_list(3, 1), [1, 1, 1]);
    }
}

//! diffusers' `DPMSolverMultistepScheduler` with its defaults: DPM-Solver++ of order 2,
//! midpoint solver, first order on the final step (final sigma zero); optionally on Karras σ.

use candle_core::Tensor;

use super::vp::{
    alpha_sigma_lambda, karras_schedule, sigmas_at, solver_accessors, solver_timesteps,
};
use super::{Scheduler, SchedulerConfig, alphas_cumprod, check_steps};
use crate::engine::noise::TorchGenerator;
use crate::error::{FoleyError, Result};

#[derive(Debug)]
pub struct DpmSolverMultistepScheduler {
    timesteps: Vec<u32>,
    /// σ per step plus the final zero, in f32 like diffusers' `self.sigmas`.
    sigmas: Vec<f32>,
    /// Converted (x0) predictions of the previous and current step.
    model_outputs: [Option<Tensor>; 2],
    lower_order_nums: usize,
}

impl DpmSolverMultistepScheduler {
    pub fn new(config: &SchedulerConfig, steps: usize) -> Result<Self> {
        config.reject_unsupported_common()?;
        check_steps(steps, config)?;
        let mut problems = Vec::new();
        if config.solver_order.unwrap_or(2) != 2 {
            problems.push("solver_order other than 2".to_string());
        }
        let algorithm = config.algorithm_type.as_deref().unwrap_or("dpmsolver++");
        if algorithm != "dpmsolver++" {
            problems.push(format!("algorithm_type '{algorithm}'"));
        }
        let solver = config.solver_type.as_deref().unwrap_or("midpoint");
        if solver != "midpoint" {
            problems.push(format!("solver_type '{solver}'"));
        }
        for (flag, name) in [
            (config.use_exponential_sigmas, "use_exponential_sigmas"),
            (config.use_beta_sigmas, "use_beta_sigmas"),
            (config.use_lu_lambdas, "use_lu_lambdas"),
            (config.euler_at_final, "euler_at_final"),
        ] {
            if flag == Some(true) {
                problems.push(name.to_string());
            }
        }
        let final_sigmas = config.final_sigmas_type.as_deref().unwrap_or("zero");
        if final_sigmas != "zero" {
            problems.push(format!("final_sigmas_type '{final_sigmas}'"));
        }
        if config.prediction_type() != "epsilon" {
            problems.push(format!("prediction_type '{}'", config.prediction_type()));
        }
        if config.lambda_min_clipped.is_some_and(f64::is_finite) {
            problems.push("lambda_min_clipped".to_string());
        }
        if !problems.is_empty() {
            return Err(FoleyError::Unsupported(format!(
                "DPM-Solver++ options: {}",
                problems.join(", ")
            )));
        }

        let alphas_cumprod = alphas_cumprod(config)?;
        let (timesteps, mut sigmas) = if config.use_karras_sigmas == Some(true) {
            karras_schedule(&alphas_cumprod, steps)
        } else {
            let timesteps = solver_timesteps(
                &config.timestep_spacing_or("linspace"),
                config.num_train_timesteps(),
                steps,
                config.steps_offset(),
            )?;
            let sigmas = sigmas_at(&timesteps, &alphas_cumprod);
            (timesteps, sigmas)
        };
        sigmas.push(0.0);
        Ok(Self {
            timesteps,
            sigmas,
            model_outputs: [None, None],
            lower_order_nums: 0,
        })
    }
}

impl Scheduler for DpmSolverMultistepScheduler {
    solver_accessors!();

    fn step(
        &mut self,
        model_output: &Tensor,
        step_index: usize,
        sample: &Tensor,
        _generator: &mut TorchGenerator,
    ) -> Result<Tensor> {
        let steps = self.timesteps.len();
        // With a zero final sigma diffusers always finishes with a first-order step.
        let final_step = step_index + 1 == steps;

        let (alpha_s0, sigma_s0, lambda_s0) = alpha_sigma_lambda(self.sigmas[step_index]);
        let (alpha_t, sigma_t, lambda_t) = alpha_sigma_lambda(self.sigmas[step_index + 1]);
        // Epsilon prediction converted to a data (x0) prediction.
        let data = ((sample - (model_output * sigma_s0 as f64)?)? / alpha_s0 as f64)?;
        self.model_outputs.swap(0, 1);
        self.model_outputs[1] = Some(data.clone());

        let h = lambda_t - lambda_s0;
        let decay = alpha_t * ((-h).exp() - 1.0);
        let first_order = self.lower_order_nums < 1 || final_step;
        let previous = match (&self.model_outputs[0], first_order) {
            (Some(earlier), false) => {
                let (_, _, lambda_s1) = alpha_sigma_lambda(self.sigmas[step_index - 1]);
                let r0 = (lambda_s0 - lambda_s1) / h;
                let derivative = ((&data - earlier)? * (1.0 / r0) as f64)?;
                ((sample * (sigma_t / sigma_s0) as f64)?
                    - (&data * decay as f64)?
                    - (derivative * (0.5 * decay) as f64)?)?
            }
            _ => ((sample * (sigma_t / sigma_s0) as f64)? - (&data * decay as f64)?)?,
        };
        if self.lower_order_nums < 2 {
            self.lower_order_nums += 1;
        }
        Ok(previous)
    }
}

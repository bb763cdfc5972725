//! diffusers' `UniPCMultistepScheduler` with its defaults: UniP-2 predictor and UniC corrector
//! (B(h) = e^h − 1, "bh2") on data predictions. Each step first corrects the sample it is given
//! using the new model output, then predicts the next one; orders warm up from 1 and drop back
//! to 1 on the final step (`lower_order_final`).

use candle_core::Tensor;

use super::vp::{alpha_sigma_lambda, sigmas_at, solver_accessors, solver_timesteps};
use super::{Scheduler, SchedulerConfig, alphas_cumprod, check_steps, div_scalar, reject};
use crate::engine::noise::TorchGenerator;
use crate::error::Result;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Solver {
    /// B(h) = h.
    Bh1,
    /// B(h) = e^h − 1.
    Bh2,
}

#[derive(Debug)]
pub struct UniPcMultistepScheduler {
    timesteps: Vec<u32>,
    /// σ per step plus the final σ.
    sigmas: Vec<f32>,
    solver: Solver,
    solver_order: usize,
    lower_order_final: bool,
    /// Steps whose corrector is skipped (by the index of the step that produced the sample).
    disable_corrector: Vec<usize>,
    /// Data (x0) predictions of the previous and current step.
    model_outputs: [Option<Tensor>; 2],
    lower_order_nums: usize,
    /// The (corrected) sample the last prediction started from, and that prediction's order.
    last: Option<(Tensor, usize)>,
}

impl UniPcMultistepScheduler {
    pub fn new(config: &SchedulerConfig, steps: usize) -> Result<Self> {
        config.reject_unsupported_common()?;
        check_steps(steps, config)?;
        let mut problems = Vec::new();
        config.require_epsilon(&mut problems);
        let solver_order = config.solver_order.unwrap_or(2);
        if !(1..=2).contains(&solver_order) {
            problems.push(format!("solver_order {solver_order}"));
        }
        // Other solvers' names fall back to bh2, as in diffusers.
        let solver = match config.solver_type.as_deref().unwrap_or("bh2") {
            "bh1" => Solver::Bh1,
            "bh2" | "midpoint" | "heun" | "logrho" => Solver::Bh2,
            other => {
                problems.push(format!("solver_type '{other}'"));
                Solver::Bh2
            }
        };
        if config.predict_x0 == Some(false) {
            problems.push("predict_x0 false".to_string());
        }
        if config
            .solver_p
            .as_ref()
            .is_some_and(|value| !value.is_null())
        {
            problems.push("solver_p".to_string());
        }
        if config
            .shift_terminal
            .as_ref()
            .is_some_and(|value| !value.is_null())
        {
            problems.push("shift_terminal".to_string());
        }
        let final_sigma_min = match config.final_sigmas_type.as_deref().unwrap_or("zero") {
            "zero" => false,
            "sigma_min" => true,
            other => {
                problems.push(format!("final_sigmas_type '{other}'"));
                false
            }
        };
        // With a zero final σ diffusers' last step turns NaN for these (∞ · 0 in the update).
        let lower_order_final = config.lower_order_final.unwrap_or(true);
        if !final_sigma_min && solver == Solver::Bh1 {
            problems.push("solver_type 'bh1' with final_sigmas_type 'zero'".to_string());
        }
        if !final_sigma_min && !lower_order_final && solver_order > 1 {
            problems.push("lower_order_final false with final_sigmas_type 'zero'".to_string());
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
        reject("UniPC", problems)?;

        let timesteps = solver_timesteps(
            &config.timestep_spacing_or("linspace"),
            config.num_train_timesteps(),
            steps,
            config.steps_offset(),
        )?;
        let alphas_cumprod = alphas_cumprod(config)?;
        let mut sigmas = sigmas_at(&timesteps, &alphas_cumprod);
        if final_sigma_min {
            sigmas.extend(sigmas_at(&[0], &alphas_cumprod));
        } else {
            sigmas.push(0.0);
        }
        Ok(Self {
            timesteps,
            sigmas,
            solver,
            solver_order,
            lower_order_final,
            disable_corrector: config.disable_corrector.clone().unwrap_or_default(),
            model_outputs: [None, None],
            lower_order_nums: 0,
            last: None,
        })
    }

    /// The scalars of the step from σ index `from` to `to`, shared by predictor and corrector,
    /// in f32 as diffusers computes them.
    fn coefficients(&self, from: usize, to: usize) -> StepCoefficients {
        let (alpha_t, sigma_t, lambda_t) = alpha_sigma_lambda(self.sigmas[to]);
        let (_, sigma_s0, lambda_s0) = alpha_sigma_lambda(self.sigmas[from]);
        let h = lambda_t - lambda_s0;
        let hh = -h;
        let h_phi_1 = hh.exp_m1();
        let b_h = match self.solver {
            Solver::Bh1 => hh,
            Solver::Bh2 => hh.exp_m1(),
        };
        StepCoefficients {
            alpha_t,
            sigma_ratio: sigma_t / sigma_s0,
            h_phi_1,
            b_h,
            hh,
            lambda_s0,
            h,
        }
    }

    /// (λ_index − λ_s0) / h: where an older step sits relative to this one.
    fn ratio(&self, index: usize, coefficients: &StepCoefficients) -> f32 {
        let (_, _, lambda) = alpha_sigma_lambda(self.sigmas[index]);
        (lambda - coefficients.lambda_s0) / coefficients.h
    }
}

/// With λ = ln(α/σ) and h = λ_to − λ_from (diffusers' names).
struct StepCoefficients {
    /// α at the step's end.
    alpha_t: f32,
    /// σ_to / σ_from (the VP σ, i.e. σ·α).
    sigma_ratio: f32,
    /// e^(−h) − 1.
    h_phi_1: f32,
    /// B(−h).
    b_h: f32,
    /// −h.
    hh: f32,
    lambda_s0: f32,
    h: f32,
}

impl StepCoefficients {
    /// The first-order (exponential Euler) part shared by predictor and corrector.
    fn base(&self, sample: &Tensor, data: &Tensor) -> Result<Tensor> {
        Ok(((sample * self.sigma_ratio as f64)? - (data * (self.alpha_t * self.h_phi_1) as f64)?)?)
    }

    /// α_t · B(−h), the weight of the higher-order corrections.
    fn correction_weight(&self) -> f64 {
        (self.alpha_t * self.b_h) as f64
    }

    /// The corrector's weights (ρ1, ρ2) for one older output at relative position `rk`: the
    /// 2×2 system [[1, 1], [rk, 1]] ρ = b, solved in f32 with partial pivoting as LAPACK does.
    fn corrector_rhos(&self, rk: f32) -> (f32, f32) {
        let hh = self.hh;
        let mut h_phi_k = self.h_phi_1 / hh - 1.0;
        let b1 = h_phi_k / self.b_h;
        h_phi_k = h_phi_k / hh - 0.5;
        let b2 = h_phi_k * 2.0 / self.b_h;
        if rk.abs() > 1.0 {
            // Pivot on the second row: rk ρ1 + ρ2 = b2 first.
            let factor = 1.0 / rk;
            let u22 = 1.0 - factor;
            let y2 = b1 - factor * b2;
            let rho2 = y2 / u22;
            ((b2 - rho2) / rk, rho2)
        } else {
            let u22 = 1.0 - rk;
            let y2 = b2 - rk * b1;
            let rho2 = y2 / u22;
            (b1 - rho2, rho2)
        }
    }
}

impl Scheduler for UniPcMultistepScheduler {
    solver_accessors!();

    fn step(
        &mut self,
        model_output: &Tensor,
        step_index: usize,
        sample: &Tensor,
        _generator: &mut TorchGenerator,
    ) -> Result<Tensor> {
        let (alpha_s0, sigma_s0, _) = alpha_sigma_lambda(self.sigmas[step_index]);
        let data = div_scalar(&(sample - (model_output * sigma_s0 as f64)?)?, alpha_s0)?;

        // UniC: redo the previous prediction with this step's output at its end point.
        let mut sample = sample.clone();
        if let (Some((last_sample, order)), Some(m0)) = (&self.last, &self.model_outputs[1])
            && step_index > 0
            && !self.disable_corrector.contains(&(step_index - 1))
        {
            let coefficients = self.coefficients(step_index - 1, step_index);
            let base = coefficients.base(last_sample, m0)?;
            let change = (&data - m0)?;
            let correction = match (&self.model_outputs[0], *order) {
                (Some(older), 2) => {
                    let rk = self.ratio(step_index - 2, &coefficients);
                    let (rho_older, rho_change) = coefficients.corrector_rhos(rk);
                    let slope = div_scalar(&(older - m0)?, rk)?;
                    ((slope * rho_older as f64)? + (change * rho_change as f64)?)?
                }
                _ => (change * 0.5)?,
            };
            sample = (base - (correction * coefficients.correction_weight())?)?;
        }

        self.model_outputs.swap(0, 1);
        self.model_outputs[1] = Some(data.clone());
        let mut order = self.solver_order;
        if self.lower_order_final {
            order = order.min(self.timesteps.len() - step_index);
        }
        let order = order.min(self.lower_order_nums + 1);

        // UniP: predict the next sample from the corrected one.
        let coefficients = self.coefficients(step_index, step_index + 1);
        let base = coefficients.base(&sample, &data)?;
        let previous = match (&self.model_outputs[0], order) {
            (Some(older), 2) => {
                let rk = self.ratio(step_index - 1, &coefficients);
                let slope = div_scalar(&(older - &data)?, rk)?;
                (base - ((slope * 0.5)? * coefficients.correction_weight())?)?
            }
            _ => base,
        };
        self.last = Some((sample, order));
        if self.lower_order_nums < self.solver_order {
            self.lower_order_nums += 1;
        }
        Ok(previous)
    }
}

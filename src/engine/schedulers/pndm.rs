//! diffusers' `PNDMScheduler` with its default `skip_prk_steps = false` (what `from_config`
//! gives for a DDIM config): a Runge–Kutta warm-up over the first three steps, four model
//! evaluations each (12 entries, half-step timesteps among them), then pseudo linear multistep.
//! The timestep list is therefore 12 + (N - 3) long.

use candle_core::Tensor;

use super::{
    NoiseLevel, Scheduler, SchedulerConfig, alphas_cumprod, check_steps, numpy_linspace, reject,
    trailing_timesteps,
};
use crate::engine::noise::TorchGenerator;
use crate::error::{FoleyError, Result};

/// Model evaluations of the Runge–Kutta warm-up.
const PRK_ENTRIES: usize = 12;

#[derive(Debug)]
pub struct PndmScheduler {
    /// The Runge–Kutta entries followed by the multistep ones.
    timesteps: Vec<i64>,
    alphas_cumprod: Vec<f32>,
    final_alpha_cumprod: f32,
    step_ratio: i64,
    /// Weighted sum of the current Runge–Kutta step's evaluations so far.
    runge_kutta_sum: Option<Tensor>,
    /// The sample the current Runge–Kutta step started from.
    runge_kutta_sample: Option<Tensor>,
    /// Model outputs at the start of each step, newest last (at most four kept in use).
    ets: Vec<Tensor>,
    /// diffusers' `counter`: calls to `step` so far. It, not the schedule position, picks the
    /// Runge–Kutta phase, so a truncated (audio-to-audio) schedule still warms up first.
    calls: usize,
}

impl PndmScheduler {
    pub fn new(config: &SchedulerConfig, steps: usize) -> Result<Self> {
        config.reject_unsupported_common()?;
        check_steps(steps, config)?;
        let mut problems = Vec::new();
        config.require_epsilon(&mut problems);
        config.reject_flags(&[(config.skip_prk_steps, "skip_prk_steps")], &mut problems);
        reject("PNDM", problems)?;
        if steps < 4 {
            // diffusers' warm-up needs four timesteps (with fewer its numpy arrays mismatch).
            return Err(FoleyError::InvalidRequest(format!(
                "PNDM needs at least 4 steps, got {steps}"
            )));
        }

        let train = config.num_train_timesteps();
        let spacing = config.timestep_spacing_or("leading");
        let ascending = pndm_timesteps(&spacing, train, steps, config.steps_offset())?;
        let step_ratio = (train / steps) as i64;
        let half_step = step_ratio / 2;

        // Each of the four largest timesteps and its half step, the very last dropped; every
        // point then twice with the ends trimmed, descending:
        // [d, c+h, c+h, c, c, b+h, b+h, b, b, a+h, a+h, a].
        let mut points: Vec<i64> = ascending[ascending.len() - 4..]
            .iter()
            .flat_map(|&t| [t, t + half_step])
            .collect();
        points.pop();
        let doubled: Vec<i64> = points.iter().flat_map(|&t| [t, t]).collect();
        let mut timesteps: Vec<i64> = doubled[1..doubled.len() - 1]
            .iter()
            .rev()
            .copied()
            .collect();
        timesteps.extend(ascending[..ascending.len() - 3].iter().rev());

        let alphas_cumprod = alphas_cumprod(config)?;
        let final_alpha_cumprod = if config.set_alpha_to_one.unwrap_or(false) {
            1.0
        } else {
            alphas_cumprod[0]
        };
        Ok(Self {
            timesteps,
            alphas_cumprod,
            final_alpha_cumprod,
            step_ratio,
            runge_kutta_sum: None,
            runge_kutta_sample: None,
            ets: Vec::new(),
            calls: 0,
        })
    }

    fn alpha(&self, timestep: i64) -> Result<f32> {
        if timestep < 0 {
            return Ok(self.final_alpha_cumprod);
        }
        self.alphas_cumprod
            .get(timestep as usize)
            .copied()
            .ok_or_else(|| {
                FoleyError::InvalidRequest(format!("timestep {timestep} outside the schedule"))
            })
    }

    /// The PNDM transfer x_t → x_prev given the (combined) noise prediction (formula 9).
    fn previous_sample(
        &self,
        sample: &Tensor,
        timestep: i64,
        prev_timestep: i64,
        model_output: &Tensor,
    ) -> Result<Tensor> {
        let alpha = self.alpha(timestep)?;
        let alpha_prev = self.alpha(prev_timestep)?;
        let beta = 1.0 - alpha;
        let beta_prev = 1.0 - alpha_prev;
        let sample_coeff = (alpha_prev / alpha).sqrt();
        let denominator = alpha * beta_prev.sqrt() + (alpha * beta * alpha_prev).sqrt();
        let update =
            super::div_scalar(&(model_output * (alpha_prev - alpha) as f64)?, denominator)?;
        Ok(((sample * sample_coeff as f64)? - update)?)
    }

    fn accumulate(&mut self, term: Tensor) -> Result<()> {
        self.runge_kutta_sum = Some(match self.runge_kutta_sum.take() {
            Some(sum) => (sum + term)?,
            None => term,
        });
        Ok(())
    }
}

/// The ascending base timesteps of `set_timesteps` for each spacing.
fn pndm_timesteps(spacing: &str, train: usize, steps: usize, offset: u32) -> Result<Vec<i64>> {
    Ok(match spacing {
        "leading" => {
            let ratio = train / steps;
            (0..steps)
                .map(|index| (index * ratio) as i64 + offset as i64)
                .collect()
        }
        "linspace" => numpy_linspace((train - 1) as f64, steps)
            .into_iter()
            .map(|timestep| timestep.round_ties_even() as i64)
            .collect(),
        "trailing" => trailing_timesteps(train, steps)
            .into_iter()
            .rev()
            .map(i64::from)
            .collect(),
        other => {
            return Err(FoleyError::Unsupported(format!(
                "timestep_spacing '{other}'"
            )));
        }
    })
}

impl Scheduler for PndmScheduler {
    fn timesteps(&self) -> Vec<f64> {
        self.timesteps.iter().map(|&t| t as f64).collect()
    }

    fn init_noise_sigma(&self) -> f64 {
        1.0
    }

    fn noise_level(&self, schedule_index: usize) -> NoiseLevel {
        NoiseLevel::AlphaCumprod(self.alphas_cumprod[self.timesteps[schedule_index] as usize])
    }

    fn scale_model_input(&self, sample: Tensor, _step_index: usize) -> Result<Tensor> {
        Ok(sample)
    }

    fn step(
        &mut self,
        model_output: &Tensor,
        step_index: usize,
        sample: &Tensor,
        _generator: &mut TorchGenerator,
    ) -> Result<Tensor> {
        let timestep = self.timesteps[step_index];
        let call = self.calls;
        self.calls += 1;
        if call < PRK_ENTRIES {
            // Each group of four moves the step's start sample: entries 0 and 1 half a step
            // (inputs of k2, k3), entry 2 a full step (input of k4), entry 3 a full step with
            // the weighted k1..k4. Even entries sit on the start or half-step timestep, so
            // their target lies half a step below; odd entries' targets are their own.
            let phase = call % 4;
            let diff_to_prev = if call % 2 == 1 {
                0
            } else {
                self.step_ratio / 2
            };
            let prev_timestep = timestep - diff_to_prev;
            let start_timestep = self.timesteps[call / 4 * 4];
            let combined = match phase {
                0 => {
                    self.accumulate((model_output * (1.0 / 6.0))?)?;
                    self.ets.push(model_output.clone());
                    self.runge_kutta_sample = Some(sample.clone());
                    model_output.clone()
                }
                1 | 2 => {
                    self.accumulate((model_output * (1.0 / 3.0))?)?;
                    model_output.clone()
                }
                _ => {
                    let sum = self.runge_kutta_sum.take();
                    let last = (model_output * (1.0 / 6.0))?;
                    match sum {
                        Some(sum) => (sum + last)?,
                        None => last,
                    }
                }
            };
            let start = self
                .runge_kutta_sample
                .clone()
                .unwrap_or_else(|| sample.clone());
            return self.previous_sample(&start, start_timestep, prev_timestep, &combined);
        }

        let prev_timestep = timestep - self.step_ratio;
        let keep = self.ets.len().saturating_sub(3);
        self.ets.drain(..keep);
        self.ets.push(model_output.clone());
        let [e4, e3, e2, e1] = match self.ets.as_slice() {
            [a, b, c, d] => [a, b, c, d],
            _ => {
                return Err(FoleyError::InvalidRequest(
                    "PNDM multistep before the Runge-Kutta warm-up".into(),
                ));
            }
        };
        // Fourth-order Adams–Bashforth over the last four evaluations.
        let combined = ((((e1 * 55.0)? - (e2 * 59.0)?)? + (e3 * 37.0)?)? - (e4 * 9.0)?)?;
        let combined = (combined * (1.0 / 24.0))?;
        self.previous_sample(sample, timestep, prev_timestep, &combined)
    }
}

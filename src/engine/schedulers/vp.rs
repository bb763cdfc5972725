//! Pieces shared by the exponential-integrator solvers on the VP schedule (DPM-Solver multistep
//! and singlestep, DEIS, UniPC): their timestep spacing, σ per timestep, Karras respacing and
//! the (α, σ, λ) of a noise level.

use super::sigma_schedule::{karras, log_table, sigma_to_t, train_sigmas};
use super::{numpy_linspace, trailing_timesteps};
use crate::error::{FoleyError, Result};

/// The `Scheduler` accessors the solvers share, for a struct with integer `timesteps` and
/// float32 `sigmas` fields: no initial noise scaling and no input scaling (diffusers' 1.0 and
/// identity).
macro_rules! solver_accessors {
    () => {
        fn timesteps(&self) -> Vec<f64> {
            self.timesteps.iter().map(|&t| t as f64).collect()
        }

        fn init_noise_sigma(&self) -> f64 {
            1.0
        }

        fn sigmas(&self) -> Option<Vec<f64>> {
            Some(self.sigmas.iter().map(|&sigma| sigma as f64).collect())
        }

        fn noise_level(&self, schedule_index: usize) -> $crate::engine::schedulers::NoiseLevel {
            $crate::engine::schedulers::NoiseLevel::VpSigma(self.sigmas[schedule_index])
        }

        fn scale_model_input(&self, sample: Tensor, _step_index: usize) -> Result<Tensor> {
            Ok(sample)
        }
    };
}
pub(crate) use solver_accessors;

/// The solvers' own spacing rules: N+1 points with the last dropped. A schedule that visits a
/// timestep twice (e.g. 1000 steps of a 1000-step training schedule: rounding repeats values)
/// gives the multistep update a zero-width step, NaN here and an index error in diffusers, so it
/// is refused with the largest step count that works.
pub(crate) fn solver_timesteps(
    spacing: &str,
    train: usize,
    steps: usize,
    offset: u32,
) -> Result<Vec<u32>> {
    let timesteps = spaced_solver_timesteps(spacing, train, steps, offset)?;
    if has_repeats(&timesteps) {
        let most = (1..steps)
            .rev()
            .find(|&fewer| {
                spaced_solver_timesteps(spacing, train, fewer, offset)
                    .is_ok_and(|timesteps| !has_repeats(&timesteps))
            })
            .unwrap_or(1);
        return Err(FoleyError::InvalidRequest(format!(
            "{steps} steps repeat timesteps of this checkpoint's {train}-step schedule ('{spacing}' spacing), which this solver cannot step; use at most {most} steps"
        )));
    }
    Ok(timesteps)
}

fn has_repeats(timesteps: &[u32]) -> bool {
    timesteps.windows(2).any(|pair| pair[0] == pair[1])
}

fn spaced_solver_timesteps(
    spacing: &str,
    train: usize,
    steps: usize,
    offset: u32,
) -> Result<Vec<u32>> {
    Ok(match spacing {
        "linspace" => linspace_timesteps(train, steps),
        "leading" => {
            let ratio = train / (steps + 1);
            (1..=steps)
                .rev()
                .map(|index| (index * ratio) as u32 + offset)
                .collect()
        }
        "trailing" => trailing_timesteps(train, steps),
        other => {
            return Err(FoleyError::Unsupported(format!(
                "timestep_spacing '{other}'"
            )));
        }
    })
}

/// `np.linspace(0, train - 1, steps + 1).round()[::-1][:-1]`.
pub(crate) fn linspace_timesteps(train: usize, steps: usize) -> Vec<u32> {
    numpy_linspace((train - 1) as f64, steps + 1)
        .into_iter()
        .skip(1)
        .rev()
        .map(|timestep| timestep.round_ties_even() as u32)
        .collect()
}

/// σ of each (integer) timestep: `np.interp` at grid points returns the table's float32 values.
pub(crate) fn sigmas_at(timesteps: &[u32], alphas_cumprod: &[f32]) -> Vec<f32> {
    timesteps
        .iter()
        .map(|&timestep| {
            let alpha = alphas_cumprod[timestep as usize];
            ((1.0 - alpha) / alpha).sqrt()
        })
        .collect()
}

/// Karras σ over the whole training range (σ(T-1) down to σ(0)) and their timesteps, rounded:
/// this ignores `timestep_spacing` and `steps_offset`, as diffusers does.
pub(crate) fn karras_schedule(alphas_cumprod: &[f32], steps: usize) -> (Vec<u32>, Vec<f32>) {
    let table = train_sigmas(alphas_cumprod);
    let log_sigmas = log_table(&table);
    let sigmas = karras(table[0] as f64, table[table.len() - 1] as f64, steps);
    let timesteps = sigmas
        .iter()
        .map(|&sigma| sigma_to_t(sigma, &log_sigmas).round_ties_even() as u32)
        .collect();
    (
        timesteps,
        sigmas.into_iter().map(|sigma| sigma as f32).collect(),
    )
}

/// (α_t, σ_t, λ_t) of a noise level σ, in f32 as diffusers computes them.
pub(crate) fn alpha_sigma_lambda(sigma: f32) -> (f32, f32, f32) {
    let alpha = 1.0 / (sigma * sigma + 1.0).sqrt();
    let sigma_t = sigma * alpha;
    (alpha, sigma_t, alpha.ln() - sigma_t.ln())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linspace_rounds_half_to_even_and_drops_zero() {
        assert_eq!(linspace_timesteps(1000, 10)[..3], [999, 899, 799]);
        assert_eq!(*linspace_timesteps(1000, 10).last().unwrap(), 100);
    }
}

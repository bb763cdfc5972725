//! The σ schedule of the k-diffusion-style schedulers (Euler, Euler ancestral, LMS, Heun, KDPM2
//! and KDPM2 ancestral): timesteps by spacing, σ interpolated at them, optionally respaced after
//! Karras et al., then a final σ. The types follow diffusers' numpy code, which interpolates
//! in f64 and stores float32.

use candle_core::Tensor;

/// The `Scheduler` accessors every σ-space scheduler shares, for a struct with float32
/// `timesteps`, `sigmas` and `init_noise_sigma` fields (as diffusers stores them).
macro_rules! sigma_table_accessors {
    () => {
        fn timesteps(&self) -> Vec<f64> {
            self.timesteps.iter().map(|&t| t as f64).collect()
        }

        fn init_noise_sigma(&self) -> f64 {
            self.init_noise_sigma as f64
        }

        fn sigmas(&self) -> Option<Vec<f64>> {
            Some(self.sigmas.iter().map(|&sigma| sigma as f64).collect())
        }

        fn noise_level(&self, schedule_index: usize) -> $crate::engine::schedulers::NoiseLevel {
            $crate::engine::schedulers::NoiseLevel::Sigma(self.sigmas[schedule_index])
        }
    };
}
pub(crate) use sigma_table_accessors;

use super::numpy_log::log_f32;
use super::{SchedulerConfig, div_scalar, numpy_linspace, trailing_timesteps};
use crate::error::{FoleyError, Result};

/// How the interpolated σ are respaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Respacing {
    None,
    /// Karras σ, timesteps mapped back through `sigma_to_t`.
    Karras,
    /// Karras σ with the mapped timesteps rounded (KDPM2 and its ancestral variant).
    KarrasRounded,
}

/// The last σ appended after the schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FinalSigma {
    Zero,
    /// σ of training timestep 0.
    SigmaMin,
}

#[derive(Debug, Clone)]
pub(crate) struct SigmaSchedule {
    /// One timestep per step, float32 like diffusers' tensor.
    pub timesteps: Vec<f32>,
    /// σ of each timestep plus the final σ.
    pub sigmas: Vec<f32>,
    /// ln σ of every training timestep, the table `sigma_to_t` searches.
    pub log_sigmas: Vec<f32>,
}

impl SigmaSchedule {
    pub(crate) fn new(
        config: &SchedulerConfig,
        alphas_cumprod: &[f32],
        steps: usize,
        spacing: &str,
        respacing: Respacing,
        final_sigma: FinalSigma,
    ) -> Result<Self> {
        let train_sigmas = train_sigmas(alphas_cumprod);
        let log_sigmas = log_table(&train_sigmas);
        let mut timesteps = spaced_timesteps(
            spacing,
            config.num_train_timesteps(),
            steps,
            config.steps_offset(),
        )?;
        let mut sigmas: Vec<f64> = timesteps
            .iter()
            .map(|&timestep| interp(timestep as f64, &train_sigmas))
            .collect();
        if respacing != Respacing::None {
            let (first, last) = match (sigmas.first(), sigmas.last()) {
                (Some(first), Some(last)) => (*first, *last),
                _ => return Err(FoleyError::InvalidRequest("no steps to schedule".into())),
            };
            sigmas = karras(last, first, steps);
            timesteps = sigmas
                .iter()
                .map(|&sigma| {
                    let timestep = sigma_to_t(sigma, &log_sigmas);
                    let timestep = if respacing == Respacing::KarrasRounded {
                        timestep.round_ties_even()
                    } else {
                        timestep
                    };
                    timestep as f32
                })
                .collect();
        }
        let last = match final_sigma {
            FinalSigma::Zero => 0.0,
            FinalSigma::SigmaMin => train_sigmas[0] as f64,
        };
        sigmas.push(last);
        Ok(Self {
            timesteps,
            sigmas: sigmas.into_iter().map(|sigma| sigma as f32).collect(),
            log_sigmas,
        })
    }
}

/// `np.log` of the training σ table, the table `sigma_to_t` searches.
pub(crate) fn log_table(train_sigmas: &[f32]) -> Vec<f32> {
    train_sigmas.iter().map(|&sigma| log_f32(sigma)).collect()
}

/// σ = sqrt((1 - ᾱ) / ᾱ) of every training timestep, in float32 like diffusers' tensor (whose
/// square root, MKL's, is not correctly rounded: about one value in five is one ulp away).
pub(crate) fn train_sigmas(alphas_cumprod: &[f32]) -> Vec<f32> {
    alphas_cumprod
        .iter()
        .map(|alpha| ((1.0 - alpha) / alpha).sqrt())
        .collect()
}

/// The k-diffusion schedulers' timesteps for a `timestep_spacing` (numpy f64, stored as f32).
pub(crate) fn spaced_timesteps(
    spacing: &str,
    train: usize,
    steps: usize,
    offset: u32,
) -> Result<Vec<f32>> {
    Ok(match spacing {
        "linspace" => numpy_linspace((train - 1) as f64, steps)
            .into_iter()
            .rev()
            .map(|timestep| timestep as f32)
            .collect(),
        "leading" => {
            let ratio = train / steps;
            (0..steps)
                .rev()
                .map(|index| (index * ratio) as f32 + offset as f32)
                .collect()
        }
        "trailing" => trailing_timesteps(train, steps)
            .into_iter()
            .map(|timestep| timestep as f32)
            .collect(),
        other => {
            return Err(FoleyError::Unsupported(format!(
                "timestep_spacing '{other}'"
            )));
        }
    })
}

/// `np.interp(t, arange(len(values)), values)`, in f64 as numpy computes it.
pub(crate) fn interp(t: f64, values: &[f32]) -> f64 {
    let last = values.len() - 1;
    if t <= 0.0 {
        return values[0] as f64;
    }
    if t >= last as f64 {
        return values[last] as f64;
    }
    let low = t.floor() as usize;
    if low as f64 == t {
        return values[low] as f64;
    }
    let slope = values[low + 1] as f64 - values[low] as f64;
    slope * (t - low as f64) + values[low] as f64
}

/// Karras et al. (2022) σ with ρ = 7, from `sigma_max` down to `sigma_min`.
pub(crate) fn karras(sigma_min: f64, sigma_max: f64, steps: usize) -> Vec<f64> {
    const RHO: f64 = 7.0;
    let min_inv_rho = sigma_min.powf(1.0 / RHO);
    let max_inv_rho = sigma_max.powf(1.0 / RHO);
    numpy_linspace(1.0, steps)
        .into_iter()
        .map(|ramp| (max_inv_rho + ramp * (min_inv_rho - max_inv_rho)).powf(RHO))
        .collect()
}

/// Bracketing indices of `log_sigma` in the increasing table: the last entry not above it
/// (0 when all are), kept one short of the end.
fn bracket(below: impl Iterator<Item = bool>, len: usize) -> usize {
    let mut low = 0;
    for (index, is_below) in below.enumerate() {
        if is_below {
            low = index;
        }
    }
    low.min(len - 2)
}

/// Fractional training timestep of σ by linear interpolation of ln σ (`_sigma_to_t` on numpy
/// values: σ in f64 against the float32 table).
pub(crate) fn sigma_to_t(sigma: f64, log_sigmas: &[f32]) -> f64 {
    let log_sigma = sigma.max(1e-10).ln();
    let low_index = bracket(
        log_sigmas
            .iter()
            .map(|&entry| log_sigma - entry as f64 >= 0.0),
        log_sigmas.len(),
    );
    let low = log_sigmas[low_index];
    let high = log_sigmas[low_index + 1];
    let weight = ((low as f64 - log_sigma) / (low - high) as f64).clamp(0.0, 1.0);
    (1.0 - weight) * low_index as f64 + weight * (low_index + 1) as f64
}

/// `_sigma_to_t` as diffusers runs it on torch tensors: float32 throughout (numpy's log).
pub(crate) fn sigma_to_t_f32(sigma: f32, log_sigmas: &[f32]) -> f32 {
    let log_sigma = log_f32(sigma.max(1e-10));
    let low_index = bracket(
        log_sigmas.iter().map(|&entry| log_sigma - entry >= 0.0),
        log_sigmas.len(),
    );
    let low = log_sigmas[low_index];
    let high = log_sigmas[low_index + 1];
    let weight = ((low - log_sigma) / (low - high)).clamp(0.0, 1.0);
    (1.0 - weight) * low_index as f32 + weight * (low_index + 1) as f32
}

/// `init_noise_sigma` of the σ-space schedulers: σ_max for linspace/trailing spacing,
/// sqrt(σ_max² + 1) otherwise, in float32.
pub(crate) fn init_noise_sigma(spacing: &str, sigmas: &[f32]) -> f32 {
    let max = sigmas.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if matches!(spacing, "linspace" | "trailing") {
        max
    } else {
        (max * max + 1.0).sqrt()
    }
}

/// `scale_model_input`: sample / sqrt(σ² + 1).
pub(crate) fn scale_by_sigma(sample: &Tensor, sigma: f32) -> Result<Tensor> {
    div_scalar(sample, (sigma * sigma + 1.0).sqrt())
}

/// Options every σ-space scheduler rejects.
pub(crate) fn reject_sigma_options(config: &SchedulerConfig, problems: &mut Vec<String>) {
    config.require_epsilon(problems);
    config.reject_flags(
        &[
            (config.use_exponential_sigmas, "use_exponential_sigmas"),
            (config.use_beta_sigmas, "use_beta_sigmas"),
        ],
        problems,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interp_matches_numpy_at_and_between_grid_points() {
        let values = [1.0f32, 2.0, 4.0];
        assert_eq!(interp(1.0, &values), 2.0);
        assert_eq!(interp(1.5, &values), 3.0);
        assert_eq!(interp(-1.0, &values), 1.0);
        assert_eq!(interp(7.0, &values), 4.0);
    }

    #[test]
    fn sigma_to_t_inverts_the_table() {
        let log_sigmas: Vec<f32> = (0..10).map(|i| (i as f32 * 0.5).ln_1p()).collect();
        let sigma = log_sigmas[4].exp() as f64;
        assert!((sigma_to_t(sigma, &log_sigmas) - 4.0).abs() < 1e-5);
        assert_eq!(sigma_to_t(1e-12, &log_sigmas), 0.0);
        assert_eq!(sigma_to_t(1e9, &log_sigmas), 9.0);
    }

    #[test]
    fn karras_spans_max_to_min() {
        let sigmas = karras(0.1, 10.0, 5);
        assert!((sigmas[0] - 10.0).abs() < 1e-12);
        assert!((sigmas[4] - 0.1).abs() < 1e-12);
        assert!(sigmas.windows(2).all(|pair| pair[0] > pair[1]));
    }
}

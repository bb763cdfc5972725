//! Noise schedulers behind one trait, each built from `scheduler_config.json` the way
//! diffusers' `from_config` builds it: keys in the file win, the class defaults fill the rest.

mod config;
mod ddim;
mod dpm_solver_multistep;

pub use config::SchedulerConfig;
pub use ddim::DdimScheduler;
pub use dpm_solver_multistep::DpmSolverMultistepScheduler;

use candle_core::Tensor;

use crate::engine::noise::TorchGenerator;
use crate::error::{FoleyError, Result};

/// One denoising scheduler; `timesteps()` are visited in order, one `step` each.
pub trait Scheduler: Send {
    /// The UNet timestep of each step (fractional for the interpolating schedulers).
    fn timesteps(&self) -> Vec<f64>;
    /// Factor applied to the initial noise.
    fn init_noise_sigma(&self) -> f64;
    /// Scaling applied to the UNet input at `step_index`.
    fn scale_model_input(&self, sample: Tensor, step_index: usize) -> Result<Tensor>;
    /// Advances `sample` by one step given the UNet's prediction. Stochastic schedulers draw
    /// from `generator`, continuing the stream the initial noise came from.
    fn step(
        &mut self,
        model_output: &Tensor,
        step_index: usize,
        sample: &Tensor,
        generator: &mut TorchGenerator,
    ) -> Result<Tensor>;
}

/// Schedulers Foley can build, by their command-line names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchedulerKind {
    Ddim,
    DpmSolverMultistep,
}

impl SchedulerKind {
    pub const NAMES: &'static [&'static str] = &["ddim", "dpm++2m"];

    pub fn name(self) -> &'static str {
        match self {
            Self::Ddim => "ddim",
            Self::DpmSolverMultistep => "dpm++2m",
        }
    }

    pub fn build(self, config: &SchedulerConfig, steps: usize) -> Result<Box<dyn Scheduler>> {
        Ok(match self {
            Self::Ddim => Box::new(DdimScheduler::new(config, steps)?),
            Self::DpmSolverMultistep => Box::new(DpmSolverMultistepScheduler::new(config, steps)?),
        })
    }
}

impl std::str::FromStr for SchedulerKind {
    type Err = FoleyError;

    fn from_str(name: &str) -> Result<Self> {
        match name {
            "ddim" => Ok(Self::Ddim),
            "dpm++2m" => Ok(Self::DpmSolverMultistep),
            other => Err(FoleyError::InvalidRequest(format!(
                "unknown scheduler '{other}' (available: {})",
                Self::NAMES.join(", ")
            ))),
        }
    }
}

/// `alphas_cumprod` of the training schedule, in f32 like diffusers' tensors.
pub(crate) fn alphas_cumprod(config: &SchedulerConfig) -> Result<Vec<f32>> {
    let count = config.num_train_timesteps();
    let betas: Vec<f32> = match config.beta_schedule().as_str() {
        "linear" => linspace_f32(config.beta_start() as f32, config.beta_end() as f32, count),
        "scaled_linear" => linspace_f32(
            config.beta_start().sqrt() as f32,
            config.beta_end().sqrt() as f32,
            count,
        )
        .into_iter()
        .map(|root| root * root)
        .collect(),
        other => {
            return Err(FoleyError::Unsupported(format!("beta_schedule '{other}'")));
        }
    };
    let mut product = 1f32;
    Ok(betas
        .iter()
        .map(|beta| {
            product *= 1.0 - beta;
            product
        })
        .collect())
}

/// `torch.linspace` in f32: the first half counts up from `start`, the second down from `end`.
fn linspace_f32(start: f32, end: f32, count: usize) -> Vec<f32> {
    if count == 1 {
        return vec![start];
    }
    let step = (end - start) / (count - 1) as f32;
    let halfway = count / 2;
    (0..count)
        .map(|index| {
            if index < halfway {
                start + step * index as f32
            } else {
                end - step * (count - index - 1) as f32
            }
        })
        .collect()
}

/// Rejects a step count the schedule cannot provide.
pub(crate) fn check_steps(steps: usize, config: &SchedulerConfig) -> Result<()> {
    if steps == 0 {
        return Err(FoleyError::InvalidRequest(
            "steps must be at least 1".into(),
        ));
    }
    if steps > config.num_train_timesteps() {
        return Err(FoleyError::InvalidRequest(format!(
            "steps ({steps}) cannot exceed the scheduler's num_train_timesteps ({})",
            config.num_train_timesteps()
        )));
    }
    Ok(())
}

/// "trailing" spacing, shared by DDIM and DPM-Solver: `round(arange(train, 0, -train/steps)) - 1`,
/// where numpy's arange holds ceil(train / ratio) values `train - i * ratio`.
pub(crate) fn trailing_timesteps(train: usize, steps: usize) -> Vec<u32> {
    let ratio = train as f64 / steps as f64;
    let count = (train as f64 / ratio).ceil() as usize;
    (0..count)
        .map(|index| (train as f64 - index as f64 * ratio).round_ties_even() as u32 - 1)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trailing_spacing_matches_numpy() {
        let ten: Vec<u32> = (0..10).rev().map(|i| i * 100 + 99).collect();
        assert_eq!(trailing_timesteps(1000, 10), ten);
        assert_eq!(trailing_timesteps(1000, 3), [999, 666, 332]);
    }

    #[test]
    fn torch_linspace_counts_down_from_the_end_in_its_second_half() {
        let values = linspace_f32(0.0, 1.0, 5);
        assert_eq!(values, [0.0, 0.25, 0.5, 0.75, 1.0]);
        assert_eq!(*linspace_f32(0.1, 0.7, 7).last().unwrap(), 0.7);
    }
}

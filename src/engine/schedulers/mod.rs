//! Noise schedulers behind one trait, each built from `scheduler_config.json` the way
//! diffusers' `from_config` builds it: keys in the file win, the class defaults fill the rest.

mod config;
mod ddim;
mod ddpm;
mod deis;
mod dpm_solver_multistep;
mod dpm_solver_singlestep;
mod euler;
mod euler_ancestral;
pub mod flow_match_euler;
mod heun;
mod kdpm2;
mod kdpm2_ancestral;
mod lms;
mod numpy_log;
mod pndm;
mod sigma_schedule;
mod unipc;
mod vp;

pub use config::SchedulerConfig;
pub use ddim::DdimScheduler;
pub use ddpm::DdpmScheduler;
pub use deis::DeisMultistepScheduler;
pub use dpm_solver_multistep::DpmSolverMultistepScheduler;
pub use dpm_solver_singlestep::DpmSolverSinglestepScheduler;
pub use euler::EulerScheduler;
pub use euler_ancestral::EulerAncestralScheduler;
pub use heun::HeunScheduler;
pub use kdpm2::Kdpm2Scheduler;
pub use kdpm2_ancestral::Kdpm2AncestralScheduler;
pub use lms::LmsScheduler;
pub use pndm::PndmScheduler;
pub use unipc::UniPcMultistepScheduler;

use candle_core::Tensor;

use crate::engine::noise::TorchGenerator;
use crate::error::{FoleyError, Result};

/// One denoising scheduler; `timesteps()` are visited in order, one `step` each.
pub trait Scheduler: Send {
    /// The UNet timestep of each step (fractional for the interpolating schedulers).
    fn timesteps(&self) -> Vec<f64>;
    /// Factor applied to the initial noise.
    fn init_noise_sigma(&self) -> f64;
    /// diffusers' `scheduler.sigmas` (one per model evaluation plus the final one), for the
    /// schedulers that keep such a table; parity tests compare it.
    fn sigmas(&self) -> Option<Vec<f64>> {
        None
    }
    /// Scaling applied to the UNet input at `step_index`.
    fn scale_model_input(&self, sample: Tensor, step_index: usize) -> Result<Tensor>;
    /// diffusers' `scheduler.order`: entries of `timesteps()` per inference step (2 for the
    /// schedulers that interleave a second evaluation).
    fn order(&self) -> usize {
        1
    }
    /// The noise level diffusers' `add_noise` uses at entry `schedule_index` of `timesteps()`
    /// (before the first step, `begin_index`; mid-loop, the scheduler's `step_index`).
    fn noise_level(&self, schedule_index: usize) -> NoiseLevel;
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

/// How a scheduler's `add_noise` mixes clean latents with noise at one point of its schedule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum NoiseLevel {
    /// DDIM, DDPM, PNDM: `√ᾱ·x0 + √(1−ᾱ)·ε` with ᾱ of the timestep.
    AlphaCumprod(f32),
    /// The σ-space (k-diffusion) schedulers: `x0 + σ·ε`.
    Sigma(f32),
    /// The VP solvers (DPM-Solver, DEIS, UniPC): `α_t·x0 + σ_t·ε` with α_t = 1/√(σ²+1).
    VpSigma(f32),
}

/// diffusers' `scheduler.add_noise(original, noise, t)` at a given noise level, in float32 with
/// torch's order of operations (two products, then the sum).
pub fn add_noise(original: &Tensor, noise: &Tensor, level: NoiseLevel) -> Result<Tensor> {
    let (signal, spread) = match level {
        NoiseLevel::AlphaCumprod(alpha) => (alpha.sqrt(), (1.0 - alpha).sqrt()),
        NoiseLevel::Sigma(sigma) => return Ok((original + (noise * sigma as f64)?)?),
        NoiseLevel::VpSigma(sigma) => {
            let alpha = 1.0 / (sigma * sigma + 1.0).sqrt();
            (alpha, sigma * alpha)
        }
    };
    Ok(((original * signal as f64)? + (noise * spread as f64)?)?)
}

/// Schedulers Foley can build, by their command-line names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchedulerKind {
    Ddim,
    Ddpm,
    Pndm,
    Lms,
    Euler,
    EulerAncestral,
    Heun,
    Kdpm2,
    Kdpm2Ancestral,
    DpmSolverMultistep,
    DpmSolverMultistepKarras,
    DpmSolverSinglestep,
    Deis,
    UniPc,
}

impl SchedulerKind {
    pub const ALL: [Self; 14] = [
        Self::Ddim,
        Self::Ddpm,
        Self::Pndm,
        Self::Lms,
        Self::Euler,
        Self::EulerAncestral,
        Self::Heun,
        Self::Kdpm2,
        Self::Kdpm2Ancestral,
        Self::DpmSolverMultistep,
        Self::DpmSolverMultistepKarras,
        Self::DpmSolverSinglestep,
        Self::Deis,
        Self::UniPc,
    ];

    pub const NAMES: &'static [&'static str] = &[
        "ddim",
        "ddpm",
        "pndm",
        "lms",
        "euler",
        "euler-a",
        "heun",
        "kdpm2",
        "kdpm2-a",
        "dpm++2m",
        "dpm++2m-karras",
        "dpm++-single",
        "deis",
        "unipc",
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Ddim => "ddim",
            Self::Ddpm => "ddpm",
            Self::Pndm => "pndm",
            Self::Lms => "lms",
            Self::Euler => "euler",
            Self::EulerAncestral => "euler-a",
            Self::Heun => "heun",
            Self::Kdpm2 => "kdpm2",
            Self::Kdpm2Ancestral => "kdpm2-a",
            Self::DpmSolverMultistep => "dpm++2m",
            Self::DpmSolverMultistepKarras => "dpm++2m-karras",
            Self::DpmSolverSinglestep => "dpm++-single",
            Self::Deis => "deis",
            Self::UniPc => "unipc",
        }
    }

    /// Builds the scheduler the way `X.from_config(scheduler_config)` does, then
    /// `set_timesteps(steps)`.
    pub fn build(self, config: &SchedulerConfig, steps: usize) -> Result<Box<dyn Scheduler>> {
        config
            .validate()
            .map_err(|reason| FoleyError::InvalidRequest(format!("scheduler config: {reason}")))?;
        Ok(match self {
            Self::Ddim => Box::new(DdimScheduler::new(config, steps)?),
            Self::Ddpm => Box::new(DdpmScheduler::new(config, steps)?),
            Self::Pndm => Box::new(PndmScheduler::new(config, steps)?),
            Self::Lms => Box::new(LmsScheduler::new(config, steps)?),
            Self::Euler => Box::new(EulerScheduler::new(config, steps)?),
            Self::EulerAncestral => Box::new(EulerAncestralScheduler::new(config, steps)?),
            Self::Heun => Box::new(HeunScheduler::new(config, steps)?),
            Self::Kdpm2 => Box::new(Kdpm2Scheduler::new(config, steps)?),
            Self::Kdpm2Ancestral => Box::new(Kdpm2AncestralScheduler::new(config, steps)?),
            Self::DpmSolverMultistep => Box::new(DpmSolverMultistepScheduler::new(config, steps)?),
            Self::DpmSolverMultistepKarras => {
                // `from_config(config, use_karras_sigmas=True)`: the extra argument overrides the file.
                let config = SchedulerConfig {
                    use_karras_sigmas: Some(true),
                    ..config.clone()
                };
                Box::new(DpmSolverMultistepScheduler::new(&config, steps)?)
            }
            Self::DpmSolverSinglestep => {
                Box::new(DpmSolverSinglestepScheduler::new(config, steps)?)
            }
            Self::Deis => Box::new(DeisMultistepScheduler::new(config, steps)?),
            Self::UniPc => Box::new(UniPcMultistepScheduler::new(config, steps)?),
        })
    }
}

impl std::str::FromStr for SchedulerKind {
    type Err = FoleyError;

    fn from_str(name: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|kind| kind.name() == name)
            .ok_or_else(|| {
                FoleyError::InvalidRequest(format!(
                    "unknown scheduler '{name}' (available: {})",
                    Self::NAMES.join(", ")
                ))
            })
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
    // torch's CPU cumprod accumulates float32 inputs in a double.
    let mut product = 1f64;
    Ok(betas
        .iter()
        .map(|beta| {
            product *= (1.0 - beta) as f64;
            product as f32
        })
        .collect())
}

/// `torch.linspace` in f32: the first half counts up from `start`, the second down from `end`,
/// each value one fused multiply-add (torch's scalar loop, contracted by its compiler).
pub(crate) fn linspace_f32(start: f32, end: f32, count: usize) -> Vec<f32> {
    if count == 1 {
        return vec![start];
    }
    let step = (end - start) / (count - 1) as f32;
    let halfway = count / 2;
    (0..count)
        .map(|index| {
            if index < halfway {
                step.mul_add(index as f32, start)
            } else {
                (-step).mul_add((count - index - 1) as f32, end)
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

/// `np.linspace(0, end, count)` as numpy computes it: `i * (end / (count - 1))` with the end point
/// pinned (a lone point is 0).
pub(crate) fn numpy_linspace(end: f64, count: usize) -> Vec<f64> {
    if count == 1 {
        return vec![0.0];
    }
    let step = end / (count - 1) as f64;
    (0..count)
        .map(|index| {
            if index + 1 == count {
                end
            } else {
                index as f64 * step
            }
        })
        .collect()
}

/// `tensor / divisor` as torch computes it: a true float32 division (candle's `/ f64`
/// multiplies by the reciprocal, which can differ in the last bit).
pub(crate) fn div_scalar(tensor: &Tensor, divisor: f32) -> Result<Tensor> {
    let divisor = Tensor::new(divisor, tensor.device())?.to_dtype(tensor.dtype())?;
    Ok(tensor.broadcast_div(&divisor)?)
}

/// `randn_tensor(like.shape, generator)`: one full-size draw from the CPU generator.
pub(crate) fn randn_like(like: &Tensor, generator: &mut TorchGenerator) -> Result<Tensor> {
    let shape = like.shape().clone();
    let noise = generator.randn_f32(shape.elem_count());
    Ok(Tensor::from_vec(noise, shape, like.device())?.to_dtype(like.dtype())?)
}

/// Collects the options a scheduler does not implement into one `Unsupported` error.
pub(crate) fn reject(scheduler: &str, problems: Vec<String>) -> Result<()> {
    if problems.is_empty() {
        Ok(())
    } else {
        Err(FoleyError::Unsupported(format!(
            "{scheduler} options: {}",
            problems.join(", ")
        )))
    }
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

    /// Bit for bit against torch, which accumulates the cumulative product in double.
    #[test]
    fn alphas_cumprod_match_torch() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/reference/schedulers/euler.safetensors");
        let tensors = candle_core::safetensors::load(&path, &candle_core::Device::Cpu).unwrap();
        for (base, start, end, offset) in [("real", 0.0015, 0.0195, 1), ("tiny", 0.00085, 0.012, 0)]
        {
            let config = SchedulerConfig {
                beta_start: Some(start),
                beta_end: Some(end),
                beta_schedule: Some("scaled_linear".into()),
                steps_offset: Some(offset),
                ..Default::default()
            };
            let expected: Vec<f32> = tensors[&format!("{base}.alphas_cumprod")]
                .to_vec1()
                .unwrap();
            assert_eq!(alphas_cumprod(&config).unwrap(), expected, "{base}");
        }
    }

    #[test]
    fn torch_linspace_counts_down_from_the_end_in_its_second_half() {
        let values = linspace_f32(0.0, 1.0, 5);
        assert_eq!(values, [0.0, 0.25, 0.5, 0.75, 1.0]);
        assert_eq!(*linspace_f32(0.1, 0.7, 7).last().unwrap(), 0.7);
    }
}

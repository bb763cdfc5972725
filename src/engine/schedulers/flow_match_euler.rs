//! diffusers' `FlowMatchEulerDiscreteScheduler` as Stable Audio 3 drives it: sigmas from the
//! log-SNR schedule passed in by the pipeline (`num_train_timesteps = 1`, `shift = 1`, so the
//! DiT's timestep is σ itself), then either the stochastic "ping-pong" step of the distilled
//! checkpoint or the deterministic Euler step of the base one.

use candle_core::Tensor;
use serde::Deserialize;

use crate::engine::noise::TorchGenerator;
use crate::engine::schedulers::linspace_f32;
use crate::error::{FoleyError, Result};

/// The keys of `scheduler_config.json` that change what SA3 computes. Every other key must
/// keep its default, or the schedule would silently differ from diffusers'.
#[derive(Debug, Clone, Deserialize)]
pub struct FlowMatchConfig {
    #[serde(default = "default_train_timesteps")]
    pub num_train_timesteps: f64,
    #[serde(default = "default_shift")]
    pub shift: f64,
    #[serde(default)]
    pub stochastic_sampling: bool,
    #[serde(default)]
    pub use_dynamic_shifting: bool,
    #[serde(default)]
    pub shift_terminal: Option<f64>,
    #[serde(default)]
    pub use_karras_sigmas: bool,
    #[serde(default)]
    pub use_exponential_sigmas: bool,
    #[serde(default)]
    pub use_beta_sigmas: bool,
    #[serde(default)]
    pub invert_sigmas: bool,
}

fn default_train_timesteps() -> f64 {
    1000.0
}
fn default_shift() -> f64 {
    1.0
}

impl FlowMatchConfig {
    /// Stable Audio 3's scheduler: `num_train_timesteps` 1, no shift, stochastic (distilled
    /// checkpoints) or deterministic (base ones).
    pub fn stable_audio3(stochastic: bool) -> Self {
        Self {
            num_train_timesteps: 1.0,
            shift: 1.0,
            stochastic_sampling: stochastic,
            use_dynamic_shifting: false,
            shift_terminal: None,
            use_karras_sigmas: false,
            use_exponential_sigmas: false,
            use_beta_sigmas: false,
            invert_sigmas: false,
        }
    }

    /// The options diffusers would apply to custom sigmas that Foley does not implement.
    pub fn check(&self) -> std::result::Result<(), String> {
        let unsupported = [
            ("use_dynamic_shifting", self.use_dynamic_shifting),
            (
                "shift_terminal",
                self.shift_terminal.is_some_and(|v| v != 0.0),
            ),
            ("use_karras_sigmas", self.use_karras_sigmas),
            ("use_exponential_sigmas", self.use_exponential_sigmas),
            ("use_beta_sigmas", self.use_beta_sigmas),
            ("invert_sigmas", self.invert_sigmas),
        ];
        if let Some((name, _)) = unsupported.iter().find(|(_, on)| *on) {
            return Err(format!("{name} is not supported for Stable Audio 3"));
        }
        if !(self.shift.is_finite() && self.shift > 0.0) {
            return Err(format!("shift {} must be a positive number", self.shift));
        }
        if !(self.num_train_timesteps.is_finite() && self.num_train_timesteps > 0.0) {
            return Err(format!(
                "num_train_timesteps {} must be a positive number",
                self.num_train_timesteps
            ));
        }
        Ok(())
    }

    /// The step count diffusers picks when none is given: 8 for the distilled checkpoint,
    /// 100 for the base one.
    pub fn default_steps(&self) -> usize {
        if self.stochastic_sampling { 8 } else { 100 }
    }
}

/// `logsnr_sigma_schedule`: `t = linspace(σmax, 0, N+1)`, `σ = sigmoid(−(max − t·(max − min)))`,
/// the first forced to σmax, the terminal one dropped. All in f32, like the torch original.
pub fn logsnr_sigma_schedule(
    steps: usize,
    logsnr_min: f64,
    logsnr_max: f64,
    sigma_max: f32,
) -> Vec<f32> {
    let span = (logsnr_max - logsnr_min) as f32;
    let top = logsnr_max as f32;
    let mut sigmas: Vec<f32> = linspace_f32(sigma_max, 0.0, steps + 1)
        .into_iter()
        .map(|t| {
            let logsnr = top - t * span;
            1.0 / (1.0 + logsnr.exp())
        })
        .collect();
    sigmas[0] = sigma_max;
    sigmas.truncate(steps);
    sigmas
}

#[derive(Debug, Clone)]
pub struct FlowMatchEulerScheduler {
    /// One σ per step plus the terminal 0.
    sigmas: Vec<f32>,
    /// `σ · num_train_timesteps` per step: what the DiT is given.
    timesteps: Vec<f32>,
    stochastic: bool,
}

impl FlowMatchEulerScheduler {
    /// `set_timesteps(sigmas=…)`.
    pub fn new(config: &FlowMatchConfig, sigmas: &[f32]) -> Result<Self> {
        config.check().map_err(FoleyError::InvalidRequest)?;
        let shift = config.shift as f32;
        let train = config.num_train_timesteps as f32;
        let shifted: Vec<f32> = sigmas
            .iter()
            .map(|&sigma| {
                if shift == 1.0 {
                    sigma
                } else {
                    shift * sigma / (1.0 + (shift - 1.0) * sigma)
                }
            })
            .collect();
        let timesteps: Vec<f32> = shifted.iter().map(|sigma| sigma * train).collect();
        // diffusers starts at the second match when the first timestep repeats, and then runs
        // out of sigmas on its last step: refuse such a schedule up front.
        if let Some(first) = timesteps.first()
            && timesteps.iter().filter(|t| *t == first).count() > 1
        {
            return Err(FoleyError::InvalidRequest(
                "the noise schedule repeats its first level, which diffusers cannot step through; \
                 use more steps or another noise level"
                    .into(),
            ));
        }
        let mut all = shifted;
        all.push(0.0);
        Ok(Self {
            sigmas: all,
            timesteps,
            stochastic: config.stochastic_sampling,
        })
    }

    pub fn timesteps(&self) -> &[f32] {
        &self.timesteps
    }

    pub fn sigmas(&self) -> &[f32] {
        &self.sigmas
    }

    /// One step from `sample` with the DiT's velocity at step `index` (0-based). The stochastic
    /// variant draws its noise from `generator` on every step, the last one included.
    pub fn step(
        &self,
        velocity: &Tensor,
        sample: &Tensor,
        index: usize,
        generator: &mut TorchGenerator,
    ) -> Result<Tensor> {
        let noise = if self.stochastic {
            Some(Tensor::from_vec(
                generator.randn_f32(sample.elem_count()),
                sample.shape(),
                sample.device(),
            )?)
        } else {
            None
        };
        self.step_with_noise(velocity, sample, index, noise.as_ref())
    }

    /// `step` with the stochastic variant's noise given (ignored by the deterministic one).
    pub fn step_with_noise(
        &self,
        velocity: &Tensor,
        sample: &Tensor,
        index: usize,
        noise: Option<&Tensor>,
    ) -> Result<Tensor> {
        let (Some(&sigma), Some(&next)) = (self.sigmas.get(index), self.sigmas.get(index + 1))
        else {
            return Err(FoleyError::InvalidRequest(format!(
                "step {} is past the end of the schedule",
                index + 1
            )));
        };
        let sample = sample.to_dtype(candle_core::DType::F32)?;
        let velocity = velocity.to_dtype(candle_core::DType::F32)?;
        match (self.stochastic, noise) {
            (true, Some(noise)) => {
                let denoised = (&sample - (velocity * sigma as f64)?)?;
                Ok(((denoised * (1.0 - next) as f64)? + (noise * next as f64)?)?)
            }
            (true, None) => Err(FoleyError::InvalidRequest(
                "the stochastic step needs noise".into(),
            )),
            (false, _) => Ok((sample + (velocity * (next - sigma) as f64)?)?),
        }
    }
}

//! `scheduler_config.json` as written by diffusers; every key optional so that each scheduler
//! can apply its own class defaults, as `from_config` does.

use std::path::Path;

use serde::Deserialize;

use crate::engine::weights::read_json;
use crate::error::{FoleyError, Result};

#[derive(Debug, Clone, Default, Deserialize)]
pub struct SchedulerConfig {
    #[serde(rename = "_class_name")]
    pub class_name: Option<String>,
    pub num_train_timesteps: Option<usize>,
    pub beta_start: Option<f64>,
    pub beta_end: Option<f64>,
    pub beta_schedule: Option<String>,
    pub trained_betas: Option<serde_json::Value>,
    pub prediction_type: Option<String>,
    pub timestep_spacing: Option<String>,
    pub steps_offset: Option<u32>,
    pub clip_sample: Option<bool>,
    pub clip_sample_range: Option<f64>,
    pub set_alpha_to_one: Option<bool>,
    pub thresholding: Option<bool>,
    pub rescale_betas_zero_snr: Option<bool>,
    pub solver_order: Option<usize>,
    pub algorithm_type: Option<String>,
    pub solver_type: Option<String>,
    pub lower_order_final: Option<bool>,
    pub euler_at_final: Option<bool>,
    pub use_karras_sigmas: Option<bool>,
    pub use_exponential_sigmas: Option<bool>,
    pub use_beta_sigmas: Option<bool>,
    pub use_lu_lambdas: Option<bool>,
    pub final_sigmas_type: Option<String>,
    pub lambda_min_clipped: Option<f64>,
    pub variance_type: Option<String>,
    pub skip_prk_steps: Option<bool>,
    pub interpolation_type: Option<String>,
    pub timestep_type: Option<String>,
    pub sigma_min: Option<f64>,
    pub sigma_max: Option<f64>,
    pub predict_x0: Option<bool>,
    pub disable_corrector: Option<Vec<usize>>,
    pub solver_p: Option<serde_json::Value>,
    pub use_flow_sigmas: Option<bool>,
    pub use_dynamic_shifting: Option<bool>,
    pub shift_terminal: Option<serde_json::Value>,
}

/// Largest training schedule accepted (diffusers' checkpoints use 1000).
pub const MAX_TRAIN_TIMESTEPS: usize = 100_000;

impl SchedulerConfig {
    pub fn load(path: &Path) -> Result<Self> {
        let config: Self = read_json(path)?;
        config.validate().map_err(|reason| FoleyError::BadConfig {
            path: path.to_path_buf(),
            reason,
        })?;
        Ok(config)
    }

    /// Named limits, checked before any table is sized or indexed from these values.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let train = self.num_train_timesteps();
        if !(2..=MAX_TRAIN_TIMESTEPS).contains(&train) {
            return Err(format!(
                "num_train_timesteps {train} is outside 2–{MAX_TRAIN_TIMESTEPS}"
            ));
        }
        if self.steps_offset() as usize >= train {
            return Err(format!(
                "steps_offset {} is not below num_train_timesteps {train}",
                self.steps_offset()
            ));
        }
        let (start, end) = (self.beta_start(), self.beta_end());
        let in_range = |beta: f64| beta.is_finite() && beta > 0.0 && beta < 1.0;
        if !in_range(start) || !in_range(end) || start > end {
            return Err(format!(
                "beta_start {start} and beta_end {end} must satisfy 0 < beta_start ≤ beta_end < 1"
            ));
        }
        Ok(())
    }

    pub fn num_train_timesteps(&self) -> usize {
        self.num_train_timesteps.unwrap_or(1000)
    }
    pub fn beta_start(&self) -> f64 {
        self.beta_start.unwrap_or(0.0001)
    }
    pub fn beta_end(&self) -> f64 {
        self.beta_end.unwrap_or(0.02)
    }
    pub fn beta_schedule(&self) -> String {
        self.beta_schedule
            .clone()
            .unwrap_or_else(|| "linear".into())
    }
    pub fn prediction_type(&self) -> String {
        self.prediction_type
            .clone()
            .unwrap_or_else(|| "epsilon".into())
    }
    pub fn steps_offset(&self) -> u32 {
        self.steps_offset.unwrap_or(0)
    }
    /// `timestep_spacing`, or the class default `default` when the file has none.
    pub fn timestep_spacing_or(&self, default: &str) -> String {
        self.timestep_spacing
            .clone()
            .unwrap_or_else(|| default.into())
    }

    /// Notes a prediction type other than epsilon (the only one these schedulers implement).
    pub(crate) fn require_epsilon(&self, problems: &mut Vec<String>) {
        let prediction = self.prediction_type();
        if prediction != "epsilon" {
            problems.push(format!("prediction_type '{prediction}'"));
        }
    }

    /// Notes each of `flags` that is set to true (options Foley does not implement).
    pub(crate) fn reject_flags(&self, flags: &[(Option<bool>, &str)], problems: &mut Vec<String>) {
        for (flag, name) in flags {
            if *flag == Some(true) {
                problems.push((*name).to_string());
            }
        }
    }

    /// Options shared by all schedulers that Foley does not implement.
    pub(crate) fn reject_unsupported_common(&self) -> Result<()> {
        let mut problems = Vec::new();
        if self
            .trained_betas
            .as_ref()
            .is_some_and(|betas| !betas.is_null())
        {
            problems.push("trained_betas");
        }
        if self.thresholding == Some(true) {
            problems.push("thresholding");
        }
        if self.rescale_betas_zero_snr == Some(true) {
            problems.push("rescale_betas_zero_snr");
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(FoleyError::Unsupported(format!(
                "scheduler options: {}",
                problems.join(", ")
            )))
        }
    }
}

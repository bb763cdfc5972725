//! What the studio remembers between runs (eframe storage), kept apart from transient state.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::library::export::ExportOptions;

/// Persisted studio settings; missing fields take their defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// Local diffusers folder or Hugging Face repository id, as typed.
    pub model: String,
    /// The model that last loaded: opened at start when `model` names nothing loadable.
    pub last_loaded_model: String,
    /// "cpu", "cuda" or "metal" (the GPU ones need a build with that backend).
    pub device: String,
    /// "f32", "f16" or "bf16".
    pub dtype: String,
    pub prompt: String,
    pub negative_prompt: String,
    /// Seconds; 0 uses the model's default length.
    pub duration: f64,
    /// 0 uses the model family's default.
    pub steps: usize,
    /// 0 uses the model family's default.
    pub guidance: f64,
    pub scheduler: String,
    pub seed: u64,
    /// Draw a new seed for every run.
    pub random_seed: bool,
    /// Clips per run, with seeds seed, seed+1, …
    pub variations: usize,
    pub library_dir: PathBuf,
    /// Repeat the playing clip until stopped.
    pub loop_playback: bool,
    /// Moving between clips with the arrow keys plays the clip moved to.
    pub auto_audition: bool,
    /// Show a spectrogram of the partly denoised latents every few steps.
    pub step_preview: bool,
    /// How far audio-to-audio moves from the clip (0–1; Stable Audio 3's noise level).
    pub edit_strength: f64,
    /// Seconds "Extend" adds and "Make loop" bridges.
    pub edit_seconds: f64,
    /// Where "Export" writes WAV files for the DAW.
    pub export_dir: PathBuf,
    pub export: ExportOptions,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            model: "cvssp/audioldm2".into(),
            last_loaded_model: String::new(),
            device: "cpu".into(),
            dtype: "f32".into(),
            prompt: String::new(),
            negative_prompt: "low quality, average quality".into(),
            duration: 0.0,
            steps: 0,
            guidance: 0.0,
            scheduler: "dpm++2m".into(),
            seed: 42,
            random_seed: true,
            variations: 1,
            library_dir: default_library_dir(),
            loop_playback: false,
            auto_audition: true,
            step_preview: true,
            edit_strength: 0.5,
            edit_seconds: 2.0,
            export_dir: default_library_dir().parent().map_or_else(
                || PathBuf::from("foley-exports"),
                |data| data.join("exports"),
            ),
            export: ExportOptions::default(),
        }
    }
}

/// The platform's data folder: `$XDG_DATA_HOME/foley/library` (Linux),
/// `~/Library/Application Support/Foley/Library` (macOS), `%APPDATA%\Foley\Library` (Windows).
pub fn default_library_dir() -> PathBuf {
    let env = |name: &str| std::env::var_os(name).map(PathBuf::from);
    if cfg!(target_os = "windows") {
        if let Some(appdata) = env("APPDATA") {
            return appdata.join("Foley").join("Library");
        }
    } else if cfg!(target_os = "macos") {
        if let Some(home) = env("HOME") {
            return home.join("Library/Application Support/Foley/Library");
        }
    } else if let Some(data) =
        env("XDG_DATA_HOME").or_else(|| env("HOME").map(|h| h.join(".local/share")))
    {
        return data.join("foley").join("library");
    }
    PathBuf::from("foley-library")
}

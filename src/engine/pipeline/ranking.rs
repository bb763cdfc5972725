//! diffusers' `score_waveforms` (MusicLDM, AudioLDM 2): several waveforms for one prompt are
//! ordered by CLAP text–audio similarity, best first. The audio branch is loaded on first use,
//! so single-waveform generation never pays for it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};

use super::Clip;
use crate::engine::dsp::clap_features::{ClapFeatureExtractor, ClapFeatureExtractorConfig};
use crate::engine::dsp::resample::resample;
use crate::engine::models::clap_audio::{ClapAudioModel, ClapModelAudioConfig, rank_waveforms};
use crate::engine::models::clap_text::ClapTextModel;
use crate::engine::text_tokenizer::TextTokenizer;
use crate::engine::weights::{Component, read_json};
use crate::error::{FoleyError, Result};

/// The CLAP audio encoder with its feature extractor.
pub struct ClapRanker {
    audio: ClapAudioModel,
    features: ClapFeatureExtractor,
}

/// The ranking result: the order to return the waveforms in and each one's score.
#[derive(Debug, Clone, PartialEq)]
pub struct Ranking {
    pub order: Vec<usize>,
    /// `logits_per_text` of every waveform, in generation order.
    pub scores: Vec<f32>,
}

impl ClapRanker {
    fn load(root: &Path, dtype: DType, device: &Device) -> Result<Self> {
        let text_encoder = Component::new(root, "text_encoder")?;
        let config: ClapModelAudioConfig = text_encoder.config()?;
        if config.audio_config.is_none() {
            return Err(FoleyError::BadConfig {
                path: text_encoder.config_path(),
                reason: "no audio_config: this CLAP model cannot score audio".into(),
            });
        }
        let audio_config = config.audio();
        // The text half was loaded with the pipeline; here only the audio half is read.
        let text_half = &["text_model.", "text_projection.", "logit_scale_a"];
        let audio = text_encoder.build(dtype, device, text_half, |vb| {
            ClapAudioModel::new(&audio_config, config.projection_dim, vb)
        })?;
        let path = root.join("feature_extractor/preprocessor_config.json");
        let features_config: ClapFeatureExtractorConfig = read_json(&path)?;
        crate::engine::limits::Validated::validate(&features_config).map_err(|reason| {
            FoleyError::BadConfig {
                path: path.clone(),
                reason,
            }
        })?;
        let features =
            ClapFeatureExtractor::new(&features_config).map_err(|error| FoleyError::BadConfig {
                path: path.clone(),
                reason: error.to_string(),
            })?;
        Ok(Self { audio, features })
    }

    /// `ClapModel.get_audio_features` (L2-normalised) of one mono clip at `sample_rate`,
    /// resampled to the extractor's 48 kHz as `score_waveforms` does: (1, projection_dim).
    pub fn audio_embeds(
        &self,
        samples: &[f32],
        sample_rate: u32,
        device: &Device,
    ) -> Result<Tensor> {
        let resampled = resample(samples, sample_rate, self.features.sampling_rate());
        let input_features = self.features.input_features(&[&resampled], device)?;
        Ok(self.audio.audio_embeds(&input_features)?)
    }

    /// Scores `waveforms` (at `sample_rate`) against the normalised CLAP text vector
    /// `text_embeds` (1, dim) and returns the best-first order.
    pub fn rank(
        &self,
        text_embeds: &Tensor,
        waveforms: &[Vec<f32>],
        sample_rate: u32,
        device: &Device,
    ) -> Result<Ranking> {
        let target_rate = self.features.sampling_rate();
        let resampled: Vec<Vec<f32>> = waveforms
            .iter()
            .map(|waveform| resample(waveform, sample_rate, target_rate))
            .collect();
        let clips: Vec<&[f32]> = resampled.iter().map(Vec::as_slice).collect();
        let input_features = self.features.input_features(&clips, device)?;
        let audio_embeds = self.audio.audio_embeds(&input_features)?;
        let text_embeds = text_embeds.to_dtype(audio_embeds.dtype())?;
        let logits = self.audio.logits_per_text(&text_embeds, &audio_embeds)?;
        Ok(Ranking {
            order: rank_waveforms(&logits, waveforms.len())?,
            scores: logits.flatten_all()?.to_vec1::<f32>()?,
        })
    }
}

/// A `ClapRanker` loaded on first use and then kept.
pub struct LazyRanker {
    root: PathBuf,
    dtype: DType,
    device: Device,
    loaded: Mutex<Option<Arc<ClapRanker>>>,
}

impl LazyRanker {
    pub(crate) fn new(root: &Path, dtype: DType, device: &Device) -> Self {
        Self {
            root: root.to_path_buf(),
            dtype,
            device: device.clone(),
            loaded: Mutex::new(None),
        }
    }

    /// A ranker whose configs (when the checkpoint has them) were checked without loading any
    /// weights, so a corrupt one is reported at load instead of after every waveform has been
    /// generated.
    pub(crate) fn checked(root: &Path, dtype: DType, device: &Device) -> Result<Self> {
        let ranker = Self::new(root, dtype, device);
        ranker.check_configs()?;
        Ok(ranker)
    }

    fn check_configs(&self) -> Result<()> {
        let text_encoder = Component::new(&self.root, "text_encoder")?;
        let config: ClapModelAudioConfig = text_encoder.config()?;
        let path = self.root.join("feature_extractor/preprocessor_config.json");
        if config.audio_config.is_some() && path.exists() {
            let features: ClapFeatureExtractorConfig = read_json(&path)?;
            crate::engine::limits::Validated::validate(&features)
                .map_err(|reason| FoleyError::BadConfig { path, reason })?;
        }
        Ok(())
    }

    pub fn get(&self) -> Result<Arc<ClapRanker>> {
        let mut loaded = self.loaded.lock().map_err(|_| {
            FoleyError::Unsupported("the CLAP ranker failed to load earlier".into())
        })?;
        if let Some(ranker) = loaded.as_ref() {
            return Ok(ranker.clone());
        }
        let ranker = Arc::new(ClapRanker::load(&self.root, self.dtype, &self.device)?);
        *loaded = Some(ranker.clone());
        Ok(ranker)
    }
}

/// A CLAP model that scores another model's clips: the text branch and tokenizer of a
/// CLAP-bearing checkpoint (MusicLDM, AudioLDM 2) with its audio branch, loaded on first use.
pub struct ClapJudge {
    tokenizer: TextTokenizer,
    text: ClapTextModel,
    ranker: LazyRanker,
}

impl ClapJudge {
    /// From a diffusers directory whose `text_encoder` is a `ClapModel` with an audio branch.
    pub fn load(root: &Path, dtype: DType, device: &Device) -> Result<Self> {
        let text_encoder = Component::new(root, "text_encoder")?;
        let config: ClapModelAudioConfig = text_encoder.config()?;
        if config.audio_config.is_none() {
            return Err(FoleyError::Unsupported(format!(
                "{} has no CLAP audio branch to score clips with (MusicLDM and AudioLDM 2 checkpoints have one)",
                root.display()
            )));
        }
        let (text, _) = super::stages::load_clap_text(root, dtype, device)?;
        Ok(Self {
            tokenizer: TextTokenizer::load(&root.join("tokenizer"), 512)?,
            text,
            ranker: LazyRanker::checked(root, dtype, device)?,
        })
    }

    /// `rank_clip` with this model's CLAP.
    pub(crate) fn rank(&self, clip: Clip, prompt: &str, device: &Device) -> Result<Clip> {
        rank_clip(
            clip,
            prompt,
            &self.tokenizer,
            &self.text,
            &self.ranker,
            device,
        )
    }
}

/// Reorders per-waveform items best first, as diffusers returns the waveforms.
pub(crate) fn apply_ranking<T>(items: Vec<T>, ranking: &Ranking) -> Vec<T> {
    let mut slots: Vec<Option<T>> = items.into_iter().map(Some).collect();
    ranking
        .order
        .iter()
        .filter_map(|index| slots.get_mut(*index).and_then(Option::take))
        .collect()
}

/// `score_waveforms` on a finished clip: the prompt is tokenised without padding (diffusers'
/// `padding=True` for one text), embedded by the CLAP text branch and compared with every
/// waveform (a stereo clip by its mono fold-down, since CLAP hears mono); the clip comes back
/// best first with its scores.
pub(crate) fn rank_clip(
    mut clip: Clip,
    prompt: &str,
    tokenizer: &TextTokenizer,
    text_model: &ClapTextModel,
    ranker: &LazyRanker,
    device: &Device,
) -> Result<Clip> {
    let started = Instant::now();
    let tokens = tokenizer.encode(prompt, None)?;
    let text_embeds = text_model.text_features(&[tokens.ids], &[tokens.mask], device)?;
    let heard: Vec<Vec<f32>> = clip
        .waveforms
        .iter()
        .map(|waveform| crate::engine::dsp::fold_down(waveform, clip.channels))
        .collect();
    let ranking = ranker
        .get()?
        .rank(&text_embeds, &heard, clip.sample_rate, device)?;
    clip.scores = Some(
        ranking
            .order
            .iter()
            .map(|index| ranking.scores[*index])
            .collect(),
    );
    clip.waveforms = apply_ranking(std::mem::take(&mut clip.waveforms), &ranking);
    clip.mels = apply_ranking(std::mem::take(&mut clip.mels), &ranking);
    clip.timings.ranking = started.elapsed().as_secs_f64();
    Ok(clip)
}

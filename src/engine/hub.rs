//! Resolves `--model`: a local diffusers directory, or a Hugging Face repository id fetched into
//! the standard Hugging Face cache (`$HF_HOME/hub`, default `~/.cache/huggingface/hub`), so
//! models a user already downloaded with Python are reused. Downloads resume after an
//! interruption (hf-hub keeps `.part` files); `HF_HUB_OFFLINE=1` never touches the network.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use hf_hub::{Cache, Repo};

use crate::engine::pipeline::CancelFlag;
use crate::error::{FoleyError, Result};

/// A checkpoint Foley knows how to run.
#[derive(Debug, Clone, Copy)]
pub struct KnownCheckpoint {
    pub repo: &'static str,
    pub task: &'static str,
    /// Parameters, in millions (model cards; components.md §3.10).
    pub parameters_millions: u32,
    pub license: &'static str,
    /// The repository asks users to accept its licence first: downloads need `HF_TOKEN`.
    pub gated: bool,
}

impl KnownCheckpoint {
    /// Approximate download in GB: float32 safetensors of every parameter.
    pub fn download_gb(&self) -> f64 {
        self.parameters_millions as f64 * 4.0 / 1000.0
    }
}

pub const KNOWN_CHECKPOINTS: &[KnownCheckpoint] = &[
    KnownCheckpoint {
        repo: "cvssp/audioldm2",
        task: "sound effects (AudioLDM 2 base)",
        parameters_millions: 1118,
        license: "cc-by-nc-sa-4.0",
        gated: false,
    },
    KnownCheckpoint {
        repo: "cvssp/audioldm2-large",
        task: "sound effects (AudioLDM 2 large)",
        parameters_millions: 1489,
        license: "cc-by-nc-sa-4.0",
        gated: false,
    },
    KnownCheckpoint {
        repo: "cvssp/audioldm2-music",
        task: "music (AudioLDM 2)",
        parameters_millions: 1118,
        license: "cc-by-nc-sa-4.0",
        gated: false,
    },
    KnownCheckpoint {
        repo: "cvssp/audioldm",
        task: "sound effects (AudioLDM s-full)",
        parameters_millions: 421,
        license: "cc-by-nc-sa-4.0",
        gated: false,
    },
    KnownCheckpoint {
        repo: "cvssp/audioldm-s-full-v2",
        task: "sound effects (AudioLDM s-full-v2)",
        parameters_millions: 421,
        license: "cc-by-nc-sa-4.0",
        gated: false,
    },
    KnownCheckpoint {
        repo: "cvssp/audioldm-m-full",
        task: "sound effects (AudioLDM m-full)",
        parameters_millions: 652,
        license: "cc-by-nc-sa-4.0",
        gated: false,
    },
    KnownCheckpoint {
        repo: "cvssp/audioldm-l-full",
        task: "sound effects (AudioLDM l-full)",
        parameters_millions: 975,
        license: "cc-by-nc-sa-4.0",
        gated: false,
    },
    KnownCheckpoint {
        repo: "ucsd-reach/musicldm",
        task: "music (MusicLDM)",
        parameters_millions: 490,
        license: "cc-by-nc-sa-4.0",
        gated: false,
    },
    // Stable Audio 3 ships in Stability's own layout; the counts are the DiT, the SAME
    // autoencoder and the T5Gemma encoder-decoder file in the repository's subfolder.
    KnownCheckpoint {
        repo: "stabilityai/stable-audio-3-medium",
        task: "sfx + music, stereo (Stable Audio 3 medium, 8 steps)",
        parameters_millions: 2896,
        license: STABILITY_COMMUNITY,
        gated: true,
    },
    KnownCheckpoint {
        repo: "stabilityai/stable-audio-3-medium-base",
        task: "sfx + music, stereo (SA3 medium base, 100 steps)",
        parameters_millions: 2896,
        license: STABILITY_COMMUNITY,
        gated: true,
    },
    KnownCheckpoint {
        repo: "stabilityai/stable-audio-3-small-sfx",
        task: "sound effects, stereo (Stable Audio 3 small)",
        parameters_millions: 1132,
        license: STABILITY_COMMUNITY,
        gated: true,
    },
    KnownCheckpoint {
        repo: "stabilityai/stable-audio-3-small-music",
        task: "music, stereo (Stable Audio 3 small)",
        parameters_millions: 1132,
        license: STABILITY_COMMUNITY,
        gated: true,
    },
];

/// Stability AI Community License (free below about $1M annual revenue) plus Gemma's terms for
/// the T5Gemma text encoder.
const STABILITY_COMMUNITY: &str = "stability-community";

/// True when `HF_HUB_OFFLINE` asks for no network access (huggingface_hub's truthy values).
pub fn offline() -> bool {
    std::env::var("HF_HUB_OFFLINE").is_ok_and(|value| {
        matches!(
            value.trim().to_ascii_lowercase().as_str(),
            "1" | "true" | "yes" | "on"
        )
    })
}

/// The snapshot folder of a cached repository, if its `model_index.json` (or, for Stability's
/// own layout, `model_config.json`) is in the cache.
pub fn cached_snapshot(repo_id: &str) -> Option<PathBuf> {
    let cache = Cache::from_env();
    let repo = cache.repo(Repo::model(repo_id.to_string()));
    let index = repo
        .get("model_index.json")
        .or_else(|| repo.get("model_config.json"))?;
    let snapshot = index.parent()?;
    // `refs/main` is joined as written: a ref like `../../../../x` must not lead out of the cache.
    let root = cache.path().canonicalize().ok()?;
    let resolved = snapshot.canonicalize().ok()?;
    resolved.starts_with(&root).then(|| snapshot.to_path_buf())
}

/// Receives download progress (the studio shows it; the CLI uses hf-hub's own bar).
pub trait DownloadReport {
    /// A file of `bytes` bytes starts downloading.
    fn started(&mut self, file: &str, bytes: usize);
    /// `bytes` more bytes of the current file arrived.
    fn advanced(&mut self, bytes: usize);
}

/// hf-hub's progress callback, forwarded to a `DownloadReport`.
struct Forward<'a>(&'a mut dyn DownloadReport);

impl hf_hub::api::Progress for Forward<'_> {
    fn init(&mut self, size: usize, filename: &str) {
        self.0.started(filename, size);
    }
    fn update(&mut self, size: usize) {
        self.0.advanced(size);
    }
    fn finish(&mut self) {}
}

/// A local directory is used as is; anything shaped like `owner/name` that is not a path on
/// this machine comes from the hub cache, downloading what is missing.
pub fn resolve_model(spec: &str) -> Result<PathBuf> {
    resolve_model_reporting(spec, None, None)
}

/// `resolve_model` that reports each downloaded file and stops between files once `cancel` is set.
pub fn resolve_model_reporting(
    spec: &str,
    report: Option<&mut dyn DownloadReport>,
    cancel: Option<&CancelFlag>,
) -> Result<PathBuf> {
    let path = Path::new(spec);
    if path.is_dir() {
        return Ok(path.to_path_buf());
    }
    if path.is_file() {
        return Err(FoleyError::BadFile {
            path: path.to_path_buf(),
            reason: "is a file; --model takes a model folder or a Hugging Face repository id"
                .into(),
        });
    }
    // `models/foo` with an existing `models/` is a mistyped local path, not a repository.
    let parent_exists = path
        .parent()
        .is_some_and(|parent| !parent.as_os_str().is_empty() && parent.is_dir());
    if !looks_like_repo(spec) || parent_exists {
        return Err(FoleyError::MissingModelDir(path.to_path_buf()));
    }
    if offline() {
        return cached_snapshot(spec).ok_or_else(|| FoleyError::Download {
            repo: spec.to_string(),
            reason: format!(
                "HF_HUB_OFFLINE is set and the model is not in the Hugging Face cache ({})",
                Cache::from_env().path().display()
            ),
        });
    }
    download(spec, report, cancel)
}

/// The hub answered 401 or 403: a gated or private repository.
fn is_refused(error: &str) -> bool {
    error.contains("status code 401") || error.contains("status code 403")
}

fn gated_message(repo_id: &str, error: &str) -> String {
    let token = if std::env::var("HF_TOKEN").is_ok_and(|token| !token.trim().is_empty()) {
        "HF_TOKEN is set, but its account has not been granted access"
    } else {
        "set HF_TOKEN to an access token of an account that accepted it"
    };
    format!(
        "the repository is gated ({error}): accept its licence on https://huggingface.co/{repo_id}, \
         then {token}"
    )
}

fn looks_like_repo(spec: &str) -> bool {
    let parts: Vec<&str> = spec.split('/').collect();
    parts.len() == 2
        && !spec.starts_with('.')
        && parts.iter().all(|part| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        })
}

/// Files a pipeline needs: configs, tokenizers and one copy of each weight file. Safetensors
/// win over `.bin`; an fp16 variant is taken only where it is all there is. A diffusers
/// pipeline is rooted at `model_index.json`; Stability's layout keeps `model_config.json` and
/// the weights at the root and the text encoder in a subfolder.
fn needed_files(files: &[String]) -> Vec<String> {
    let stability_layout = !files.iter().any(|file| file == "model_index.json")
        && files.iter().any(|file| file == "model_config.json");
    let folder_of = |file: &str| {
        file.rsplit_once('/')
            .map_or("", |(folder, _)| folder)
            .to_string()
    };
    let is_weight = |name: &str| name.ends_with(".safetensors") || name.ends_with(".bin");
    let is_variant = |name: &str| name.contains(".fp16.");
    let full_safetensors: BTreeSet<String> = files
        .iter()
        .filter(|file| file.ends_with(".safetensors") && !is_variant(file))
        .map(|file| folder_of(file))
        .collect();
    let full_weights: BTreeSet<String> = files
        .iter()
        .filter(|file| is_weight(file) && !is_variant(file))
        .map(|file| folder_of(file))
        .collect();
    files
        .iter()
        .filter(|file| {
            let folder = folder_of(file);
            let name = file.rsplit('/').next().unwrap_or(file);
            if name.contains(".onnx") || name.ends_with(".ckpt") {
                return false;
            }
            if folder.is_empty() && !stability_layout {
                return name == "model_index.json";
            }
            if folder.is_empty() && name.ends_with(".json") {
                return name == "model_config.json";
            }
            if is_weight(name) {
                if is_variant(name) {
                    return !full_weights.contains(&folder);
                }
                return !(name.ends_with(".bin") && full_safetensors.contains(&folder));
            }
            name.ends_with(".json") || name.ends_with(".txt") || name.ends_with(".model")
        })
        .cloned()
        .collect()
}

fn download(
    repo_id: &str,
    mut report: Option<&mut dyn DownloadReport>,
    cancel: Option<&CancelFlag>,
) -> Result<PathBuf> {
    let failed = |reason: String| FoleyError::Download {
        repo: repo_id.to_string(),
        reason,
    };
    let mut builder = hf_hub::api::sync::ApiBuilder::from_env().with_progress(report.is_none());
    // hf-hub reads only the token file `huggingface-cli login` writes; gated repositories are
    // usually reached with the HF_TOKEN variable instead.
    if let Some(token) = std::env::var("HF_TOKEN")
        .ok()
        .filter(|token| !token.trim().is_empty())
    {
        builder = builder.with_token(Some(token.trim().to_string()));
    }
    let api = builder.build().map_err(|error| failed(error.to_string()))?;
    let repo = api.model(repo_id.to_string());
    let info = match repo.info() {
        Ok(info) => info,
        Err(error) if is_refused(&error.to_string()) => {
            return Err(failed(gated_message(repo_id, &error.to_string())));
        }
        // Unreachable hub: a model fetched earlier (by Foley or Python) still works.
        Err(error) => {
            return cached_snapshot(repo_id).ok_or_else(|| {
                failed(format!(
                    "{error}; the model is not in the Hugging Face cache either"
                ))
            });
        }
    };
    let files: Vec<String> = info
        .siblings
        .into_iter()
        .map(|file| file.rfilename)
        .collect();
    let root_file = ["model_index.json", "model_config.json"]
        .into_iter()
        .find(|root| files.iter().any(|file| file == root))
        .ok_or_else(|| {
            failed(
                "the repository has no model_index.json (not a diffusers pipeline) and no model_config.json (not a Stable Audio checkpoint)"
                    .into(),
            )
        })?;
    let cache = Cache::from_env().repo(Repo::model(repo_id.to_string()));
    let mut root = None;
    for file in needed_files(&files) {
        if cancel.is_some_and(CancelFlag::is_cancelled) {
            return Err(FoleyError::Cancelled);
        }
        let local = match (cache.get(&file), report.as_deref_mut()) {
            (Some(cached), _) => Ok(cached),
            (None, Some(report)) => repo.download_with_progress(&file, Forward(report)),
            (None, None) => repo.download(&file),
        }
        .map_err(|error| {
            let text = error.to_string();
            if is_refused(&text) {
                failed(gated_message(repo_id, &text))
            } else {
                failed(format!("{file}: {text}"))
            }
        })?;
        if file == root_file {
            root = local.parent().map(Path::to_path_buf);
        }
    }
    root.ok_or_else(|| failed(format!("{root_file} did not download")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_one_copy_of_each_weight_and_the_configs() {
        let files: Vec<String> = [
            "model_index.json",
            "README.md",
            "unet/config.json",
            "unet/diffusion_pytorch_model.safetensors",
            "unet/diffusion_pytorch_model.bin",
            "unet/diffusion_pytorch_model.fp16.safetensors",
            "vae/diffusion_pytorch_model.fp16.safetensors",
            "vae/config.json",
            "vocoder/pytorch_model.bin",
            "tokenizer/merges.txt",
            "tokenizer/tokenizer.json",
            "original/model.ckpt",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            needed_files(&files),
            [
                "model_index.json",
                "unet/config.json",
                "unet/diffusion_pytorch_model.safetensors",
                "vae/diffusion_pytorch_model.fp16.safetensors",
                "vae/config.json",
                "vocoder/pytorch_model.bin",
                "tokenizer/merges.txt",
                "tokenizer/tokenizer.json",
            ]
        );
    }

    #[test]
    fn stability_layout_takes_its_config_weights_and_text_encoder() {
        let files: Vec<String> = [
            "model_config.json",
            "model.safetensors",
            "model.ckpt",
            "README.md",
            "LICENSE.md",
            "t5gemma-b-b-ul2/config.json",
            "t5gemma-b-b-ul2/model.safetensors",
            "t5gemma-b-b-ul2/tokenizer.json",
            "t5gemma-b-b-ul2/tokenizer_config.json",
            "t5gemma-b-b-ul2/tokenizer.model",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            needed_files(&files),
            [
                "model_config.json",
                "model.safetensors",
                "t5gemma-b-b-ul2/config.json",
                "t5gemma-b-b-ul2/model.safetensors",
                "t5gemma-b-b-ul2/tokenizer.json",
                "t5gemma-b-b-ul2/tokenizer_config.json",
                "t5gemma-b-b-ul2/tokenizer.model",
            ]
        );
    }

    #[test]
    fn missing_local_paths_are_not_sent_to_the_hub() {
        assert!(matches!(
            resolve_model("./no/such/dir"),
            Err(FoleyError::MissingModelDir(_))
        ));
        assert!(matches!(
            resolve_model("/tmp/definitely-missing-foley-model"),
            Err(FoleyError::MissingModelDir(_))
        ));
        assert!(looks_like_repo("cvssp/audioldm2"));
        assert!(!looks_like_repo("a/b/c"));
    }
}

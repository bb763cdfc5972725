//! Resolves `--model`: a local diffusers directory, or a Hugging Face repository id that is
//! downloaded into the standard Hugging Face cache (`HF_HOME`, `~/.cache/huggingface`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::error::{FoleyError, Result};

/// Checkpoints Foley knows how to run, with what they are.
pub const KNOWN_CHECKPOINTS: &[(&str, &str)] = &[
    ("cvssp/audioldm2", "AudioLDM 2 base: sound effects, 16 kHz"),
    (
        "cvssp/audioldm2-large",
        "AudioLDM 2 large: sound effects, 16 kHz",
    ),
    ("cvssp/audioldm2-music", "AudioLDM 2 music, 16 kHz"),
];

/// A local directory is used as is; anything shaped like `owner/name` that is not a directory
/// is fetched from the hub.
pub fn resolve_model(spec: &str) -> Result<PathBuf> {
    let path = Path::new(spec);
    if path.is_dir() {
        return Ok(path.to_path_buf());
    }
    let parts: Vec<&str> = spec.split('/').collect();
    let looks_like_repo = parts.len() == 2
        && parts.iter().all(|part| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        })
        && !spec.starts_with('.');
    // `models/foo` with an existing `models/` is a mistyped local path, not a repository.
    let parent_exists = path
        .parent()
        .is_some_and(|parent| !parent.as_os_str().is_empty() && parent.is_dir());
    if !looks_like_repo || parent_exists {
        return Err(FoleyError::MissingModelDir(path.to_path_buf()));
    }
    download(spec)
}

/// Files a diffusers pipeline needs: configs, tokenizers and one copy of each weight file
/// (safetensors preferred; fp16 variants, ONNX and original checkpoints skipped).
fn needed_files(files: &[String]) -> Vec<String> {
    let folders_with_safetensors: BTreeSet<&str> = files
        .iter()
        .filter(|file| file.ends_with(".safetensors"))
        .filter_map(|file| file.rsplit_once('/').map(|(folder, _)| folder))
        .collect();
    files
        .iter()
        .filter(|file| {
            let (folder, name) = file.rsplit_once('/').unwrap_or(("", file.as_str()));
            let is_variant = name.contains(".fp16.") || name.contains(".onnx");
            let is_weight = name.ends_with(".safetensors") || name.ends_with(".bin");
            let is_config =
                name.ends_with(".json") || name.ends_with(".txt") || name.ends_with(".model");
            if is_variant || folder.is_empty() && !name.ends_with(".json") {
                return false;
            }
            if name.ends_with(".bin") && folders_with_safetensors.contains(folder) {
                return false;
            }
            is_weight || is_config
        })
        .cloned()
        .collect()
}

fn download(repo_id: &str) -> Result<PathBuf> {
    let failed = |reason: String| FoleyError::Download {
        repo: repo_id.to_string(),
        reason,
    };
    let api = hf_hub::api::sync::ApiBuilder::from_env()
        .with_progress(true)
        .build()
        .map_err(|error| failed(error.to_string()))?;
    let repo = api.model(repo_id.to_string());
    let info = repo.info().map_err(|error| failed(error.to_string()))?;
    let files: Vec<String> = info
        .siblings
        .into_iter()
        .map(|file| file.rfilename)
        .collect();
    if !files.iter().any(|file| file == "model_index.json") {
        return Err(failed(
            "the repository has no model_index.json (not a diffusers pipeline)".into(),
        ));
    }
    let mut root = None;
    for file in needed_files(&files) {
        let local = repo
            .get(&file)
            .map_err(|error| failed(format!("{file}: {error}")))?;
        if file == "model_index.json" {
            root = local.parent().map(Path::to_path_buf);
        }
    }
    root.ok_or_else(|| failed("model_index.json did not download".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_safetensors_and_configs_only() {
        let files: Vec<String> = [
            "model_index.json",
            "README.md",
            "unet/config.json",
            "unet/diffusion_pytorch_model.safetensors",
            "unet/diffusion_pytorch_model.bin",
            "unet/diffusion_pytorch_model.fp16.safetensors",
            "vocoder/pytorch_model.bin",
            "tokenizer/merges.txt",
            "tokenizer/tokenizer.json",
        ]
        .map(String::from)
        .to_vec();
        let picked = needed_files(&files);
        assert_eq!(
            picked,
            [
                "model_index.json",
                "unet/config.json",
                "unet/diffusion_pytorch_model.safetensors",
                "vocoder/pytorch_model.bin",
                "tokenizer/merges.txt",
                "tokenizer/tokenizer.json",
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
    }
}

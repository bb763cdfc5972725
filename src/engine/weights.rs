//! diffusers-layout model directories: `model_index.json`, one folder per component with a
//! `config.json` and safetensors weights (a PyTorch `.bin` as fallback).

use std::path::{Path, PathBuf};

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder};
use serde::de::DeserializeOwned;

use super::mapped_safetensors::MappedSafetensors;
use crate::error::{FoleyError, Result};

/// Reads a JSON config, naming the file in any error.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let bad = |reason: String| FoleyError::BadFile {
        path: path.to_path_buf(),
        reason,
    };
    let metadata = std::fs::metadata(path).map_err(|error| match error.kind() {
        std::io::ErrorKind::NotFound => FoleyError::MissingFile {
            path: path.to_path_buf(),
        },
        _ => bad(error.to_string()),
    })?;
    // A FIFO would block forever and a device like /dev/zero never ends.
    if !metadata.is_file() {
        return Err(bad("not a regular file".into()));
    }
    let mut text = String::new();
    use std::io::Read;
    std::fs::File::open(path)
        .and_then(|file| file.take(MAX_JSON_BYTES + 1).read_to_string(&mut text))
        .map_err(|error| bad(error.to_string()))?;
    if text.len() as u64 > MAX_JSON_BYTES {
        return Err(bad(format!(
            "larger than {MAX_JSON_BYTES} bytes, too large for a JSON config"
        )));
    }
    serde_json::from_str(&text).map_err(|error| FoleyError::BadConfig {
        path: path.to_path_buf(),
        reason: error.to_string(),
    })
}

/// Largest JSON file read as a config (real ones are a few kilobytes).
const MAX_JSON_BYTES: u64 = 16 * 1024 * 1024;

/// One component folder of a pipeline (`unet/`, `vae/`, …).
#[derive(Debug, Clone)]
pub struct Component {
    pub dir: PathBuf,
}

impl Component {
    pub fn new(root: &Path, name: &str) -> Result<Self> {
        let dir = root.join(name);
        if !dir.is_dir() {
            return Err(FoleyError::MissingFile { path: dir });
        }
        Ok(Self { dir })
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.join("config.json")
    }

    /// The component's `config.json`, checked against the named limits of its type.
    pub fn config<T: DeserializeOwned + crate::engine::limits::Validated>(&self) -> Result<T> {
        let config: T = read_json(&self.config_path())?;
        config.validate().map_err(|reason| FoleyError::BadConfig {
            path: self.config_path(),
            reason,
        })?;
        Ok(config)
    }

    /// The weight files in order of preference: safetensors (single or sharded), `.bin`, then a
    /// precision variant such as `*.fp16.safetensors` when nothing else is there.
    pub fn weight_files(&self) -> Result<Vec<PathBuf>> {
        let entries = std::fs::read_dir(&self.dir).map_err(|error| FoleyError::BadFile {
            path: self.dir.clone(),
            reason: error.to_string(),
        })?;
        // [full safetensors, full .bin, variant safetensors, variant .bin]
        let mut groups: [Vec<PathBuf>; 4] = Default::default();
        for path in entries.flatten().map(|entry| entry.path()) {
            let name = path
                .file_name()
                .and_then(|name| name.to_str())
                .unwrap_or("");
            let variant = name.contains(".fp16.") || name.contains(".bf16.");
            let group = match (
                name.ends_with(".safetensors"),
                name.ends_with(".bin"),
                variant,
            ) {
                (true, _, false) => 0,
                (_, true, false) => 1,
                (true, _, true) => 2,
                (_, true, true) => 3,
                _ => continue,
            };
            groups[group].push(path);
        }
        let mut files = groups
            .into_iter()
            .find(|group| !group.is_empty())
            .ok_or_else(|| FoleyError::BadFile {
                path: self.dir.clone(),
                reason: "holds no weights (no *.safetensors or *.bin file)".into(),
            })?;
        files.sort();
        if files.len() > 1 && !is_shard_set(&files) {
            let names: Vec<String> = files
                .iter()
                .filter_map(|file| file.file_name())
                .map(|name| name.to_string_lossy().into_owned())
                .collect();
            return Err(FoleyError::BadFile {
                path: self.dir.clone(),
                reason: format!(
                    "holds several weight files that are not one sharded checkpoint ({}); keep one",
                    names.join(", ")
                ),
            });
        }
        Ok(files)
    }

    /// Opens the weights and runs `build` on them; any missing or misshapen tensor is reported
    /// with the file it should have come from. Every tensor in the files must be used except
    /// those starting with one of `unused_prefixes` (parts Foley never runs, such as the VAE
    /// encoder): a leftover tensor means the config does not describe these weights.
    pub fn build<T>(
        &self,
        dtype: DType,
        device: &Device,
        unused_prefixes: &[&str],
        build: impl FnOnce(VarBuilder) -> candle_core::Result<T>,
    ) -> Result<T> {
        let files = self.weight_files()?;
        // A sharded checkpoint is named by its folder, a single file by itself.
        let blamed = match files.as_slice() {
            [single] => single.clone(),
            _ => self.dir.clone(),
        };
        let bad = |error: candle_core::Error| FoleyError::BadFile {
            path: blamed.clone(),
            reason: crate::error::without_backtrace(error).to_string(),
        };
        let (inner, names) = if files[0].extension().is_some_and(|ext| ext == "bin") {
            let names: BTreeSet<String> = candle_core::pickle::PthTensors::new(&files[0], None)
                .map_err(bad)?
                .tensor_infos()
                .keys()
                .cloned()
                .collect();
            (
                VarBuilder::from_pth(&files[0], dtype, device).map_err(bad)?,
                names,
            )
        } else {
            let mut names = BTreeSet::new();
            for file in &files {
                names.extend(validate_safetensors(file)?);
            }
            // SAFETY: Foley never writes a model file in place while a pipeline is loaded.
            let mapped = unsafe { MappedSafetensors::new(&files) }.map_err(bad)?;
            let vb = VarBuilder::from_backend(Box::new(mapped), dtype, device.clone());
            (vb, names)
        };
        let (model, used) = build_tracked(inner, &blamed, dtype, device, build)?;
        let leftover: Vec<&String> = names
            .iter()
            .filter(|name| !used.contains(*name))
            .filter(|name| {
                !unused_prefixes
                    .iter()
                    .any(|prefix| name.starts_with(prefix))
            })
            .filter(|name| !DERIVED_BUFFERS.iter().any(|suffix| name.ends_with(suffix)))
            .collect();
        if !leftover.is_empty() {
            let examples: Vec<&str> = leftover.iter().take(3).map(|name| name.as_str()).collect();
            return Err(FoleyError::BadFile {
                path: blamed,
                reason: format!(
                    "{} tensors are not described by {} (e.g. {}); the config and weights do not match",
                    leftover.len(),
                    self.config_path().display(),
                    examples.join(", ")
                ),
            });
        }
        Ok(model)
    }
}

/// Builds a model from tensors already in memory (a checkpoint mapped from another layout);
/// as with `Component::build`, every tensor must be used, or `blamed` is reported.
pub fn build_from_tensors<T>(
    tensors: HashMap<String, Tensor>,
    blamed: &Path,
    dtype: DType,
    device: &Device,
    build: impl FnOnce(VarBuilder) -> candle_core::Result<T>,
) -> Result<T> {
    let names: BTreeSet<String> = tensors.keys().cloned().collect();
    let inner = VarBuilder::from_tensors(tensors, dtype, device);
    let (model, used) = build_tracked(inner, blamed, dtype, device, build)?;
    let leftover: Vec<&String> = names.iter().filter(|name| !used.contains(*name)).collect();
    if let Some(first) = leftover.first() {
        return Err(FoleyError::BadFile {
            path: blamed.to_path_buf(),
            reason: format!(
                "{} tensors are not part of the model its config describes (e.g. {first})",
                leftover.len()
            ),
        });
    }
    Ok(model)
}

/// Runs `build` on `inner`, recording the names of the tensors it reads; errors blame `blamed`.
fn build_tracked<T>(
    inner: VarBuilder<'static>,
    blamed: &Path,
    dtype: DType,
    device: &Device,
    build: impl FnOnce(VarBuilder) -> candle_core::Result<T>,
) -> Result<(T, HashSet<String>)> {
    let tracker = Tracker {
        inner,
        used: Default::default(),
    };
    let used = tracker.used.clone();
    let model = build(VarBuilder::from_backend(
        Box::new(tracker),
        dtype,
        device.clone(),
    ))
    .map_err(|error| FoleyError::BadFile {
        path: blamed.to_path_buf(),
        reason: crate::error::without_backtrace(error).to_string(),
    })?;
    let used = used
        .lock()
        .map_err(|_| FoleyError::BadFile {
            path: blamed.to_path_buf(),
            reason: "weight loading was interrupted".into(),
        })?
        .clone();
    Ok((model, used))
}

/// Buffers PyTorch saves that are derived from the config rather than learned; models recompute
/// them, so they never count as unused weights.
const DERIVED_BUFFERS: &[&str] = &[
    ".num_batches_tracked",
    ".relative_position_index",
    ".position_ids",
];

/// A `VarBuilder` backend that records which tensors a model asked for.
struct Tracker {
    inner: VarBuilder<'static>,
    used: Arc<Mutex<HashSet<String>>>,
}

impl Tracker {
    fn record(&self, name: &str) {
        if let Ok(mut used) = self.used.lock() {
            used.insert(name.to_string());
        }
    }
}

impl SimpleBackend for Tracker {
    fn get(
        &self,
        shape: Shape,
        name: &str,
        hints: Init,
        dtype: DType,
        _device: &Device,
    ) -> candle_core::Result<Tensor> {
        self.record(name);
        self.inner.get_with_hints_dtype(shape, name, hints, dtype)
    }

    fn get_unchecked(
        &self,
        name: &str,
        dtype: DType,
        _device: &Device,
    ) -> candle_core::Result<Tensor> {
        self.record(name);
        self.inner.get_unchecked_dtype(name, dtype)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.inner.contains_tensor(name)
    }
}

/// Whether `files` (sorted) are exactly the shards `…-00001-of-0000N.ext` … `…-0000N-of-0000N.ext`
/// of one checkpoint, as `save_pretrained` writes them.
fn is_shard_set(files: &[PathBuf]) -> bool {
    let shard = |file: &PathBuf| -> Option<(String, usize, usize)> {
        let name = file.file_name()?.to_str()?;
        let (stem, _) = name.split_once('.')?;
        let (prefix, total) = stem.rsplit_once("-of-")?;
        let (base, index) = prefix.rsplit_once('-')?;
        Some((base.to_string(), index.parse().ok()?, total.parse().ok()?))
    };
    let shards: Option<Vec<_>> = files.iter().map(shard).collect();
    let Some(shards) = shards else {
        return false;
    };
    let total = shards.len();
    shards
        .iter()
        .enumerate()
        .all(|(position, (base, index, count))| {
            *base == shards[0].0 && *index == position + 1 && *count == total
        })
}

/// Largest safetensors header read (the safetensors crate refuses larger ones too).
const MAX_SAFETENSORS_HEADER: u64 = 100_000_000;

/// Checks the safetensors header before mapping so a truncated or foreign file gets a clear
/// error; returns the tensor names.
pub fn validate_safetensors(path: &Path) -> Result<BTreeSet<String>> {
    use std::io::Read;
    let bad = |reason: String| FoleyError::BadFile {
        path: path.to_path_buf(),
        reason,
    };
    let mut file = std::fs::File::open(path).map_err(|error| bad(error.to_string()))?;
    let length = file
        .metadata()
        .map_err(|error| bad(error.to_string()))?
        .len();
    let mut size = [0u8; 8];
    file.read_exact(&mut size)
        .map_err(|_| bad("not a safetensors file (shorter than its header)".into()))?;
    let header_len = u64::from_le_bytes(size);
    // The safetensors crate's own cap: a larger header is corrupt, whatever the file size says.
    if header_len > MAX_SAFETENSORS_HEADER {
        return Err(bad(format!(
            "not a safetensors file: header claims {header_len} bytes (the format allows {MAX_SAFETENSORS_HEADER})"
        )));
    }
    if header_len.saturating_add(8) > length {
        return Err(bad(format!(
            "not a safetensors file or truncated: header claims {header_len} bytes, file has {length}"
        )));
    }
    let mut header = vec![0u8; header_len as usize];
    file.read_exact(&mut header)
        .map_err(|error| bad(error.to_string()))?;
    let parsed: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&header)
        .map_err(|error| bad(format!("corrupt safetensors header: {error}")))?;
    let data_len = length - 8 - header_len;
    let mut names = BTreeSet::new();
    for (name, entry) in &parsed {
        if name == "__metadata__" {
            continue;
        }
        let end = entry
            .get("data_offsets")
            .and_then(|offsets| offsets.get(1))
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| bad(format!("tensor {name} has no data_offsets")))?;
        if end > data_len {
            return Err(bad(format!(
                "truncated: tensor {name} ends at byte {end} but the data section has {data_len}"
            )));
        }
        names.insert(name.clone());
    }
    Ok(names)
}

/// `model_index.json`: which class sits in each component folder.
#[derive(Debug, Clone)]
pub struct ModelIndex {
    pub class_name: String,
    pub components: serde_json::Map<String, serde_json::Value>,
}

impl ModelIndex {
    pub fn load(root: &Path) -> Result<Self> {
        if !root.is_dir() {
            return Err(FoleyError::MissingModelDir(root.to_path_buf()));
        }
        let path = root.join("model_index.json");
        let mut components: serde_json::Map<String, serde_json::Value> = read_json(&path)?;
        let class_name = components
            .remove("_class_name")
            .and_then(|value| value.as_str().map(str::to_string))
            .ok_or_else(|| FoleyError::BadConfig {
                path: path.clone(),
                reason: "no _class_name".into(),
            })?;
        Ok(Self {
            class_name,
            components,
        })
    }

    /// Errors unless the pipeline class is one of `expected`.
    pub fn expect_class(&self, root: &Path, expected: &[&str]) -> Result<()> {
        if expected.contains(&self.class_name.as_str()) {
            return Ok(());
        }
        Err(FoleyError::Unsupported(format!(
            "{} holds a {}, expected {}",
            root.display(),
            self.class_name,
            expected.join(" or ")
        )))
    }

    /// The class of a component, e.g. `GPT2Model` for `language_model`.
    pub fn component_class(&self, name: &str) -> Option<&str> {
        self.components.get(name)?.get(1)?.as_str()
    }
}

//! Stable Audio 3 checkpoints as Stability publishes them (stable-audio-tools layout:
//! `model_config.json`, one `model.safetensors` holding DiT + SAME + conditioners, and the
//! T5Gemma text encoder in a subfolder), mapped on load exactly as diffusers'
//! `scripts/convert_stable_audio_3_to_diffusers.py` converts them: keys renamed, the
//! self-attention `to_qkv` rows reordered from `[q|k|v|q2|k2]` to `[q1|q2|k1|k2|v]`, the prompt
//! padding embedding moved into the DiT, weight norm kept split.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor};
use serde_json::Value;

use super::stable_audio3::{PROMPT_TOKENS, Sa3Parts, StableAudio3Pipeline};
use crate::engine::limits::Validated;
use crate::engine::models::autoencoder_same::{AutoencoderSame, AutoencoderSameConfig};
use crate::engine::models::stable_audio3_dit::{
    StableAudio3DiTConfig, StableAudio3DiTModel, expo_fourier_frequencies,
};
use crate::engine::models::stable_audio3_duration::{
    DurationEmbedderConfig, StableAudio3DurationEmbedder,
};
use crate::engine::models::t5gemma::{T5GemmaEncoder, T5GemmaEncoderConfig};
use crate::engine::schedulers::flow_match_euler::FlowMatchConfig;
use crate::engine::text_tokenizer::TextTokenizer;
use crate::engine::weights::{Component, build_from_tensors, read_json, validate_safetensors};
use crate::error::{FoleyError, Result};

/// Whether `root` holds a checkpoint in Stability's own layout.
pub fn is_official_layout(root: &Path) -> bool {
    root.join("model_config.json").is_file() && !root.join("model_index.json").exists()
}

/// Which diffusers component an official tensor belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Part {
    Transformer,
    Vae,
    Duration,
    TextEncoder,
}

/// Where one official tensor goes: its component and diffusers name, and whether its rows are
/// a self-attention `to_qkv` to reorder.
#[derive(Debug, PartialEq, Eq)]
struct Target {
    part: Part,
    name: String,
    reorder_qkv: bool,
}

/// The diffusers name of the official tensor `key`; `Ok(None)` for tensors diffusers drops.
/// `levels` is the number of SAME levels (`len(strides)`).
fn map_key(key: &str, levels: usize) -> std::result::Result<Option<Target>, String> {
    let target = |part, name: String| {
        let reorder_qkv = name.ends_with("to_qkv.weight");
        Ok(Some(Target {
            part,
            name,
            reorder_qkv,
        }))
    };
    if let Some(rest) = key.strip_prefix("model.model.") {
        let renamed = if let Some(inner) = rest.strip_prefix("transformer.layers.") {
            let inner = inner
                .replace(".ff.ff.0.proj.", ".ff.proj_in.")
                .replace(".ff.ff.2.", ".ff.proj_out.");
            format!("transformer_blocks.{inner}")
        } else if let Some(inner) = rest.strip_prefix("transformer.") {
            match inner {
                "project_in.weight" => "proj_in.weight".into(),
                "project_out.weight" => "proj_out.weight".into(),
                other => other.to_string(),
            }
        } else {
            rest.to_string()
        };
        return target(Part::Transformer, renamed);
    }
    if key == "conditioner.conditioners.prompt.padding_embedding" {
        return target(Part::Transformer, "prompt_padding_embedding".into());
    }
    if let Some(rest) =
        key.strip_prefix("conditioner.conditioners.seconds_total.embedder.embedding.1.")
    {
        return target(Part::Duration, format!("linear.{rest}"));
    }
    if let Some(rest) = key.strip_prefix("conditioner.conditioners.prompt.model.") {
        return target(Part::TextEncoder, rest.to_string());
    }
    if key.starts_with("conditioner.conditioners.prompt.proj_out.") {
        return Ok(None);
    }
    if let Some(rest) = key.strip_prefix("pretransform.model.") {
        if rest.starts_with("pretransform.") || rest == "bottleneck.noise_scaling_factor" {
            return Ok(None);
        }
        match rest {
            "bottleneck.scaling_factor" => return target(Part::Vae, "bottleneck.scale".into()),
            "bottleneck.bias" | "bottleneck.running_std" => {
                return target(Part::Vae, rest.to_string());
            }
            _ => {}
        }
        let (side, rest) = rest
            .split_once(".layers.")
            .ok_or_else(|| format!("unexpected autoencoder tensor {key}"))?;
        let (index, inner) = rest.split_once('.').unwrap_or((rest, ""));
        let index: usize = index
            .parse()
            .map_err(|_| format!("unexpected autoencoder tensor {key}"))?;
        let block = match side {
            "encoder" if index < levels => format!("encoder.blocks.{index}"),
            "encoder" if index == levels + 1 => "encoder.proj".to_string(),
            "decoder" if index == 1 => "decoder.proj".to_string(),
            "decoder" if index >= 3 && index - 3 < levels => {
                format!("decoder.blocks.{}", index - 3)
            }
            _ => return Err(format!("unexpected autoencoder tensor {key}")),
        };
        if inner.ends_with(".rope.inv_freq") {
            return Ok(None);
        }
        let inner = inner
            .replace(".pre_norm.", ".norm_attn.")
            .replace(".ff_norm.", ".norm_ff.")
            .replace(".self_attn.", ".attn.")
            .replace(".ff.ff.0.proj.", ".ff.proj_in.")
            .replace(".ff.ff.2.", ".ff.proj_out.");
        return target(Part::Vae, format!("{block}.{inner}"));
    }
    Err(format!("unexpected tensor {key}"))
}

/// `[q|k|v|q2|k2]` → `[q1|q2|k1|k2|v]` over rows of five equal blocks; other shapes unchanged.
fn reorder_qkv(tensor: Tensor) -> candle_core::Result<Tensor> {
    let (rows, columns) = tensor.dims2()?;
    if rows != 5 * columns {
        return Ok(tensor);
    }
    let block = |index: usize| tensor.narrow(0, index * columns, columns);
    Tensor::cat(&[block(0)?, block(3)?, block(1)?, block(4)?, block(2)?], 0)
}

fn bad_config(path: &Path, reason: impl Into<String>) -> FoleyError {
    FoleyError::BadConfig {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// The SAME settings the conversion script reads from `model_config.json`.
fn vae_config(config: &Value, path: &Path) -> Result<AutoencoderSameConfig> {
    let pretransform = &config["model"]["pretransform"]["config"];
    let encoder = &pretransform["encoder"]["config"];
    let decoder = &pretransform["decoder"]["config"];
    let list = |value: &Value, field: &str| -> Result<Vec<usize>> {
        value[field]
            .as_array()
            .ok_or_else(|| bad_config(path, format!("encoder {field} is missing")))?
            .iter()
            .map(|item| {
                item.as_u64()
                    .map(|number| number as usize)
                    .ok_or_else(|| bad_config(path, format!("encoder {field} holds {item}")))
            })
            .collect()
    };
    let number = |value: &Value, field: &str| -> Result<usize> {
        value[field]
            .as_u64()
            .map(|number| number as usize)
            .ok_or_else(|| bad_config(path, format!("{field} is missing or not a whole number")))
    };
    let strides = list(encoder, "strides")?;
    let stride_product: usize = strides.iter().product();
    let ratio = number(pretransform, "downsampling_ratio")?;
    if stride_product == 0 || ratio % stride_product != 0 {
        return Err(bad_config(
            path,
            format!(
                "downsampling_ratio {ratio} is not a multiple of the strides' product {stride_product}"
            ),
        ));
    }
    let sliding_window = encoder["sliding_window"]
        .as_array()
        .and_then(|sides| sides.first())
        .or(Some(&encoder["sliding_window"]))
        .and_then(Value::as_u64)
        .unwrap_or(1) as usize;
    let sinusoidal = |value: &Value| -> Vec<usize> {
        value["sinusoidal_blocks"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter_map(Value::as_u64)
                    .map(|n| n as usize)
                    .collect()
            })
            .unwrap_or_else(|| vec![0])
    };
    let config = AutoencoderSameConfig {
        audio_channels: number(pretransform, "io_channels")?,
        patch_size: ratio / stride_product,
        encoder_channels: number(encoder, "channels")?,
        encoder_c_mults: list(encoder, "c_mults")?,
        encoder_strides: strides,
        encoder_transformer_depths: list(encoder, "transformer_depths")?,
        latent_dim: number(encoder, "latent_dim")?,
        use_differential_attention: true,
        dim_heads: number(encoder, "dim_heads")?,
        ff_mult: encoder["ff_mult"].as_f64().unwrap_or(3.0),
        sliding_window,
        encoder_sinusoidal_blocks: sinusoidal(encoder),
        decoder_sinusoidal_blocks: sinusoidal(decoder),
        sampling_rate: 44_100,
    };
    config
        .validate()
        .map_err(|reason| bad_config(path, reason))?;
    Ok(config)
}

/// The DiT settings, read from the tensor shapes as the conversion script does.
fn dit_config(shapes: &HashMap<String, Vec<usize>>, path: &Path) -> Result<StableAudio3DiTConfig> {
    let shape = |name: &str| -> Result<&Vec<usize>> {
        shapes.get(name).ok_or_else(|| {
            bad_config(
                path,
                format!("model.safetensors has no transformer tensor {name}"),
            )
        })
    };
    let dims2 = |name: &str| -> Result<(usize, usize)> {
        match shape(name)?.as_slice() {
            [rows, columns, ..] => Ok((*rows, *columns)),
            other => Err(bad_config(path, format!("{name} has shape {other:?}"))),
        }
    };
    let (embed_dim, timestep_features_dim) = dims2("to_timestep_embed.0.weight")?;
    let depth = (0..)
        .take_while(|index| {
            shapes.contains_key(&format!("transformer_blocks.{index}.pre_norm.gamma"))
        })
        .count();
    let head_dim = shape("transformer_blocks.0.self_attn.q_norm.gamma")?
        .first()
        .copied()
        .unwrap_or(0);
    let (qkv_rows, _) = dims2("transformer_blocks.0.self_attn.to_qkv.weight")?;
    let (ff_rows, _) = dims2("transformer_blocks.0.ff.proj_in.weight")?;
    let config = StableAudio3DiTConfig {
        io_channels: dims2("preprocess_conv.weight")?.0,
        patch_size: 1,
        embed_dim,
        depth,
        num_heads: embed_dim.checked_div(head_dim).unwrap_or(0),
        cond_token_dim: dims2("to_cond_embed.0.weight")?.1,
        global_cond_dim: dims2("to_global_embed.0.weight")?.1,
        local_add_cond_dim: dims2("transformer_blocks.0.to_local_embed.0.weight")?.1,
        timestep_features_dim,
        ff_mult: (ff_rows / (2 * embed_dim.max(1))) as f64,
        num_memory_tokens: shapes
            .get("memory_tokens")
            .and_then(|s| s.first().copied())
            .unwrap_or(0),
        use_differential_attention: qkv_rows == 5 * embed_dim,
    };
    config
        .validate()
        .map_err(|reason| bad_config(path, reason))?;
    Ok(config)
}

/// A folder's weights (one safetensors file or a set of shards, as `Component::weight_files`
/// picks them), checked and memory-mapped, with their tensor names and the path errors name.
fn open_weights(dir: &Path) -> Result<(MmapedSafetensors, Vec<String>, PathBuf)> {
    let files = Component {
        dir: dir.to_path_buf(),
    }
    .weight_files()?;
    let blamed = match files.as_slice() {
        [single] => single.clone(),
        _ => dir.to_path_buf(),
    };
    if files
        .iter()
        .any(|file| file.extension().is_none_or(|ext| ext != "safetensors"))
    {
        return Err(FoleyError::BadFile {
            path: blamed,
            reason: "Stability's layout is read from safetensors files only".into(),
        });
    }
    let mut names = Vec::new();
    for file in &files {
        names.extend(validate_safetensors(file)?);
    }
    // SAFETY: the files are memory-mapped read-only; Foley never writes model files while a
    // pipeline is loaded.
    let mmapped = unsafe { MmapedSafetensors::multi(&files) }.map_err(blame(&blamed))?;
    Ok((mmapped, names, blamed))
}

/// Turns a candle error into one that names `path`.
fn blame(path: &Path) -> impl Fn(candle_core::Error) -> FoleyError + Copy + '_ {
    move |error| FoleyError::BadFile {
        path: path.to_path_buf(),
        reason: crate::error::without_backtrace(error).to_string(),
    }
}

/// Loads a Stability-layout Stable Audio 3 checkpoint.
pub fn load(root: &Path, device: &Device, dtype: DType) -> Result<StableAudio3Pipeline> {
    let config_path = root.join("model_config.json");
    let config: Value = read_json(&config_path)?;
    let diffusion = &config["model"]["diffusion"];
    if diffusion["type"].as_str() != Some("dit") {
        return Err(FoleyError::Unsupported(format!(
            "{} is not a Stable Audio 3 model (diffusion type {})",
            config_path.display(),
            diffusion["type"]
        )));
    }
    let vae_config = vae_config(&config, &config_path)?;
    let levels = vae_config.encoder_strides.len();

    let (mmapped, names, blamed) = open_weights(root)?;
    let bad = blame(&blamed);

    let mut tensors: HashMap<Part, HashMap<String, Tensor>> = HashMap::new();
    let mut shapes: HashMap<String, Vec<usize>> = HashMap::new();
    for name in &names {
        let target = map_key(name, levels).map_err(|reason| FoleyError::BadFile {
            path: blamed.clone(),
            reason: format!("{reason}; is this a Stable Audio 3 checkpoint?"),
        })?;
        let Some(target) = target else { continue };
        let mut tensor = mmapped.load(name, &Device::Cpu).map_err(bad)?;
        if target.reorder_qkv {
            tensor = reorder_qkv(tensor).map_err(bad)?;
        }
        if target.part == Part::Transformer {
            shapes.insert(target.name.clone(), tensor.dims().to_vec());
        }
        tensors
            .entry(target.part)
            .or_default()
            .insert(target.name, tensor);
    }
    let mut take = |part: Part| tensors.remove(&part).unwrap_or_default();

    let dit_config = dit_config(&shapes, &config_path)?;
    let transformer = build_from_tensors(take(Part::Transformer), &blamed, dtype, device, |vb| {
        StableAudio3DiTModel::new(&dit_config, vb)
    })?;
    let vae = build_from_tensors(take(Part::Vae), &blamed, dtype, device, |vb| {
        AutoencoderSame::new(&vae_config, vb)
    })?;

    let mut duration = take(Part::Duration);
    let (output_dim, fourier_dim) = duration
        .get("linear.weight")
        .map(|weight| weight.dims2())
        .transpose()
        .map_err(bad)?
        .ok_or_else(|| {
            bad_config(
                &config_path,
                "model.safetensors has no seconds_total embedder",
            )
        })?;
    let duration_config = DurationEmbedderConfig {
        output_dim,
        fourier_dim,
        min_val: 0.0,
        max_val: 384.0,
    };
    duration_config
        .validate()
        .map_err(|reason| bad_config(&config_path, reason))?;
    // Stability's Fourier features are parameter-free; diffusers stores their table.
    let freqs = expo_fourier_frequencies(fourier_dim, 0.5, 10000.0);
    duration.insert(
        "freqs".into(),
        Tensor::from_vec(freqs, fourier_dim / 2, &Device::Cpu).map_err(bad)?,
    );
    let duration_embedder = build_from_tensors(duration, &blamed, dtype, device, |vb| {
        StableAudio3DurationEmbedder::new(&duration_config, vb)
    })?;

    let (tokenizer, text_encoder) =
        load_text_encoder(root, &config, take(Part::TextEncoder), device, dtype)?;
    let stochastic = diffusion["diffusion_objective"].as_str() == Some("rf_denoiser");
    let parts = Sa3Parts {
        tokenizer,
        text_encoder,
        duration_embedder,
        transformer,
        vae,
        scheduler: FlowMatchConfig::stable_audio3(stochastic),
    };
    super::stable_audio3::check_widths(&parts, root)?;
    Ok(StableAudio3Pipeline::from_parts(parts, device))
}

/// T5Gemma and its tokenizer from the prompt conditioner's subfolder (`t5gemma-b-b-ul2/`): the
/// encoder half of the encoder-decoder checkpoint, with any fine-tuned encoder weights from
/// `model.safetensors` applied over it.
fn load_text_encoder(
    root: &Path,
    config: &Value,
    overlay: HashMap<String, Tensor>,
    device: &Device,
    dtype: DType,
) -> Result<(TextTokenizer, T5GemmaEncoder)> {
    let prompt = config["model"]["conditioning"]["configs"]
        .as_array()
        .and_then(|items| items.iter().find(|item| item["id"] == "prompt"))
        .map(|item| &item["config"]);
    let subfolder = prompt
        .and_then(|prompt| prompt["subfolder"].as_str())
        .unwrap_or("t5gemma-b-b-ul2");
    if subfolder.contains("..") || Path::new(subfolder).is_absolute() {
        return Err(bad_config(
            &root.join("model_config.json"),
            format!("the prompt conditioner's subfolder {subfolder} leaves the model folder"),
        ));
    }
    let dir = root.join(subfolder);
    if !dir.is_dir() {
        return Err(FoleyError::MissingFile { path: dir });
    }
    let encoder_config: T5GemmaEncoderConfig = read_json(&dir.join("config.json"))?;
    encoder_config
        .validate()
        .map_err(|reason| bad_config(&dir.join("config.json"), reason))?;
    let (mmapped, _, blamed) = open_weights(&dir)?;
    let bad = blame(&blamed);
    let mut tensors = HashMap::new();
    for (name, _) in mmapped.tensors() {
        // The encoder-decoder stores the encoder under `model.encoder.`; the encoder-only
        // model (diffusers' text_encoder) under `encoder.`.
        let local = name
            .strip_prefix("model.")
            .filter(|rest| rest.starts_with("encoder."))
            .or_else(|| name.strip_prefix("encoder.").map(|_| name.as_str()));
        if let Some(local) = local {
            tensors.insert(
                local.to_string(),
                mmapped.load(&name, &Device::Cpu).map_err(bad)?,
            );
        }
    }
    tensors.extend(overlay);
    let max_length = prompt
        .and_then(|prompt| prompt["max_length"].as_u64())
        .map_or(PROMPT_TOKENS, |length| length as usize);
    let mut tokenizer = TextTokenizer::load(&dir, max_length)?;
    tokenizer.max_length = tokenizer.max_length.min(max_length);
    let encoder = build_from_tensors(tensors, &blamed, dtype, device, |vb| {
        T5GemmaEncoder::new(&encoder_config, vb)
    })?;
    Ok((tokenizer, encoder))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_map_like_the_conversion_script() {
        let map = |key| map_key(key, 1).unwrap();
        let name = |key| map(key).map(|target| target.name);
        assert_eq!(
            name("model.model.transformer.layers.3.ff.ff.0.proj.weight").as_deref(),
            Some("transformer_blocks.3.ff.proj_in.weight")
        );
        assert!(
            map("model.model.transformer.layers.0.self_attn.to_qkv.weight")
                .unwrap()
                .reorder_qkv
        );
        assert!(
            !map("model.model.transformer.layers.0.cross_attn.to_kv.weight")
                .unwrap()
                .reorder_qkv
        );
        assert_eq!(
            name("pretransform.model.decoder.layers.3.transformers.1.ff_norm.alpha").as_deref(),
            Some("decoder.blocks.0.transformers.1.norm_ff.alpha")
        );
        assert_eq!(
            name("pretransform.model.encoder.layers.2.weight").as_deref(),
            Some("encoder.proj.weight")
        );
        assert_eq!(
            name("pretransform.model.bottleneck.noise_scaling_factor"),
            None
        );
        assert!(map_key("pretransform.model.decoder.layers.9.x", 1).is_err());
        assert!(map_key("something.else", 1).is_err());
    }

    #[test]
    fn qkv_rows_are_reordered() {
        let tensor = Tensor::from_vec(
            (0..5).map(|block| block as f32).collect::<Vec<_>>(),
            (5, 1),
            &Device::Cpu,
        )
        .unwrap();
        let reordered: Vec<f32> = reorder_qkv(tensor)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(reordered, [0.0, 3.0, 1.0, 4.0, 2.0]);
    }
}

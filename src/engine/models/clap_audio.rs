//! The audio branch of transformers' `ClapModel` (HTSAT: a Swin transformer over the log-mel
//! "image") and its projection, giving `get_audio_features`: one L2-normalised vector per clip.
//! Only used to rank generated waveforms against the prompt (`score_waveforms`).

use candle_core::{D, DType, Device, Module, Result, Tensor};
use candle_nn::VarBuilder;

use crate::engine::kernels::layer_norm::LayerNorm;

use crate::engine::kernels::conv::Conv2d;
use crate::engine::models::layers::Linear;
use serde::Deserialize;

use super::layers::{
    attention, conv2d, gelu_exact, layer_norm, linear, linear_no_bias, split_heads,
};

fn default_window_size() -> usize {
    8
}
fn default_num_mel_bins() -> usize {
    64
}
fn default_spec_size() -> usize {
    256
}
fn default_act() -> String {
    "gelu".into()
}
fn default_patch_size() -> SizeOrPair {
    SizeOrPair::One(4)
}
fn default_patch_stride() -> SizeOrPair {
    SizeOrPair::Many(vec![4, 4])
}
fn default_hidden_size() -> usize {
    768
}
fn default_projection_dim() -> usize {
    512
}
fn default_depths() -> Vec<usize> {
    vec![2, 2, 6, 2]
}
fn default_heads() -> Vec<usize> {
    vec![4, 8, 16, 32]
}
fn default_input_channels() -> usize {
    1
}
fn default_true() -> bool {
    true
}
fn default_patch_hidden() -> usize {
    96
}
fn default_mlp_ratio() -> f64 {
    4.0
}
fn default_eps() -> f64 {
    1e-5
}
fn default_projection_act() -> String {
    "relu".into()
}

/// `nn.LayerNorm`'s default epsilon, used by the patch embedding, patch merging and final norms
/// (only the Swin blocks read `layer_norm_eps`).
const TORCH_LAYER_NORM_EPS: f64 = 1e-5;
/// `nn.BatchNorm2d`'s default epsilon.
const BATCH_NORM_EPS: f64 = 1e-5;
/// Score added between tokens from different regions of a shifted window.
const SHIFT_MASK: f32 = -100.0;

/// An `int` or a `(height, width)` pair, as transformers accepts for sizes and strides.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum SizeOrPair {
    One(usize),
    Many(Vec<usize>),
}

impl SizeOrPair {
    /// The size, or the pair's sizes.
    pub fn values(&self) -> Vec<usize> {
        match self {
            Self::One(size) => vec![*size],
            Self::Many(sizes) => sizes.clone(),
        }
    }

    fn pair(&self, name: &str) -> Result<(usize, usize)> {
        match self {
            Self::One(size) => Ok((*size, *size)),
            Self::Many(sizes) if sizes.len() == 2 => Ok((sizes[0], sizes[1])),
            Self::Many(sizes) => candle_core::bail!("CLAP audio {name} {sizes:?} is not a pair"),
        }
    }
}

/// `audio_config` of a `ClapModel` (`text_encoder/config.json`), transformers' `ClapAudioConfig`.
#[derive(Debug, Clone, Deserialize)]
pub struct ClapAudioConfig {
    #[serde(default = "default_window_size")]
    pub window_size: usize,
    #[serde(default = "default_num_mel_bins")]
    pub num_mel_bins: usize,
    #[serde(default = "default_spec_size")]
    pub spec_size: usize,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default = "default_patch_size")]
    pub patch_size: SizeOrPair,
    #[serde(default = "default_patch_stride")]
    pub patch_stride: SizeOrPair,
    /// Width of the pooled output; must equal `patch_embeds_hidden_size · 2^(stages-1)`.
    #[serde(default = "default_hidden_size")]
    pub hidden_size: usize,
    #[serde(default = "default_projection_dim")]
    pub projection_dim: usize,
    #[serde(default = "default_depths")]
    pub depths: Vec<usize>,
    #[serde(default = "default_heads")]
    pub num_attention_heads: Vec<usize>,
    #[serde(default)]
    pub enable_fusion: bool,
    #[serde(default)]
    pub fusion_type: Option<String>,
    #[serde(default = "default_input_channels")]
    pub patch_embed_input_channels: usize,
    #[serde(default = "default_true")]
    pub flatten_patch_embeds: bool,
    #[serde(default = "default_patch_hidden")]
    pub patch_embeds_hidden_size: usize,
    #[serde(default = "default_true")]
    pub enable_patch_layer_norm: bool,
    #[serde(default = "default_true")]
    pub qkv_bias: bool,
    #[serde(default = "default_mlp_ratio")]
    pub mlp_ratio: f64,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "default_projection_act")]
    pub projection_hidden_act: String,
}

impl Default for ClapAudioConfig {
    fn default() -> Self {
        // Every field has a serde default, so an empty object gives transformers' defaults.
        serde_json::from_str("{}").expect("ClapAudioConfig defaults deserialise")
    }
}

/// The parts of a `ClapModel` `config.json` the audio branch needs.
#[derive(Debug, Clone, Deserialize)]
pub struct ClapModelAudioConfig {
    #[serde(default)]
    pub audio_config: Option<ClapAudioConfig>,
    #[serde(default = "default_projection_dim")]
    pub projection_dim: usize,
    #[serde(default = "default_projection_act")]
    pub projection_hidden_act: String,
}

impl ClapModelAudioConfig {
    /// The audio config with the model-level `projection_dim` and `projection_hidden_act`, which
    /// override the branch's own values (transformers `ClapConfig.__init__`).
    pub fn audio(&self) -> ClapAudioConfig {
        let mut audio = self.audio_config.clone().unwrap_or_default();
        audio.projection_dim = self.projection_dim;
        audio.projection_hidden_act = self.projection_hidden_act.clone();
        audio
    }
}

/// `ClapAudioSelfAttention` + `ClapAudioSelfOutput` over the tokens of each window.
#[derive(Debug)]
struct WindowAttention {
    query: Linear,
    key: Linear,
    value: Linear,
    output: Linear,
    heads: usize,
    /// Relative-position bias, plus the shift mask for shifted blocks: (1 or windows, heads,
    /// tokens, tokens).
    bias: Tensor,
}

impl WindowAttention {
    fn forward(&self, windows: &Tensor) -> Result<Tensor> {
        let (count, _, width) = windows.dims3()?;
        let query = split_heads(&self.query.forward(windows)?, self.heads)?;
        let key = split_heads(&self.key.forward(windows)?, self.heads)?;
        let value = split_heads(&self.value.forward(windows)?, self.heads)?;
        // Windows are ordered batch-major, so the per-window bias repeats once per clip.
        let per_clip = self.bias.dim(0)?;
        let bias = if per_clip == 1 {
            self.bias.clone()
        } else {
            self.bias.repeat((count / per_clip, 1, 1, 1))?
        };
        let scale = 1.0 / ((width / self.heads) as f64).sqrt();
        self.output
            .forward(&attention(&query, &key, &value, scale, Some(&bias))?)
    }
}

/// `ClapAudioLayer`: a (shifted-)window Swin block at a fixed input resolution.
#[derive(Debug)]
struct SwinBlock {
    layernorm_before: LayerNorm,
    attention: WindowAttention,
    layernorm_after: LayerNorm,
    intermediate: Linear,
    output: Linear,
    height: usize,
    width: usize,
    window: usize,
    shift: usize,
}

impl SwinBlock {
    #[allow(clippy::too_many_arguments)]
    fn new(
        config: &ClapAudioConfig,
        dim: usize,
        heads: usize,
        (height, width): (usize, usize),
        shifted: bool,
        dtype: DType,
        device: &Device,
        vb: VarBuilder,
    ) -> Result<Self> {
        if !dim.is_multiple_of(heads) {
            candle_core::bail!("CLAP audio width {dim} is not a multiple of {heads} heads");
        }
        let configured = config.window_size;
        // `set_shift_and_window_size`: a map no larger than one window is attended as one
        // window (the window shrinks to the map's shorter side) and never shifted; the
        // checkpoint's bias table is then sized for that smaller window.
        let window = configured.min(height).min(width);
        if window == 0 {
            candle_core::bail!("CLAP audio map {height}×{width} is empty");
        }
        let shift = if shifted && height.min(width) > configured {
            configured / 2
        } else {
            0
        };
        let attention_vb = vb.pp("attention");
        let self_vb = attention_vb.pp("self");
        let projection = |name: &str| {
            if config.qkv_bias {
                linear(dim, dim, self_vb.pp(name))
            } else {
                linear_no_bias(dim, dim, self_vb.pp(name))
            }
        };
        // The table is the clamped window's (what a checkpoint of such a model holds), or, in a
        // checkpoint saved for the configured window, a superset: the offsets a smaller window
        // needs are read from its centre (transformers itself cannot run that case).
        let table = self_vb.get_unchecked("relative_position_bias_table")?;
        let span = |size: usize| (2 * size - 1) * (2 * size - 1);
        let table_window = match table.dims() {
            &[rows, table_heads] if table_heads == heads && rows == span(window) => window,
            &[rows, table_heads] if table_heads == heads && rows == span(configured) => configured,
            other => candle_core::bail!(
                "CLAP audio relative_position_bias_table is {other:?}; expected [{}, {heads}] (window {window}) or [{}, {heads}] (window_size {configured})",
                span(window),
                span(configured)
            ),
        };
        let tokens = window * window;
        let index = Tensor::from_vec(
            relative_position_index(window, table_window),
            tokens * tokens,
            device,
        )?;
        let relative = table
            .index_select(&index, 0)?
            .reshape((tokens, tokens, heads))?
            .permute((2, 0, 1))?
            .unsqueeze(0)?;
        let padded = (
            height.div_ceil(window) * window,
            width.div_ceil(window) * window,
        );
        let bias = if shift > 0 {
            let mask = shift_mask(padded, window, shift);
            let windows = mask.len() / (tokens * tokens);
            let mask = Tensor::from_vec(mask, (windows, 1, tokens, tokens), device)?;
            relative.broadcast_add(&mask.to_dtype(dtype)?)?
        } else {
            relative
        };
        let hidden = (config.mlp_ratio * dim as f64) as usize;
        Ok(Self {
            layernorm_before: layer_norm(dim, config.layer_norm_eps, vb.pp("layernorm_before"))?,
            attention: WindowAttention {
                query: projection("query")?,
                key: projection("key")?,
                value: projection("value")?,
                output: linear(dim, dim, attention_vb.pp("output.dense"))?,
                heads,
                bias: bias.contiguous()?,
            },
            layernorm_after: layer_norm(dim, config.layer_norm_eps, vb.pp("layernorm_after"))?,
            intermediate: linear(dim, hidden, vb.pp("intermediate.dense"))?,
            output: linear(hidden, dim, vb.pp("output.dense"))?,
            height,
            width,
            window,
            shift,
        })
    }

    /// `xs`: (batch, height·width, channels).
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let (batch, _, channels) = xs.dims3()?;
        let (height, width, window) = (self.height, self.width, self.window);
        let mut map = self
            .layernorm_before
            .forward(xs)?
            .reshape((batch, height, width, channels))?;
        // Pad (after the norm, with zeros) to whole windows.
        let padded_height = height.div_ceil(window) * window;
        let padded_width = width.div_ceil(window) * window;
        if padded_height != height {
            map = map.pad_with_zeros(1, 0, padded_height - height)?;
        }
        if padded_width != width {
            map = map.pad_with_zeros(2, 0, padded_width - width)?;
        }
        let shift = self.shift as i32;
        if shift > 0 {
            map = map.roll(-shift, 1)?.roll(-shift, 2)?;
        }
        let rows = padded_height / window;
        let cols = padded_width / window;
        let windows = map
            .reshape((batch, rows, window, cols, window, channels))?
            .permute((0, 1, 3, 2, 4, 5))?
            .reshape((batch * rows * cols, window * window, channels))?;
        let attended = self.attention.forward(&windows)?;
        let mut map = attended
            .reshape((batch, rows, cols, window, window, channels))?
            .permute((0, 1, 3, 2, 4, 5))?
            .reshape((batch, padded_height, padded_width, channels))?;
        if shift > 0 {
            map = map.roll(shift, 1)?.roll(shift, 2)?;
        }
        if padded_height != height || padded_width != width {
            map = map.narrow(1, 0, height)?.narrow(2, 0, width)?;
        }
        let hidden = (xs + map.reshape((batch, height * width, channels))?)?;
        let inner = gelu_exact(
            &self
                .intermediate
                .forward(&self.layernorm_after.forward(&hidden)?)?,
        )?;
        hidden + self.output.forward(&inner)?
    }
}

/// `create_relative_position_index`: index into the bias table of a `table_window` window
/// (≥ `window`) for each (query, key) pair of a `window`, row-major. Equal windows give
/// transformers' index.
fn relative_position_index(window: usize, table_window: usize) -> Vec<u32> {
    let tokens = window * window;
    let span = 2 * table_window - 1;
    let mut index = Vec::with_capacity(tokens * tokens);
    for query in 0..tokens {
        for key in 0..tokens {
            let dy = query / window + table_window - 1 - key / window;
            let dx = query % window + table_window - 1 - key % window;
            index.push((dy * span + dx) as u32);
        }
    }
    index
}

/// `get_attn_mask`: for every window of the shifted map, 0 between tokens of the same region and
/// -100 between regions that the cyclic shift brought together; (windows, tokens, tokens).
fn shift_mask((height, width): (usize, usize), window: usize, shift: usize) -> Vec<f32> {
    let region = |index: usize, size: usize| {
        usize::from(index >= size - window) + usize::from(index >= size - shift)
    };
    let tokens = window * window;
    let mut mask = Vec::with_capacity((height / window) * (width / window) * tokens * tokens);
    for row in 0..height / window {
        for col in 0..width / window {
            let ids: Vec<usize> = (0..tokens)
                .map(|token| {
                    let y = row * window + token / window;
                    let x = col * window + token % window;
                    region(y, height) * 3 + region(x, width)
                })
                .collect();
            for query in &ids {
                for key in &ids {
                    mask.push(if query == key { 0.0 } else { SHIFT_MASK });
                }
            }
        }
    }
    mask
}

/// `ClapAudioPatchMerging`: 2×2 neighbourhoods concatenated, normalised and projected to 2C.
#[derive(Debug)]
struct PatchMerging {
    norm: LayerNorm,
    reduction: Linear,
    height: usize,
    width: usize,
}

impl PatchMerging {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let (batch, _, channels) = xs.dims3()?;
        let mut map = xs.reshape((batch, self.height, self.width, channels))?;
        if self.height % 2 == 1 {
            map = map.pad_with_zeros(1, 0, 1)?;
        }
        if self.width % 2 == 1 {
            map = map.pad_with_zeros(2, 0, 1)?;
        }
        let (rows, cols) = (self.height.div_ceil(2), self.width.div_ceil(2));
        // transformers concatenates x[:, row::2, col::2] for col in 0..2 for row in 0..2, i.e.
        // the channel block index is col·2 + row.
        let merged = map
            .reshape((batch, rows, 2, cols, 2, channels))?
            .permute((0, 1, 3, 4, 2, 5))?
            .reshape((batch, rows * cols, 4 * channels))?;
        self.reduction.forward(&self.norm.forward(&merged)?)
    }
}

#[derive(Debug)]
struct Stage {
    blocks: Vec<SwinBlock>,
    downsample: Option<PatchMerging>,
}

/// `ClapModel`'s audio branch: `audio_model.audio_encoder` + `audio_projection`.
#[derive(Debug)]
pub struct ClapAudioModel {
    /// BatchNorm2d over mel bins folded into `x·scale + shift`, shape (mel bins,).
    norm_scale: Tensor,
    norm_shift: Tensor,
    patch_embed: Conv2d,
    patch_norm: Option<LayerNorm>,
    stages: Vec<Stage>,
    norm: LayerNorm,
    projection_1: Linear,
    projection_2: Linear,
    projection_relu: bool,
    logit_scale_t: Option<Tensor>,
    input_channels: usize,
    num_mel_bins: usize,
    spec_size: usize,
    freq_ratio: usize,
    grid: (usize, usize),
    stride: (usize, usize),
}

impl ClapAudioModel {
    /// `vb` points at the root of a `ClapModel` checkpoint; `projection_dim` is the model-level
    /// value (see [`ClapModelAudioConfig::audio`]).
    pub fn new(config: &ClapAudioConfig, projection_dim: usize, vb: VarBuilder) -> Result<Self> {
        if config.enable_fusion {
            candle_core::bail!(
                "CLAP audio enable_fusion=true (attentional feature fusion) is not supported"
            );
        }
        if config.hidden_act != "gelu" {
            candle_core::bail!("unsupported CLAP audio hidden_act {}", config.hidden_act);
        }
        let projection_relu = match config.projection_hidden_act.as_str() {
            "relu" => true,
            "linear" | "identity" => false,
            other => candle_core::bail!("unsupported CLAP projection_hidden_act {other}"),
        };
        if !config.flatten_patch_embeds {
            candle_core::bail!("CLAP audio flatten_patch_embeds=false is not supported");
        }
        let stages = config.depths.len();
        if stages == 0 || config.num_attention_heads.len() != stages {
            candle_core::bail!(
                "CLAP audio depths {:?} and num_attention_heads {:?} must have the same non-zero length",
                config.depths,
                config.num_attention_heads
            );
        }
        if config.num_mel_bins == 0 || config.spec_size < config.num_mel_bins {
            candle_core::bail!(
                "CLAP audio spec_size {} must be at least num_mel_bins {}",
                config.spec_size,
                config.num_mel_bins
            );
        }
        let (patch_h, patch_w) = config.patch_size.pair("patch_size")?;
        let stride = config.patch_stride.pair("patch_stride")?;
        if patch_h != patch_w || stride.0 != stride.1 {
            candle_core::bail!(
                "CLAP audio: only square patch_size/patch_stride are supported, got {:?}/{:?}",
                (patch_h, patch_w),
                stride
            );
        }
        if patch_h < stride.0 {
            candle_core::bail!(
                "CLAP audio patch_size {patch_h} < patch_stride {}",
                stride.0
            );
        }
        let features = config.patch_embeds_hidden_size << (stages - 1);
        if features != config.hidden_size {
            candle_core::bail!(
                "CLAP audio hidden_size {} differs from patch_embeds_hidden_size·2^(stages-1) = {features}",
                config.hidden_size
            );
        }
        let dtype = vb.dtype();
        let device = vb.device().clone();
        let encoder = vb.pp("audio_model.audio_encoder");

        let batch_norm = encoder.pp("batch_norm");
        let bins = config.num_mel_bins;
        let mean = batch_norm.get(bins, "running_mean")?.to_dtype(DType::F32)?;
        let variance = batch_norm.get(bins, "running_var")?.to_dtype(DType::F32)?;
        let weight = batch_norm.get(bins, "weight")?.to_dtype(DType::F32)?;
        let bias = batch_norm.get(bins, "bias")?.to_dtype(DType::F32)?;
        // PyTorch's inference kernel: alpha = w / sqrt(var + eps), beta = b - mean·alpha.
        let norm_scale = (weight / (variance + BATCH_NORM_EPS)?.sqrt()?)?;
        let norm_shift = (bias - (mean * &norm_scale)?)?;

        let patch_embed = conv2d(
            config.patch_embed_input_channels,
            config.patch_embeds_hidden_size,
            patch_h,
            stride.0,
            (patch_h - stride.0) / 2,
            encoder.pp("patch_embed.proj"),
        )?;
        let patch_norm = if config.enable_patch_layer_norm {
            Some(layer_norm(
                config.patch_embeds_hidden_size,
                TORCH_LAYER_NORM_EPS,
                encoder.pp("patch_embed.norm"),
            )?)
        } else {
            None
        };

        let grid = (config.spec_size / stride.0, config.spec_size / stride.1);
        let stages = (0..stages)
            .map(|index| {
                let dim = config.patch_embeds_hidden_size << index;
                let resolution = (grid.0 >> index, grid.1 >> index);
                let stage_vb = encoder.pp(format!("layers.{index}"));
                let blocks = (0..config.depths[index])
                    .map(|block| {
                        SwinBlock::new(
                            config,
                            dim,
                            config.num_attention_heads[index],
                            resolution,
                            block % 2 == 1,
                            dtype,
                            &device,
                            stage_vb.pp(format!("blocks.{block}")),
                        )
                    })
                    .collect::<Result<_>>()?;
                let downsample = if index + 1 < config.depths.len() {
                    let merge_vb = stage_vb.pp("downsample");
                    Some(PatchMerging {
                        norm: layer_norm(4 * dim, TORCH_LAYER_NORM_EPS, merge_vb.pp("norm"))?,
                        reduction: linear_no_bias(4 * dim, 2 * dim, merge_vb.pp("reduction"))?,
                        height: resolution.0,
                        width: resolution.1,
                    })
                } else {
                    None
                };
                Ok(Stage { blocks, downsample })
            })
            .collect::<Result<_>>()?;

        let logit_scale_t = if vb.contains_tensor("logit_scale_t") {
            Some(vb.get((), "logit_scale_t")?)
        } else {
            None
        };
        Ok(Self {
            norm_scale: norm_scale.to_dtype(dtype)?,
            norm_shift: norm_shift.to_dtype(dtype)?,
            patch_embed,
            patch_norm,
            stages,
            norm: layer_norm(features, TORCH_LAYER_NORM_EPS, encoder.pp("norm"))?,
            projection_1: linear(features, projection_dim, vb.pp("audio_projection.linear1"))?,
            projection_2: linear(
                projection_dim,
                projection_dim,
                vb.pp("audio_projection.linear2"),
            )?,
            projection_relu,
            logit_scale_t,
            input_channels: config.patch_embed_input_channels,
            num_mel_bins: bins,
            spec_size: config.spec_size,
            freq_ratio: config.spec_size / bins,
            grid,
            stride,
        })
    }

    /// `ClapModel.logit_scale_t` (log of the text-side temperature), if the checkpoint has it.
    pub fn logit_scale_t(&self) -> Option<&Tensor> {
        self.logit_scale_t.as_ref()
    }

    /// `reshape_mel2img`: stretches the normalised (batch, channels, frames, mel) features to
    /// `spec_size · freq_ratio` frames (bicubic, align_corners=True) and folds them into
    /// (batch, channels, spec_size, spec_size) images: `freq_ratio` bands of mel-bin rows, band k
    /// holding the k-th consecutive part of the frames.
    fn mel_to_image(&self, xs: &Tensor) -> Result<Tensor> {
        let (batch, channels, frames, bins) = xs.dims4()?;
        let spec_width = self.spec_size * self.freq_ratio;
        let spec_height = self.spec_size / self.freq_ratio;
        if frames > spec_width || bins > spec_height {
            candle_core::bail!(
                "CLAP audio input of {frames} frames × {bins} mel bins exceeds the Swin input size {spec_width}×{spec_height}"
            );
        }
        // (batch, channels, bins, frames), so both interpolations are matrix products.
        let mut image = xs.transpose(2, 3)?;
        if frames < spec_width {
            let weights = bicubic_weights(frames, spec_width, xs.device())?.to_dtype(xs.dtype())?;
            image = image.broadcast_matmul(&weights.t()?)?;
        }
        let mut bins = bins;
        if bins < spec_height {
            let weights = bicubic_weights(bins, spec_height, xs.device())?.to_dtype(xs.dtype())?;
            image = weights.broadcast_matmul(&image.contiguous()?)?;
            bins = spec_height;
        }
        let ratio = self.freq_ratio;
        image
            .reshape((batch, channels, bins, ratio, spec_width / ratio))?
            .permute((0, 1, 3, 2, 4))?
            .reshape((batch, channels, ratio * bins, spec_width / ratio))
    }

    /// The pooled encoder output (`audio_model(...).pooler_output`), (batch, hidden_size).
    pub fn pooled(&self, input_features: &Tensor) -> Result<Tensor> {
        let (_, channels, _, bins) = input_features.dims4()?;
        if channels != self.input_channels || bins != self.num_mel_bins {
            candle_core::bail!(
                "CLAP audio expects (batch, {}, frames, {}) input features, got {:?}",
                self.input_channels,
                self.num_mel_bins,
                input_features.dims()
            );
        }
        let xs = input_features.to_dtype(self.norm_scale.dtype())?;
        let xs = xs
            .broadcast_mul(&self.norm_scale)?
            .broadcast_add(&self.norm_shift)?;
        let image = self.mel_to_image(&xs)?;
        let (_, _, height, width) = image.dims4()?;
        if height != self.spec_size || width != self.spec_size {
            candle_core::bail!(
                "CLAP audio image {height}×{width} does not match spec_size {}",
                self.spec_size
            );
        }
        let patches = self.patch_embed.forward(&image)?;
        let (_, _, grid_h, grid_w) = patches.dims4()?;
        if (grid_h, grid_w) != self.grid {
            candle_core::bail!(
                "CLAP audio patch grid {grid_h}×{grid_w} differs from {:?}",
                self.grid
            );
        }
        let mut hidden = patches.flatten_from(2)?.transpose(1, 2)?.contiguous()?;
        if let Some(norm) = &self.patch_norm {
            hidden = norm.forward(&hidden)?;
        }
        for stage in &self.stages {
            for block in &stage.blocks {
                hidden = block.forward(&hidden)?;
            }
            if let Some(downsample) = &stage.downsample {
                hidden = downsample.forward(&hidden)?;
            }
        }
        let hidden = self.norm.forward(&hidden)?;
        // transformers regroups the tokens into (freq, time) blocks before AdaptiveAvgPool1d, a
        // permutation that the mean ignores; keep its shape check.
        let scale = 1 << (self.stages.len() - 1);
        let expected = (height / scale / self.stride.0) * (height / scale / self.stride.1);
        if hidden.dim(1)? != expected {
            candle_core::bail!(
                "CLAP audio has {} tokens after the last stage, expected {expected}",
                hidden.dim(1)?
            );
        }
        hidden.mean(1)
    }

    /// The projected audio embedding before normalisation, (batch, projection_dim).
    pub fn audio_projection(&self, input_features: &Tensor) -> Result<Tensor> {
        let projected = self.projection_1.forward(&self.pooled(input_features)?)?;
        let projected = if self.projection_relu {
            projected.relu()?
        } else {
            projected
        };
        self.projection_2.forward(&projected)
    }

    /// `ClapModel.get_audio_features`: (batch, channels, frames, mel) features from
    /// `ClapFeatureExtractor` → L2-normalised (batch, projection_dim) embeddings.
    pub fn audio_embeds(&self, input_features: &Tensor) -> Result<Tensor> {
        l2_normalize(&self.audio_projection(input_features)?)
    }

    /// `logits_per_text = text_embeds · audio_embedsᵀ · exp(logit_scale_t)`, (texts, audios), from
    /// normalised embeddings.
    pub fn logits_per_text(&self, text_embeds: &Tensor, audio_embeds: &Tensor) -> Result<Tensor> {
        let scale = self
            .logit_scale_t
            .as_ref()
            .ok_or_else(|| candle_core::Error::msg("CLAP checkpoint has no logit_scale_t"))?;
        let scale = scale.to_dtype(DType::F32)?.exp()?.to_scalar::<f32>()? as f64;
        (text_embeds.matmul(&audio_embeds.t()?)? * scale)?.to_dtype(DType::F32)
    }
}

/// `score_waveforms`' selection: `argsort(logits_per_text, dim=1, descending=True)[:, :keep]`,
/// flattened row by row. Ties keep the lower index first.
pub fn rank_waveforms(logits_per_text: &Tensor, keep: usize) -> Result<Vec<usize>> {
    let rows = logits_per_text.to_dtype(DType::F32)?.to_vec2::<f32>()?;
    let mut order = Vec::with_capacity(rows.len() * keep);
    for row in rows {
        let mut indices: Vec<usize> = (0..row.len()).collect();
        indices.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
        order.extend(indices.into_iter().take(keep));
    }
    Ok(order)
}

/// (output, input) weights of PyTorch's `interpolate(mode="bicubic", align_corners=True)` along
/// one axis, computed in f32 like its CPU kernel (A = -0.75, border indices clamped).
fn bicubic_weights(input: usize, output: usize, device: &Device) -> Result<Tensor> {
    const A: f32 = -0.75;
    let near = |x: f32| ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
    let far = |x: f32| ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A;
    let scale = if output > 1 {
        (input - 1) as f32 / (output - 1) as f32
    } else {
        0.0
    };
    let mut weights = vec![0f32; output * input];
    for row in 0..output {
        let source = scale * row as f32;
        let base = (source.floor() as usize).min(input - 1);
        let t = (source - base as f32).clamp(0.0, 1.0);
        let taps = [far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t)];
        for (offset, weight) in taps.into_iter().enumerate() {
            let column = (base + offset).saturating_sub(1).min(input - 1);
            weights[row * input + column] += weight;
        }
    }
    Tensor::from_vec(weights, (output, input), device)
}

/// `F.normalize(x, dim=-1)`: divides by max(‖x‖, 1e-12).
fn l2_normalize(xs: &Tensor) -> Result<Tensor> {
    let norm = xs
        .to_dtype(DType::F32)?
        .sqr()?
        .sum_keepdim(D::Minus1)?
        .sqrt()?
        .clamp(1e-12, f64::INFINITY)?
        .to_dtype(xs.dtype())?;
    xs.broadcast_div(&norm)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_index_matches_transformers_for_window_2() {
        // create_relative_position_index() for window_size 2.
        assert_eq!(
            relative_position_index(2, 2),
            [4, 3, 1, 0, 5, 4, 2, 1, 7, 6, 4, 3, 8, 7, 5, 4]
        );
        // A 2×2 window in a window-4 table reads the offsets −1..1 around its centre (24 = (0, 0)).
        let inner = relative_position_index(2, 4);
        assert_eq!(inner[0], 24);
        assert_eq!(inner[1], 23);
        assert_eq!(inner[2], 17);
        assert_eq!(*inner.iter().max().unwrap(), 32);
    }

    #[test]
    fn bicubic_rows_sum_to_one_and_hit_the_corners() {
        let weights = bicubic_weights(5, 9, &Device::Cpu)
            .and_then(|w| w.to_vec2::<f32>())
            .expect("weights");
        for row in &weights {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        }
        assert_eq!(weights[0], [1.0, 0.0, 0.0, 0.0, 0.0]);
        assert_eq!(weights[8], [0.0, 0.0, 0.0, 0.0, 1.0]);
    }
}

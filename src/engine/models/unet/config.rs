//! `AudioLDM2UNet2DConditionModel`'s config.json, with diffusers' int-or-list conventions resolved.

use serde::Deserialize;

/// A config value that diffusers accepts either once for all blocks or per block.
/// `Each` is tried first: a flat `cross_attention_dim` list is one width per block.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum PerBlock<T> {
    Each(Vec<T>),
    All(T),
}

impl<T: Clone> PerBlock<T> {
    pub fn resolve(&self, blocks: usize) -> Result<Vec<T>, String> {
        match self {
            Self::All(value) => Ok(vec![value.clone(); blocks]),
            Self::Each(values) if values.len() == blocks => Ok(values.clone()),
            Self::Each(values) => Err(format!("{} entries for {blocks} blocks", values.len())),
        }
    }
}

/// One block's cross-attention dims: a plain width, or one entry per transformer (`null` = self-attention).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum CrossAttentionDims {
    One(usize),
    Many(Vec<Option<usize>>),
}

impl CrossAttentionDims {
    pub fn per_transformer(&self) -> Vec<Option<usize>> {
        match self {
            Self::One(dim) => vec![Some(*dim)],
            Self::Many(dims) => dims.clone(),
        }
    }
}

fn default_true() -> bool {
    true
}
fn default_groups() -> usize {
    32
}
fn default_norm_eps() -> f64 {
    1e-5
}
fn default_one() -> usize {
    1
}
fn default_silu() -> String {
    "silu".into()
}
fn default_shift() -> String {
    "default".into()
}
fn default_positional() -> String {
    "positional".into()
}
fn default_heads() -> PerBlock<usize> {
    PerBlock::All(8)
}
fn default_transformer_layers() -> PerBlock<usize> {
    PerBlock::All(1)
}
fn default_layers_per_block() -> PerBlock<usize> {
    PerBlock::All(2)
}
fn default_kernel() -> usize {
    3
}

#[derive(Debug, Clone, Deserialize)]
pub struct UNetConfig {
    pub sample_size: Option<usize>,
    pub in_channels: usize,
    pub out_channels: usize,
    #[serde(default = "default_true")]
    pub flip_sin_to_cos: bool,
    #[serde(default)]
    pub freq_shift: f64,
    pub down_block_types: Vec<String>,
    pub up_block_types: Vec<String>,
    pub block_out_channels: Vec<usize>,
    #[serde(default = "default_layers_per_block")]
    pub layers_per_block: PerBlock<usize>,
    #[serde(default = "default_one")]
    pub downsample_padding: usize,
    #[serde(default = "default_silu")]
    pub act_fn: String,
    #[serde(default = "default_groups")]
    pub norm_num_groups: usize,
    #[serde(default = "default_norm_eps")]
    pub norm_eps: f64,
    pub cross_attention_dim: PerBlock<CrossAttentionDims>,
    #[serde(default = "default_transformer_layers")]
    pub transformer_layers_per_block: PerBlock<usize>,
    #[serde(default = "default_heads")]
    pub attention_head_dim: PerBlock<usize>,
    #[serde(default)]
    pub num_attention_heads: Option<PerBlock<usize>>,
    #[serde(default)]
    pub use_linear_projection: bool,
    #[serde(default)]
    pub only_cross_attention: serde_json::Value,
    /// `simple_projection` (AudioLDM, MusicLDM): a linear map of the CLAP vector.
    #[serde(default)]
    pub class_embed_type: Option<String>,
    #[serde(default)]
    pub projection_class_embeddings_input_dim: Option<usize>,
    /// Whether the class embedding is concatenated to (rather than added to) the time embedding.
    #[serde(default)]
    pub class_embeddings_concat: bool,
    #[serde(default)]
    pub num_class_embeds: Option<usize>,
    #[serde(default = "default_shift")]
    pub resnet_time_scale_shift: String,
    #[serde(default = "default_positional")]
    pub time_embedding_type: String,
    #[serde(default)]
    pub time_cond_proj_dim: Option<usize>,
    #[serde(default = "default_kernel")]
    pub conv_in_kernel: usize,
    #[serde(default = "default_kernel")]
    pub conv_out_kernel: usize,
    #[serde(default)]
    pub mid_block_type: Option<String>,
}

impl UNetConfig {
    /// Rejects the options diffusers supports but these checkpoints never use, rather than
    /// silently computing something else.
    pub fn check_supported(&self) -> Result<(), String> {
        let mut problems = Vec::new();
        if self.use_linear_projection {
            problems.push("use_linear_projection=true".to_string());
        }
        if self.num_class_embeds.is_some() {
            problems.push("num_class_embeds".to_string());
        }
        match self.class_embed_type.as_deref() {
            None => {}
            Some("simple_projection") if self.projection_class_embeddings_input_dim.is_some() => {}
            Some("simple_projection") => problems
                .push("simple_projection without projection_class_embeddings_input_dim".into()),
            Some(other) => problems.push(format!("class_embed_type={other}")),
        }
        if self.resnet_time_scale_shift != "default" {
            problems.push(format!(
                "resnet_time_scale_shift={}",
                self.resnet_time_scale_shift
            ));
        }
        if self.time_embedding_type != "positional" {
            problems.push(format!("time_embedding_type={}", self.time_embedding_type));
        }
        if self.act_fn != "silu" && self.act_fn != "swish" {
            problems.push(format!("act_fn={}", self.act_fn));
        }
        if self.time_cond_proj_dim.is_some() {
            problems.push("time_cond_proj_dim".to_string());
        }
        if self.conv_in_kernel != 3 || self.conv_out_kernel != 3 {
            problems.push("conv kernels other than 3".to_string());
        }
        let only_cross = match &self.only_cross_attention {
            serde_json::Value::Bool(flag) => *flag,
            serde_json::Value::Array(flags) => {
                flags.iter().any(|flag| flag.as_bool() == Some(true))
            }
            _ => false,
        };
        if only_cross {
            problems.push("only_cross_attention".to_string());
        }
        if let Some(mid) = &self.mid_block_type
            && mid != "UNetMidBlock2DCrossAttn"
        {
            problems.push(format!("mid_block_type={mid}"));
        }
        for kind in self.down_block_types.iter().chain(&self.up_block_types) {
            if !matches!(
                kind.as_str(),
                "DownBlock2D" | "CrossAttnDownBlock2D" | "UpBlock2D" | "CrossAttnUpBlock2D"
            ) {
                problems.push(format!("block type {kind}"));
            }
        }
        if self.down_block_types.len() != self.block_out_channels.len()
            || self.up_block_types.len() != self.block_out_channels.len()
        {
            problems.push("block type lists and block_out_channels differ in length".to_string());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(format!("unsupported UNet options: {}", problems.join(", ")))
        }
    }
}

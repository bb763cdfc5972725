//! The real cvssp/audioldm2 component configs (shared/research/components.md §3) build the
//! modules diffusers builds: same tensor names, shapes and parameter counts. Weights are
//! stride-0 zero views, so nothing real-sized is allocated.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Result, Shape, Tensor};
use candle_nn::VarBuilder;
use candle_nn::var_builder::SimpleBackend;
use foley::engine::models::clap_text::{ClapConfig, ClapTextModel};
use foley::engine::models::gpt2::{Gpt2Config, Gpt2Model};
use foley::engine::models::hifigan::{HifiGan, HifiGanConfig};
use foley::engine::models::projection::{ProjectionConfig, ProjectionModel};
use foley::engine::models::t5::{T5Config, T5Encoder};
use foley::engine::models::unet::{UNet2DConditionModel, UNetConfig};
use foley::engine::models::vae::{VaeConfig, VaeDecoder};

type Requested = BTreeMap<String, Vec<usize>>;

/// Records every tensor a module asks for and hands out zero views of the requested shape.
#[derive(Default, Clone)]
struct Recorder(Arc<Mutex<Requested>>);

impl SimpleBackend for Recorder {
    fn get(
        &self,
        shape: Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        device: &Device,
    ) -> Result<Tensor> {
        self.0
            .lock()
            .unwrap()
            .insert(name.to_string(), shape.dims().to_vec());
        Tensor::zeros(1, dtype, device)?
            .reshape(vec![1; shape.rank()])?
            .broadcast_as(shape)
    }

    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> Result<Tensor> {
        candle_core::bail!("unexpected unchecked load of {name}")
    }

    fn contains_tensor(&self, _: &str) -> bool {
        false
    }
}

/// Builds a module on a recorder and returns what it requested.
fn record<T>(build: impl FnOnce(VarBuilder) -> Result<T>) -> Requested {
    let recorder = Recorder::default();
    let vb = VarBuilder::from_backend(Box::new(recorder.clone()), DType::F32, Device::Cpu);
    build(vb).expect("module builds from the real config");
    recorder.0.lock().unwrap().clone()
}

fn millions(requested: &Requested) -> f64 {
    requested
        .values()
        .map(|shape| shape.iter().product::<usize>())
        .sum::<usize>() as f64
        / 1e6
}

fn assert_params(requested: &Requested, expected_millions: f64, what: &str) {
    let actual = millions(requested);
    assert!(
        (actual - expected_millions).abs() < 0.1,
        "{what}: {actual:.2} M parameters, diffusers has {expected_millions} M"
    );
}

#[test]
fn audioldm2_unet_matches_the_real_checkpoint_layout() {
    let config: UNetConfig = serde_json::from_str(
        r#"{"_class_name": "AudioLDM2UNet2DConditionModel", "act_fn": "silu", "attention_head_dim": 8,
        "block_out_channels": [128, 256, 384, 640], "class_embed_type": null, "class_embeddings_concat": false,
        "cross_attention_dim": [[null, 768, 1024], [null, 768, 1024], [null, 768, 1024], [null, 768, 1024]],
        "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
        "downsample_padding": 1, "flip_sin_to_cos": true, "freq_shift": 0, "in_channels": 8, "layers_per_block": 2,
        "mid_block_scale_factor": 1, "norm_eps": 1e-05, "norm_num_groups": 32, "num_attention_heads": null,
        "num_class_embeds": null, "only_cross_attention": false, "out_channels": 8,
        "projection_class_embeddings_input_dim": null, "resnet_time_scale_shift": "default", "sample_size": 256,
        "transformer_layers_per_block": 1, "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D",
        "CrossAttnUpBlock2D", "UpBlock2D"], "upcast_attention": false, "use_linear_projection": false}"#,
    )
    .unwrap();
    let requested = record(|vb| UNet2DConditionModel::new(&config, vb));
    assert_eq!(requested.len(), 1520, "state-dict tensors");
    assert_params(&requested, 346.9, "UNet");
    let shape = |name: &str| {
        requested
            .get(name)
            .unwrap_or_else(|| panic!("{name} not requested"))
            .clone()
    };
    assert_eq!(
        shape("down_blocks.1.attentions.1.transformer_blocks.0.attn2.to_k.weight"),
        [256, 768]
    );
    assert_eq!(
        shape("down_blocks.1.attentions.2.transformer_blocks.0.attn2.to_k.weight"),
        [256, 1024]
    );
    assert_eq!(
        shape("down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight"),
        [256, 256]
    );
    assert_eq!(
        shape("mid_block.attentions.2.proj_out.weight"),
        [640, 640, 1, 1]
    );
    assert_eq!(
        shape("up_blocks.0.attentions.8.proj_in.weight"),
        [640, 640, 1, 1]
    );
}

#[test]
fn inferred_audioldm2_large_layout_has_the_published_size() {
    // components.md §3.2: [[null, 768, 1024, null]] x 4 with two transformer layers per block
    // is the layout whose size matches the published 2.87 GB UNet file.
    let config: UNetConfig = serde_json::from_str(
        r#"{"attention_head_dim": 8, "block_out_channels": [128, 256, 384, 640],
        "cross_attention_dim": [[null, 768, 1024, null], [null, 768, 1024, null], [null, 768, 1024, null],
        [null, 768, 1024, null]], "transformer_layers_per_block": 2,
        "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
        "in_channels": 8, "out_channels": 8, "layers_per_block": 2, "sample_size": 256,
        "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"]}"#,
    )
    .unwrap();
    let requested = record(|vb| UNet2DConditionModel::new(&config, vb));
    assert_params(&requested, 718.0, "AudioLDM 2 large UNet");
    assert_eq!(
        requested["up_blocks.0.attentions.11.transformer_blocks.1.attn2.to_k.weight"],
        [640, 640],
        "the fourth transformer of a layer is a self-attention one"
    );
}

#[test]
fn audioldm_unets_match_the_published_sizes() {
    // components.md §3.1 / §3.10: UNet2DConditionModel with the CLAP class embedding.
    for (channels, expected) in [
        ([128, 256, 384, 640], 185.0),
        ([192, 384, 576, 960], 416.0),
        ([256, 512, 768, 1280], 739.1),
    ] {
        let config: UNetConfig = serde_json::from_value(serde_json::json!({
            "block_out_channels": channels, "cross_attention_dim": channels, "attention_head_dim": 8,
            "class_embed_type": "simple_projection", "projection_class_embeddings_input_dim": 512,
            "class_embeddings_concat": true, "in_channels": 8, "out_channels": 8, "layers_per_block": 2,
            "sample_size": 128,
            "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
            "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"]
        }))
        .unwrap();
        let requested = record(|vb| UNet2DConditionModel::new(&config, vb));
        assert_params(&requested, expected, &format!("AudioLDM UNet {channels:?}"));
        assert_eq!(
            requested["down_blocks.0.resnets.0.time_emb_proj.weight"],
            [channels[0], 8 * channels[0]]
        );
    }
}

#[test]
fn vae_decoder_and_vocoder_match_the_real_checkpoint() {
    let vae: VaeConfig = serde_json::from_str(
        r#"{"in_channels": 1, "out_channels": 1, "latent_channels": 8, "block_out_channels": [128, 256, 512],
        "layers_per_block": 2, "norm_num_groups": 32, "scaling_factor": 0.4110932946205139,
        "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
        "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"], "sample_size": 1024}"#,
    )
    .unwrap();
    assert_eq!(vae.scale_factor(), 4);
    assert_params(
        &record(|vb| VaeDecoder::new(&vae, vb)),
        33.0,
        "VAE decoder + post_quant_conv",
    );

    let vocoder: HifiGanConfig = serde_json::from_str(
        r#"{"model_in_dim": 64, "sampling_rate": 16000, "upsample_initial_channel": 1024,
        "upsample_rates": [5, 4, 2, 2, 2], "upsample_kernel_sizes": [16, 16, 8, 4, 4],
        "resblock_kernel_sizes": [3, 7, 11], "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]],
        "leaky_relu_slope": 0.1, "normalize_before": false}"#,
    )
    .unwrap();
    assert_eq!(vocoder.upsample_factor(), 160);
    assert_params(&record(|vb| HifiGan::new(&vocoder, vb)), 55.26, "HiFi-GAN");
}

#[test]
fn text_side_matches_the_real_checkpoint() {
    let clap: ClapConfig = serde_json::from_str(
        r#"{"projection_dim": 512, "text_config": {"vocab_size": 50265, "hidden_size": 768,
        "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072, "hidden_act": "gelu",
        "max_position_embeddings": 514, "type_vocab_size": 1, "layer_norm_eps": 1e-12, "pad_token_id": 1,
        "projection_hidden_act": "relu"}}"#,
    )
    .unwrap();
    let text = clap.text().unwrap();
    assert_params(
        &record(|vb| ClapTextModel::new(&text, vb)),
        125.3,
        "CLAP text + projection",
    );

    let t5: T5Config = serde_json::from_str(
        r#"{"d_model": 1024, "d_kv": 64, "d_ff": 2816, "num_layers": 24, "num_heads": 16,
        "feed_forward_proj": "gated-gelu", "relative_attention_num_buckets": 32,
        "relative_attention_max_distance": 128, "layer_norm_epsilon": 1e-06, "vocab_size": 32128}"#,
    )
    .unwrap();
    assert_params(
        &record(|vb| T5Encoder::new(&t5, vb)),
        341.2,
        "Flan-T5-large encoder",
    );

    let gpt2: Gpt2Config = serde_json::from_str(
        r#"{"n_embd": 768, "n_head": 12, "n_layer": 12, "n_positions": 1024,
        "activation_function": "gelu_new", "layer_norm_epsilon": 1e-05, "max_new_tokens": 8}"#,
    )
    .unwrap();
    let requested = record(|vb| Gpt2Model::new(&gpt2, vb));
    // diffusers' 124.4 M includes the token embedding, which generation from embeddings never reads.
    assert_params(&requested, 124.44 - 38.6, "GPT-2 without wte");
    assert!(
        requested.keys().all(|name| name.starts_with("h.")
            || name.starts_with("wpe")
            || name.starts_with("ln_f"))
    );

    let projection: ProjectionConfig = serde_json::from_str(
        r#"{"text_encoder_dim": 512, "text_encoder_1_dim": 1024, "langauge_model_dim": 768}"#,
    )
    .unwrap();
    let requested = record(|vb| ProjectionModel::new(&projection, vb));
    assert_eq!(
        requested
            .values()
            .map(|s| s.iter().product::<usize>())
            .sum::<usize>(),
        1_184_256
    );
}

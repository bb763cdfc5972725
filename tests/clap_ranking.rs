//! CLAP audio scoring against transformers/diffusers/librosa references
//! (`tests/fixtures/reference/musicldm-tiny{,-deep}/ranking.safetensors`).

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use foley::engine::dsp::clap_features::{ClapFeatureExtractor, ClapFeatureExtractorConfig};
use foley::engine::dsp::resample::resample;
use foley::engine::models::clap_audio::{ClapAudioModel, ClapModelAudioConfig, rank_waveforms};

const VARIANTS: [&str; 2] = ["musicldm-tiny", "musicldm-tiny-deep"];

/// The crate's own `tests/fixtures`, else the main checkout's (this file was written in a scratch
/// crate).
fn fixtures() -> PathBuf {
    let own = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures"));
    if own
        .join("reference/musicldm-tiny/ranking.safetensors")
        .exists()
    {
        own
    } else {
        PathBuf::from("/work/main/tests/fixtures")
    }
}

fn reference(variant: &str) -> HashMap<String, Tensor> {
    let path = fixtures().join(format!("reference/{variant}/ranking.safetensors"));
    candle_core::safetensors::load(&path, &Device::Cpu).expect("ranking.safetensors")
}

fn model(variant: &str) -> ClapAudioModel {
    let dir = fixtures().join(variant).join("text_encoder");
    let text = std::fs::read_to_string(dir.join("config.json")).expect("config.json");
    let config: ClapModelAudioConfig = serde_json::from_str(&text).expect("ClapModel config");
    let audio = config.audio();
    let tensors = candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu)
        .expect("model.safetensors");
    let vb = VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu);
    ClapAudioModel::new(&audio, config.projection_dim, vb).expect("ClapAudioModel")
}

fn extractor(variant: &str) -> ClapFeatureExtractor {
    let path = fixtures()
        .join(variant)
        .join("feature_extractor/preprocessor_config.json");
    let text = std::fs::read_to_string(path).expect("preprocessor_config.json");
    let config: ClapFeatureExtractorConfig = serde_json::from_str(&text).expect("config");
    ClapFeatureExtractor::new(&config).expect("extractor")
}

fn flat(tensor: &Tensor) -> Vec<f32> {
    tensor
        .to_dtype(DType::F32)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1())
        .expect("f32 values")
}

/// (max abs difference, ‖a − b‖ / ‖b‖).
fn compare(actual: &Tensor, expected: &Tensor) -> (f32, f64) {
    assert_eq!(actual.dims(), expected.dims());
    let (a, b) = (flat(actual), flat(expected));
    let mut max = 0f32;
    let (mut diff, mut norm) = (0f64, 0f64);
    for (x, y) in a.iter().zip(&b) {
        max = max.max((x - y).abs());
        diff += ((x - y) as f64).powi(2);
        norm += (*y as f64).powi(2);
    }
    (max, (diff / norm).sqrt())
}

fn rows(tensor: &Tensor) -> Vec<Vec<f32>> {
    tensor.to_vec2::<f32>().expect("rows")
}

#[test]
fn audio_embeds_from_reference_features() {
    for variant in VARIANTS {
        let reference = reference(variant);
        let embeds = model(variant)
            .audio_embeds(&reference["input_features"])
            .expect("audio_embeds");
        let (max, rel) = compare(&embeds, &reference["audio_embeds"]);
        println!("{variant}: audio_embeds max abs {max:.3e}, rel L2 {rel:.3e}");
        assert!(rel <= 1e-5, "{variant}: rel L2 {rel}");
    }
}

#[test]
fn input_features_from_reference_waveforms() {
    for variant in VARIANTS {
        let reference = reference(variant);
        let clips = rows(&reference["resampled"]);
        let clips: Vec<&[f32]> = clips.iter().map(Vec::as_slice).collect();
        let features = extractor(variant)
            .input_features(&clips, &Device::Cpu)
            .expect("features");
        let (max, rel) = compare(&features, &reference["input_features"]);
        println!("{variant}: input_features max abs {max:.3e} dB, rel L2 {rel:.3e}");
        assert!(rel <= 1e-5, "{variant}: rel L2 {rel}");
    }
}

#[test]
fn resampling_matches_soxr_hq() {
    for variant in VARIANTS {
        let reference = reference(variant);
        let resampled: Vec<f32> = rows(&reference["unsorted"])
            .iter()
            .flat_map(|clip| resample(clip, 16_000, 48_000))
            .collect();
        let expected = &reference["resampled"];
        let ours = Tensor::from_vec(resampled, expected.dims(), &Device::Cpu).expect("tensor");
        let (max, rel) = compare(&ours, expected);
        println!("{variant}: resampled max abs {max:.3e}, rel L2 {rel:.3e}");
        assert!(rel <= 1e-6, "{variant}: rel L2 {rel}");
    }
}

#[test]
fn whole_chain_ranks_like_diffusers() {
    for variant in VARIANTS {
        let reference = reference(variant);
        let model = model(variant);
        let extractor = extractor(variant);
        let clips: Vec<Vec<f32>> = rows(&reference["unsorted"])
            .iter()
            .map(|clip| resample(clip, 16_000, extractor.sampling_rate()))
            .collect();
        let clips: Vec<&[f32]> = clips.iter().map(Vec::as_slice).collect();
        let features = extractor
            .input_features(&clips, &Device::Cpu)
            .expect("features");
        let embeds = model.audio_embeds(&features).expect("audio_embeds");
        let logits = model
            .logits_per_text(&reference["text_embeds"], &embeds)
            .expect("logits");
        let (max, rel) = compare(&logits, &reference["logits_per_text"]);
        let expected_order: Vec<i64> = reference["order"].to_vec1().expect("order");
        let order = rank_waveforms(&logits, clips.len()).expect("rank");
        let ours = rows(&logits).remove(0);
        let theirs = rows(&reference["logits_per_text"]).remove(0);
        let margins: Vec<f32> = order.windows(2).map(|w| ours[w[0]] - ours[w[1]]).collect();
        println!(
            "{variant}: logits {ours:?} vs {theirs:?} (max abs {max:.3e}, rel {rel:.3e}); \
             order {order:?}, margins between neighbours {margins:?}"
        );
        let expected_order: Vec<usize> = expected_order.iter().map(|&i| i as usize).collect();
        assert_eq!(order, expected_order, "{variant}");
    }
}

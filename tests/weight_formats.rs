//! The weight formats users meet on the hub load to the same model: a PyTorch pickle, an fp16
//! variant file and float64-stored tensors (tools/reference/build_format_fixtures.py).

mod common;

use candle_core::{DType, Device};
use common::{Reference, assert_close, fixtures};
use foley::engine::models::hifigan::{HifiGan, HifiGanConfig};
use foley::engine::weights::Component;

fn vocoder_output(folder: &str) -> candle_core::Tensor {
    let component = Component::new(&fixtures().join("formats"), folder).unwrap();
    let config: HifiGanConfig = component.config().unwrap();
    let vocoder = component
        .build(DType::F32, &Device::Cpu, &["mean", "scale"], |vb| {
            HifiGan::new(&config, vb)
        })
        .unwrap_or_else(|error| panic!("{folder}: {error}"));
    let reference = Reference::load("audioldm2-tiny", "vocoder");
    vocoder.forward(&reference.f32("mel")).unwrap()
}

#[test]
fn pickle_and_float64_weights_give_the_float32_result() {
    let expected = Reference::load("audioldm2-tiny", "vocoder").f32("waveform");
    for folder in ["vocoder-bin", "vocoder-f64"] {
        assert_close(&vocoder_output(folder), &expected, 1e-6, folder);
    }
}

#[test]
fn fp16_variant_loads_when_it_is_the_only_file() {
    let expected = Reference::load("audioldm2-tiny", "vocoder").f32("waveform");
    // Half-precision weights: close, not equal.
    assert_close(
        &vocoder_output("vocoder-fp16"),
        &expected,
        1e-2,
        "vocoder-fp16",
    );
}

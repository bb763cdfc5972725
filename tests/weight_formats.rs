//! The weight formats users meet on the hub load to the same model: a PyTorch pickle, an fp16
//! variant file and float64-stored tensors (tools/reference/build_format_fixtures.py), and
//! safetensors whose f32 data the weights borrow from the mapped file or, misaligned, copy.

mod common;

use candle_core::{DType, Device};
use common::{Reference, assert_close, fixtures};
use foley::engine::models::hifigan::{HifiGan, HifiGanConfig};
use foley::engine::weights::Component;

/// As in the `foley` binary: f32 weights borrow their mapped files where they can.
#[global_allocator]
static ALLOCATOR: foley::mapped_alloc::MappedAware<std::alloc::System> =
    foley::mapped_alloc::MappedAware(std::alloc::System);

fn vocoder_output(folder: &str) -> candle_core::Tensor {
    vocoder_output_in(&fixtures().join("formats"), folder)
}

fn vocoder_output_in(root: &std::path::Path, folder: &str) -> candle_core::Tensor {
    let component = Component::new(root, folder).unwrap();
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

/// The tiny vocoder's safetensors as shipped (data 8-byte aligned: borrowed from the mapping) and
/// with its header padded by 1–3 bytes (f32 data off its alignment: copied) give the reference
/// waveform alike.
#[test]
fn aligned_safetensors_are_borrowed_and_misaligned_ones_copied_to_the_same_result() {
    let expected = Reference::load("audioldm2-tiny", "vocoder").f32("waveform");
    let shipped = fixtures().join("audioldm2-tiny");
    assert_close(
        &vocoder_output_in(&shipped, "vocoder"),
        &expected,
        1e-6,
        "shipped",
    );
    let bytes = std::fs::read(shipped.join("vocoder/model.safetensors")).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    for padding in 1..=3 {
        let root = tempfile::tempdir().unwrap();
        let folder = root.path().join("vocoder");
        std::fs::create_dir(&folder).unwrap();
        std::fs::copy(
            shipped.join("vocoder/config.json"),
            folder.join("config.json"),
        )
        .unwrap();
        // JSON allows trailing spaces; the data section moves by `padding` bytes.
        let mut padded = ((header_len + padding) as u64).to_le_bytes().to_vec();
        padded.extend_from_slice(&bytes[8..8 + header_len]);
        padded.extend(std::iter::repeat_n(b' ', padding));
        padded.extend_from_slice(&bytes[8 + header_len..]);
        std::fs::write(folder.join("model.safetensors"), padded).unwrap();
        assert_close(
            &vocoder_output_in(root.path(), "vocoder"),
            &expected,
            1e-6,
            &format!("padded by {padding}"),
        );
    }
}

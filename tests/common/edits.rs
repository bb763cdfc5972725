//! The editing reference cases (`tests/fixtures/reference/editing/`) and how to read them.

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use foley::engine::pipeline::{
    CancelFlag, Clip, EncodeMode, InputAudio, Pipeline, Regions, Request, Task,
};
use serde_json::Value;

use super::{fixtures, model_dir, read_json, relative_l2_slices};

pub const EDIT_VARIANTS: [&str; 4] = [
    "audioldm-tiny-mel",
    "audioldm-tiny",
    "musicldm-tiny",
    "audioldm2-tiny",
];

pub fn reference_dir() -> PathBuf {
    fixtures().join("reference/editing")
}

pub fn tensors(name: &str) -> HashMap<String, Tensor> {
    let path = reference_dir().join(format!("{name}.safetensors"));
    candle_core::safetensors::load(&path, &Device::Cpu)
        .unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

pub fn values(tensors: &HashMap<String, Tensor>, key: &str) -> Vec<f32> {
    tensors
        .get(key)
        .unwrap_or_else(|| panic!("no tensor {key}"))
        .to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

pub fn channels(tensors: &HashMap<String, Tensor>, key: &str) -> Vec<Vec<f32>> {
    let tensor = tensors[key].to_dtype(DType::F32).unwrap();
    let tensor = if tensor.rank() == 1 {
        tensor.unsqueeze(0).unwrap()
    } else {
        tensor
    };
    tensor.to_vec2().unwrap()
}

pub fn task_of(case: &Value, input: InputAudio) -> Task {
    let encode_mode: EncodeMode = case["encode_mode"]
        .as_str()
        .unwrap_or("sample")
        .parse()
        .unwrap();
    let strength = case["strength"].as_f64().unwrap_or(1.0);
    match case["task"].as_str().unwrap() {
        "audio_to_audio" => Task::AudioToAudio {
            input,
            strength,
            encode_mode,
        },
        "inpaint" => Task::Inpaint {
            input,
            regions: Regions {
                time: case["inpaint"]
                    .as_array()
                    .map(|ranges| {
                        ranges
                            .iter()
                            .map(|range| (range[0].as_f64().unwrap(), range[1].as_f64().unwrap()))
                            .collect()
                    })
                    .unwrap_or_default(),
                above_hz: case["regenerate_above_hz"].as_f64(),
            },
            strength,
            encode_mode,
        },
        "variation" => Task::Variation { input },
        other => panic!("unknown task {other}"),
    }
}

pub fn request_of(case: &Value, task: Task) -> Request {
    Request {
        prompt: case["prompt"].as_str().unwrap_or("").to_string(),
        negative_prompt: case["negative_prompt"].as_str().map(str::to_string),
        seed: case["seed"].as_u64().unwrap(),
        steps: case["steps"].as_u64().unwrap() as usize,
        guidance: case["guidance"].as_f64().unwrap(),
        duration: case["duration"].as_f64(),
        scheduler: case["scheduler"].as_str().unwrap().parse().unwrap(),
        waveforms: case["waveforms"].as_u64().unwrap_or(1) as usize,
        task,
    }
}

pub fn run(pipeline: &Pipeline, request: &Request) -> (Clip, Option<Tensor>) {
    let mut last = None;
    let clip = pipeline
        .generate(
            request,
            &mut |progress| last = Some(progress.latents.clone()),
            &CancelFlag::new(),
        )
        .unwrap();
    (clip, last)
}

/// Runs every editing reference case (A2A-4/5, INP-4, super-resolution, VAR) on `device` and
/// checks each waveform within `tolerance` relative L2 and diffusers' number of UNet calls.
/// Returns how many cases ran.
pub fn check_edits_on(device: &Device, tolerance: f64) -> usize {
    let mut count = 0;
    for variant in EDIT_VARIANTS {
        let reference = tensors(variant);
        let json = read_json(&reference_dir().join(format!("{variant}.json")));
        let pipeline = Pipeline::load(&model_dir(variant), device, DType::F32).unwrap();
        for case in json["cases"].as_array().unwrap() {
            let name = case["name"].as_str().unwrap();
            let input_key = case["input"].as_str().unwrap();
            let input = InputAudio::new(
                channels(&reference, input_key),
                case["input_rate"].as_u64().unwrap() as u32,
                input_key,
            );
            let request = request_of(case, task_of(case, input));
            let (clip, _) = run(&pipeline, &request);
            let expected = channels(&reference, &format!("{name}.waveform"));
            assert_eq!(clip.waveforms.len(), expected.len(), "{variant}/{name}");
            for (actual, expected) in clip.waveforms.iter().zip(&expected) {
                let error = relative_l2_slices(actual, expected);
                assert!(
                    error <= tolerance,
                    "{variant}/{name}: relative L2 {error:.3e}"
                );
            }
            if let Some(calls) = case["unet_calls"].as_u64() {
                assert_eq!(clip.denoising_steps as u64, calls, "{variant}/{name}");
            }
            count += 1;
        }
    }
    count
}

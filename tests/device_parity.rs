//! The path every non-CPU device runs, proven without one, and half precision bounded.
//!
//! `FOLEY_TEST_DEVICE` picks the device (`cpu` by default; `cuda` or `metal` in a GPU build,
//! which is how `packaging/gpu/check/run.sh` checks a GPU). On the CPU the fast kernels are
//! switched off (`kernels::with_portable_ops`), so these tests run candle's own ops: exactly
//! what CUDA and Metal execute, against the same diffusers references as the CPU parity tests.
//! f16 and bf16 runs of every family are bounded by diffusers' own drift from f32 for the same
//! request (`tools/reference/build_precision_fixtures.py`).

mod common;

use candle_core::{DType, Device};
use common::{check_e2e_on, e2e_cases, edits, fixtures, model_dir, read_json, relative_l2_slices};
use foley::engine::device::DeviceKind;
use foley::engine::kernels::gemm_bf16::{Engine, available};
use foley::engine::kernels::{with_bf16_products, with_portable_ops};
use foley::engine::pipeline::{
    CancelFlag, EncodeMode, InputAudio, Pipeline, Regions, Request, Task,
};

const ALL_VARIANTS: [&str; 6] = [
    "audioldm-tiny",
    "audioldm-tiny-deep",
    "musicldm-tiny",
    "musicldm-tiny-deep",
    "audioldm2-tiny",
    "audioldm2-tiny-deep",
];

fn device() -> Device {
    let name = std::env::var("FOLEY_TEST_DEVICE").unwrap_or_else(|_| "cpu".into());
    let kind: DeviceKind = name.parse().unwrap();
    let device = kind
        .open()
        .unwrap_or_else(|error| panic!("FOLEY_TEST_DEVICE={name}: {error}"));
    eprintln!("device under test: {device:?}");
    device
}

/// The f32 end-to-end bound: float reassociation on the CPU; on a GPU, reductions in another
/// order (and TF32, if candle's matmul enables it: `packaging/gpu/check/run.sh` reports it).
fn f32_tolerance(device: &Device) -> f64 {
    if device.is_cpu() { 1e-4 } else { 1e-3 }
}

#[test]
fn portable_ops_match_diffusers_end_to_end() {
    let device = device();
    with_portable_ops(|| {
        for variant in ALL_VARIANTS {
            check_e2e_on(variant, 8, &device, f32_tolerance(&device));
        }
    });
}

#[test]
fn portable_ops_match_the_editing_references() {
    let device = device();
    let count = with_portable_ops(|| edits::check_edits_on(&device, f32_tolerance(&device)));
    assert!(count >= 20, "only {count} editing cases");
}

/// |STFT| with 64-sample periodic-Hann frames, hop 16, centred with reflection (`torch.stft`).
fn magnitudes(waveform: &[f32]) -> Vec<f64> {
    const N: usize = 64;
    const HOP: usize = 16;
    let len = waveform.len() as isize;
    let reflect = |index: isize| -> f64 {
        let index = index.abs();
        let index = if index >= len {
            2 * (len - 1) - index
        } else {
            index
        };
        waveform[index as usize] as f64
    };
    let window: Vec<f64> = (0..N)
        .map(|n| 0.5 - 0.5 * (2.0 * std::f64::consts::PI * n as f64 / N as f64).cos())
        .collect();
    let frames = 1 + waveform.len() / HOP;
    let mut out = Vec::with_capacity(frames * (N / 2 + 1));
    for frame in 0..frames {
        let start = (frame * HOP) as isize - (N / 2) as isize;
        for bin in 0..=N / 2 {
            let (mut re, mut im) = (0.0, 0.0);
            for (n, weight) in window.iter().enumerate() {
                let sample = reflect(start + n as isize) * weight;
                let phase = -2.0 * std::f64::consts::PI * (bin * n) as f64 / N as f64;
                re += sample * phase.cos();
                im += sample * phase.sin();
            }
            out.push(re.hypot(im));
        }
    }
    out
}

/// Relative L2 of the log spectra, floored 60 dB below the reference's peak, as
/// `build_precision_fixtures.py` measures it: audible drift, not near-silent bins' rounding.
fn log_spectrum_drift(waveform: &[f32], reference: &[f32]) -> f64 {
    let (ours, exact) = (magnitudes(waveform), magnitudes(reference));
    let floor = exact.iter().cloned().fold(0.0, f64::max) * 1e-3;
    let log =
        |values: &[f64]| -> Vec<f32> { values.iter().map(|v| v.max(floor).ln() as f32).collect() };
    relative_l2_slices(&log(&ours), &log(&exact))
}

/// Half precision rounds the same products as diffusers does, in a different order, so the
/// two drifts agree in size, not digit for digit: measured on the CPU, Foley's mean drift is
/// 0.84–1.23× diffusers'. Accumulating in f16 (candle's own CPU f16 convolutions, 1.4–2.7×)
/// or a wrong cast falls outside.
const DRIFT_MARGIN: f64 = 1.5;

/// Every deterministic case at the model's own length, per family, in f16 and bf16 against
/// f32 on the same device: the mean drift of the waveform and of its log spectrum within
/// [`DRIFT_MARGIN`] of diffusers' mean drift for the same cases; on the CPU also the bf16
/// products mode, within diffusers' bf16 autocast drift.
#[test]
fn half_precision_drift_is_like_diffusers() {
    let device = device();
    let precision = read_json(&fixtures().join("reference/precision.json"));
    let families = precision["families"].as_object().unwrap();
    assert_eq!(families.len(), 3, "one entry per family");
    for (variant, recorded) in families {
        let recorded = recorded.as_object().unwrap();
        let cases: Vec<_> = e2e_cases(variant)
            .into_iter()
            .filter(|case| recorded.contains_key(&case.name))
            .collect();
        assert_eq!(cases.len(), recorded.len(), "{variant}: cases missing");
        let generate = |dtype: DType| -> Vec<Vec<f32>> {
            let pipeline = Pipeline::load(&model_dir(variant), &device, dtype).unwrap();
            cases
                .iter()
                .map(|case| {
                    let clip = pipeline
                        .generate(&case.request, &mut |_| {}, &CancelFlag::new())
                        .unwrap_or_else(|error| panic!("{variant} {dtype:?}: {error}"));
                    clip.waveforms[0].clone()
                })
                .collect()
        };
        let exact = generate(DType::F32);
        let mut modes = vec![
            ("f16", "f16", DType::F16, None, DRIFT_MARGIN),
            ("bf16", "bf16", DType::BF16, None, DRIFT_MARGIN),
        ];
        // The CPU's bf16 mode (f32 weights, bf16 products) drifts like diffusers' autocast, which
        // rounds the same operands: 0.38–0.75× its waveform drift on every engine, and its log
        // spectrum's 0.37–0.66× on the emulated Sapphire Rapids' AMX and AVX512-BF16. The
        // emulation (the hardware's numbers up to the order of the sums) moved MusicLDM's log
        // spectrum to 1.06× on Zen 3's f32 gemm and 1.12× on AVX-512's: the tiny random models
        // amplify the order of the sums, hence 25 % room.
        if device.is_cpu() {
            for engine in available().into_iter().chain([Engine::Emulated]) {
                modes.push((
                    "bf16 products",
                    "bf16_autocast",
                    DType::F32,
                    Some(engine),
                    1.25,
                ));
            }
        }
        for (name, recorded_name, dtype, products, margin) in modes {
            let half = with_bf16_products(products, || generate(dtype));
            let (mut ours, mut ours_mel, mut theirs, mut theirs_mel) = (0.0, 0.0, 0.0, 0.0);
            for ((case, half), exact) in cases.iter().zip(&half).zip(&exact) {
                let drift = relative_l2_slices(half, exact);
                // Non-zero: the run really computed in half precision.
                assert!(
                    drift > 1e-6,
                    "{variant} {name} {}: no drift at all",
                    case.name
                );
                ours += drift;
                ours_mel += log_spectrum_drift(half, exact);
                let recorded = &recorded[&case.name][recorded_name];
                theirs += recorded["waveform"].as_f64().unwrap();
                theirs_mel += recorded["log_spectrum"].as_f64().unwrap();
            }
            let count = cases.len() as f64;
            let (ours, ours_mel) = (ours / count, ours_mel / count);
            let (theirs, theirs_mel) = (theirs / count, theirs_mel / count);
            eprintln!(
                "{variant} {name} {products:?}: mean drift of {count} cases: waveform {ours:.2e} (diffusers {recorded_name} {theirs:.2e}, ×{:.2}), log-spectrum {ours_mel:.2e} (diffusers {theirs_mel:.2e}, ×{:.2})",
                ours / theirs,
                ours_mel / theirs_mel
            );
            assert!(
                ours <= margin * theirs,
                "{variant} {name}: waveform drift {ours:.3e} > {margin} × diffusers' {theirs:.3e}"
            );
            assert!(
                ours_mel <= margin * theirs_mel,
                "{variant} {name}: log-spectrum drift {ours_mel:.3e} > {margin} × diffusers' {theirs_mel:.3e}"
            );
        }
    }
}

/// The UNet, VAE and vocoder are dtype boundaries: f32 latents in, f32 out, whatever the
/// weights' dtype, so the scheduler's math stays in f32.
#[test]
fn half_precision_models_hand_back_f32() {
    let device = device();
    let pipeline = Pipeline::load(&model_dir("audioldm-tiny"), &device, DType::F16).unwrap();
    let case = &e2e_cases("audioldm-tiny")[0];
    let mut latent_dtypes = Vec::new();
    let clip = pipeline
        .generate(
            &case.request,
            &mut |progress| latent_dtypes.push(progress.latents.dtype()),
            &CancelFlag::new(),
        )
        .unwrap();
    assert!(!latent_dtypes.is_empty());
    assert!(latent_dtypes.iter().all(|dtype| *dtype == DType::F32));
    assert!(clip.waveforms[0].iter().all(|sample| sample.is_finite()));
}

/// Every task, and CLAP ranking, runs in f16 and bf16 (and, on the CPU, with bf16 products):
/// the VAE encoder, the CLAP audio branch and the editing blend meet half-precision weights
/// with f32 latents and audio.
#[test]
fn half_precision_runs_every_task_and_ranks() {
    let device = device();
    let base = e2e_cases("musicldm-tiny").remove(0).request;
    let tone: Vec<f32> = (0..4000)
        .map(|i| (i as f32 * 440.0 * std::f32::consts::TAU / 16000.0).sin() * 0.5)
        .collect();
    let input = InputAudio::new(vec![tone], 16000, "tone");
    let tasks = [
        Task::AudioToAudio {
            input: input.clone(),
            strength: 0.6,
            encode_mode: EncodeMode::Sample,
        },
        Task::Inpaint {
            input: input.clone(),
            regions: Regions {
                time: vec![(0.0, 0.005)],
                above_hz: None,
            },
            strength: 1.0,
            encode_mode: EncodeMode::Mean,
        },
        Task::Variation { input },
    ];
    // f16 and bf16 weights, and f32 weights with bf16 products (the CPU's bf16 mode).
    let mut modes = vec![(DType::F16, None), (DType::BF16, None)];
    if device.is_cpu() {
        modes.push((DType::F32, Some(Engine::Emulated)));
    }
    for (dtype, products) in modes {
        let run = || {
            let pipeline = Pipeline::load(&model_dir("musicldm-tiny"), &device, dtype).unwrap();
            let ranked = Request {
                waveforms: 2,
                ..base.clone()
            };
            let clip = pipeline
                .generate(&ranked, &mut |_| {}, &CancelFlag::new())
                .unwrap_or_else(|error| panic!("{dtype:?} {products:?} ranked: {error}"));
            let scores = clip.scores.expect("two waveforms are ranked");
            assert!(scores.iter().all(|score| score.is_finite()), "{scores:?}");
            for task in &tasks {
                let request = Request {
                    task: task.clone(),
                    ..base.clone()
                };
                let clip = pipeline
                    .generate(&request, &mut |_| {}, &CancelFlag::new())
                    .unwrap_or_else(|error| {
                        panic!("{dtype:?} {products:?} {:?}: {error}", task.summary())
                    });
                assert!(clip.waveforms[0].iter().all(|sample| sample.is_finite()));
                assert!(clip.waveforms[0].iter().any(|sample| *sample != 0.0));
            }
        };
        with_bf16_products(products, run);
    }
}

/// Stable Audio 3's eight reference cases (text-to-audio with and without guidance,
/// audio-to-audio, inpainting; distilled and base) on the device under test.
#[test]
fn portable_ops_match_stable_audio_3() {
    let device = device();
    let cases = read_json(&fixtures().join("reference/sa3/cases.json"));
    let references = common::Reference::load("sa3", "e2e");
    let input = foley::audio::wav_in::read_input_audio(&fixtures().join("reference/sa3/input.wav"))
        .unwrap();
    let mut checked = 0;
    with_portable_ops(|| {
        for case in cases["e2e"]["cases"].as_array().unwrap() {
            let name = case["name"].as_str().unwrap();
            let call = &case["call"];
            let fixture = std::path::Path::new(case["fixture"].as_str().unwrap());
            let pipeline = Pipeline::load(
                &model_dir(fixture.file_name().unwrap().to_str().unwrap()),
                &device,
                DType::F32,
            )
            .unwrap();
            let seconds = |value: &serde_json::Value| -> Vec<f64> {
                value
                    .as_array()
                    .map(|items| items.iter().map(|item| item.as_f64().unwrap()).collect())
                    .unwrap_or_else(|| vec![value.as_f64().unwrap()])
            };
            let task = if let Some(level) = call.get("init_noise_level") {
                Task::AudioToAudioFromNoise {
                    input: input.clone(),
                    init_noise_level: level.as_f64().unwrap(),
                }
            } else if let Some(starts) = call.get("mask_start_seconds") {
                Task::Inpaint {
                    input: input.clone(),
                    regions: Regions {
                        time: seconds(starts)
                            .into_iter()
                            .zip(seconds(&call["mask_end_seconds"]))
                            .collect(),
                        above_hz: None,
                    },
                    strength: 1.0,
                    encode_mode: EncodeMode::default(),
                }
            } else {
                Task::TextToAudio
            };
            let request = Request {
                prompt: call["prompt"].as_str().unwrap().into(),
                negative_prompt: call["negative_prompt"].as_str().map(String::from),
                seed: case["seed"].as_u64().unwrap(),
                steps: call["num_inference_steps"].as_u64().unwrap() as usize,
                guidance: call["guidance_scale"].as_f64().unwrap_or(1.0),
                duration: call["duration"].as_f64(),
                scheduler: foley::engine::schedulers::SchedulerKind::Ddim,
                waveforms: call["num_waveforms_per_prompt"].as_u64().unwrap() as usize,
                task,
            };
            let clip = pipeline
                .generate(&request, &mut |_| {}, &CancelFlag::new())
                .unwrap();
            let expected = common::interleaved(&references.f32(&format!("{name}.audios")));
            assert_eq!(clip.channels, 2);
            assert_eq!(clip.waveforms.len(), expected.len(), "{name}");
            for (actual, expected) in clip.waveforms.iter().zip(&expected) {
                let error = relative_l2_slices(actual, expected);
                eprintln!("portable {name}: relative L2 {error:.3e}");
                assert!(error <= f32_tolerance(&device), "{name}: {error:.3e}");
            }
            checked += 1;
        }
    });
    assert_eq!(checked, 8);
}

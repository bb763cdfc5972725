//! End to end: prompt → waveform equals diffusers' `AudioLDM2Pipeline` for the same seed,
//! for DDIM and DPM-Solver++, with and without a negative prompt, at two durations (one with
//! an odd latent height), on both fixture variants.

mod common;

use candle_core::{DType, Device};
use common::{
    Reference, VARIANTS, assert_close, fixtures, model_dir, read_json, relative_l2_slices,
};
use foley::engine::noise::TorchGenerator;
use foley::engine::pipeline::{AudioLdm2Pipeline, CancelFlag, Request};
use foley::engine::schedulers::SchedulerKind;
use foley::error::FoleyError;

pub const WAVEFORM_TOLERANCE: f64 = 1e-4;

struct Case {
    name: String,
    request: Request,
    latent_shape: Vec<usize>,
}

fn cases(variant: &str) -> Vec<Case> {
    let json = read_json(&fixtures().join("reference").join(variant).join("e2e.json"));
    let list = json.get("cases").unwrap_or(&json);
    list.as_array()
        .unwrap()
        .iter()
        .map(|case| {
            let scheduler = match case["scheduler"].as_str().unwrap() {
                "ddim" => SchedulerKind::Ddim,
                "dpmpp2m" | "dpm++2m" => SchedulerKind::DpmSolverMultistep,
                other => panic!("unknown scheduler {other} in e2e.json"),
            };
            Case {
                name: case["name"].as_str().unwrap().to_string(),
                request: Request {
                    prompt: case["prompt"].as_str().unwrap().to_string(),
                    negative_prompt: case["negative_prompt"].as_str().map(str::to_string),
                    seed: case["seed"].as_u64().unwrap(),
                    steps: case["steps"].as_u64().unwrap() as usize,
                    guidance: case["guidance"].as_f64().unwrap(),
                    // `null` means the pipeline's default length was used.
                    duration: case["audio_length_in_s_argument"].as_f64(),
                    scheduler,
                    waveforms: 1,
                },
                latent_shape: case["latent_shape"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|dim| dim.as_u64().unwrap() as usize)
                    .collect(),
            }
        })
        .collect()
}

#[test]
fn waveforms_match_diffusers() {
    for variant in VARIANTS {
        let pipe = AudioLdm2Pipeline::load(&model_dir(variant), &Device::Cpu, DType::F32).unwrap();
        let reference = Reference::load(variant, "e2e");
        let all = cases(variant);
        assert!(all.len() >= 8, "{variant}: expected the full case grid");
        assert!(
            all.iter().any(|case| case.latent_shape[2] % 2 == 1),
            "{variant}: no case with an odd latent height"
        );
        for case in all {
            let what = format!("{variant} {}", case.name);
            // The seed's noise is torch's, bit for bit.
            let numel: usize = case.latent_shape.iter().product();
            let noise = TorchGenerator::new(case.request.seed).randn_f32(numel);
            let expected_noise = reference.values(&format!("{}.initial_noise", case.name));
            assert!(
                noise
                    .iter()
                    .map(|v| v.to_bits())
                    .eq(expected_noise.iter().map(|v| v.to_bits())),
                "{what}: noise"
            );

            let mut step_errors = Vec::new();
            let clip = pipe
                .generate(
                    &case.request,
                    &mut |progress| {
                        let key = format!("{}.latents.{}", case.name, progress.step - 1);
                        step_errors
                            .push(common::relative_l2(progress.latents, &reference.f32(&key)));
                    },
                    &CancelFlag::new(),
                )
                .unwrap_or_else(|error| panic!("{what}: {error}"));
            assert_eq!(step_errors.len(), case.request.steps, "{what}: callbacks");
            for (step, error) in step_errors.iter().enumerate() {
                assert!(
                    *error <= WAVEFORM_TOLERANCE,
                    "{what}: latents after step {step} off by {error:.3e}"
                );
            }
            let expected = reference.values(&format!("{}.waveform", case.name));
            assert_eq!(clip.waveforms.len(), 1);
            let error = relative_l2_slices(&clip.waveforms[0], &expected);
            eprintln!("parity {what} waveform: relative L2 {error:.3e}");
            assert!(
                error <= WAVEFORM_TOLERANCE,
                "{what}: waveform relative L2 {error:.3e}"
            );
        }
    }
}

fn tiny_request() -> Request {
    Request {
        prompt: "A hammer hitting a wooden surface".into(),
        negative_prompt: None,
        seed: 42,
        steps: 3,
        guidance: 3.5,
        duration: None,
        scheduler: SchedulerKind::Ddim,
        waveforms: 1,
    }
}

#[test]
fn cancel_stops_between_steps() {
    let pipe = AudioLdm2Pipeline::load(&model_dir(VARIANTS[0]), &Device::Cpu, DType::F32).unwrap();
    let cancel = CancelFlag::new();
    let mut seen = 0;
    let result = pipe.generate(
        &tiny_request(),
        &mut |progress| {
            seen = progress.step;
            cancel.cancel();
        },
        &cancel,
    );
    assert!(matches!(result, Err(FoleyError::Cancelled)), "{result:?}");
    assert_eq!(seen, 1);
}

#[test]
fn guidance_off_runs_the_unconditional_free_path() {
    let pipe = AudioLdm2Pipeline::load(&model_dir(VARIANTS[0]), &Device::Cpu, DType::F32).unwrap();
    let request = Request {
        guidance: 1.0,
        ..tiny_request()
    };
    let clip = pipe
        .generate(&request, &mut |_| {}, &CancelFlag::new())
        .unwrap();
    assert!(clip.waveforms[0].iter().all(|v| v.is_finite()));
    let guided = pipe
        .generate(&tiny_request(), &mut |_| {}, &CancelFlag::new())
        .unwrap();
    assert!(relative_l2_slices(&clip.waveforms[0], &guided.waveforms[0]) > 1e-6);
}

#[test]
fn bad_requests_are_rejected_with_reasons() {
    let pipe = AudioLdm2Pipeline::load(&model_dir(VARIANTS[0]), &Device::Cpu, DType::F32).unwrap();
    let check = |request: Request, needle: &str| {
        let error = pipe
            .generate(&request, &mut |_| {}, &CancelFlag::new())
            .unwrap_err()
            .to_string();
        assert!(error.contains(needle), "expected '{needle}' in '{error}'");
    };
    check(
        Request {
            prompt: "   ".into(),
            ..tiny_request()
        },
        "prompt is empty",
    );
    check(
        Request {
            steps: 0,
            ..tiny_request()
        },
        "steps",
    );
    check(
        Request {
            guidance: f64::NAN,
            ..tiny_request()
        },
        "guidance",
    );
    check(
        Request {
            duration: Some(0.0),
            ..tiny_request()
        },
        "duration",
    );
    check(
        Request {
            duration: Some(-2.0),
            ..tiny_request()
        },
        "duration",
    );
    check(
        Request {
            duration: Some(1e-5),
            ..tiny_request()
        },
        "minimum",
    );
    check(
        Request {
            duration: Some(1e6),
            ..tiny_request()
        },
        "maximum",
    );
    check(
        Request {
            steps: 5000,
            ..tiny_request()
        },
        "num_train_timesteps",
    );
}

#[test]
fn long_prompt_is_truncated_with_a_warning() {
    let pipe = AudioLdm2Pipeline::load(&model_dir(VARIANTS[0]), &Device::Cpu, DType::F32).unwrap();
    let request = Request {
        prompt: "rain on a tin roof ".repeat(80),
        steps: 1,
        ..tiny_request()
    };
    let clip = pipe
        .generate(&request, &mut |_| {}, &CancelFlag::new())
        .unwrap();
    assert!(
        clip.warnings
            .iter()
            .any(|warning| warning.contains("longer than")),
        "{:?}",
        clip.warnings
    );
}

#[test]
fn latents_of_first_step_are_reproducible() {
    let pipe = AudioLdm2Pipeline::load(&model_dir(VARIANTS[0]), &Device::Cpu, DType::F32).unwrap();
    let run = || {
        let mut first = None;
        pipe.generate(
            &tiny_request(),
            &mut |progress| {
                if first.is_none() {
                    first = Some(progress.latents.clone());
                }
            },
            &CancelFlag::new(),
        )
        .unwrap();
        first.unwrap()
    };
    assert_close(&run(), &run(), 0.0, "same seed, same latents");
}

#[test]
fn pipeline_can_live_on_an_inference_thread() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<AudioLdm2Pipeline>();
    assert_send_sync::<CancelFlag>();
}

//! End to end: prompt → waveform equals diffusers' `AudioLDM2Pipeline` for the same seed,
//! for DDIM and DPM-Solver++, with and without a negative prompt, at two durations (one with
//! an odd latent height), on both fixture variants.

mod common;

use candle_core::{DType, Device};
use common::{VARIANTS, assert_close, model_dir, relative_l2_slices};
use foley::engine::pipeline::{AudioLdm2Pipeline, CancelFlag, Request};
use foley::engine::schedulers::SchedulerKind;
use foley::error::FoleyError;

#[test]
fn waveforms_match_diffusers() {
    for variant in VARIANTS {
        common::check_e2e(variant, 8);
    }
}

fn tiny_request() -> Request {
    Request {
        task: Default::default(),
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

#[test]
fn several_waveforms_are_ranked_by_clap_like_diffusers() {
    let variant = "audioldm2-tiny-deep";
    let pipe = AudioLdm2Pipeline::load(&model_dir(variant), &Device::Cpu, DType::F32).unwrap();
    let reference = common::Reference::load(variant, "ranking");
    let request = Request {
        waveforms: 3,
        steps: 4,
        ..tiny_request()
    };
    let unranked = pipe
        .generate_unranked(&request, &mut |_| {}, &CancelFlag::new())
        .unwrap();
    let unranked = candle_core::Tensor::new(unranked.waveforms, &Device::Cpu).unwrap();
    assert_close(
        &unranked,
        &reference.f32("unsorted"),
        common::WAVEFORM_TOLERANCE,
        "batch of 3",
    );
    let clip = pipe
        .generate(&request, &mut |_| {}, &CancelFlag::new())
        .unwrap();
    let ranked = candle_core::Tensor::new(clip.waveforms, &Device::Cpu).unwrap();
    assert_close(
        &ranked,
        &reference.f32("sorted"),
        common::WAVEFORM_TOLERANCE,
        "best first",
    );
    let logits = reference.values("logits_per_text");
    let order: Vec<usize> = reference
        .ints("order")
        .into_iter()
        .map(|i| i as usize)
        .collect();
    let scores = clip.scores.expect("scores");
    for (position, index) in order.iter().enumerate() {
        let (ours, theirs) = (scores[position], logits[*index]);
        assert!(
            (ours - theirs).abs() <= 1e-4 * theirs.abs().max(1.0),
            "{scores:?} vs {logits:?}"
        );
    }
}

//! End to end: prompt → waveform equals diffusers' `AudioLDM2Pipeline` for the same seed,
//! for DDIM and DPM-Solver++, with and without a negative prompt, at two durations (one with
//! an odd latent height), on both fixture variants.

mod common;

use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use common::{VARIANTS, assert_close, model_dir, relative_l2_slices};
use foley::engine::dsp::synthetic::probe_signal;
use foley::engine::pipeline::{AudioLdm2Pipeline, CancelFlag, Pipeline, Request};
use foley::engine::schedulers::SchedulerKind;
use foley::error::FoleyError;

/// As in the `foley` binary: weights borrow their mapped files, so the parity tests here run
/// through the zero-copy load.
#[global_allocator]
static ALLOCATOR: foley::mapped_alloc::MappedAware<std::alloc::System> =
    foley::mapped_alloc::MappedAware(std::alloc::System);

/// Mapped weights stay mapped while the pipeline lives and are unmapped when it is dropped.
#[cfg(target_os = "linux")]
#[test]
fn weights_borrow_their_files_until_the_pipeline_is_dropped() {
    // A private copy, so other tests mapping the shared fixture cannot confuse the check.
    let copy = tempfile::tempdir().unwrap();
    common::copy_dir(&model_dir(VARIANTS[0]), copy.path());
    let mapped = || {
        std::fs::read_to_string("/proc/self/maps")
            .unwrap()
            .lines()
            .filter(|line| line.contains(copy.path().to_str().unwrap()))
            .count()
    };
    let pipe = AudioLdm2Pipeline::load(copy.path(), &Device::Cpu, DType::F32).unwrap();
    assert!(mapped() >= 5, "the components' weight files are mapped");
    // `waveforms_match_diffusers` checks what borrowed weights compute against diffusers.
    let audio = pipe
        .generate(&tiny_request(), &mut |_| {}, &CancelFlag::new())
        .unwrap();
    assert!(audio.waveforms[0].iter().all(|sample| sample.is_finite()));
    drop(pipe);
    assert_eq!(mapped(), 0, "dropping the pipeline unmaps its weights");
}

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

/// R² of `predicted` against `actual` (frames × bins), the baseline being each bin's own mean:
/// above 0 means the preview explains the mel better than a fixed average spectrum does.
fn r_squared(predicted: &[f32], actual: &[f32], bins: usize) -> f64 {
    let frames = actual.len() / bins;
    let mut residual = 0.0;
    let mut total = 0.0;
    for bin in 0..bins {
        let column = |values: &[f32]| -> Vec<f64> {
            (0..frames).map(|f| values[f * bins + bin] as f64).collect()
        };
        let (actual, predicted) = (column(actual), column(predicted));
        let mean = actual.iter().sum::<f64>() / frames as f64;
        for (a, p) in actual.iter().zip(&predicted) {
            residual += (a - p).powi(2);
            total += (a - mean).powi(2);
        }
    }
    1.0 - residual / total
}

/// Correlation of `predicted` with `actual` (frames × bins) after removing each bin's mean from
/// both: how well the time course of every band is followed, whatever the overall level.
fn band_correlation(predicted: &[f32], actual: &[f32], bins: usize) -> f64 {
    let frames = actual.len() / bins;
    let (mut cross, mut var_p, mut var_a) = (0.0, 0.0, 0.0);
    for bin in 0..bins {
        let column = |values: &[f32]| -> Vec<f64> {
            let column: Vec<f64> = (0..frames).map(|f| values[f * bins + bin] as f64).collect();
            let mean = column.iter().sum::<f64>() / frames as f64;
            column.iter().map(|v| v - mean).collect()
        };
        for (p, a) in column(predicted).iter().zip(column(actual)) {
            cross += p * a;
            var_p += p * p;
            var_a += a * a;
        }
    }
    cross / (var_p * var_a).sqrt()
}

/// A sound none of the fitting probes contains: a rising chirp under decaying noise hits.
fn held_out_sound(samples: usize, sample_rate: u32, seed: u64) -> Vec<f32> {
    let mut state = seed;
    let rate = sample_rate as f64;
    let mut phase = 0.0;
    (0..samples)
        .map(|n| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let noise = (state >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0;
            let progress = n as f64 / samples as f64;
            phase += std::f64::consts::TAU * rate * (0.02 + 0.3 * progress * progress) / rate;
            let hit = (-((n % (samples / 5).max(1)) as f64) / (samples as f64 / 40.0)).exp();
            (0.3 * phase.sin() * (1.0 - progress) + 0.5 * noise * hit) as f32
        })
        .collect()
}

/// The step preview of each mel family: fitted once, it explains the VAE encoding of sounds it
/// never saw — a probe draw outside the fit (R² against the mel's own per-bin means) and a chirp
/// under noise hits (the time course of each band; these random-weight VAEs keep little of a
/// clip's overall level) — far better than the other sound's latents do; and it turns the
/// latents of every step of a real generation into a finite mel of the clip's frames × bins.
/// The floors sit below what the fixtures give (held-out R² 0.52, 0.51, 0.11; band
/// correlation 0.57, 0.60, 0.25; the controls' 0.06, −0.03, 0.03 and 0.18, 0.22, 0.10): the
/// random `musicldm-tiny` VAE is the least linear.
#[test]
fn preview_projection_explains_held_out_mels_and_step_latents() {
    for (name, least_r2, least_correlation) in [
        ("audioldm-tiny", 0.4, 0.45),
        ("audioldm2-tiny", 0.4, 0.45),
        ("musicldm-tiny", 0.05, 0.15),
    ] {
        let pipe = Pipeline::load(&model_dir(name), &Device::Cpu, DType::F32).unwrap();
        let projection = pipe.preview_projection().unwrap();
        assert!(Arc::ptr_eq(
            &projection,
            &pipe.preview_projection().unwrap()
        ));
        let decoder = pipe.decoder().unwrap();
        let front = decoder.front_end().unwrap();
        let frames = 128;
        let encode = |audio: Vec<f32>| {
            let mel = front.fbank(&[audio], front.sample_rate, frames).unwrap();
            let input =
                Tensor::from_vec(mel.values.clone(), (1, 1, frames, mel.n_mels), &Device::Cpu)
                    .unwrap();
            let posterior = decoder.encoder().unwrap().encode(&input).unwrap();
            let latents = (posterior.mode() * decoder.vae_config.scaling_factor).unwrap();
            (mel, latents)
        };
        let samples = frames * front.hop;
        // Probe draws 0 and 1 are the fit's.
        let (probe_mel, probe_latents) = encode(probe_signal(samples, front.sample_rate, 5));
        let (chirp_mel, chirp_latents) = encode(held_out_sound(samples, front.sample_rate, 1));
        let bins = probe_mel.n_mels;
        let preview = projection.project(&probe_latents).unwrap();
        assert_eq!((preview.frames(), preview.bins), (frames, bins));
        let explained = r_squared(&preview.values, &probe_mel.values, bins);
        let project = |latents| projection.project(latents).unwrap().values;
        let control = r_squared(&project(&chirp_latents), &probe_mel.values, bins);
        let followed = band_correlation(&project(&chirp_latents), &chirp_mel.values, bins);
        let control_followed = band_correlation(&project(&probe_latents), &chirp_mel.values, bins);
        eprintln!(
            "{name}: held-out probe R² {explained:.3} (control {control:.3}); chirp band \
             correlation {followed:.3} (control {control_followed:.3})"
        );
        assert!(explained > least_r2 && explained > control + 0.05, "{name}");
        assert!(
            followed > least_correlation && followed > control_followed + 0.1,
            "{name}"
        );

        let request = Request {
            duration: Some(0.05),
            waveforms: if name == "audioldm-tiny" { 2 } else { 1 },
            ..tiny_request()
        };
        let length = pipe.audio_length(request.duration).unwrap();
        let mut previews = Vec::new();
        let clip = pipe
            .generate(
                &request,
                &mut |progress| previews.push(projection.project(progress.latents).unwrap()),
                &CancelFlag::new(),
            )
            .unwrap();
        assert_eq!(previews.len(), request.steps);
        for preview in &previews {
            assert_eq!(preview.bins, clip.mel_bins);
            assert_eq!(preview.frames(), length.mel_frames);
            assert_eq!(preview.frames() * preview.bins, clip.mels[0].len());
            assert!(preview.values.iter().all(|v| v.is_finite()));
        }
    }
}

//! Stable Audio 3 against diffusers 0.42.1 on the tiny random pipelines built by
//! `tools/reference/build_sa3_fixtures.py`: every component at 1e-5 and every end-to-end case
//! (text-to-audio with and without guidance, audio-to-audio, inpainting; distilled and base
//! schedulers) through `foley generate` at 1e-4 relative L2 of the stereo waveform.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use candle_core::{DType, Device, Tensor};
use common::{Reference, assert_close, fixtures, interleaved, read_json, relative_l2_slices};
use foley::engine::dsp::block_mel::BlockMel;
use foley::engine::dsp::synthetic::probe_signal;
use foley::engine::models::stable_audio3_dit::DiTConditioning;
use foley::engine::pipeline::preview::WAVEFORM_PREVIEW_BINS;
use foley::engine::pipeline::{CancelFlag, Pipeline, Request, StableAudio3Pipeline};
use foley::engine::schedulers::SchedulerKind;
use foley::engine::schedulers::flow_match_euler::{
    FlowMatchConfig, FlowMatchEulerScheduler, logsnr_sigma_schedule,
};

const COMPONENT_TOLERANCE: f64 = 1e-5;
const E2E_TOLERANCE: f64 = 1e-4;

fn cases() -> serde_json::Value {
    read_json(&fixtures().join("reference/sa3/cases.json"))
}

fn reference(name: &str) -> Reference {
    Reference::load("sa3", name)
}

fn pipeline(variant: &str) -> Box<StableAudio3Pipeline> {
    match Pipeline::load(&fixtures().join(variant), &Device::Cpu, DType::F32).unwrap() {
        Pipeline::StableAudio3(pipeline) => pipeline,
        _ => panic!("{variant} is not a Stable Audio 3 pipeline"),
    }
}

#[test]
fn tokenizer_pads_left_to_256_like_gemma() {
    let pipeline = pipeline("sa3-tiny");
    let tokens = reference("tokenizer");
    let cases = cases();
    let prompts = cases["tokenizer"]["prompts"].as_array().unwrap();
    assert!(prompts.len() >= 6);
    for case in prompts {
        let index = case["index"].as_u64().unwrap();
        let prompt = case["prompt"].as_str().unwrap();
        let encoded = pipeline.tokenizer().encode(prompt, Some(256)).unwrap();
        assert_eq!(
            vec![encoded.ids.clone()],
            tokens.rows(&format!("input_ids.{index}")),
            "ids of {prompt:?}"
        );
        assert_eq!(
            vec![encoded.mask],
            tokens.rows(&format!("attention_mask.{index}")),
            "mask of {prompt:?}"
        );
        assert_eq!(encoded.truncated, case["truncated"].as_bool().unwrap());
    }
}

#[test]
fn components_match_diffusers() {
    let pipeline = pipeline("sa3-tiny");

    let text = reference("text_encoder");
    let states = pipeline
        .text_encoder()
        .forward(
            &text.rows("input_ids"),
            &text.rows("attention_mask"),
            &Device::Cpu,
        )
        .unwrap();
    assert_close(
        &states,
        &text.f32("last_hidden_state"),
        COMPONENT_TOLERANCE,
        "T5Gemma encoder",
    );

    let duration = reference("duration");
    let seconds: Vec<f64> = duration
        .values("seconds")
        .into_iter()
        .map(f64::from)
        .collect();
    let embedded = pipeline
        .duration_embedder()
        .forward(&seconds, &Device::Cpu)
        .unwrap();
    assert_close(
        &embedded,
        &duration.f32("out"),
        COMPONENT_TOLERANCE,
        "duration embedder",
    );

    let dit = reference("dit");
    let timesteps = dit.values("timestep");
    let context = dit.f32("encoder_hidden_states");
    let mask = dit.f32("encoder_attention_mask");
    let global = dit.f32("global_hidden_states");
    let local = dit.f32("local_add_cond");
    for (local, expected, what) in [
        (None, "out", "DiT"),
        (
            Some(&local),
            "out_inpaint",
            "DiT with inpainting conditioning",
        ),
    ] {
        let conditioning = DiTConditioning {
            context: &context,
            context_mask: Some(&mask),
            global: &global,
            local,
        };
        let out = pipeline
            .transformer()
            .forward(&dit.f32("hidden_states"), &timesteps, &conditioning)
            .unwrap();
        assert_close(&out, &dit.f32(expected), COMPONENT_TOLERANCE, what);
    }

    let vae = reference("vae");
    for case in ["a", "b"] {
        let latents = pipeline
            .vae()
            .encode(&vae.f32(&format!("encode.{case}.audio")))
            .unwrap();
        assert_close(
            &latents,
            &vae.f32(&format!("encode.{case}.latents")),
            COMPONENT_TOLERANCE,
            &format!("SAME encoder ({case})"),
        );
    }
    let audio = pipeline.vae().decode(&vae.f32("decode.latents")).unwrap();
    assert_close(
        &audio,
        &vae.f32("decode.audio"),
        COMPONENT_TOLERANCE,
        "SAME decoder",
    );
}

#[test]
fn schedules_and_steps_match_flow_match_euler() {
    let cases = cases();
    let schedules = reference("scheduler");
    let config = FlowMatchConfig::stable_audio3;
    for schedule in cases["scheduler"]["schedules"].as_array().unwrap() {
        let key = schedule["key"].as_str().unwrap();
        let steps = schedule["steps"].as_u64().unwrap() as usize;
        let sigma_max = schedule["sigma_max"].as_f64().unwrap() as f32;
        let sigmas = logsnr_sigma_schedule(steps, -6.2, 2.0, sigma_max);
        let scheduler = FlowMatchEulerScheduler::new(&config(true), &sigmas).unwrap();
        let expected = schedules.values(&format!("{key}.sigmas"));
        let worst = scheduler
            .sigmas()
            .iter()
            .zip(&expected)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert_eq!(scheduler.sigmas().len(), expected.len(), "{key}");
        assert!(worst <= 1e-6, "{key}: sigma off by {worst}");
        assert_eq!(
            scheduler.timesteps().len(),
            schedules.values(&format!("{key}.timesteps")).len()
        );
    }

    let sample = schedules.f32("step.sample");
    let velocity = schedules.f32("step.model_output");
    let sigmas = logsnr_sigma_schedule(6, -6.2, 2.0, 1.0);
    for index in [0usize, 2] {
        for stochastic in [true, false] {
            let name = if stochastic {
                "stochastic"
            } else {
                "deterministic"
            };
            let scheduler = FlowMatchEulerScheduler::new(&config(stochastic), &sigmas).unwrap();
            let noise = schedules.f32(&format!("step.stochastic.i{index}.noise"));
            let prev = scheduler
                .step_with_noise(&velocity, &sample, index, Some(&noise))
                .unwrap();
            assert_close(
                &prev,
                &schedules.f32(&format!("step.{name}.i{index}.prev_sample")),
                COMPONENT_TOLERANCE,
                &format!("{name} step {index}"),
            );
        }
    }
}

/// The arguments of `foley generate` for one reference case, on its own fixture or `model`.
fn generate_args(case: &serde_json::Value, out: &Path, model: Option<&Path>) -> Vec<String> {
    let call = &case["call"];
    let own = Path::new(case["fixture"].as_str().unwrap());
    let fixture = match model {
        Some(model) => model.to_path_buf(),
        None => fixtures().join(own.file_name().unwrap()),
    };
    let mut args: Vec<String> = vec![
        "generate".into(),
        "--model".into(),
        fixture.display().to_string(),
        "--prompt".into(),
        call["prompt"].as_str().unwrap().into(),
        "--seed".into(),
        case["seed"].to_string(),
        "--steps".into(),
        call["num_inference_steps"].to_string(),
        "--duration".into(),
        call["duration"].to_string(),
        "--waveforms".into(),
        call["num_waveforms_per_prompt"].to_string(),
        "--out".into(),
        out.display().to_string(),
        "--quiet".into(),
    ];
    if let Some(guidance) = call.get("guidance_scale") {
        args.extend(["--guidance".into(), guidance.to_string()]);
    }
    if let Some(negative) = call.get("negative_prompt") {
        args.extend([
            "--negative-prompt".into(),
            negative.as_str().unwrap().into(),
        ]);
    }
    if call.get("audio").is_some() {
        let input = fixtures().join("reference/sa3/input.wav");
        args.extend(["--init-audio".into(), input.display().to_string()]);
    }
    if let Some(level) = call.get("init_noise_level") {
        args.extend(["--init-noise-level".into(), level.to_string()]);
    }
    if let (Some(starts), Some(ends)) =
        (call.get("mask_start_seconds"), call.get("mask_end_seconds"))
    {
        let list = |value: &serde_json::Value| -> Vec<f64> {
            value
                .as_array()
                .map(|items| items.iter().map(|v| v.as_f64().unwrap()).collect())
                .unwrap_or_else(|| vec![value.as_f64().unwrap()])
        };
        for (start, end) in list(starts).into_iter().zip(list(ends)) {
            args.extend(["--inpaint".into(), format!("{start}:{end}")]);
        }
    }
    args
}

/// Runs `foley` with `args`.
fn foley<S: AsRef<std::ffi::OsStr>>(args: impl IntoIterator<Item = S>) -> Output {
    Command::new(env!("CARGO_BIN_EXE_foley"))
        .args(args)
        .output()
        .unwrap()
}

/// `foley generate --quiet` on the tiny distilled model with `prompt`, into `out`, plus `extra`.
fn generate_tiny(prompt: &str, out: &Path, extra: &[&str]) -> Output {
    let model = fixtures().join("sa3-tiny").display().to_string();
    let out = out.display().to_string();
    let mut args = vec![
        "generate", "--model", &model, "--prompt", prompt, "--out", &out, "--quiet",
    ];
    args.extend_from_slice(extra);
    foley(args)
}

/// The output of a run that must succeed.
#[track_caller]
fn succeeded(output: Output) -> Output {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Interleaved frames of a WAV with its channel count and rate.
fn read_frames(path: &Path) -> (Vec<f32>, u16, u32) {
    foley::audio::wav::read_wav_frames(path).unwrap()
}

/// Runs the reference cases accepted by `keep` through `foley generate` (on `model` instead
/// of each case's fixture when given) and compares the stereo WAVs; returns how many ran.
fn check_cases(keep: impl Fn(&serde_json::Value) -> bool, model: Option<&Path>) -> usize {
    let cases = cases();
    let e2e = reference("e2e");
    let dir = tempfile::tempdir().unwrap();
    let mut ran = 0;
    for case in cases["e2e"]["cases"].as_array().unwrap() {
        if !keep(case) {
            continue;
        }
        ran += 1;
        let name = case["name"].as_str().unwrap();
        let out = dir.path().join(format!("{name}.wav"));
        let output = foley(generate_args(case, &out, model));
        assert!(
            output.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let expected = interleaved(&e2e.f32(&format!("{name}.audios")));
        let files: Vec<PathBuf> = if expected.len() == 1 {
            vec![out.clone()]
        } else {
            (1..=expected.len())
                .map(|index| dir.path().join(format!("{name}-{index}.wav")))
                .collect()
        };
        for (file, expected) in files.iter().zip(&expected) {
            let (frames, channels, rate) = read_frames(file);
            assert_eq!((channels, rate), (2, 44_100), "{name}");
            let error = relative_l2_slices(&frames, expected);
            eprintln!("parity {name}: relative L2 {error:.3e}");
            assert!(error <= E2E_TOLERANCE, "{name}: relative L2 {error:.3e}");
        }
    }
    ran
}

#[test]
fn every_task_matches_diffusers_through_foley_generate() {
    assert_eq!(check_cases(|_| true, None), 8);
}

/// Stability's own layout (what `stabilityai/stable-audio-3-*` ships) holds the same weights;
/// mapped on load, it must give diffusers' numbers for every distilled case.
#[test]
fn the_official_layout_loads_as_diffusers_converts_it() {
    let official = fixtures().join("sa3-tiny-official");
    let distilled =
        |case: &serde_json::Value| case["fixture"].as_str().unwrap().ends_with("sa3-tiny");
    assert_eq!(check_cases(distilled, Some(&official)), 4);
}

#[test]
fn stable_audio_flags_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let input = fixtures().join("reference/sa3/input.wav");
    let input = input.display().to_string();
    let out = dir.path().join("x.wav");
    for (extra, needle) in [
        (vec!["--init-audio", &input], "--init-noise-level"),
        (
            vec!["--init-audio", &input, "--strength", "0.5"],
            "--init-noise-level",
        ),
        (
            vec!["--init-audio", &input, "--init-noise-level", "0"],
            "init noise level",
        ),
        (
            vec![
                "--init-audio",
                &input,
                "--init-noise-level",
                "0.5",
                "--guidance",
                "3",
            ],
            "without guidance",
        ),
        (
            vec!["--init-audio", &input, "--extend", "1"],
            "Stable Audio 3 runs",
        ),
        (
            vec!["--init-audio", &input, "--regenerate-above-hz", "4000"],
            "time ranges",
        ),
        (vec!["--scheduler", "ddim"], "--scheduler does not apply"),
    ] {
        let mut extra = extra;
        extra.extend(["--steps", "2"]);
        let output = generate_tiny("rain", &out, &extra);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{extra:?} succeeded");
        assert!(stderr.contains(needle), "{extra:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{extra:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    // The distilled default: 8 steps without guidance, a stereo 44.1 kHz file.
    let out = dir.path().join("defaults.wav");
    let output = succeeded(generate_tiny(
        "rain",
        &out,
        &["--duration", "0.2", "--json"],
    ));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["settings"]["steps"], 8);
    assert_eq!(report["settings"]["guidance"], 1.0);
    let (frames, channels, rate) = read_frames(&out);
    assert_eq!((channels, rate), (2, 44_100));
    assert_eq!(frames.len(), 2 * (0.2f64 * 44_100.0) as usize);
}

/// `foley batch` keeps the clips stereo and says so in the sidecars.
#[test]
fn batch_writes_stereo_clips_and_sidecars() {
    let dir = tempfile::tempdir().unwrap();
    let jobs = dir.path().join("jobs.jsonl");
    let model = fixtures().join("sa3-tiny");
    let line = serde_json::json!({
        "name": "rain",
        "prompt": "rain on a tin roof",
        "model": model,
        "steps": 2,
        "duration": 0.2,
        "seed": 3,
    });
    std::fs::write(&jobs, format!("{line}\n")).unwrap();
    let out = dir.path().join("out");
    succeeded(foley([
        "batch",
        &jobs.display().to_string(),
        "--out",
        &out.display().to_string(),
        "--quiet",
    ]));
    let (frames, channels, rate) = read_frames(&out.join("rain.wav"));
    assert_eq!((channels, rate), (2, 44_100));
    assert_eq!(frames.len(), 2 * (0.2f64 * 44_100.0) as usize);
    let sidecar = read_json(&out.join("rain.json"));
    assert_eq!(sidecar["channels"], 2);
    assert_eq!(sidecar["scheduler"], "flow-match-ping-pong");
    assert_eq!(sidecar["steps"], 2);
}

/// Several waveforms come back best first by another checkpoint's CLAP, heard as their mono
/// fold-down; the same waveforms as without ranking, reordered.
#[test]
fn several_waveforms_rank_by_clap_on_their_fold_down() {
    let dir = tempfile::tempdir().unwrap();
    let judge = fixtures().join("musicldm-tiny");
    let run = |name: &str, extra: &[&str]| -> serde_json::Value {
        let mut args = vec!["--steps", "2", "--duration", "0.25", "--seed", "11"];
        args.extend(["--waveforms", "3", "--json"]);
        args.extend_from_slice(extra);
        let out = dir.path().join(format!("{name}.wav"));
        let output = succeeded(generate_tiny("rain on a tin roof", &out, &args));
        serde_json::from_slice(&output.stdout).unwrap()
    };
    let plain = run("plain", &[]);
    assert!(plain["clap_scores"].is_null());
    assert!(plain["warnings"].to_string().contains("generation order"));
    let ranked = run("ranked", &["--rank-with", &judge.display().to_string()]);
    let scores: Vec<f64> = ranked["clap_scores"]
        .as_array()
        .unwrap()
        .iter()
        .map(|score| score.as_f64().unwrap())
        .collect();
    assert_eq!(scores.len(), 3);
    assert!(
        scores.windows(2).all(|pair| pair[0] >= pair[1]),
        "{scores:?}"
    );
    let frames = |name: &str| -> Vec<Vec<f32>> {
        (1..=3)
            .map(|index| read_frames(&dir.path().join(format!("{name}-{index}.wav"))).0)
            .collect()
    };
    let (plain, ranked) = (frames("plain"), frames("ranked"));
    for waveform in &ranked {
        assert!(
            plain.contains(waveform),
            "a ranked waveform is not one of the generated ones"
        );
    }
    // The other families rank with their own CLAP.
    let judge = judge.display().to_string();
    let out = dir.path().join("m.wav").display().to_string();
    let output = foley([
        "generate",
        "--model",
        &judge,
        "--prompt",
        "x",
        "--rank-with",
        &judge,
        "--out",
        &out,
    ]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("its own CLAP"));
}

/// f16 and bf16 weights give finite audio close to f32's. A padded prompt token that a sliding
/// T5Gemma layer hides from every key must attend uniformly as in transformers: f32's mask
/// minimum rounds to −∞ in half precision and turned the whole clip into NaN. diffusers itself
/// drifts 0.139 (f16) and 0.139 (bf16) from f32 on this case (it draws noise and steps the
/// scheduler in the half type); Foley keeps latents and scheduler in f32.
#[test]
fn half_precision_stays_finite_and_close() {
    let dir = tempfile::tempdir().unwrap();
    let run = |dtype: &str| -> Vec<f32> {
        let out = dir.path().join(format!("{dtype}.wav"));
        let settings = ["--seed", "0", "--steps", "6", "--duration", "0.375"];
        let mut args = settings.to_vec();
        args.extend(["--dtype", dtype]);
        succeeded(generate_tiny("glass shattering on concrete", &out, &args));
        read_frames(&out).0
    };
    let reference = run("f32");
    for (dtype, bound) in [("f16", 0.01), ("bf16", 0.05)] {
        let drift = relative_l2_slices(&run(dtype), &reference);
        eprintln!("{dtype} drift from f32: {drift:.3e}");
        assert!(drift <= bound, "{dtype}: drift {drift:.3e}");
    }
}

/// R² of `predicted` against `actual` (frames × bins), the baseline being each bin's own mean.
fn r_squared(predicted: &[f32], actual: &[f32], bins: usize) -> f64 {
    let frames = actual.len() / bins;
    let (mut residual, mut total) = (0.0, 0.0);
    for bin in 0..bins {
        let mean = (0..frames)
            .map(|f| actual[f * bins + bin] as f64)
            .sum::<f64>()
            / frames as f64;
        for f in 0..frames {
            let (a, p) = (
                actual[f * bins + bin] as f64,
                predicted[f * bins + bin] as f64,
            );
            residual += (a - p).powi(2);
            total += (a - mean).powi(2);
        }
    }
    1.0 - residual / total
}

/// The step preview of the waveform VAE. The random-weight SAME of `sa3-tiny` keeps almost no
/// log-mel information linearly (in-sample R² ≈ 0.2), so on five probe draws the fit never saw
/// the preview must do no harm — mean R² against each sound's own per-bin means ≈ 0 (0.005;
/// the ridge keeps it from inventing detail) — while still tracking each sound better than
/// another sound's latents do (−0.060). The latents of every step of a real generation become
/// a finite (latent frames × 64) mel.
#[test]
fn preview_projection_explains_held_out_audio_and_step_latents() {
    let pipeline = pipeline("sa3-tiny");
    let projection = pipeline.preview_projection().unwrap();
    assert!(std::sync::Arc::ptr_eq(
        &projection,
        &pipeline.preview_projection().unwrap()
    ));
    let config = pipeline.vae().config();
    let (hop, rate) = (config.downsampling_ratio(), config.sampling_rate);
    let frames = 32;
    let block = BlockMel::new(rate, hop, WAVEFORM_PREVIEW_BINS);
    let encode = |variant: u64| {
        let mono = probe_signal(frames * hop, rate, variant);
        let stereo: Vec<f32> = mono.iter().chain(&mono).copied().collect();
        let audio = Tensor::from_vec(stereo, (1, 2, frames * hop), &Device::Cpu).unwrap();
        (
            block.columns(&mono, frames),
            pipeline.vae().encode(&audio).unwrap(),
        )
    };
    let r_squared_of = |latents: &Tensor, mel: &[f32]| {
        let preview = projection.project(latents).unwrap();
        assert_eq!(
            (preview.frames(), preview.bins),
            (frames, WAVEFORM_PREVIEW_BINS)
        );
        r_squared(&preview.values, mel, WAVEFORM_PREVIEW_BINS)
    };
    // Probe draws 0 and 1 are the fit's.
    let (mut explained, mut control) = (0.0, 0.0);
    for variant in 2..7 {
        let (mel, latents) = encode(variant);
        let (_, other) = encode(variant + 20);
        explained += r_squared_of(&latents, &mel) / 5.0;
        control += r_squared_of(&other, &mel) / 5.0;
    }
    eprintln!("sa3-tiny: held-out mean R² {explained:.3}, other sounds' latents {control:.3}");
    assert!(explained > -0.02, "R² {explained}");
    assert!(explained > control + 0.03, "{explained} vs {control}");

    let request = Request {
        task: Default::default(),
        prompt: "rain on a tin roof".into(),
        negative_prompt: None,
        seed: 3,
        steps: 3,
        guidance: 1.0,
        duration: Some(0.25),
        scheduler: SchedulerKind::Ddim,
        waveforms: 2,
    };
    let length = pipeline.audio_length(request.duration).unwrap();
    let mut previews = Vec::new();
    pipeline
        .generate(
            &request,
            &mut |progress| previews.push(projection.project(progress.latents).unwrap()),
            &CancelFlag::new(),
        )
        .unwrap();
    assert_eq!(previews.len(), request.steps);
    for preview in &previews {
        assert_eq!(preview.bins, WAVEFORM_PREVIEW_BINS);
        assert_eq!(preview.frames(), length.latent_height);
        assert!(preview.values.iter().all(|v| v.is_finite()));
    }
}

//! The `foley generate` command: parity of the written WAV with diffusers, and bad input giving
//! one clear line on stderr, a non-zero exit, no panic and no partial file.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{Reference, VARIANTS, fixtures, model_dir, read_json, relative_l2_slices};
use foley::audio::wav::read_wav;
use foley::engine::kernels::gemm_bf16::Engine;

fn foley(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_foley"))
        .args(args)
        .output()
        .expect("run foley")
}

/// The e2e reference case with this scheduler/negative-prompt choice at the default length.
fn reference_case(variant: &str, scheduler: &str, with_negative: bool) -> serde_json::Value {
    let json = read_json(&fixtures().join("reference").join(variant).join("e2e.json"));
    let cases = json
        .get("cases")
        .unwrap_or(&json)
        .as_array()
        .unwrap()
        .clone();
    cases
        .into_iter()
        .find(|case| {
            case["scheduler"] == scheduler
                && case["negative_prompt"].is_string() == with_negative
                && case["name"].as_str().unwrap().ends_with("len0")
        })
        .expect("reference case")
}

fn generate_args(
    variant: &str,
    case: &serde_json::Value,
    scheduler_flag: &str,
    out: &Path,
) -> Vec<String> {
    let mut args = vec![
        "generate".to_string(),
        "--model".into(),
        model_dir(variant).display().to_string(),
        "--prompt".into(),
        case["prompt"].as_str().unwrap().into(),
        "--seed".into(),
        case["seed"].to_string(),
        "--steps".into(),
        case["steps"].to_string(),
        "--guidance".into(),
        case["guidance"].to_string(),
        "--scheduler".into(),
        scheduler_flag.into(),
        "--format".into(),
        "f32".into(),
        "--sample-rate".into(),
        "native".into(),
        "--out".into(),
        out.display().to_string(),
    ];
    if let Some(negative) = case["negative_prompt"].as_str() {
        args.extend(["--negative-prompt".to_string(), negative.to_string()]);
    }
    args
}

fn assert_matches_reference(variant: &str, case: &serde_json::Value, path: &Path) {
    let (samples, rate) = read_wav(path).unwrap();
    assert_eq!(rate, 16_000);
    let reference = Reference::load(variant, "e2e");
    let expected = reference.values(&format!("{}.waveform", case["name"].as_str().unwrap()));
    let error = relative_l2_slices(&samples, &expected);
    assert!(
        error <= 1e-4,
        "{variant}: CLI waveform relative L2 {error:.3e}"
    );
}

#[test]
fn generate_writes_what_diffusers_returns() {
    let dir = tempfile::tempdir().unwrap();
    for variant in VARIANTS {
        let case = reference_case(variant, "ddim", false);
        let out = dir.path().join(format!("{variant}.wav"));
        let args = generate_args(variant, &case, "ddim", &out);
        let output = foley(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert_matches_reference(variant, &case, &out);
    }
}

#[test]
fn generate_with_dpm_and_negative_prompt_reports_json() {
    let dir = tempfile::tempdir().unwrap();
    let variant = VARIANTS[1];
    let case = reference_case(variant, "dpmpp2m", true);
    let out = dir.path().join("dpm.wav");
    let mut args = generate_args(variant, &case, "dpm++2m", &out);
    args.extend(["--json".to_string(), "--quiet".to_string()]);
    let output = foley(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.stderr.is_empty(),
        "--quiet printed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("one JSON object");
    assert_eq!(report["seed"], case["seed"]);
    assert_eq!(report["settings"]["scheduler"], "dpm++2m");
    assert_eq!(report["files"][0], out.display().to_string());
    assert!(report["seconds"]["denoising"].as_f64().unwrap() >= 0.0);
    if cfg!(target_os = "linux") {
        assert!(report["peak_memory_bytes"].as_u64().unwrap() > 0);
    }
    assert_matches_reference(variant, &case, &out);
}

#[test]
fn resampled_pcm_export_has_the_requested_rate_and_length() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("clip48k.wav");
    let output = foley(&[
        "generate",
        "--model",
        &model_dir(VARIANTS[0]).display().to_string(),
        "--prompt",
        "door creak",
        "--steps",
        "2",
        "--seed",
        "7",
        "--format",
        "pcm24",
        "--sample-rate",
        "48000",
        "--out",
        &out.display().to_string(),
        "--quiet",
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let reader = hound::WavReader::open(&out).unwrap();
    assert_eq!(reader.spec().sample_rate, 48_000);
    assert_eq!(reader.spec().bits_per_sample, 24);
    // 0.016 s of the tiny model's default length at 48 kHz.
    assert_eq!(reader.len(), 768);
}

/// Runs `foley generate --prompt rain --steps 2` with `extra` replacing or adding flags.
fn generate_with(model: &Path, out: &Path, extra: &[&str]) -> Output {
    let model = model.display().to_string();
    let out_arg = out.display().to_string();
    let mut args = vec![
        "generate", "--model", &model, "--prompt", "rain", "--steps", "2", "--out", &out_arg,
    ];
    for pair in extra.chunks(2) {
        match args.iter().position(|arg| *arg == pair[0]) {
            Some(index) => args[index + 1] = pair[1],
            None => args.extend_from_slice(pair),
        }
    }
    foley(&args)
}

/// Runs `generate_with` and expects a clean failure: one line naming `needle`, no panic and no
/// file left behind. Returns that line.
fn expect_failure(model: &Path, out: &Path, extra: &[&str], needle: &str) -> String {
    let output = generate_with(model, out, extra);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!output.status.success(), "{extra:?} succeeded");
    assert!(!stderr.contains("panicked"), "{extra:?} panicked: {stderr}");
    assert_eq!(
        stderr.trim().lines().count(),
        1,
        "{extra:?}: not one line: {stderr}"
    );
    assert!(
        stderr.contains(needle),
        "{extra:?}: expected '{needle}' in: {stderr}"
    );
    assert!(!out.exists(), "{extra:?} left a file behind");
    stderr
}

#[test]
fn bad_arguments_fail_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let model = model_dir(VARIANTS[0]);
    let out = dir.path().join("x.wav");
    expect_failure(&model, &out, &["--prompt", "  "], "prompt is empty");
    expect_failure(&model, &out, &["--duration", "0"], "duration");
    expect_failure(&model, &out, &["--duration", "-3"], "duration");
    expect_failure(&model, &out, &["--duration", "0.0001"], "minimum");
    expect_failure(&model, &out, &["--duration", "9999"], "maximum");
    expect_failure(&model, &out, &["--steps", "0"], "steps");
    expect_failure(&model, &out, &["--waveforms", "0"], "waveforms");
    expect_failure(&model, &out, &["--waveforms", "99"], "waveforms");
    expect_failure(&model, &out, &["--guidance", "nan"], "guidance");
    expect_failure(&model, &out, &["--guidance", "inf"], "guidance");
    expect_failure(
        &model,
        &out,
        &["--scheduler", "warp"],
        "unknown scheduler 'warp'",
    );
    expect_failure(&model, &out, &["--format", "mp3"], "mp3");
    expect_failure(&model, &out, &["--sample-rate", "22050"], "22050");
    let unwritable = dir.path().join("no-such-folder").join("x.wav");
    expect_failure(&model, &unwritable, &[], "does not exist");
    expect_failure(
        &dir.path().join("missing-model"),
        &out,
        &[],
        "missing-model",
    );
}

fn weight_file(dir: &Path) -> PathBuf {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .find(|path| path.extension().is_some_and(|ext| ext == "safetensors"))
        .expect("a safetensors file")
}

#[test]
fn broken_model_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    common::copy_dir(&model_dir(VARIANTS[0]), &model);
    let out = dir.path().join("x.wav");

    let unet_weights = weight_file(&model.join("unet"));
    let bytes = std::fs::read(&unet_weights).unwrap();
    std::fs::write(&unet_weights, &bytes[..bytes.len() / 2]).unwrap();
    expect_failure(&model, &out, &[], "diffusion_pytorch_model.safetensors");
    std::fs::write(&unet_weights, b"not a safetensors file at all").unwrap();
    expect_failure(&model, &out, &[], "unet");
    std::fs::write(&unet_weights, &bytes).unwrap();

    let vae_config = model.join("vae/config.json");
    let original = std::fs::read(&vae_config).unwrap();
    std::fs::write(&vae_config, b"{ this is not json").unwrap();
    expect_failure(&model, &out, &[], "vae/config.json");
    std::fs::remove_file(&vae_config).unwrap();
    expect_failure(&model, &out, &[], "vae/config.json");
    std::fs::write(&vae_config, &original).unwrap();

    std::fs::remove_file(model.join("tokenizer_2/tokenizer.json")).unwrap();
    expect_failure(&model, &out, &[], "tokenizer_2/tokenizer.json");
}

#[test]
fn each_family_uses_its_own_guidance_default() {
    let dir = tempfile::tempdir().unwrap();
    // The AudioLDM references use guidance 2.5 and MusicLDM's 2.0: the families' defaults.
    for variant in ["audioldm-tiny", "musicldm-tiny"] {
        let case = reference_case(variant, "ddim", false);
        let out = dir.path().join(format!("{variant}.wav"));
        let model = model_dir(variant).display().to_string();
        let out_arg = out.display().to_string();
        let output = foley(&[
            "generate",
            "--model",
            &model,
            "--prompt",
            case["prompt"].as_str().unwrap(),
            "--seed",
            "42",
            "--steps",
            "4",
            "--out",
            &out_arg,
            "--json",
            "--quiet",
        ]);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(
            report["settings"]["guidance"], case["guidance"],
            "{variant}"
        );
        assert_matches_reference(variant, &case, &out);
    }
}

#[test]
fn several_waveforms_are_written_best_first_with_scores() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("take.wav");
    let model = model_dir("musicldm-tiny").display().to_string();
    let out_arg = out.display().to_string();
    let output = foley(&[
        "generate",
        "--model",
        &model,
        "--prompt",
        "A hammer hitting a wooden surface",
        "--seed",
        "42",
        "--steps",
        "4",
        "--waveforms",
        "3",
        "--out",
        &out_arg,
        "--json",
        "--quiet",
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let files: Vec<String> = report["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap().to_string())
        .collect();
    assert_eq!(files.len(), 3);
    let reference = Reference::load("musicldm-tiny", "ranking");
    let sorted = reference.f32("sorted").to_vec2::<f32>().unwrap();
    for (index, (file, expected)) in files.iter().zip(&sorted).enumerate() {
        assert!(file.ends_with(&format!("take-{}.wav", index + 1)), "{file}");
        let (samples, _) = read_wav(Path::new(file)).unwrap();
        let error = relative_l2_slices(&samples, expected);
        assert!(error <= 1e-4, "{file}: {error:.3e}");
    }
    let scores = report["clap_scores"].as_array().expect("scores");
    assert_eq!(scores.len(), 3);
    assert!(
        !out.exists(),
        "a single-file name was written for several waveforms"
    );
}

#[test]
fn plot_draws_a_png_and_rejects_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let clip = dir.path().join("clip.wav");
    let tone: Vec<f32> = (0..8_000).map(|n| 0.4 * (n as f32 * 0.2).sin()).collect();
    foley::audio::wav::write_wav(&clip, &tone, 16_000, foley::audio::wav::WavFormat::Float32)
        .unwrap();
    let png = dir.path().join("clip.png");
    let output = foley(&[
        "plot",
        &clip.display().to_string(),
        &png.display().to_string(),
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(&std::fs::read(&png).unwrap()[1..4], b"PNG");

    let missing = foley(&["plot", "/no/such.wav", &png.display().to_string()]);
    assert!(!missing.status.success());
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(
        stderr.contains("/no/such.wav") && !stderr.contains("panicked"),
        "{stderr}"
    );
}

#[test]
fn version_names_the_compiled_backends() {
    let output = foley(&["--version"]);
    assert!(output.status.success());
    let line = String::from_utf8_lossy(&output.stdout);
    let expected = format!("foley {} (cpu", env!("CARGO_PKG_VERSION"));
    assert!(line.starts_with(&expected), "{line}");
    assert_eq!(line.contains("cuda"), cfg!(feature = "cuda"), "{line}");
    assert_eq!(line.contains("metal"), cfg!(feature = "metal"), "{line}");
}

/// Half precision runs on the CPU and says what it costs: f16 is no faster than f32; bf16 is
/// the fast mode where the CPU has AMX or AVX512-BF16 (no notice) and runs f32 with a notice
/// elsewhere (identical samples to an f32 run).
#[test]
fn half_precision_on_the_cpu_runs_and_says_what_it_costs() {
    let dir = tempfile::tempdir().unwrap();
    let model = fixtures().join("audioldm2-tiny");
    let hardware = Engine::detect().is_hardware();
    for dtype in ["f32", "f16", "bf16"] {
        let out = dir.path().join(format!("{dtype}.wav"));
        let output = generate_with(&model, &out, &["--dtype", dtype, "--json", "--seed", "7"]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{dtype}: {stderr}");
        let notice = match dtype {
            "f16" => Some("no faster than f32"),
            "bf16" if !hardware => Some("running f32"),
            _ => None,
        };
        match notice {
            Some(notice) => assert!(stderr.contains(notice), "{dtype}: {stderr}"),
            None => assert!(!stderr.contains("note:"), "{dtype}: {stderr}"),
        }
        let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(report["settings"]["dtype"], dtype);
        assert!(report["seconds"]["per_step"].as_f64().unwrap() > 0.0);
        assert!(out.exists());
    }
    let samples = |dtype: &str| {
        read_wav(&dir.path().join(format!("{dtype}.wav")))
            .unwrap()
            .0
    };
    assert_eq!(
        samples("bf16") == samples("f32"),
        !hardware,
        "bf16 falls back to f32 exactly"
    );
}

/// A stereo 16-bit WAV of `seconds` at `rate`: a chirp on the left, its half on the right.
fn write_input(path: &Path, rate: u32, seconds: f64) {
    let spec = hound::WavSpec {
        channels: 2,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut writer = hound::WavWriter::create(path, spec).unwrap();
    let frames = (seconds * rate as f64) as usize;
    for index in 0..frames {
        let t = index as f64 / rate as f64;
        let value =
            (0.4 * (2.0 * std::f64::consts::PI * (300.0 + 4000.0 * t) * t).sin() * 32767.0) as i16;
        writer.write_sample(value).unwrap();
        writer.write_sample(value / 2).unwrap();
    }
    writer.finalize().unwrap();
}

#[test]
fn editing_flags_run_each_task_and_report_it() {
    let dir = tempfile::tempdir().unwrap();
    let model = model_dir(VARIANTS[0]).display().to_string();
    let input = dir.path().join("input.wav");
    write_input(&input, 22_050, 0.02);
    let input = input.display().to_string();
    let cases: [(&str, &[&str], usize); 5] = [
        ("audio_to_audio", &["--strength", "0.6"], 320),
        (
            "inpaint",
            &["--inpaint", "0.005:0.01", "--encode-mode", "mean"],
            320,
        ),
        ("inpaint", &["--regenerate-above-hz", "3000"], 320),
        ("continue", &["--extend", "0.01"], 480),
        ("loop", &["--loop", "0.01"], 480),
    ];
    for (task, flags, samples) in cases {
        let out = dir
            .path()
            .join(format!("{task}-{}.wav", flags[0].trim_start_matches('-')));
        let out_arg = out.display().to_string();
        let mut args = vec![
            "generate",
            "--model",
            &model,
            "--prompt",
            "rain",
            "--steps",
            "4",
            "--seed",
            "3",
            "--init-audio",
            &input,
            "--out",
            &out_arg,
            "--json",
            "--quiet",
        ];
        args.extend_from_slice(flags);
        let output = foley(&args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{task} {flags:?}: {stderr}");
        let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(report["task"]["name"], task, "{report}");
        assert!(
            report["task"]["input"]
                .as_str()
                .unwrap()
                .ends_with("input.wav")
        );
        let (samples_read, rate) = read_wav(&out).unwrap();
        assert_eq!(rate, 16_000);
        assert_eq!(samples_read.len(), samples, "{task} {flags:?}");
        assert!(samples_read.iter().all(|v| v.is_finite()));
        if task == "audio_to_audio" {
            // int(4 · 0.6) = 2 of the 4 steps.
            assert_eq!(report["denoising_steps"], 2);
            assert_eq!(report["task"]["strength"], 0.6);
            assert_eq!(report["task"]["encode_mode"], "sample");
        }
    }
}

#[test]
fn bad_editing_input_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let model = model_dir(VARIANTS[0]);
    let out = dir.path().join("x.wav");
    let input = dir.path().join("in.wav");
    write_input(&input, 16_000, 0.02);
    let input = input.display().to_string();
    let short = dir.path().join("short.wav");
    write_input(&short, 16_000, 0.005);
    let short = short.display().to_string();
    let text = dir.path().join("notes.wav");
    std::fs::write(&text, "not a wav").unwrap();
    let text = text.display().to_string();
    let missing = dir.path().join("gone.wav").display().to_string();
    let nan = dir.path().join("nan.wav");
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 16_000,
        bits_per_sample: 32,
        sample_format: hound::SampleFormat::Float,
    };
    let mut writer = hound::WavWriter::create(&nan, spec).unwrap();
    for _ in 0..400 {
        writer.write_sample(f32::NAN).unwrap();
    }
    writer.finalize().unwrap();
    let nan = nan.display().to_string();
    let with_input = |extra: &[&'static str]| {
        let mut args: Vec<String> = vec!["--init-audio".into(), input.clone()];
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };
    let check = |args: Vec<String>, needle: &str| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        expect_failure(&model, &out, &args, needle);
    };
    check(vec!["--init-audio".into(), missing], "gone.wav");
    check(vec!["--init-audio".into(), text], "not a readable WAV");
    check(vec!["--init-audio".into(), short], "at least 101");
    check(vec!["--init-audio".into(), nan], "NaN");
    check(with_input(&["--strength", "1.5"]), "strength");
    check(with_input(&["--strength", "-0.1"]), "strength");
    check(with_input(&["--strength", "nan"]), "strength");
    check(with_input(&["--inpaint", "0.01:0.005"]), "START < END");
    check(with_input(&["--inpaint", "0.01-0.02"]), "START:END");
    check(with_input(&["--inpaint", "5:6"]), "outside the clip");
    check(with_input(&["--regenerate-above-hz", "9000"]), "Nyquist");
    check(
        with_input(&["--regenerate-above-hz", "-5"]),
        "regenerate-above-hz",
    );
    check(
        with_input(&["--extend", "0.01", "--loop", "0.01"]),
        "choose one edit",
    );
    check(with_input(&["--extend", "-1"]), "positive");
    check(with_input(&["--extend", "1e12"]), "maximum");
    check(
        with_input(&["--loop", "0.01", "--strength", "0.5"]),
        "does not apply",
    );
    check(with_input(&["--encode-mode", "median"]), "encode mode");
    check(
        vec!["--inpaint".into(), "0:0.01".into()],
        "needs --init-audio",
    );
    check(vec!["--extend".into(), "1".into()], "needs --init-audio");
    check(
        vec!["--strength".into(), "0.5".into()],
        "needs --init-audio",
    );
    check(
        vec![
            "--variation-of".into(),
            input.clone(),
            "--init-audio".into(),
            input.clone(),
        ],
        "cannot be combined",
    );
    check(
        vec!["--variation-of".into(), input.clone()],
        "need MusicLDM",
    );
    let audioldm = fixtures().join("audioldm-tiny");
    expect_failure(
        &audioldm,
        &out,
        &["--variation-of", &input],
        "CLAP audio branch",
    );
}

/// Sets `key` (a dotted path) in a JSON config file.
fn set_config(path: &Path, key: &str, value: serde_json::Value) {
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut slot = &mut json;
    for part in key.split('.') {
        slot = slot
            .get_mut(part)
            .unwrap_or_else(|| panic!("{key} not in {}", path.display()));
    }
    *slot = value;
    std::fs::write(path, serde_json::to_string_pretty(&json).unwrap()).unwrap();
}

/// Corrupt config values are one-line errors naming the file and field, never panics,
/// divisions by zero or unbounded allocations (reliability_bugs.md, bug 8).
#[test]
fn corrupt_config_values_are_named_errors() {
    use serde_json::json;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.wav");
    // (fixture, file, field, value, flags that make it read, expected words)
    type Case<'a> = (
        &'a str,
        &'a str,
        &'a str,
        serde_json::Value,
        &'a [&'a str],
        &'a str,
    );
    let cases: &[Case] = &[
        (
            "audioldm2-tiny",
            "unet/config.json",
            "attention_head_dim",
            json!(0),
            &[],
            "attention_head_dim 0",
        ),
        (
            "audioldm2-tiny",
            "unet/config.json",
            "norm_eps",
            json!(-1.0),
            &[],
            "norm_eps",
        ),
        (
            "audioldm2-tiny",
            "language_model/config.json",
            "n_head",
            json!(0),
            &[],
            "n_head 0",
        ),
        (
            "audioldm2-tiny",
            "text_encoder/config.json",
            "text_config.num_attention_heads",
            json!(0),
            &[],
            "num_attention_heads 0",
        ),
        (
            "audioldm2-tiny",
            "scheduler/scheduler_config.json",
            "steps_offset",
            json!(1_000_000),
            &["--scheduler", "dpm++2m"],
            "steps_offset",
        ),
        (
            "audioldm2-tiny",
            "scheduler/scheduler_config.json",
            "num_train_timesteps",
            json!(1_000_000_000_000u64),
            &[],
            "num_train_timesteps",
        ),
        (
            "audioldm2-tiny",
            "scheduler/scheduler_config.json",
            "beta_end",
            json!(2.0),
            &[],
            "beta_end",
        ),
        (
            "audioldm2-tiny",
            "vae/config.json",
            "scaling_factor",
            json!(0.0),
            &[],
            "scaling_factor",
        ),
        (
            "audioldm2-tiny",
            "vocoder/config.json",
            "sampling_rate",
            json!(4_294_967_295u64),
            &["--sample-rate", "48000"],
            "sampling_rate",
        ),
        (
            "musicldm-tiny",
            "text_encoder/config.json",
            "audio_config.patch_stride",
            json!(0),
            &["--waveforms", "2"],
            "patch_stride",
        ),
        (
            "musicldm-tiny",
            "text_encoder/config.json",
            "audio_config.spec_size",
            json!(1_000_000_000),
            &["--waveforms", "2"],
            "spec_size",
        ),
        (
            "musicldm-tiny",
            "feature_extractor/preprocessor_config.json",
            "max_length_s",
            json!(1e9),
            &["--waveforms", "2"],
            "max_length_s",
        ),
    ];
    for (index, (variant, file, key, value, extra, needle)) in cases.iter().enumerate() {
        let model = dir.path().join(format!("model-{index}"));
        common::copy_dir(&model_dir(variant), &model);
        set_config(&model.join(file), key, value.clone());
        let stderr = expect_failure(&model, &out, extra, needle);
        if !extra.is_empty() {
            continue; // the file naming is checked where the field is read at load
        }
        assert!(
            stderr.contains(file.rsplit('/').next().unwrap()),
            "{file} {key}: the file is not named: {stderr}"
        );
    }
}

/// Settings that used to write all-NaN audio with exit 0 are refused up front (bug 7).
#[test]
fn numerically_hopeless_settings_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.wav");
    let model = fixtures().join("audioldm-tiny");
    for scheduler in ["dpm++2m", "deis", "unipc"] {
        expect_failure(
            &model,
            &out,
            &["--steps", "1000", "--scheduler", scheduler],
            "use at most",
        );
    }
    expect_failure(
        &model,
        &out,
        &["--guidance", "1e39"],
        "guidance must be between 0 and 1000",
    );
}

/// `--out` only ever replaces a regular file the user may write, and says so before any
/// compute (bug 4).
#[test]
fn out_never_replaces_special_or_protected_files() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let model = model_dir(VARIANTS[0]);
    let victim = dir.path().join("victim.txt");
    std::fs::write(&victim, "precious").unwrap();
    let link = dir.path().join("link.wav");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    let read_only = dir.path().join("take7.wav");
    std::fs::write(&read_only, "take 7").unwrap();
    std::fs::set_permissions(&read_only, std::fs::Permissions::from_mode(0o444)).unwrap();
    let fifo = dir.path().join("pipe.wav");
    let have_fifo = Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .is_ok_and(|s| s.success());
    let check = |out: &Path, needle: &str| {
        let output = generate_with(&model, out, &[]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !output.status.success() && stderr.contains(needle),
            "{}: {stderr}",
            out.display()
        );
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    };
    check(&link, "symbolic link");
    check(&read_only, "read-only");
    if have_fifo {
        check(&fifo, "not a regular file");
    }
    check(&dir.path().join("new-folder/"), "folder");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    assert_eq!(std::fs::read_to_string(&read_only).unwrap(), "take 7");
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".partial"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// A WAV header with rate 0 is refused by `foley plot` instead of hanging (bug 5).
#[test]
fn plot_refuses_a_zero_sample_rate() {
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("rate0.wav");
    let mut bytes = Vec::new();
    let data = [0u8; 64];
    let mut body = b"WAVEfmt ".to_vec();
    body.extend_from_slice(&16u32.to_le_bytes());
    body.extend_from_slice(&3u16.to_le_bytes()); // IEEE float
    body.extend_from_slice(&1u16.to_le_bytes());
    body.extend_from_slice(&0u32.to_le_bytes()); // sample rate 0
    body.extend_from_slice(&0u32.to_le_bytes());
    body.extend_from_slice(&4u16.to_le_bytes());
    body.extend_from_slice(&32u16.to_le_bytes());
    body.extend_from_slice(b"data");
    body.extend_from_slice(&(data.len() as u32).to_le_bytes());
    body.extend_from_slice(&data);
    bytes.extend_from_slice(b"RIFF");
    bytes.extend_from_slice(&(body.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&body);
    std::fs::write(&wav, bytes).unwrap();
    let started = std::time::Instant::now();
    let output = foley(&[
        "plot",
        &wav.display().to_string(),
        &dir.path().join("x.png").display().to_string(),
    ]);
    assert!(started.elapsed().as_secs() < 20, "plot hung");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("rate") || stderr.contains("rate0.wav"),
        "{stderr}"
    );
}

/// Model folders that are not what they should be get a message about what is there.
#[test]
fn odd_model_folders_are_described() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.wav");
    let file = dir.path().join("model.txt");
    std::fs::write(&file, "not a model").unwrap();
    expect_failure(&file, &out, &[], "is a file");
    let empty = dir.path().join("no-weights");
    common::copy_dir(&model_dir(VARIANTS[0]), &empty);
    std::fs::remove_file(empty.join("vocoder/model.safetensors")).unwrap();
    expect_failure(&empty, &out, &[], "holds no weights");
    let twice = dir.path().join("twice");
    common::copy_dir(&model_dir(VARIANTS[0]), &twice);
    std::fs::copy(
        twice.join("vocoder/model.safetensors"),
        twice.join("vocoder/model (copy).safetensors"),
    )
    .unwrap();
    expect_failure(&twice, &out, &[], "several weight files");
}

/// `foley generate` tags its WAVs as the studio's exports are (prompt, seed, settings in BWF
/// `bext` and RIFF INFO), naming a local model folder by its own name, never its path, and
/// undated so that the same request writes the same bytes.
#[test]
fn generated_wavs_carry_the_settings_but_no_local_path() {
    let dir = tempfile::tempdir().unwrap();
    let model = model_dir("audioldm2-tiny").display().to_string();
    let run = |name: &str| {
        let out = dir.path().join(name);
        let output = foley(&[
            "generate",
            "--model",
            &model,
            "--prompt",
            "wind chimes",
            "--seed",
            "9",
            "--steps",
            "2",
            "--out",
            &out.display().to_string(),
            "--quiet",
        ]);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        out
    };
    let first = run("a.wav");
    let metadata = foley::audio::wav::read_wav_metadata(&first).unwrap();
    assert_eq!(
        metadata.description,
        "wind chimes | seed 9 | audioldm2-tiny"
    );
    assert!(metadata.comment.contains("steps: 2"), "{metadata:?}");
    let everything = format!("{metadata:?}");
    assert!(
        !everything.contains("fixtures/"),
        "a local path leaked: {everything}"
    );
    assert_eq!(
        std::fs::read(&first).unwrap(),
        std::fs::read(run("b.wav")).unwrap(),
        "the same request writes the same bytes"
    );
}

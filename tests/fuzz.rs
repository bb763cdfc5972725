//! Property tests of everything Foley parses from outside: model configs, safetensors headers,
//! WAV files, the batch JSONL and library sidecars. Each property runs thousands of generated
//! cases from a fixed seed (`FOLEY_FUZZ_CASES` and `FOLEY_FUZZ_SEED` change the count and the
//! seed for longer runs); a panic anywhere fails the test.

mod common;

use std::path::Path;

use candle_core::{DType, Device};
use common::{fixtures, model_dir};
use foley::engine::limits::Validated;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Value, json};

fn cases(default: u32) -> u32 {
    std::env::var("FOLEY_FUZZ_CASES")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(default)
}

/// A deterministic runner (the same cases on every run, so a CI failure reproduces);
/// `FOLEY_FUZZ_CASES` raises the count for longer runs.
fn runner(count: u32) -> TestRunner {
    let config = Config {
        cases: cases(count),
        failure_persistence: None,
        ..Config::default()
    };
    let seed: u64 = std::env::var("FOLEY_FUZZ_SEED")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(0);
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    TestRunner::new_with_rng(
        config,
        proptest::test_runner::TestRng::from_seed(
            proptest::test_runner::RngAlgorithm::ChaCha,
            &bytes,
        ),
    )
}

/// Values that broke parsers before: zero, negative, huge, fractional, wrong types.
fn odd_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!(0)),
        Just(json!(-1)),
        Just(json!(1)),
        Just(json!(3)),
        Just(json!(4_294_967_295u64)),
        Just(json!(1_000_000_000_000u64)),
        Just(json!(u64::MAX)),
        Just(json!(1e300)),
        Just(json!(-1e300)),
        Just(json!(0.5)),
        Just(json!(-0.0)),
        Just(json!("x")),
        Just(Value::Null),
        Just(json!([])),
        Just(json!([0, 0])),
        Just(json!({})),
        Just(json!(true)),
        any::<i64>().prop_map(|v| json!(v)),
        any::<f64>()
            .prop_filter("finite", |v| v.is_finite())
            .prop_map(|v| json!(v)),
    ]
}

/// Every (path, value) leaf of a JSON object, one level into nested objects.
fn keys(config: &Value) -> Vec<Vec<String>> {
    let mut paths = Vec::new();
    if let Value::Object(map) = config {
        for (key, value) in map {
            paths.push(vec![key.clone()]);
            if let Value::Object(inner) = value {
                for inner_key in inner.keys() {
                    paths.push(vec![key.clone(), inner_key.clone()]);
                }
            }
        }
    }
    paths
}

/// Sets the leaf at `path`; a path through something an earlier mutation made a non-object is
/// skipped.
fn set(config: &mut Value, path: &[String], value: Value) {
    let mut slot = config;
    for part in path {
        let Some(object) = slot.as_object_mut() else {
            return;
        };
        slot = object.entry(part.clone()).or_insert(Value::Null);
    }
    *slot = value;
}

fn read(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Parses `config` as `T` and, if that works, validates it: neither may panic.
fn parse_and_validate<T: serde::de::DeserializeOwned + Validated>(config: &Value) {
    if let Ok(parsed) = serde_json::from_value::<T>(config.clone()) {
        let _ = parsed.validate();
    }
}

#[test]
fn mutated_configs_never_panic_their_checks() {
    use foley::engine::dsp::clap_features::ClapFeatureExtractorConfig;
    use foley::engine::models::autoencoder_same::AutoencoderSameConfig;
    use foley::engine::models::clap_audio::ClapModelAudioConfig;
    use foley::engine::models::clap_text::ClapConfig;
    use foley::engine::models::gpt2::Gpt2Config;
    use foley::engine::models::hifigan::HifiGanConfig;
    use foley::engine::models::projection::ProjectionConfig;
    use foley::engine::models::stable_audio3_dit::StableAudio3DiTConfig;
    use foley::engine::models::stable_audio3_duration::DurationEmbedderConfig;
    use foley::engine::models::t5::T5Config;
    use foley::engine::models::t5gemma::T5GemmaEncoderConfig;
    use foley::engine::models::unet::UNetConfig;
    use foley::engine::models::vae::VaeConfig;
    use foley::engine::schedulers::SchedulerConfig;
    use foley::engine::schedulers::flow_match_euler::FlowMatchConfig;

    let a2 = model_dir("audioldm2-tiny");
    let music = model_dir("musicldm-tiny");
    let sa3 = model_dir("sa3-tiny");
    let sources: Vec<(&str, Value)> = vec![
        ("unet", read(&a2.join("unet/config.json"))),
        ("vae", read(&a2.join("vae/config.json"))),
        ("vocoder", read(&a2.join("vocoder/config.json"))),
        ("clap", read(&music.join("text_encoder/config.json"))),
        ("t5", read(&a2.join("text_encoder_2/config.json"))),
        ("gpt2", read(&a2.join("language_model/config.json"))),
        ("projection", read(&a2.join("projection_model/config.json"))),
        (
            "scheduler",
            read(&a2.join("scheduler/scheduler_config.json")),
        ),
        (
            "features",
            read(&music.join("feature_extractor/preprocessor_config.json")),
        ),
        ("t5gemma", read(&sa3.join("text_encoder/config.json"))),
        ("dit", read(&sa3.join("transformer/config.json"))),
        ("same", read(&sa3.join("vae/config.json"))),
        ("duration", read(&sa3.join("duration_embedder/config.json"))),
        ("flow", read(&sa3.join("scheduler/scheduler_config.json"))),
    ];
    let strategy = (
        0..sources.len(),
        any::<prop::sample::Index>(),
        odd_value(),
        1usize..4,
    );
    runner(10_000)
        .run(&strategy, |(source, key, value, mutations)| {
            let (kind, original) = &sources[source];
            let mut config = original.clone();
            let paths = keys(&config);
            for offset in 0..mutations {
                let path = &paths[(key.index(paths.len()) + offset * 7) % paths.len()];
                set(&mut config, path, value.clone());
            }
            match *kind {
                "unet" => parse_and_validate::<UNetConfig>(&config),
                "vae" => parse_and_validate::<VaeConfig>(&config),
                "vocoder" => parse_and_validate::<HifiGanConfig>(&config),
                "clap" => {
                    parse_and_validate::<ClapConfig>(&config);
                    parse_and_validate::<ClapModelAudioConfig>(&config);
                }
                "t5" => parse_and_validate::<T5Config>(&config),
                "gpt2" => parse_and_validate::<Gpt2Config>(&config),
                "projection" => parse_and_validate::<ProjectionConfig>(&config),
                "t5gemma" => parse_and_validate::<T5GemmaEncoderConfig>(&config),
                "dit" => parse_and_validate::<StableAudio3DiTConfig>(&config),
                "same" => parse_and_validate::<AutoencoderSameConfig>(&config),
                "duration" => parse_and_validate::<DurationEmbedderConfig>(&config),
                "flow" => {
                    if let Ok(parsed) = serde_json::from_value::<FlowMatchConfig>(config.clone()) {
                        let _ = parsed.check();
                    }
                }
                "scheduler" => {
                    if let Ok(parsed) = serde_json::from_value::<SchedulerConfig>(config.clone()) {
                        let _ = parsed.validate();
                    }
                }
                _ => parse_and_validate::<ClapFeatureExtractorConfig>(&config),
            }
            Ok(())
        })
        .unwrap();
}

/// The whole load (and, when it loads, a 2-step generation) on fixture copies with one
/// corrupted config value: an error or a result, never a panic.
#[test]
fn pipelines_with_corrupted_configs_load_or_fail_cleanly() {
    use foley::engine::pipeline::{CancelFlag, Pipeline, Request};
    let files = [
        ("audioldm-tiny", "unet/config.json"),
        ("audioldm-tiny", "vae/config.json"),
        ("audioldm-tiny", "vocoder/config.json"),
        ("audioldm-tiny", "text_encoder/config.json"),
        ("audioldm-tiny", "scheduler/scheduler_config.json"),
        ("audioldm2-tiny", "text_encoder_2/config.json"),
        ("audioldm2-tiny", "language_model/config.json"),
        ("audioldm2-tiny", "projection_model/config.json"),
        ("audioldm2-tiny", "unet/config.json"),
        ("sa3-tiny", "text_encoder/config.json"),
        ("sa3-tiny", "transformer/config.json"),
        ("sa3-tiny", "vae/config.json"),
        ("sa3-tiny", "duration_embedder/config.json"),
        ("sa3-tiny", "scheduler/scheduler_config.json"),
        ("sa3-tiny-official", "model_config.json"),
    ];
    let dir = tempfile::tempdir().unwrap();
    for variant in [
        "audioldm-tiny",
        "audioldm2-tiny",
        "sa3-tiny",
        "sa3-tiny-official",
    ] {
        common::copy_dir(&model_dir(variant), &dir.path().join(variant));
    }
    let originals: Vec<Value> = files
        .iter()
        .map(|(variant, file)| read(&dir.path().join(variant).join(file)))
        .collect();
    let strategy = (0..files.len(), any::<prop::sample::Index>(), odd_value());
    runner(200)
        .run(&strategy, |(file, key, value)| {
            let (variant, name) = files[file];
            let root = dir.path().join(variant);
            let mut config = originals[file].clone();
            let paths = keys(&config);
            set(&mut config, &paths[key.index(paths.len())], value);
            if std::env::var_os("FOLEY_FUZZ_TRACE").is_some() {
                eprintln!("{variant}/{name}: {config}");
            }
            std::fs::write(root.join(name), serde_json::to_string(&config).unwrap()).unwrap();
            let outcome = std::panic::catch_unwind(|| {
                if let Ok(pipeline) = Pipeline::load(&root, &Device::Cpu, DType::F32) {
                    let request = Request {
                        prompt: "rain".into(),
                        negative_prompt: None,
                        seed: 1,
                        steps: 2,
                        guidance: 2.5,
                        // The model's own length, except Stable Audio 3's 10 s default.
                        duration: variant.starts_with("sa3").then_some(0.3),
                        scheduler: foley::engine::schedulers::SchedulerKind::Ddim,
                        waveforms: 1,
                        task: Default::default(),
                    };
                    let _ = pipeline.generate(&request, &mut |_| {}, &CancelFlag::new());
                }
            });
            std::fs::write(
                root.join(name),
                serde_json::to_string(&originals[file]).unwrap(),
            )
            .unwrap();
            prop_assert!(outcome.is_ok(), "{variant}/{name} with {config} panicked");
            Ok(())
        })
        .unwrap();
}

/// Mutated and random safetensors files: refused with a message, never a panic or a huge
/// allocation (headers are capped at 100 MB).
#[test]
fn safetensors_headers_never_panic() {
    let original =
        std::fs::read(fixtures().join("audioldm-tiny/vocoder/model.safetensors")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    let strategy = (
        any::<prop::sample::Index>(),
        prop::collection::vec(any::<u8>(), 1..16),
        0u8..4,
    );
    runner(10_000)
        .run(&strategy, |(at, bytes, how)| {
            let mut file = original.clone();
            let header_len = u64::from_le_bytes(file[..8].try_into().unwrap()) as usize;
            match how {
                // overwrite bytes inside the header (JSON offsets, dtypes, shapes)
                0 => {
                    let start = 8 + at.index(header_len.max(1));
                    for (offset, byte) in bytes.iter().enumerate() {
                        if let Some(slot) = file.get_mut(start + offset) {
                            *slot = *byte;
                        }
                    }
                }
                // a different header length
                1 => {
                    let mut claimed = [0u8; 8];
                    for (slot, byte) in claimed.iter_mut().zip(&bytes) {
                        *slot = *byte;
                    }
                    file[..8].copy_from_slice(&claimed);
                }
                // truncated
                2 => file.truncate(at.index(file.len())),
                // pure noise
                _ => file = bytes,
            }
            std::fs::write(&path, &file).unwrap();
            let _ = foley::engine::weights::validate_safetensors(&path);
            Ok(())
        })
        .unwrap();
}

/// Mutated WAV files through both readers: refused with a message or read, never a panic,
/// and never a rate outside 1–768 000 Hz or a NaN sample accepted for editing.
#[test]
fn wav_files_never_panic_the_readers() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.wav");
    let spec = hound::WavSpec {
        channels: 2,
        sample_rate: 22_050,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut writer = hound::WavWriter::create(&good, spec).unwrap();
    for index in 0..400i32 {
        writer.write_sample((index * 37 % 2000) as i16).unwrap();
    }
    writer.finalize().unwrap();
    let original = std::fs::read(&good).unwrap();
    let path = dir.path().join("fuzzed.wav");
    let strategy = (
        any::<prop::sample::Index>(),
        prop::collection::vec(any::<u8>(), 1..12),
        any::<bool>(),
    );
    runner(10_000)
        .run(&strategy, |(at, bytes, truncate)| {
            let mut file = original.clone();
            // Mostly the 44-byte header, where rates, sizes and formats live.
            let start = if at.index(4) == 0 {
                at.index(file.len())
            } else {
                at.index(44)
            };
            for (offset, byte) in bytes.iter().enumerate() {
                if let Some(slot) = file.get_mut(start + offset) {
                    *slot = *byte;
                }
            }
            if truncate {
                file.truncate(at.index(file.len()));
            }
            std::fs::write(&path, &file).unwrap();
            if let Ok(audio) = foley::audio::wav_in::read_input_audio(&path) {
                prop_assert!((1..=768_000).contains(&audio.sample_rate));
                prop_assert!(audio.channels.iter().flatten().all(|v| v.is_finite()));
            }
            if let Ok((_, rate)) = foley::audio::wav::read_wav(&path) {
                prop_assert!((1..=768_000).contains(&rate));
            }
            Ok(())
        })
        .unwrap();
}

/// Random JSONL: every line becomes a job or a per-line error, and every accepted output name
/// is a plain file name inside the output folder.
#[test]
fn batch_jobs_files_never_panic_and_names_stay_inside() {
    use foley::batch::jobs::{JobSpec, check_name, parse_jobs};
    let line = prop_oneof![
        "\\PC{0,40}",
        "[a-z0-9./_-]{0,12}"
            .prop_map(|name| format!("{{\"name\": \"{name}\", \"prompt\": \"x\"}}")),
        (odd_value(), "[a-z_]{1,12}").prop_map(|(value, key)| format!("{{\"{key}\": {value}}}")),
        odd_value().prop_map(|value| format!("{{\"defaults\": {{\"steps\": {value}}}}}")),
        odd_value().prop_map(|value| format!("{{\"prompt\": \"p\", \"waveforms\": {value}}}")),
        Just("{\"name\": \"../../etc/passwd\", \"prompt\": \"x\"}".to_string()),
        Just("{\"name\": \"/abs\", \"prompt\": \"x\"}".to_string()),
    ];
    runner(10_000)
        .run(&prop::collection::vec(line, 0..12), |lines| {
            let text = lines.join("\n");
            let jobs = parse_jobs(&text, &JobSpec::default());
            for job in &jobs {
                if job.spec.is_ok() {
                    prop_assert!(
                        check_name(&job.name).is_ok(),
                        "accepted name {:?}",
                        job.name
                    );
                    prop_assert!(!job.name.contains('/') && !job.name.starts_with('.'));
                }
            }
            Ok(())
        })
        .unwrap();
}

/// Random and mutated sidecars in a library folder: it opens, reports what it cannot read, and
/// every record's paths stay inside the folder.
#[test]
fn library_sidecars_never_panic_or_escape() {
    use foley::library::Library;
    let dir = tempfile::tempdir().unwrap();
    let library_dir = dir.path().join("library");
    std::fs::create_dir(&library_dir).unwrap();
    let base = json!({
        "id": "clip", "prompt": "rain", "seed": 1, "steps": 2, "guidance": 3.5, "scheduler": "ddim",
        "model": "tiny", "duration": 0.016, "sample_rate": 16000, "created": 1
    });
    let keys: Vec<String> = base.as_object().unwrap().keys().cloned().collect();
    let strategy = (
        any::<prop::sample::Index>(),
        odd_value(),
        "[a-zA-Z0-9./_-]{1,20}",
        any::<bool>(),
    );
    runner(10_000)
        .run(&strategy, |(key, value, id, use_id)| {
            let mut sidecar = base.clone();
            if use_id {
                sidecar["id"] = json!(id);
            } else {
                sidecar[keys[key.index(keys.len())].as_str()] = value;
            }
            std::fs::write(
                library_dir.join("clip.json"),
                serde_json::to_string(&sidecar).unwrap(),
            )
            .unwrap();
            if let Ok(library) = Library::open(&library_dir) {
                for record in library.records() {
                    let wav = library.wav_path(record);
                    prop_assert_eq!(wav.parent(), Some(library_dir.as_path()), "{:?}", wav);
                }
            }
            Ok(())
        })
        .unwrap();
}

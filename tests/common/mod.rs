//! Shared helpers for the parity tests: fixture paths, reference tensors and error measures.
#![allow(dead_code)]

pub mod edits;

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use foley::engine::noise::TorchGenerator;
use foley::engine::pipeline::{CancelFlag, Pipeline, Request};

pub const VARIANTS: [&str; 2] = ["audioldm2-tiny", "audioldm2-tiny-deep"];

/// `tests/fixtures`, or `$FOLEY_FIXTURES` for a test binary run away from its checkout (the
/// GPU check carries prebuilt test binaries to a machine without Rust).
pub fn fixtures() -> PathBuf {
    std::env::var_os("FOLEY_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures"))
}

pub fn model_dir(variant: &str) -> PathBuf {
    fixtures().join(variant)
}

/// The reference tensors diffusers produced for `variant`, stage `stage`.
pub struct Reference {
    tensors: HashMap<String, Tensor>,
    name: String,
}

impl Reference {
    pub fn load(variant: &str, stage: &str) -> Self {
        let path = fixtures()
            .join("reference")
            .join(variant)
            .join(format!("{stage}.safetensors"));
        let tensors = candle_core::safetensors::load(&path, &Device::Cpu)
            .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
        Self {
            tensors,
            name: format!("{variant}/{stage}"),
        }
    }

    pub fn load_shared(name: &str) -> Self {
        let path = fixtures()
            .join("reference")
            .join(format!("{name}.safetensors"));
        let tensors = candle_core::safetensors::load(&path, &Device::Cpu)
            .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
        Self {
            tensors,
            name: name.to_string(),
        }
    }

    /// How many tensors are named `{prefix}{n}` for n = 0, 1, ….
    pub fn count_indexed(&self, prefix: &str) -> usize {
        (0..)
            .take_while(|n| self.has(&format!("{prefix}{n}")))
            .count()
    }

    pub fn has(&self, key: &str) -> bool {
        self.tensors.contains_key(key)
    }

    pub fn get(&self, key: &str) -> Tensor {
        self.tensors
            .get(key)
            .unwrap_or_else(|| panic!("{} has no tensor {key}", self.name))
            .clone()
    }

    pub fn f32(&self, key: &str) -> Tensor {
        self.get(key).to_dtype(DType::F32).unwrap()
    }

    /// An integer tensor as rows of u32 (ids, masks).
    pub fn rows(&self, key: &str) -> Vec<Vec<u32>> {
        let tensor = self.get(key).to_dtype(DType::I64).unwrap();
        let tensor = if tensor.rank() == 1 {
            tensor.unsqueeze(0).unwrap()
        } else {
            tensor
        };
        tensor
            .to_vec2::<i64>()
            .unwrap()
            .into_iter()
            .map(|row| row.into_iter().map(|value| value as u32).collect())
            .collect()
    }

    pub fn ints(&self, key: &str) -> Vec<i64> {
        self.get(key)
            .to_dtype(DType::I64)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    }

    pub fn values(&self, key: &str) -> Vec<f32> {
        self.f32(key).flatten_all().unwrap().to_vec1().unwrap()
    }
}

/// ‖actual − expected‖ / ‖expected‖.
pub fn relative_l2(actual: &Tensor, expected: &Tensor) -> f64 {
    assert_eq!(actual.dims(), expected.dims(), "shape mismatch");
    let actual: Vec<f32> = actual
        .to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let expected: Vec<f32> = expected
        .to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    relative_l2_slices(&actual, &expected)
}

pub fn relative_l2_slices(actual: &[f32], expected: &[f32]) -> f64 {
    assert_eq!(actual.len(), expected.len(), "length mismatch");
    let (mut diff, mut norm) = (0f64, 0f64);
    for (a, e) in actual.iter().zip(expected) {
        assert!(a.is_finite(), "non-finite output");
        diff += (*a as f64 - *e as f64).powi(2);
        norm += (*e as f64).powi(2);
    }
    assert!(norm > 0.0, "reference is all zeros");
    (diff / norm).sqrt()
}

#[track_caller]
pub fn assert_close(actual: &Tensor, expected: &Tensor, tolerance: f64, what: &str) {
    let error = relative_l2(actual, expected);
    eprintln!("parity {what}: relative L2 {error:.3e}");
    assert!(
        error <= tolerance,
        "{what}: relative L2 error {error:.3e} > {tolerance:.0e}"
    );
}

/// (batch, channels, samples) → one list of interleaved frames per batch row, as a stereo clip
/// holds them.
pub fn interleaved(audio: &Tensor) -> Vec<Vec<f32>> {
    audio
        .transpose(1, 2)
        .unwrap()
        .contiguous()
        .unwrap()
        .flatten_from(1)
        .unwrap()
        .to_vec2()
        .unwrap()
}

pub fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

pub fn read_json(path: &std::path::Path) -> serde_json::Value {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// The end-to-end tolerance on waveforms (relative L2).
pub const WAVEFORM_TOLERANCE: f64 = 1e-4;

/// One recorded diffusers generation (`e2e.json`).
pub struct E2eCase {
    pub name: String,
    pub request: Request,
    pub latent_shape: Vec<usize>,
}

pub fn e2e_cases(variant: &str) -> Vec<E2eCase> {
    let json = read_json(&fixtures().join("reference").join(variant).join("e2e.json"));
    let list = json.get("cases").unwrap_or(&json);
    list.as_array()
        .unwrap()
        .iter()
        .map(|case| {
            // Older fixtures spell DPM-Solver++ as `dpmpp2m`.
            let scheduler = match case["scheduler"].as_str().unwrap() {
                "dpmpp2m" => "dpm++2m",
                other => other,
            };
            E2eCase {
                name: case["name"].as_str().unwrap().to_string(),
                request: Request {
                    task: Default::default(),
                    prompt: case["prompt"].as_str().unwrap().to_string(),
                    negative_prompt: case["negative_prompt"].as_str().map(str::to_string),
                    seed: case["seed"].as_u64().unwrap(),
                    steps: case["steps"].as_u64().unwrap() as usize,
                    guidance: case["guidance"].as_f64().unwrap(),
                    // `null` means the pipeline's default length was used.
                    duration: case["audio_length_in_s_argument"].as_f64(),
                    scheduler: scheduler
                        .parse()
                        .unwrap_or_else(|error| panic!("{variant}: {error}")),
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

/// Runs every recorded case of `variant` and compares noise (bit for bit), the latents after
/// every UNet evaluation and the final waveform with diffusers.
pub fn check_e2e(variant: &str, minimum_cases: usize) {
    check_e2e_on(variant, minimum_cases, &Device::Cpu, WAVEFORM_TOLERANCE);
}

/// [`check_e2e`] on `device`, within `tolerance` (relative L2) for latents and waveforms.
pub fn check_e2e_on(variant: &str, minimum_cases: usize, device: &Device, tolerance: f64) {
    let pipeline = Pipeline::load(&model_dir(variant), device, DType::F32)
        .unwrap_or_else(|error| panic!("loading {variant}: {error}"));
    let reference = Reference::load(variant, "e2e");
    let cases = e2e_cases(variant);
    assert!(
        cases.len() >= minimum_cases,
        "{variant}: expected the full case grid"
    );
    assert!(
        cases.iter().any(|case| case.latent_shape[2] % 2 == 1),
        "{variant}: no case with an odd latent height"
    );
    for case in cases {
        let what = format!("{variant} {}", case.name);
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
        let clip = pipeline
            .generate(
                &case.request,
                &mut |progress| {
                    let key = format!("{}.latents.{}", case.name, progress.step - 1);
                    step_errors.push(relative_l2(progress.latents, &reference.f32(&key)));
                },
                &CancelFlag::new(),
            )
            .unwrap_or_else(|error| panic!("{what}: {error}"));
        let evaluations = reference.count_indexed(&format!("{}.latents.", case.name));
        assert_eq!(
            step_errors.len(),
            evaluations,
            "{what}: one callback per UNet evaluation"
        );
        for (step, error) in step_errors.iter().enumerate() {
            assert!(
                *error <= tolerance,
                "{what}: latents after evaluation {step} off by {error:.3e}"
            );
        }
        let expected = reference.values(&format!("{}.waveform", case.name));
        assert_eq!(clip.waveforms.len(), 1);
        let error = relative_l2_slices(&clip.waveforms[0], &expected);
        eprintln!("parity {what} waveform: relative L2 {error:.3e}");
        assert!(
            error <= tolerance,
            "{what}: waveform relative L2 {error:.3e}"
        );
    }
}

/// The studio in a 1280×900 test window with `model` loading (if any), its library in
/// `library` and no audio device.
#[cfg(feature = "studio")]
pub fn studio(
    model: Option<String>,
    library: &std::path::Path,
) -> egui_kittest::Harness<'static, foley::gui::FoleyApp> {
    let library = library.to_path_buf();
    egui_kittest::Harness::builder()
        .with_size(eframe::egui::Vec2::new(1280.0, 900.0))
        .build_eframe(move |creation| {
            foley::gui::FoleyApp::new(
                creation,
                foley::gui::AppConfig {
                    model,
                    library_dir: Some(library),
                    audio: false,
                },
            )
            .expect("the studio starts")
        })
}

/// Steps the studio until `done` holds (60 s at most), then once more so the result is drawn.
#[cfg(feature = "studio")]
pub fn wait_until(
    harness: &mut egui_kittest::Harness<'static, foley::gui::FoleyApp>,
    what: &str,
    done: impl Fn(&foley::gui::FoleyApp) -> bool,
) {
    let started = std::time::Instant::now();
    while !done(harness.state()) {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "timed out waiting for {what}"
        );
        harness.step();
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    harness.step();
}

/// Steps the studio until the disk thread has carried out what was asked of it (saves,
/// changes, deletes, exports), then once more so the result is drawn.
#[cfg(feature = "studio")]
pub fn settle(harness: &mut egui_kittest::Harness<'static, foley::gui::FoleyApp>) {
    harness.run_steps(1);
    wait_until(
        harness,
        "the disk thread",
        foley::gui::FoleyApp::disk_is_idle,
    );
}

//! Parity of every scheduler with diffusers (tools/reference/build_scheduler_fixtures.py): for
//! both base configs and 10 / 25 steps, the schedule and every step of a recorded loop. Each
//! step is fed diffusers' own input sample and model output, so errors do not compound, while
//! the scheduler keeps the state its previous steps left.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use foley::engine::noise::TorchGenerator;
use foley::engine::schedulers::{SchedulerConfig, SchedulerKind};

const CONFIGS: [&str; 2] = ["real", "tiny"];
const STEPS: [usize; 2] = [10, 25];
/// Relative L2 error allowed on `scale_model_input` and `step` outputs.
const TENSOR_TOLERANCE: f64 = 1e-5;
/// Relative error allowed on σ tables and `init_noise_sigma`.
const SIGMA_TOLERANCE: f64 = 1e-6;
/// Absolute error allowed on fractional (interpolated) timesteps: 1e-4, widened to two float32
/// ulps of the value. diffusers derives them from σ tables that torch computes with MKL's sqrt,
/// log and exp, which are not correctly rounded; one ulp there moves t by up to two ulps
/// (1.2e-4 near t = 900).
const TIMESTEP_TOLERANCE: f64 = 1e-4;
const TIMESTEP_ULPS: f64 = 2.0;
/// The seed of the generator diffusers passed to `step`.
const STEP_SEED: u64 = 7;

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/reference/schedulers")
}

fn summary() -> serde_json::Value {
    let path = fixture_dir().join("schedulers.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

/// The base DDIM config as scheduler_config.json holds it.
fn base_config(summary: &serde_json::Value, base: &str) -> SchedulerConfig {
    let config = summary["base_configs"][base]["ddim_config"].clone();
    assert!(
        config.is_object(),
        "schedulers.json has no {base} ddim_config"
    );
    serde_json::from_value(config).unwrap()
}

struct Fixture {
    name: String,
    tensors: HashMap<String, Tensor>,
}

impl Fixture {
    fn load(name: &str) -> Self {
        let path = fixture_dir().join(format!("{name}.safetensors"));
        let tensors = candle_core::safetensors::load(&path, &Device::Cpu)
            .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
        Self {
            name: name.to_string(),
            tensors,
        }
    }

    fn has(&self, key: &str) -> bool {
        self.tensors.contains_key(key)
    }

    fn get(&self, key: &str) -> &Tensor {
        self.tensors
            .get(key)
            .unwrap_or_else(|| panic!("{} has no tensor {key}", self.name))
    }

    fn f32(&self, key: &str) -> Tensor {
        self.get(key).to_dtype(DType::F32).unwrap()
    }

    fn values(&self, key: &str) -> Vec<f64> {
        self.get(key)
            .to_dtype(DType::F64)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    }
}

fn relative_l2(actual: &Tensor, expected: &Tensor) -> f64 {
    assert_eq!(actual.shape(), expected.shape());
    let difference = (actual - expected)
        .unwrap()
        .sqr()
        .unwrap()
        .sum_all()
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap();
    let norm = expected
        .sqr()
        .unwrap()
        .sum_all()
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap();
    (difference / norm.max(f64::MIN_POSITIVE)).sqrt()
}

fn relative(actual: f64, expected: f64) -> f64 {
    if actual == expected {
        0.0
    } else {
        (actual - expected).abs() / expected.abs().max(f64::MIN_POSITIVE)
    }
}

/// Worst errors seen over one scheduler's runs.
#[derive(Default)]
struct Worst {
    timestep: f64,
    sigma: f64,
    init_noise_sigma: f64,
    scaled: f64,
    previous: f64,
}

fn check_schedule(
    fixture: &Fixture,
    kind: SchedulerKind,
    base: &str,
    steps: usize,
    worst: &mut Worst,
) {
    let summary = summary();
    let config = base_config(&summary, base);
    let prefix = format!("{base}.{steps}");
    let context = format!("{} {prefix}", kind.name());
    let scheduler = kind.build(&config, steps).unwrap();

    let key = format!("{prefix}.timesteps");
    // Whole-valued schedules must match exactly, interpolated ones within the tolerance.
    let integer = summary["schedulers"][kind.name()]["timesteps_integral_valued"]
        .as_bool()
        .expect("schedulers.json says whether timesteps are whole");
    let expected = fixture.values(&key);
    let actual = scheduler.timesteps();
    assert_eq!(actual.len(), expected.len(), "{context}: timestep count");
    for (index, (&actual, &expected)) in actual.iter().zip(&expected).enumerate() {
        if integer {
            assert_eq!(actual, expected, "{context}: timestep {index}");
        } else {
            let error = (actual - expected).abs();
            worst.timestep = worst.timestep.max(error);
            let ulp = (expected as f32).abs().next_up() as f64 - (expected as f32).abs() as f64;
            assert!(
                error <= TIMESTEP_TOLERANCE.max(TIMESTEP_ULPS * ulp),
                "{context}: timestep {index} is {actual}, diffusers {expected}"
            );
        }
    }

    let key = format!("{prefix}.sigmas");
    match (scheduler.sigmas(), fixture.has(&key)) {
        (Some(actual), true) => {
            let expected = fixture.values(&key);
            assert_eq!(actual.len(), expected.len(), "{context}: σ count");
            for (index, (&actual, &expected)) in actual.iter().zip(&expected).enumerate() {
                let error = relative(actual, expected);
                worst.sigma = worst.sigma.max(error);
                assert!(
                    error <= SIGMA_TOLERANCE,
                    "{context}: σ {index} is {actual}, diffusers {expected}"
                );
            }
        }
        (None, false) => {}
        (ours, _) => panic!(
            "{context}: σ table present here: {}, in diffusers: {}",
            ours.is_some(),
            fixture.has(&key)
        ),
    }

    let expected = fixture.values(&format!("{prefix}.init_noise_sigma"))[0];
    let error = relative(scheduler.init_noise_sigma(), expected);
    worst.init_noise_sigma = worst.init_noise_sigma.max(error);
    assert!(
        error <= SIGMA_TOLERANCE,
        "{context}: init_noise_sigma {} vs diffusers {expected}",
        scheduler.init_noise_sigma()
    );
}

fn check_loop(fixture: &Fixture, kind: SchedulerKind, base: &str, steps: usize, worst: &mut Worst) {
    let summary = summary();
    let config = base_config(&summary, base);
    let prefix = format!("{base}.{steps}");
    let mut scheduler = kind.build(&config, steps).unwrap();
    let count = scheduler.timesteps().len();
    assert!(
        !fixture.has(&format!("{prefix}.sample.{count}")),
        "{} {prefix}: diffusers ran more than {count} steps",
        kind.name()
    );
    let mut generator = TorchGenerator::new(STEP_SEED);
    for index in 0..count {
        let context = format!("{} {prefix} step {index}", kind.name());
        let key = |name: &str| format!("{prefix}.{name}.{index}");
        let sample = fixture.f32(&key("sample"));
        let scaled = scheduler.scale_model_input(sample.clone(), index).unwrap();
        let error = relative_l2(&scaled, &fixture.f32(&key("scaled")));
        worst.scaled = worst.scaled.max(error);
        assert!(
            error <= TENSOR_TOLERANCE,
            "{context}: scaled input error {error:e}"
        );

        let output = fixture.f32(&key("model_output"));
        let previous = scheduler
            .step(&output, index, &sample, &mut generator)
            .unwrap();
        let error = relative_l2(&previous, &fixture.f32(&key("prev_sample")));
        worst.previous = worst.previous.max(error);
        assert!(
            error <= TENSOR_TOLERANCE,
            "{context}: prev_sample error {error:e}"
        );
    }
    // Only the same number and size of draws leaves the generator where diffusers' was.
    let next: Vec<u32> = generator
        .randn_f32(16)
        .iter()
        .map(|v| v.to_bits())
        .collect();
    let expected: Vec<u32> = fixture
        .f32(&format!("{prefix}.next_randn"))
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .map(|v| v.to_bits())
        .collect();
    assert_eq!(
        next,
        expected,
        "{} {prefix}: random draws differ",
        kind.name()
    );
}

fn check(name: &str) {
    let kind: SchedulerKind = name.parse().unwrap();
    let fixture = Fixture::load(name);
    let mut worst = Worst::default();
    for base in CONFIGS {
        for steps in STEPS {
            check_schedule(&fixture, kind, base, steps, &mut worst);
            check_loop(&fixture, kind, base, steps, &mut worst);
        }
    }
    println!(
        "{name}: worst timestep {:.1e}, σ {:.1e}, init_noise_sigma {:.1e}, scaled {:.1e}, \
         prev_sample {:.1e}",
        worst.timestep, worst.sigma, worst.init_noise_sigma, worst.scaled, worst.previous
    );
}

macro_rules! parity_tests {
    ($($test:ident => $name:literal),* $(,)?) => {
        /// The schedulers with a parity test below.
        const TESTED: &[&str] = &[$($name),*];
        $(
            #[test]
            fn $test() {
                check($name);
            }
        )*
    };
}

parity_tests! {
    ddim_matches_diffusers => "ddim",
    ddpm_matches_diffusers => "ddpm",
    pndm_matches_diffusers => "pndm",
    lms_matches_diffusers => "lms",
    euler_matches_diffusers => "euler",
    euler_ancestral_matches_diffusers => "euler-a",
    heun_matches_diffusers => "heun",
    kdpm2_matches_diffusers => "kdpm2",
    kdpm2_ancestral_matches_diffusers => "kdpm2-a",
    dpm_solver_multistep_matches_diffusers => "dpm++2m",
    dpm_solver_multistep_karras_matches_diffusers => "dpm++2m-karras",
    dpm_solver_singlestep_matches_diffusers => "dpm++-single",
    deis_matches_diffusers => "deis",
    unipc_matches_diffusers => "unipc",
}

/// Every scheduler name has a fixture and a test, and every fixture a scheduler: a scheduler
/// missing on either side fails here rather than going untested.
#[test]
fn every_scheduler_has_fixtures_and_a_test() {
    let names: BTreeSet<&str> = SchedulerKind::NAMES.iter().copied().collect();
    let tested: BTreeSet<&str> = TESTED.iter().copied().collect();
    assert_eq!(tested, names, "parity tests vs SchedulerKind::NAMES");

    let files: BTreeSet<String> = std::fs::read_dir(fixture_dir())
        .unwrap_or_else(|error| panic!("{}: {error}", fixture_dir().display()))
        .filter_map(|entry| {
            let name = entry.ok()?.file_name().into_string().ok()?;
            name.strip_suffix(".safetensors").map(str::to_string)
        })
        .collect();
    let names: BTreeSet<String> = names.iter().map(|name| name.to_string()).collect();
    assert_eq!(files, names, "fixture files vs SchedulerKind::NAMES");

    let summary = summary();
    let recorded: BTreeSet<String> = summary["schedulers"]
        .as_object()
        .expect("schedulers.json lists its schedulers")
        .keys()
        .cloned()
        .collect();
    assert_eq!(recorded, names, "schedulers.json vs SchedulerKind::NAMES");
    for name in SchedulerKind::NAMES {
        let kind: SchedulerKind = name.parse().unwrap();
        assert_eq!(kind.name(), *name);
    }
}

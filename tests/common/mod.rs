//! Shared helpers for the parity tests: fixture paths, reference tensors and error measures.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};

pub const VARIANTS: [&str; 2] = ["audioldm2-tiny", "audioldm2-tiny-deep"];

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
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

pub fn read_json(path: &std::path::Path) -> serde_json::Value {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    serde_json::from_str(&text).unwrap()
}

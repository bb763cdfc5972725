//! Where and in which precision the engine runs.

use candle_core::{DType, Device};

use crate::error::{FoleyError, Result};

/// The compute device as the user names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceKind {
    #[default]
    Cpu,
    Cuda,
    Metal,
}

impl DeviceKind {
    /// Opens the device; a build without the backend says so instead of panicking.
    pub fn open(self) -> Result<Device> {
        let unavailable = |name: &str, error: candle_core::Error| {
            FoleyError::Unsupported(format!("{name} device is not available: {error}"))
        };
        match self {
            Self::Cpu => Ok(Device::Cpu),
            Self::Cuda => {
                // Opt-in, like torch.backends.cuda.matmul.allow_tf32: TF32 tensor cores for
                // f32 matrix products, faster and about 1e-3 relative off full f32.
                let tf32 = std::env::var("FOLEY_CUDA_TF32").is_ok_and(|value| value == "1");
                candle_core::cuda::set_gemm_reduced_precision_f32(tf32);
                Device::new_cuda(0).map_err(|error| unavailable("CUDA", error))
            }
            Self::Metal => Device::new_metal(0).map_err(|error| unavailable("Metal", error)),
        }
    }
}

impl std::str::FromStr for DeviceKind {
    type Err = FoleyError;

    fn from_str(name: &str) -> Result<Self> {
        match name {
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda),
            "metal" => Ok(Self::Metal),
            other => Err(FoleyError::InvalidRequest(format!(
                "unknown device '{other}' (cpu, cuda or metal)"
            ))),
        }
    }
}

/// What a user should know before running in `dtype` on `device`, if anything: on the CPU the
/// half types are for checking drift, not for speed, because candle's CPU kernels widen them.
pub fn precision_notice(device: DeviceKind, dtype: DType) -> Option<String> {
    (device == DeviceKind::Cpu && dtype != DType::F32).then(|| {
        format!(
            "{} on the CPU is no faster than f32 (candle's CPU kernels compute it through f32); f32 is the fast, exact CPU path",
            dtype.as_str()
        )
    })
}

/// Parses `f32`, `f16` or `bf16`.
pub fn parse_dtype(name: &str) -> Result<DType> {
    match name {
        "f32" => Ok(DType::F32),
        "f16" => Ok(DType::F16),
        "bf16" => Ok(DType::BF16),
        other => Err(FoleyError::InvalidRequest(format!(
            "unknown dtype '{other}' (f32, f16 or bf16)"
        ))),
    }
}

//! Where and in which precision the engine runs.

use candle_core::{DType, Device};

use crate::engine::kernels::{self, gemm_bf16::Engine};
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

/// How a run asked for in `dtype` on a device computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// The dtype the weights load in (and candle's ops compute in).
    pub weights: DType,
    /// bf16 products on this CPU engine ([`kernels::with_bf16_products`]) with f32 weights.
    pub bf16_products: Option<Engine>,
    /// What the user should know before the run, as one line.
    pub notice: Option<&'static str>,
}

impl Plan {
    /// bf16 on a CPU with AMX or AVX512-BF16 is the fast mode: f32 weights and activations,
    /// the products of linears, convolutions and (with AMX) attention in bf16 with f32 sums,
    /// as PyTorch's bf16 autocast computes. Without them bf16 falls back to f32 with a notice.
    /// Elsewhere the weights take `dtype`.
    pub fn new(device: DeviceKind, dtype: DType) -> Self {
        Self::for_engine(device, dtype, Engine::detect())
    }

    fn for_engine(device: DeviceKind, dtype: DType, engine: Engine) -> Self {
        let (weights, bf16_products, notice) = match (device, dtype) {
            (DeviceKind::Cpu, DType::BF16) if engine.is_hardware() => {
                (DType::F32, Some(engine), None)
            }
            (DeviceKind::Cpu, DType::BF16) => (
                DType::F32,
                None,
                Some("bf16 on the CPU needs AMX or AVX512-BF16, which this CPU lacks; running f32"),
            ),
            (DeviceKind::Cpu, DType::F16) => (
                DType::F16,
                None,
                Some(
                    "f16 on the CPU is no faster than f32 (candle's CPU kernels compute it through f32); bf16 is the fast mode on CPUs with AMX or AVX512-BF16",
                ),
            ),
            _ => (dtype, None, None),
        };
        Self {
            weights,
            bf16_products,
            notice,
        }
    }

    /// Runs `work` with this plan's products.
    pub fn run<R>(&self, work: impl FnOnce() -> R) -> R {
        kernels::with_bf16_products(self.bf16_products, work)
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_on_the_cpu_is_the_products_mode_or_f32_with_a_notice() {
        let fast = Plan::for_engine(DeviceKind::Cpu, DType::BF16, Engine::Amx);
        assert_eq!(
            (fast.weights, fast.bf16_products, fast.notice),
            (DType::F32, Some(Engine::Amx), None)
        );
        let fallback = Plan::for_engine(DeviceKind::Cpu, DType::BF16, Engine::Emulated);
        assert_eq!(
            (fallback.weights, fallback.bf16_products),
            (DType::F32, None)
        );
        assert!(
            fallback
                .notice
                .is_some_and(|notice| notice.contains("running f32"))
        );
        let half = Plan::for_engine(DeviceKind::Cpu, DType::F16, Engine::Amx);
        assert_eq!((half.weights, half.bf16_products), (DType::F16, None));
        assert!(half.notice.is_some());
        for dtype in [DType::F32, DType::F16, DType::BF16] {
            let gpu = Plan::for_engine(DeviceKind::Cuda, dtype, Engine::Amx);
            assert_eq!(
                (gpu.weights, gpu.bf16_products, gpu.notice),
                (dtype, None, None)
            );
        }
        let exact = Plan::for_engine(DeviceKind::Cpu, DType::F32, Engine::Amx);
        assert_eq!(
            (exact.weights, exact.bf16_products, exact.notice),
            (DType::F32, None, None)
        );
    }
}

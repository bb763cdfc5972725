//! CPU fast paths for the ops that dominate a generation: convolutions (40 % of a UNet step and
//! nearly all of the VAE and vocoder), attention at 1024+ tokens, and group norm.
//!
//! candle 0.11 runs these on the CPU 2.5–5× slower than PyTorch (shared/research/cpu_baseline.md).
//! Here they become tiles fed to the same `gemm` crate candle's matmul uses, plus fused
//! elementwise passes. Each layer keeps candle's own op as the path for other devices and dtypes,
//! so CUDA (cuDNN) and Metal are untouched. Results differ from candle's only by float rounding.

pub mod attention;
pub mod conv;
mod exp;
pub mod geglu;
mod gemm;
pub mod group_norm;
mod winograd;

use std::cell::Cell;

use candle_core::{CpuStorage, DType, Device, Layout, Result, Tensor};

thread_local! {
    static PORTABLE: Cell<bool> = const { Cell::new(false) };
}

/// Runs `work` with the CPU fast paths off on this thread, so the CPU computes with candle's
/// own ops, the path CUDA and Metal take. It proves that path against the references on a
/// machine without a GPU; generation never needs it.
pub fn with_portable_ops<R>(work: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            PORTABLE.with(|portable| portable.set(self.0));
        }
    }
    let _restore = Restore(PORTABLE.with(|portable| portable.replace(true)));
    work()
}

/// Whether `tensor` can take the CPU f32 fast path.
fn is_cpu_f32(tensor: &Tensor) -> bool {
    matches!(tensor.device(), Device::Cpu)
        && tensor.dtype() == DType::F32
        && !PORTABLE.with(Cell::get)
}

/// The contiguous f32 slice a custom op was handed.
fn contiguous_f32<'a>(storage: &'a CpuStorage, layout: &Layout, what: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(data) = storage else {
        candle_core::bail!("{what}: expected f32 storage");
    };
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("{what}: expected a contiguous tensor"),
    }
}

//! CPU fast paths for the ops that dominate a generation: convolutions (40 % of a UNet step and
//! nearly all of the VAE and vocoder), attention at 1024+ tokens, and group norm.
//!
//! candle 0.11 runs these on the CPU 2.5–5× slower than PyTorch (shared/research/cpu_baseline.md).
//! Here they become tiles fed to the same `gemm` crate candle's matmul uses, plus fused
//! elementwise passes. Each layer keeps candle's own op as the path for other devices and dtypes,
//! so CUDA (cuDNN) and Metal are untouched. Results differ from candle's only by float rounding.

pub mod attention;
mod attention_tiles;
pub mod conv;
mod direct;
mod exp;
mod fill;
pub mod geglu;
mod gemm;
pub mod group_norm;
pub mod linear;
mod scratch;
mod winograd;

use std::cell::Cell;
use std::thread::LocalKey;

use candle_core::{CpuStorage, DType, Device, Layout, Result, Tensor};

thread_local! {
    static PORTABLE: Cell<bool> = const { Cell::new(false) };
    static PREVIOUS: Cell<bool> = const { Cell::new(false) };
}

/// Runs `work` with the CPU fast paths off on this thread, so the CPU computes with candle's
/// own ops, the path CUDA and Metal take. It proves that path against the references on a
/// machine without a GPU; generation never needs it.
pub fn with_portable_ops<R>(work: impl FnOnce() -> R) -> R {
    with_flag(&PORTABLE, work)
}

/// Runs `work` on this thread with the CPU kernels that faster ones replaced, so
/// `cargo bench --bench kernels` and the tests can set each against its previous version.
/// Results differ only by float rounding.
pub fn with_previous_kernels<R>(work: impl FnOnce() -> R) -> R {
    with_flag(&PREVIOUS, work)
}

/// Whether this thread runs the replaced kernels ([`with_previous_kernels`]).
fn previous_kernels() -> bool {
    PREVIOUS.with(Cell::get)
}

/// Runs `work` with this thread's `flag` set, restoring it after (also on a panic).
fn with_flag<R>(flag: &'static LocalKey<Cell<bool>>, work: impl FnOnce() -> R) -> R {
    struct Restore(&'static LocalKey<Cell<bool>>, bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            self.0.with(|flag| flag.set(self.1));
        }
    }
    let _restore = Restore(flag, flag.with(|flag| flag.replace(true)));
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

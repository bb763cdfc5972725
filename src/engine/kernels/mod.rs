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

/// Whether a convolution of `xs` must be widened to f32 on the CPU: candle 0.11 has no bf16
/// CPU convolution at all (its matmul widens, its im2col path does not), and its direct f16
/// kernels accumulate in f16. Widened, a half convolution runs in f32 and rounds its output
/// once, which is what PyTorch's CPU kernels and CUDA's half convolutions compute (they
/// accumulate in f32).
fn widen_half_conv(xs: &Tensor) -> bool {
    matches!(xs.device(), Device::Cpu) && matches!(xs.dtype(), DType::BF16 | DType::F16)
}

/// `layer` run on `xs` in f32, rounded back to `xs`'s dtype.
fn in_f32<L: candle_core::Module>(
    layer: &L,
    widened: impl FnOnce(&L) -> Result<L>,
    xs: &Tensor,
) -> Result<Tensor> {
    widened(layer)?
        .forward(&xs.to_dtype(DType::F32)?)?
        .to_dtype(xs.dtype())
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

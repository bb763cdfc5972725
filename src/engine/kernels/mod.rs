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
mod dispatch;
mod exp;
mod fill;
pub mod geglu;
pub mod gemm;
pub mod gemm_bf16;
pub mod group_norm;
pub mod layer_norm;
mod leaky;
pub mod linear;
mod panels;
mod runs;
mod scratch;
pub mod upsample;
mod winograd;
mod winograd_1d;
mod winograd_f4;

use std::cell::Cell;
use std::sync::OnceLock;
use std::thread::LocalKey;

use candle_core::{CpuStorage, DType, Device, Layout, Result, Tensor};

use gemm::Precision;
use gemm_bf16::Engine;

thread_local! {
    static PORTABLE: Cell<bool> = const { Cell::new(false) };
    static PREVIOUS: Cell<bool> = const { Cell::new(false) };
    static BF16: Cell<Option<Engine>> = const { Cell::new(None) };
    static KEEP: Cell<bool> = const { Cell::new(false) };
}

/// Relative L2 distance of `ours` from an f64 `reference`: how the kernels' tests hold a fast
/// path to a definition.
#[cfg(test)]
fn relative_l2_f64(ours: &[f32], reference: &[f64]) -> f64 {
    let norm: f64 = reference.iter().map(|v| v * v).sum();
    let error: f64 = ours
        .iter()
        .zip(reference)
        .map(|(&a, &b)| (f64::from(a) - b).powi(2))
        .sum();
    (error / norm).sqrt()
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

/// Runs `work` on this thread with the products of linears and convolutions (and, where the
/// engine replaces the f32 kernels, attention's) taking bf16 operands and f32 sums on `engine`
/// (the CPU's `--dtype bf16` mode, [`gemm_bf16`]), or in f32 with `None`; norms, softmax and
/// the elementwise passes stay f32, as under PyTorch's bf16 autocast.
pub fn with_bf16_products<R>(engine: Option<Engine>, work: impl FnOnce() -> R) -> R {
    struct Restore(Option<Engine>);
    impl Drop for Restore {
        fn drop(&mut self) {
            BF16.set(self.0);
        }
    }
    let _restore = Restore(BF16.replace(engine));
    work()
}

/// Runs `work` with f32 products whatever this thread's setting ([`with_bf16_products`]). The
/// text encoders take it: they run once a generation over a few dozen tokens, where packing
/// each weight to bf16 for one thin product costs more than the product saves (AudioLDM 2's
/// prompts on Zen 4: 0.90–0.94 s in f32, 0.98–2.1 s with bf16 products).
pub fn with_f32_products<R>(work: impl FnOnce() -> R) -> R {
    with_bf16_products(None, work)
}

/// How this thread's products compute ([`with_bf16_products`]). Read where an op starts: the
/// loops inside it run on rayon's threads, which do not share the setting.
fn precision() -> Precision {
    BF16.get().map_or(Precision::F32, Precision::Bf16)
}

/// Runs `work` on a thread of Foley's compute pool, a rayon pool sized like the global one
/// (`RAYON_NUM_THREADS`, else one thread per core), and returns its result.
///
/// The kernels' parallel loops then start on a thread of the pool that runs them, which works
/// one half itself while another steals the rest, instead of a thread outside the pool handing
/// every loop over and sleeping until it ends: a 3-step AudioLDM s-full-v2 generation on two
/// cores went from 28 000 to 6 000 context switches and ran 3–8 % faster. This thread's
/// [`with_portable_ops`], [`with_previous_kernels`] and [`with_bf16_products`] settings
/// carry over. Where the pool
/// cannot start, `work` runs here.
pub fn on_compute_pool<R: Send>(work: impl FnOnce() -> R + Send) -> R {
    let Some(pool) = compute_pool() else {
        return work();
    };
    let flags = Flags {
        portable: PORTABLE.get(),
        previous: PREVIOUS.get(),
        bf16: BF16.get(),
    };
    pool.install(move || {
        let _restore = flags.set();
        work()
    })
}

/// Foley's compute pool, started on first use; `None` where it cannot start.
fn compute_pool() -> Option<&'static rayon::ThreadPool> {
    static POOL: OnceLock<Option<rayon::ThreadPool>> = OnceLock::new();
    POOL.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .thread_name(|index| format!("foley-compute-{index}"))
            // The main thread's size: the models were written against it.
            .stack_size(8 << 20)
            .build()
            .ok()
    })
    .as_ref()
}

/// Frees the working buffers this thread and the compute pool's threads keep from one
/// convolution to the next (up to 4 of at most 64 MB a thread); returns the bytes freed. For a
/// long-lived caller between runs: the studio once its worker has nothing queued.
pub fn release_scratch() -> usize {
    compute_pool().map_or(0, release_on) + scratch::release()
}

/// Frees what each of `pool`'s threads keeps; returns the bytes freed.
fn release_on(pool: &rayon::ThreadPool) -> usize {
    pool.broadcast(|_| scratch::release()).into_iter().sum()
}

/// This thread's kernel choices.
#[derive(Clone, Copy)]
struct Flags {
    portable: bool,
    previous: bool,
    bf16: Option<Engine>,
}

impl Flags {
    /// Sets them on this thread; the returned value restores the earlier ones when dropped.
    fn set(self) -> Restore {
        Restore(Flags {
            portable: PORTABLE.replace(self.portable),
            previous: PREVIOUS.replace(self.previous),
            bf16: BF16.replace(self.bf16),
        })
    }
}

struct Restore(Flags);

impl Drop for Restore {
    fn drop(&mut self) {
        PORTABLE.set(self.0.portable);
        PREVIOUS.set(self.0.previous);
        BF16.set(self.0.bf16);
    }
}

/// Runs `work` with the layers keeping their bf16-packed weights from their first call on
/// this thread, not packing them for each of their first calls alone
/// ([`gemm_bf16::PackedWeights`]): for a model that the caller runs many times, such as the
/// denoiser over a schedule, whose first two calls otherwise pack every weight for nothing
/// (AudioLDM 2's UNet on Zen 4: 0.1–0.3 s each).
pub fn with_weights_kept<R>(work: impl FnOnce() -> R) -> R {
    with_flag(&KEEP, work)
}

/// Whether this thread's layers keep their packed weights from the first call
/// ([`with_weights_kept`]).
fn keeps_weights() -> bool {
    KEEP.with(Cell::get)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Work runs on a compute-pool thread, returns its result, and sees the caller's kernel
    /// choices; the pool thread's own choices are back to default afterwards.
    #[test]
    fn the_compute_pool_runs_work_with_the_callers_kernel_choices() {
        let name = |()| std::thread::current().name().map(str::to_owned);
        let seen = with_previous_kernels(|| {
            on_compute_pool(|| (name(()), previous_kernels(), PORTABLE.get()))
        });
        assert!(
            seen.0
                .is_some_and(|name| name.starts_with("foley-compute-"))
        );
        assert_eq!((seen.1, seen.2), (true, false));
        let after = on_compute_pool(|| (previous_kernels(), PORTABLE.get()));
        assert_eq!(after, (false, false));
    }

    /// A pool's threads give back the working buffers they kept (a pool of its own: the
    /// compute pool is shared with the tests running beside this one).
    #[test]
    fn a_pools_threads_free_their_kept_buffers() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        pool.install(|| drop(scratch::Scratch::new(1 << 20)));
        assert_eq!(release_on(&pool), 4 << 20);
        assert_eq!(release_on(&pool), 0);
    }
}

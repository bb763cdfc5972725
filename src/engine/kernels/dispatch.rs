//! The runtime choice between a kernel's AVX2 build and its portable one.

/// `avx2_dispatch! { $vis fn name = body(arg: Type, …); }` defines `name(arg, …)`, which runs
/// `body` compiled for AVX2 and FMA where the CPU has them and as baseline code elsewhere.
/// `body` must be `#[inline(always)]`, so that it is compiled inside the `#[target_feature]`
/// function this expands to. A generic helper taking the body as a closure cannot do this job:
/// the closure stays a function of its own, compiled without AVX2 (objdump: the F(4×4) output
/// transform had 0 ymm instructions that way, 680 in its own `#[target_feature]` function).
macro_rules! avx2_dispatch {
    ($(#[$meta:meta])* $vis:vis fn $name:ident = $body:ident($($arg:ident: $ty:ty),* $(,)?);) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                /// # Safety
                /// The CPU has AVX2 and FMA.
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) {
                    $body($($arg),*)
                }
                if $crate::engine::kernels::exp::has_avx2() {
                    // SAFETY: the CPU was just checked to support AVX2 and FMA.
                    return unsafe { avx2($($arg),*) };
                }
            }
            $body($($arg),*)
        }
    };
}

pub(super) use avx2_dispatch;

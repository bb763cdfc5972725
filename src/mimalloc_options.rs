//! mimalloc settings the `foley` binary applies at start.

use std::ffi::c_long;

use libmimalloc_sys::{mi_option_get, mi_option_set, mi_option_t};

/// `mi_option_purge_delay`, which `libmimalloc-sys` leaves unnamed ("for stability"); its
/// place in mimalloc's option enum is the same in v2 and v3, and a test pins it.
const PURGE_DELAY: mi_option_t = 15;

/// Milliseconds mimalloc keeps freed memory before handing it back to the kernel. Its default,
/// 1 s, is shorter than a UNet step, so each step's large tensors came back as fresh pages the
/// kernel zeroed again: 131 k page faults in a 4-step AudioLDM 2 generation, 68 k with 10 s
/// (docs/PERFORMANCE.md). 10 s outlasts a step and still returns the memory soon after a
/// generation ends, which matters in a studio left open all day.
const HOLD_FREED_MS: c_long = 10_000;

/// Keeps freed pages for [`HOLD_FREED_MS`] unless the user set `MIMALLOC_PURGE_DELAY`.
pub fn hold_freed_pages() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets an integer option; mimalloc reads options atomically.
        unsafe { mi_option_set(PURGE_DELAY, HOLD_FREED_MS) };
    }
}

/// The purge delay mimalloc uses now, in milliseconds.
pub fn purge_delay_ms() -> c_long {
    // SAFETY: reads an integer option.
    unsafe { mi_option_get(PURGE_DELAY) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Option 15 is the purge delay: mimalloc v3's default of 1 s (v2's: 10 ms) until set.
    #[test]
    fn option_15_is_the_purge_delay() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            return;
        }
        let default = purge_delay_ms();
        assert!(matches!(default, 10 | 1000), "option 15 reads {default}");
        hold_freed_pages();
        assert_eq!(purge_delay_ms(), HOLD_FREED_MS);
    }
}

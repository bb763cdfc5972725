//! Reused working buffers for kernels that write every element before reading it.
//!
//! The Winograd transforms' buffers (4–32 MB a convolution) were zero-filled on the calling
//! thread for every call, while rayon's threads waited: 1 % of a UNet step for values that are
//! all overwritten. A buffer taken here keeps whatever its last user left.

use std::cell::RefCell;
use std::ops::{Deref, DerefMut};

/// Buffers a thread keeps, and the largest it keeps (in floats, 64 MB).
const KEPT: usize = 4;
const LARGEST_KEPT: usize = 16 << 20;

thread_local! {
    static POOL: RefCell<Vec<Vec<f32>>> = const { RefCell::new(Vec::new()) };
}

/// `len` floats whose values are unspecified (left from an earlier use, zero where the buffer
/// grew): only for callers that write every element before reading it. Goes back to this
/// thread's pool when dropped.
pub struct Scratch(Vec<f32>);

impl Scratch {
    pub fn new(len: usize) -> Self {
        let reused = POOL.with(|pool| {
            let mut pool = pool.borrow_mut();
            // The smallest kept buffer that fits, else the largest (it grows least).
            let fits = (0..pool.len())
                .filter(|&index| pool[index].capacity() >= len)
                .min_by_key(|&index| pool[index].capacity());
            let index =
                fits.or_else(|| (0..pool.len()).max_by_key(|&index| pool[index].capacity()));
            index.map(|index| pool.swap_remove(index))
        });
        let mut buffer = reused.unwrap_or_default();
        buffer.truncate(len);
        buffer.resize(len, 0.0);
        Self(buffer)
    }
}

/// Frees the buffers this thread keeps; returns the bytes they held.
pub fn release() -> usize {
    let kept = POOL.with(|pool| std::mem::take(&mut *pool.borrow_mut()));
    kept.iter()
        .map(|buffer| buffer.capacity() * std::mem::size_of::<f32>())
        .sum()
}

impl Deref for Scratch {
    type Target = [f32];

    fn deref(&self) -> &[f32] {
        &self.0
    }
}

impl DerefMut for Scratch {
    fn deref_mut(&mut self) -> &mut [f32] {
        &mut self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let buffer = std::mem::take(&mut self.0);
        if buffer.capacity() > LARGEST_KEPT {
            return;
        }
        // `try_with`: a buffer dropped while the thread exits just goes.
        let _ = POOL.try_with(|pool| {
            let mut pool = pool.borrow_mut();
            if pool.len() < KEPT {
                pool.push(buffer);
                return;
            }
            // A full pool keeps its largest buffers: keeping the small ones instead meant the
            // next Winograd call regrew one from fresh pages (1 GB of page zeroing in a
            // 2-step s-full-v2 run).
            let smallest = (0..pool.len()).min_by_key(|&index| pool[index].capacity());
            if let Some(index) =
                smallest.filter(|&index| pool[index].capacity() < buffer.capacity())
            {
                pool[index] = buffer;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A buffer comes back with the length asked for, reusing a kept one's memory.
    #[test]
    fn buffers_are_reused_at_the_length_asked_for() {
        let first = Scratch::new(1000);
        let address = first.as_ptr();
        drop(first);
        let mut second = Scratch::new(600);
        assert_eq!(second.len(), 600);
        assert_eq!(second.as_ptr(), address);
        second.fill(1.0);
        drop(second);
        let third = Scratch::new(2000);
        assert_eq!(third.len(), 2000);
        assert!(third[600..].iter().all(|&value| value == 0.0));
    }

    /// Released buffers are freed, and the next request starts a new one.
    #[test]
    fn release_frees_what_the_thread_keeps() {
        let both = (Scratch::new(1000), Scratch::new(3000));
        drop(both);
        assert_eq!(release(), 16_000);
        assert_eq!(release(), 0);
        assert_eq!(Scratch::new(10).len(), 10);
    }

    /// A full pool gives up its smallest buffer for a larger one coming back, so the large
    /// buffers the transforms need are not regrown every call.
    #[test]
    fn a_full_pool_keeps_its_largest_buffers() {
        let capacities = || {
            let mut held: Vec<usize> =
                POOL.with(|pool| pool.borrow().iter().map(Vec::capacity).collect());
            held.sort_unstable();
            held
        };
        let tiny = Scratch::new(10);
        let small: Vec<Scratch> = (0..KEPT).map(|index| Scratch::new(100 + index)).collect();
        let large = Scratch::new(1 << 20);
        drop(small);
        drop(large);
        let held = capacities();
        assert_eq!(held.len(), KEPT);
        assert_eq!(held[0], 101, "the smallest gave way");
        assert!(held[KEPT - 1] >= 1 << 20);
        // A buffer smaller than every kept one, coming back to a full pool, goes.
        drop(tiny);
        assert_eq!(capacities(), held);
    }
}

//! Reused working buffers for kernels that write every element before reading it.
//!
//! The Winograd transforms' buffers (4–32 MB a convolution) were zero-filled on the calling
//! thread for every call, while rayon's threads waited: 1 % of a UNet step for values that are
//! all overwritten. A buffer taken here keeps whatever its last user left.

use std::cell::RefCell;
use std::ops::{Deref, DerefMut};

/// Buffers a thread keeps, and the largest it keeps (in floats, 64 MB).
const KEPT: usize = 4;
pub(super) const LARGEST_KEPT: usize = 16 << 20;

thread_local! {
    /// Every kept buffer is initialised to its full length, so it is handed out again without
    /// writing a value.
    static POOL: RefCell<Vec<Vec<f32>>> = const { RefCell::new(Vec::new()) };
}

/// `len` floats whose values are unspecified (left from an earlier use, zero in new memory):
/// only for callers that write every element before reading it. Goes back to this thread's pool
/// when dropped.
pub struct Scratch {
    buffer: Vec<f32>,
    len: usize,
}

impl Scratch {
    pub fn new(len: usize) -> Self {
        let kept = POOL.with(|pool| {
            let mut pool = pool.borrow_mut();
            let fits = (0..pool.len())
                .filter(|&index| pool[index].len() >= len)
                .min_by_key(|&index| pool[index].len());
            if let Some(index) = fits {
                return Some(pool.swap_remove(index));
            }
            // None fits: the largest goes, so the new buffer takes its place rather than
            // adding to what the thread holds.
            let largest = (0..pool.len()).max_by_key(|&index| pool[index].len());
            if let Some(index) = largest {
                drop(pool.swap_remove(index));
            }
            None
        });
        // A kept buffer is handed out as it is: shortening it and zero-filling it back to a
        // longer length on the next use wrote up to the whole buffer on the calling thread
        // while the others waited (8 % of the ticks where a UNet step left a thread idle).
        // New memory is zeroed by the pool's threads together (`fill::zeros`).
        let buffer = kept.unwrap_or_else(|| super::fill::zeros(len));
        Self { buffer, len }
    }
}

/// Frees the buffers this thread keeps; returns the bytes they held.
pub fn release() -> usize {
    let kept = POOL.with(|pool| std::mem::take(&mut *pool.borrow_mut()));
    kept.iter()
        .map(|buffer| buffer.len() * std::mem::size_of::<f32>())
        .sum()
}

impl Deref for Scratch {
    type Target = [f32];

    fn deref(&self) -> &[f32] {
        &self.buffer[..self.len]
    }
}

impl DerefMut for Scratch {
    fn deref_mut(&mut self) -> &mut [f32] {
        &mut self.buffer[..self.len]
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let buffer = std::mem::take(&mut self.buffer);
        if buffer.len() > LARGEST_KEPT {
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
            let smallest = (0..pool.len()).min_by_key(|&index| pool[index].len());
            if let Some(index) = smallest.filter(|&index| pool[index].len() < buffer.len()) {
                pool[index] = buffer;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A buffer comes back with the length asked for, reusing a kept one's memory, and a
    /// shorter use leaves the rest of it as it was, not zero-filled again.
    #[test]
    fn buffers_are_reused_at_the_length_asked_for() {
        let mut first = Scratch::new(1000);
        first.fill(2.0);
        let address = first.as_ptr();
        drop(first);
        let mut second = Scratch::new(600);
        assert_eq!(second.len(), 600);
        assert_eq!(second.as_ptr(), address);
        second.fill(1.0);
        drop(second);
        let third = Scratch::new(1000);
        assert_eq!(third.as_ptr(), address);
        assert!(third[..600].iter().all(|&value| value == 1.0));
        assert!(
            third[600..].iter().all(|&value| value == 2.0),
            "written again"
        );
        drop(third);
        // Larger than any kept buffer: new, zeroed memory in place of the largest.
        let fourth = Scratch::new(2000);
        assert_eq!(fourth.len(), 2000);
        assert!(fourth.iter().all(|&value| value == 0.0));
        drop(fourth);
        assert_eq!(POOL.with(|pool| pool.borrow().len()), 1);
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
                POOL.with(|pool| pool.borrow().iter().map(Vec::len).collect());
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

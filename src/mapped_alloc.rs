//! Weights that stay in their memory-mapped files.
//!
//! candle's CPU tensors own a `Vec`, so loading a model used to copy every weight out of its
//! mapped safetensors file into fresh memory, which the kernel must zero first: on a VM right
//! after another large process that was 10 s of an AudioLDM 2 load (docs/PERFORMANCE.md). Here a
//! mapped file becomes a *region* and a weight's `Vec` points straight into it. Such a `Vec` was
//! never allocated, so [`MappedAware`], the binary's global allocator, recognises pointers into a
//! region on `dealloc` and only counts them; the file is unmapped when the last weight in it (and
//! the loader's own hold) is gone.
//!
//! Without `MappedAware` as the global allocator (test binaries, other programs using the
//! library) [`Region::new`] returns `None` and weights are copied as before.

use std::alloc::{GlobalAlloc, Layout};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use memmap2::MmapMut;

/// Mapped files that can be live at once; more fall back to copying.
const SLOTS: usize = 256;

struct Slot {
    /// First byte of the mapping; 0 while the slot is free or being set up or torn down.
    start: AtomicUsize,
    end: AtomicUsize,
    /// `Vec`s pointing into the region, plus one for the [`Region`] handle.
    live: AtomicUsize,
    /// Claimed by a region (set before `start`, cleared after the unmap).
    taken: AtomicBool,
    map: Mutex<Option<MmapMut>>,
}

static REGIONS: [Slot; SLOTS] = [const {
    Slot {
        start: AtomicUsize::new(0),
        end: AtomicUsize::new(0),
        live: AtomicUsize::new(0),
        taken: AtomicBool::new(false),
        map: Mutex::new(None),
    }
}; SLOTS];

/// Slots ever claimed: `dealloc` scans only these.
static USED: AtomicUsize = AtomicUsize::new(0);

/// Set by the first allocation `MappedAware` serves, i.e. once it is the global allocator.
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// A global allocator that frees `Vec`s pointing into a [`Region`] by counting them off instead of
/// handing them to `A`. Install it as `#[global_allocator]`; it must not serve allocations any
/// other way, since its first allocation is taken as proof that it is the global one.
pub struct MappedAware<A>(pub A);

/// Notes that `MappedAware` served an allocation; a load first, so the hot path only reads.
fn mark_installed() {
    if !INSTALLED.load(Ordering::Relaxed) {
        INSTALLED.store(true, Ordering::Relaxed);
    }
}

/// The region slot `pointer` lies in, if any.
fn slot_of(pointer: *mut u8) -> Option<&'static Slot> {
    let address = pointer as usize;
    let used = USED.load(Ordering::Acquire);
    REGIONS[..used].iter().find(|slot| {
        let start = slot.start.load(Ordering::Acquire);
        start != 0 && address >= start && address < slot.end.load(Ordering::Acquire)
    })
}

/// Counts one user of `slot` off and unmaps its file after the last.
fn release(slot: &'static Slot) {
    if slot.live.fetch_sub(1, Ordering::AcqRel) == 1 {
        slot.start.store(0, Ordering::Release);
        slot.end.store(0, Ordering::Release);
        // Dropping the map unmaps it; the lock is uncontended and allocates nothing.
        let map = slot.map.lock().map(|mut map| map.take());
        drop(map);
        slot.taken.store(false, Ordering::Release);
    }
}

// SAFETY: every call either forwards to `A` with the arguments it was given, or concerns a
// pointer inside a live region, which `A` never handed out (regions are file mappings).
unsafe impl<A: GlobalAlloc> GlobalAlloc for MappedAware<A> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        mark_installed();
        unsafe { self.0.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        mark_installed();
        unsafe { self.0.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        match slot_of(pointer) {
            Some(slot) => release(slot),
            None => unsafe { self.0.dealloc(pointer, layout) },
        }
    }

    unsafe fn realloc(&self, pointer: *mut u8, layout: Layout, size: usize) -> *mut u8 {
        let Some(slot) = slot_of(pointer) else {
            return unsafe { self.0.realloc(pointer, layout, size) };
        };
        // A weight that grows or shrinks moves out of its file into memory of its own.
        let Ok(new_layout) = Layout::from_size_align(size, layout.align()) else {
            return std::ptr::null_mut();
        };
        let moved = unsafe { self.0.alloc(new_layout) };
        if !moved.is_null() {
            unsafe { std::ptr::copy_nonoverlapping(pointer, moved, layout.size().min(size)) };
            release(slot);
        }
        moved
    }
}

/// A mapped file whose bytes weights may borrow as `Vec`s. Dropping the handle keeps the mapping
/// until the last such `Vec` is dropped too.
pub struct Region {
    slot: &'static Slot,
    start: *mut u8,
    len: usize,
}

// SAFETY: the handle only reads the mapping and counts users with atomics.
unsafe impl Send for Region {}
unsafe impl Sync for Region {}

impl Region {
    /// Takes over `map`, or gives it back when weights cannot borrow from it: `MappedAware` is
    /// not the global allocator, the map is empty, or every slot is taken.
    pub fn new(mut map: MmapMut) -> std::result::Result<Self, MmapMut> {
        if !INSTALLED.load(Ordering::Relaxed) || map.is_empty() {
            return Err(map);
        }
        let Some((index, slot)) = REGIONS.iter().enumerate().find(|(_, slot)| {
            slot.taken
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        }) else {
            return Err(map);
        };
        let start = map.as_mut_ptr();
        let len = map.len();
        match slot.map.lock() {
            Ok(mut held) => *held = Some(map),
            Err(_) => {
                slot.taken.store(false, Ordering::Release);
                return Err(map);
            }
        }
        slot.live.store(1, Ordering::Release);
        USED.fetch_max(index + 1, Ordering::AcqRel);
        slot.end.store(start as usize + len, Ordering::Release);
        slot.start.store(start as usize, Ordering::Release);
        Ok(Self { slot, start, len })
    }

    pub fn bytes(&self) -> &[u8] {
        // SAFETY: the mapping lives at least as long as this handle holds its count.
        unsafe { std::slice::from_raw_parts(self.start, self.len) }
    }

    /// `count` f32s starting `offset` bytes into the region, as a `Vec` that borrows the mapping;
    /// `None` when the range is out of bounds, misaligned for f32 or empty.
    pub fn f32_vec(&self, offset: usize, count: usize) -> Option<Vec<f32>> {
        let bytes = count.checked_mul(size_of::<f32>())?;
        if count == 0 || offset.checked_add(bytes)? > self.len {
            return None;
        }
        // SAFETY: in bounds (checked above).
        let pointer = unsafe { self.start.add(offset) };
        if !(pointer as usize).is_multiple_of(align_of::<f32>()) {
            return None;
        }
        self.slot.live.fetch_add(1, Ordering::AcqRel);
        // SAFETY: the bytes are mapped copy-on-write, readable and writable, aligned and in
        // bounds; the count taken above keeps them mapped until this Vec is freed, which
        // `MappedAware` (the global allocator, else `new` would have failed) turns into
        // `release`. Capacity equals length, so the Vec never reallocates unless it grows, and
        // `realloc` moves it out then.
        Some(unsafe { Vec::from_raw_parts(pointer.cast::<f32>(), count, count) })
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        release(self.slot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Maps `values` as a file's bytes.
    fn mapped(values: &[f32]) -> MmapMut {
        let mut map = MmapMut::map_anon(values.len() * 4).unwrap();
        for (chunk, value) in map.chunks_exact_mut(4).zip(values) {
            chunk.copy_from_slice(&value.to_le_bytes());
        }
        map
    }

    #[test]
    fn without_the_allocator_installed_regions_are_refused() {
        // The lib's test binary counts allocations with its own global allocator.
        assert!(!INSTALLED.load(Ordering::Relaxed));
        assert!(Region::new(mapped(&[1.0, 2.0])).is_err());
    }
}

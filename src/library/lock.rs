//! Per-clip locks, so several studios (or threads) sharing one library folder never write the
//! same id at once: `.<id>.lock`, made with an exclusive create, holding the owner's pid.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use super::recovery::abandoned;

/// An exclusive claim on one clip id while it is written, starred or deleted. Dropping it
/// removes the lock file; a crash leaves it behind for `recovery` to remove once its process is
/// gone.
#[derive(Debug)]
pub(super) struct ClipLock {
    path: PathBuf,
}

/// The lock file of `id`; the caller has validated the id.
pub(super) fn lock_path(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!(".{id}.lock"))
}

/// The pid written into a lock file, when it can be read.
pub(super) fn lock_owner(path: &Path) -> Option<u32> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

impl ClipLock {
    /// Takes the lock, or `None` when someone else holds it. The lock is a hard link to a
    /// temporary that already holds our pid: linking is atomic and exclusive even between
    /// processes and over NFS, so a crash can never leave a lock without its owner's pid
    /// (which would keep it "live" until it ages out). Where the filesystem has no hard links,
    /// an exclusive create (O_EXCL) followed by writing the pid.
    pub(super) fn try_acquire(dir: &Path, id: &str) -> io::Result<Option<Self>> {
        let path = lock_path(dir, id);
        let taken = |error: &io::Error| error.kind() == io::ErrorKind::AlreadyExists;
        let temporary = write_owner_temporary(dir, id)?;
        let linked = fs::hard_link(&temporary, &path);
        let _ = fs::remove_file(&temporary);
        match linked {
            Ok(()) => return Ok(Some(Self { path })),
            Err(error) if taken(&error) => return Ok(None),
            Err(_) => {}
        }
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(mut file) => {
                let _ = writeln!(file, "{}", std::process::id());
                Ok(Some(Self { path }))
            }
            Err(error) if taken(&error) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Like `try_acquire`, but first clears a lock left by a process that died holding it, so
    /// a crash cannot block starring or deleting that clip until the next start.
    pub(super) fn acquire(dir: &Path, id: &str) -> io::Result<Option<Self>> {
        if let Some(lock) = Self::try_acquire(dir, id)? {
            return Ok(Some(lock));
        }
        let path = lock_path(dir, id);
        let modified = fs::symlink_metadata(&path)
            .and_then(|meta| meta.modified())
            .ok();
        if abandoned(lock_owner(&path), modified, SystemTime::now()) {
            let _ = fs::remove_file(&path);
            return Self::try_acquire(dir, id);
        }
        Ok(None)
    }
}

/// A fresh `.<id>.lock.<pid>.<n>.partial` holding our pid; named like the other temporaries,
/// so the next open removes it if we crash before removing it ourselves.
fn write_owner_temporary(dir: &Path, id: &str) -> io::Result<PathBuf> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let pid = std::process::id();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.subsec_nanos());
    loop {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!(".{id}.lock.{pid}.{nanos:x}{n:x}.partial"));
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(mut file) => {
                let written = writeln!(file, "{pid}");
                if let Err(error) = written {
                    let _ = fs::remove_file(&path);
                    return Err(error);
                }
                return Ok(path);
            }
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(error) => return Err(error),
        }
    }
}

impl Drop for ClipLock {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_is_exclusive_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let first = ClipLock::try_acquire(dir.path(), "rain_s1").unwrap();
        assert!(first.is_some());
        assert!(
            ClipLock::try_acquire(dir.path(), "rain_s1")
                .unwrap()
                .is_none()
        );
        // Held by this (live) process: not stale, so `acquire` must not steal it either.
        assert!(ClipLock::acquire(dir.path(), "rain_s1").unwrap().is_none());
        drop(first);
        assert!(
            ClipLock::try_acquire(dir.path(), "rain_s1")
                .unwrap()
                .is_some()
        );
        assert!(!lock_path(dir.path(), "rain_s1").exists());
    }

    #[test]
    fn a_dead_owners_lock_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        // Above Linux's largest pid_max, so never a live process.
        fs::write(lock_path(dir.path(), "rain_s1"), "4000000000\n").unwrap();
        if super::super::recovery::process_alive(1).is_some() {
            assert!(ClipLock::acquire(dir.path(), "rain_s1").unwrap().is_some());
        }
    }
}

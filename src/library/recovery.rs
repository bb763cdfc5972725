//! Cleaning up after interrupted saves, when a library is opened: temporaries
//! (`.NAME.<pid>.partial`, `.NAME.<pid>.<random>.partial`) and locks whose writer is gone are
//! removed, and a WAV or spectrogram without a sidecar is moved into `quarantine/`. Nothing
//! that belongs to a listed clip is touched, and nothing but temporaries and locks is deleted.

use std::collections::HashSet;
use std::fs;
use std::path::Path;
use std::time::{Duration, SystemTime};

use super::lock::lock_owner;
use crate::atomic_file::temporary_target;

/// A temporary or lock older than this is abandoned whoever wrote it: a save takes seconds.
pub const STALE_AFTER: Duration = Duration::from_secs(5 * 60);

/// A WAV or spectrogram with no sidecar and no lock is left alone this long: a writer that
/// takes no locks (an older Foley) may be between its WAV and its sidecar.
pub const ORPHAN_GRACE: Duration = Duration::from_secs(2 * 60);

/// The subfolder that orphans are moved into.
pub const QUARANTINE: &str = "quarantine";

/// Whether process `pid` runs on this machine; `None` where that cannot be told (no /proc).
pub(super) fn process_alive(pid: u32) -> Option<bool> {
    #[cfg(target_os = "linux")]
    if Path::new("/proc/self").exists() {
        return Some(Path::new("/proc").join(pid.to_string()).exists());
    }
    let _ = pid;
    None
}

/// Whether a temporary or lock was left by a writer that will not come back: it is old, or its
/// process has exited. Our own pid counts as live (another `Library` in this process may be
/// mid-save). A pid from another machine sharing the folder cannot be checked, which is why
/// age alone also decides.
pub(super) fn abandoned(pid: Option<u32>, modified: Option<SystemTime>, now: SystemTime) -> bool {
    let age = modified
        .and_then(|modified| now.duration_since(modified).ok())
        .unwrap_or_default();
    age > STALE_AFTER
        || pid
            .filter(|pid| *pid != std::process::id())
            .and_then(process_alive)
            == Some(false)
}

/// Cleans `dir` as described at the top; returns one line per file removed or moved, and per
/// file that could not be.
pub(super) fn recover(dir: &Path) -> Vec<String> {
    let now = SystemTime::now();
    let mut report = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return report;
    };
    // Plain files only (DirEntry::metadata does not follow symlinks): a link or folder is the
    // user's doing, not a crash's.
    let files: Vec<(String, Option<SystemTime>)> = entries
        .flatten()
        .filter_map(|entry| {
            let metadata = entry.metadata().ok().filter(|meta| meta.is_file())?;
            Some((
                entry.file_name().into_string().ok()?,
                metadata.modified().ok(),
            ))
        })
        .collect();
    let sidecars: HashSet<&str> = files
        .iter()
        .filter(|(name, _)| !name.starts_with('.'))
        .filter_map(|(name, _)| name.strip_suffix(".json"))
        .collect();
    let mut live_locks = HashSet::new();
    let mut crashed = HashSet::new();
    for (name, modified) in &files {
        let Some(hidden) = name.strip_prefix('.') else {
            continue;
        };
        let path = dir.join(name);
        if name.ends_with(".partial") {
            if abandoned(temporary_target(name).map(|(_, pid)| pid), *modified, now) {
                report.push(remove(
                    &path,
                    name,
                    "the temporary file of an interrupted save",
                ));
            }
        } else if let Some(id) = hidden.strip_suffix(".lock") {
            if abandoned(lock_owner(&path), *modified, now) {
                report.push(remove(&path, name, "the lock of an interrupted save"));
                crashed.insert(id);
            } else {
                live_locks.insert(id);
            }
        }
    }
    for (name, modified) in &files {
        let Some(stem) = name
            .strip_suffix(".wav")
            .or_else(|| name.strip_suffix(".mel"))
        else {
            continue;
        };
        if name.starts_with('.') || sidecars.contains(stem) || live_locks.contains(stem) {
            continue;
        }
        let age = modified
            .and_then(|modified| now.duration_since(modified).ok())
            .unwrap_or_default();
        if !crashed.contains(stem) && age < ORPHAN_GRACE {
            continue;
        }
        // A sidecar may have arrived since the listing (a writer without locks).
        if dir.join(format!("{stem}.json")).exists() {
            continue;
        }
        report.push(match quarantine(dir, name) {
            Ok(moved) => format!(
                "{name} had no sidecar (an interrupted save or a stray file): moved to {moved}"
            ),
            Err(error) => format!("{name} has no sidecar and could not be moved aside: {error}"),
        });
    }
    report
}

fn remove(path: &Path, name: &str, what: &str) -> String {
    match fs::remove_file(path) {
        Ok(()) => format!("removed {name}, {what}"),
        Err(error) => format!("{name} is {what} but could not be removed: {error}"),
    }
}

/// Moves `dir/name` to `dir/quarantine/`, numbering the name rather than replacing a file
/// already there; returns the new path relative to `dir`.
fn quarantine(dir: &Path, name: &str) -> std::io::Result<String> {
    let folder = dir.join(QUARANTINE);
    fs::create_dir_all(&folder)?;
    let (stem, extension) = name.rsplit_once('.').unwrap_or((name, ""));
    for n in 1..1000 {
        let target = if n == 1 {
            name.to_string()
        } else {
            format!("{stem}-{n}.{extension}")
        };
        let taken = fs::symlink_metadata(folder.join(&target)).map_or_else(
            |error| error.kind() != std::io::ErrorKind::NotFound,
            |_| true,
        );
        if !taken {
            fs::rename(dir.join(name), folder.join(&target))?;
            return Ok(format!("{QUARANTINE}/{target}"));
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AlreadyExists,
        format!("{QUARANTINE}/ already holds 999 files named like it"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn age_or_a_dead_process_makes_a_leftover_stale() {
        let now = SystemTime::now();
        let old = now - STALE_AFTER - Duration::from_secs(1);
        let own = std::process::id();
        assert!(!abandoned(Some(own), Some(now), now));
        assert!(abandoned(Some(own), Some(old), now));
        assert!(abandoned(None, Some(old), now));
        assert!(!abandoned(None, Some(now), now));
        if process_alive(own) == Some(true) {
            assert!(abandoned(Some(4_000_000_000), Some(now), now));
        }
    }
}

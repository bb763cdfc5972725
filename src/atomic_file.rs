//! Crash-safe file writes: a temporary sibling, fsync, then a rename over the target, so a
//! reader sees either the old file or the complete new one, never a partial write.
//!
//! The temporary is created exclusively (`O_CREAT | O_EXCL`, which also refuses to follow a
//! planted symlink) under an unpredictable name, and only regular files are ever replaced: a
//! FIFO, device, socket, folder or symlink at the target is refused, as is a read-only file.

use std::hash::{BuildHasher, RandomState};
use std::io::Write;
use std::path::Path;

use crate::error::{FoleyError, Result};

/// File names longer than this are shortened (with a hash) inside temporary names, which must
/// stay under the usual 255-byte limit.
const MAX_TEMPORARY_STEM: usize = 120;

/// Checks that `path` is something `write_atomic` may replace: nothing yet, or a regular file
/// the user can write.
pub fn check_replaceable(path: &Path) -> Result<()> {
    let refuse = |reason: &str| {
        Err(FoleyError::Output {
            path: path.to_path_buf(),
            reason: reason.to_string(),
        })
    };
    let Ok(metadata) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    let kind = metadata.file_type();
    if kind.is_symlink() {
        return refuse("is a symbolic link; Foley only replaces regular files");
    }
    if kind.is_dir() {
        return refuse("is a folder");
    }
    if !kind.is_file() {
        return refuse(
            "is not a regular file (a device, FIFO or socket); Foley only replaces regular files",
        );
    }
    if metadata.permissions().readonly() {
        return refuse("is read-only; Foley does not replace files it may not write");
    }
    Ok(())
}

/// Writes `bytes` to `path` through a temporary sibling and a rename; an existing file keeps its
/// permissions.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let failed = |reason: String| FoleyError::Output {
        path: path.to_path_buf(),
        reason,
    };
    check_replaceable(path)?;
    let name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .ok_or_else(|| failed("has no file name".into()))?;
    let random = RandomState::new().hash_one(std::time::SystemTime::now());
    let temporary = path.with_file_name(format!(
        ".{}.{}.{random:016x}.partial",
        temporary_stem(&name),
        std::process::id()
    ));
    let permissions = std::fs::metadata(path)
        .ok()
        .map(|metadata| metadata.permissions());
    let result = (|| -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temporary)?;
        file.write_all(bytes)?;
        if let Some(permissions) = permissions {
            file.set_permissions(permissions)?;
        }
        file.sync_all()?;
        std::fs::rename(&temporary, path)?;
        // The rename itself is durable only once the folder is synced.
        if let Some(parent) = path
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty())
        {
            std::fs::File::open(parent)?.sync_all()?;
        }
        Ok(())
    })();
    if let Err(error) = result {
        let _ = std::fs::remove_file(&temporary);
        return Err(failed(error.to_string()));
    }
    Ok(())
}

/// The part of a temporary's name that identifies its target file (`.STEM.PID.RANDOM.partial`).
fn temporary_stem(name: &str) -> String {
    if name.len() <= MAX_TEMPORARY_STEM {
        return name.to_string();
    }
    let mut cut = 80;
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in name.bytes() {
        hash = (hash ^ byte as u64).wrapping_mul(0x0100_0000_01b3);
    }
    format!("{}~{hash:016x}", &name[..cut])
}

/// If `entry` (a file name) is a temporary of `write_atomic` or another writer that names its
/// temporaries the same way (`.NAME.PID.RANDOM.partial`, or the older `.NAME.PID.partial`), the
/// target file name it stands for (shortened names compare through `temporary_stem`) and the
/// writing process's id. NAME ends in an extension, so its last part is never all digits; that
/// tells a PID from a numeric RANDOM.
pub fn temporary_target(entry: &str) -> Option<(&str, u32)> {
    let inner = entry.strip_prefix('.')?.strip_suffix(".partial")?;
    let digits = |part: &str| !part.is_empty() && part.bytes().all(|byte| byte.is_ascii_digit());
    let last_part = |name: &str| name.rsplit('.').next().unwrap_or(name).to_string();
    let (rest, last) = inner.rsplit_once('.')?;
    let ours = last.len() == 16 && last.bytes().all(|byte| byte.is_ascii_hexdigit());
    let (stem, pid) = match rest.rsplit_once('.') {
        Some((stem, pid)) if digits(pid) && (ours || !digits(&last_part(stem))) => (stem, pid),
        _ if digits(last) && !digits(&last_part(rest)) => (rest, last),
        _ => return None,
    };
    Some((stem, pid.parse().ok()?))
}

/// Whether the temporary named `entry` was written for the file named `target`.
pub fn is_temporary_of(entry: &str, target: &str) -> bool {
    temporary_target(entry).is_some_and(|(stem, _)| stem == temporary_stem(target))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_replace_regular_files_and_keep_their_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("clip.wav");
        write_atomic(&path, b"one").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn refuses_what_is_not_a_writable_regular_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim.txt");
        std::fs::write(&victim, "keep me").unwrap();
        let link = dir.path().join("link.wav");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        assert!(
            write_atomic(&link, b"x")
                .unwrap_err()
                .to_string()
                .contains("symbolic link")
        );
        let folder = dir.path().join("folder.wav");
        std::fs::create_dir(&folder).unwrap();
        assert!(
            write_atomic(&folder, b"x")
                .unwrap_err()
                .to_string()
                .contains("folder")
        );
        let fifo = dir.path().join("fifo.wav");
        let status = std::process::Command::new("mkfifo").arg(&fifo).status();
        if status.is_ok_and(|status| status.success()) {
            assert!(
                write_atomic(&fifo, b"x")
                    .unwrap_err()
                    .to_string()
                    .contains("regular")
            );
        }
        let read_only = dir.path().join("take7.wav");
        std::fs::write(&read_only, "take 7").unwrap();
        std::fs::set_permissions(&read_only, std::fs::Permissions::from_mode(0o444)).unwrap();
        assert!(
            write_atomic(&read_only, b"x")
                .unwrap_err()
                .to_string()
                .contains("read-only")
        );
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep me");
        assert_eq!(std::fs::read_to_string(&read_only).unwrap(), "take 7");
    }

    #[test]
    fn long_names_and_temporary_names_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let name = format!("{}.wav", "n".repeat(246));
        write_atomic(&dir.path().join(&name), b"long").unwrap();
        assert_eq!(std::fs::read(dir.path().join(&name)).unwrap(), b"long");
        let temporary = format!(".{}.42.{:016x}.partial", temporary_stem(&name), 7u64);
        assert!(temporary.len() < 255);
        assert!(is_temporary_of(&temporary, &name));
        assert!(!is_temporary_of(&temporary, "other.wav"));
        assert_eq!(temporary_target(".a.wav.123.partial"), Some(("a.wav", 123)));
        assert!(is_temporary_of(
            ".a.wav.9.00000000000000ff.partial",
            "a.wav"
        ));
        assert_eq!(temporary_target("a.wav"), None);
    }

    /// The library's lock temporaries (`.ID.lock.PID.N.partial`) and older names parse too.
    #[test]
    fn pids_are_read_from_every_temporary_name_format() {
        let pid = |name: &str| temporary_target(name).map(|(_, pid)| pid);
        assert_eq!(pid(".rain_s1.wav.123.partial"), Some(123));
        assert_eq!(pid(".rain_s1.wav.123.a9f3.partial"), Some(123));
        assert_eq!(pid(".rain_s1.wav.123.456.partial"), Some(123));
        assert_eq!(pid(".v1.2.json.77.partial"), Some(77));
        assert_eq!(pid(".rain_s1.lock.88.5f2a01.partial"), Some(88));
        assert_eq!(pid(".rain_s1.wav.partial"), None);
        assert_eq!(pid(".rain_s1.wav.x.y.partial"), None);
        assert_eq!(pid("rain_s1.wav"), None);
    }
}

//! Crash-safe file writes: a temporary sibling, fsync, then a rename over the target, so a
//! reader sees either the old file or the complete new one, never a partial write.

use std::path::Path;

use crate::error::{FoleyError, Result};

/// Writes `bytes` to `path` through a temporary sibling and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let failed = |reason: String| FoleyError::Output {
        path: path.to_path_buf(),
        reason,
    };
    let name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temporary = path.with_file_name(format!(".{name}.{}.partial", std::process::id()));
    let result = (|| -> std::io::Result<()> {
        use std::io::Write;
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)
    })();
    if let Err(error) = result {
        let _ = std::fs::remove_file(&temporary);
        return Err(failed(error.to_string()));
    }
    Ok(())
}

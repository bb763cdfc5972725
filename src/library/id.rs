//! Clip ids name files in the library folder (`<id>.wav`, `<id>.json`, …), so an id that comes
//! from outside (a sidecar's file name, a caller) is checked before any path is built from it.

use std::path::{Component, Path, PathBuf};

/// Longest id in bytes: leaves room under the usual 255-byte file-name limit for the extension
/// and the temporary-file decoration (`.<id>.json.<pid>.<random>.partial`).
pub const MAX_ID_LEN: usize = 160;

/// Why a string cannot be a clip id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidId {
    #[error("the clip id is empty")]
    Empty,
    #[error("the clip id is longer than {MAX_ID_LEN} bytes")]
    TooLong,
    #[error("the clip id starts with a dot")]
    LeadingDot,
    #[error("the clip id ends with a dot or a space")]
    TrailingDotOrSpace,
    #[error("the clip id contains \"..\"")]
    DotDot,
    #[error("the clip id contains {0:?}, which is not allowed in a file name")]
    ForbiddenChar(char),
    #[error("the clip id is a reserved device name on Windows")]
    Reserved,
}

/// Checks that `id` names a plain file in the library folder on every platform: no path
/// separator, no `..`, no root or drive prefix (`:`), not hidden (temporaries and locks are),
/// no control characters, and short enough.
pub fn validate_id(id: &str) -> Result<(), InvalidId> {
    if id.is_empty() {
        return Err(InvalidId::Empty);
    }
    if id.len() > MAX_ID_LEN {
        return Err(InvalidId::TooLong);
    }
    if id.starts_with('.') {
        return Err(InvalidId::LeadingDot);
    }
    // Windows drops a trailing dot or space, so "a." and "a" would be the same file.
    if id.ends_with(['.', ' ']) {
        return Err(InvalidId::TrailingDotOrSpace);
    }
    if id.contains("..") {
        return Err(InvalidId::DotDot);
    }
    if let Some(bad) = id.chars().find(|c| {
        c.is_control() || matches!(c, '/' | '\\' | ':' | '<' | '>' | '"' | '|' | '?' | '*')
    }) {
        return Err(InvalidId::ForbiddenChar(bad));
    }
    let device = id
        .split('.')
        .next()
        .unwrap_or(id)
        .trim_end()
        .to_ascii_uppercase();
    let numbered = |prefix: &str| {
        device
            .strip_prefix(prefix)
            .is_some_and(|n| n.len() == 1 && n.as_bytes()[0].is_ascii_digit())
    };
    if matches!(device.as_str(), "CON" | "PRN" | "AUX" | "NUL")
        || numbered("COM")
        || numbered("LPT")
    {
        return Err(InvalidId::Reserved);
    }
    Ok(())
}

/// `dir/<id>.<extension>` after checking the id, and checking again on the built path that it
/// is one plain name directly inside `dir` (the last line of defence if the rules above miss a
/// platform quirk).
pub(super) fn entry_path(dir: &Path, id: &str, extension: &str) -> Result<PathBuf, InvalidId> {
    validate_id(id)?;
    let name = format!("{id}.{extension}");
    let mut components = Path::new(&name).components();
    let single = matches!(components.next(), Some(Component::Normal(part)) if part == name.as_str())
        && components.next().is_none();
    let path = dir.join(&name);
    if !single || path.parent() != Some(dir) {
        return Err(InvalidId::ForbiddenChar(std::path::MAIN_SEPARATOR));
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_that_could_leave_the_folder_are_rejected() {
        for bad in [
            "",
            "../victim",
            "..",
            ".",
            "/abs/path",
            "a/b",
            "a\\b",
            "C:evil",
            "C:\\evil",
            ".hidden",
            "trailing.",
            "trailing ",
            "nul\0byte",
            "line\nbreak",
            "CON",
            "com1.backup",
            "a..b",
        ] {
            assert!(validate_id(bad).is_err(), "{bad:?} was accepted");
        }
        assert_eq!(
            validate_id(&"x".repeat(MAX_ID_LEN + 1)),
            Err(InvalidId::TooLong)
        );
    }

    #[test]
    fn generated_and_copied_ids_are_accepted() {
        for good in [
            "glass-shattering_s1",
            "glass-shattering_s1_2",
            "rain_s1 (copy)",
            "café-ambience_s7",
            "v1.2_take",
            "console",
            "com10",
        ] {
            assert_eq!(validate_id(good), Ok(()), "{good:?}");
        }
    }

    #[test]
    fn entry_paths_stay_directly_inside_the_folder() {
        let dir = Path::new("/library");
        assert_eq!(
            entry_path(dir, "rain_s1", "wav").unwrap(),
            Path::new("/library/rain_s1.wav")
        );
        assert!(entry_path(dir, "../victim", "wav").is_err());
        assert!(entry_path(dir, "/abs/path", "json").is_err());
    }
}

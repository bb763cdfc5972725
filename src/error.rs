//! The library's error type: every variant names what went wrong and, for model files, which file.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum FoleyError {
    #[error("model directory {0} does not exist")]
    MissingModelDir(PathBuf),
    #[error("{path}: file is missing")]
    MissingFile { path: PathBuf },
    #[error("{path}: {reason}")]
    BadFile { path: PathBuf, reason: String },
    #[error("{path}: invalid config: {reason}")]
    BadConfig { path: PathBuf, reason: String },
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("unsupported: {0}")]
    Unsupported(String),
    #[error("cancelled")]
    Cancelled,
    #[error("downloading {repo}: {reason}")]
    Download { repo: String, reason: String },
    #[error("tokenizer {path}: {reason}")]
    Tokenizer { path: PathBuf, reason: String },
    #[error("writing {path}: {reason}")]
    Output { path: PathBuf, reason: String },
    #[error("tensor computation failed: {0}")]
    Candle(candle_core::Error),
    #[error("{0}")]
    NonFinite(String),
}

impl From<candle_core::Error> for FoleyError {
    /// Drops the backtrace candle attaches when `RUST_BACKTRACE` is set: errors are one line.
    fn from(error: candle_core::Error) -> Self {
        Self::Candle(without_backtrace(error))
    }
}

/// `error` with candle's captured backtraces removed (they would turn one line into pages).
pub fn without_backtrace(error: candle_core::Error) -> candle_core::Error {
    use candle_core::Error;
    match error {
        Error::WithBacktrace { inner, .. } => without_backtrace(*inner),
        Error::Context { inner, context } => Error::Context {
            inner: Box::new(without_backtrace(*inner)),
            context,
        },
        Error::WithPath { inner, path } => Error::WithPath {
            inner: Box::new(without_backtrace(*inner)),
            path,
        },
        other => other,
    }
}

/// `text` on one line: line breaks and the indentation after them become single spaces, so a
/// message from a dependency never spreads over several lines of stderr or of a manifest.
pub fn one_line(text: &str) -> String {
    text.split('\n')
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

pub type Result<T> = std::result::Result<T, FoleyError>;

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
    Candle(#[from] candle_core::Error),
}

pub type Result<T> = std::result::Result<T, FoleyError>;

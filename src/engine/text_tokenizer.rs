//! Tokenizers loaded from `tokenizer.json`, padded and truncated the way the pipelines call them.

use std::path::{Path, PathBuf};

use tokenizers::{PostProcessor, Tokenizer, TruncationDirection};

use crate::engine::weights::read_json;
use crate::error::{FoleyError, Result};

/// Token ids and their attention mask for one text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    pub ids: Vec<u32>,
    pub mask: Vec<u32>,
    /// True when the text did not fit and its end was cut off.
    pub truncated: bool,
}

#[derive(Debug, Clone)]
pub struct TextTokenizer {
    tokenizer: Tokenizer,
    pad_id: u32,
    /// `tokenizer.model_max_length` from `tokenizer_config.json`.
    pub max_length: usize,
    /// Pads go before the text (`padding_side: "left"`, the Gemma tokenizers' default).
    pad_left: bool,
    path: PathBuf,
}

impl TextTokenizer {
    /// Loads `dir/tokenizer.json`; `default_max_length` applies when the config has none.
    pub fn load(dir: &Path, default_max_length: usize) -> Result<Self> {
        let path = dir.join("tokenizer.json");
        if !path.is_file() {
            return Err(FoleyError::MissingFile { path });
        }
        let mut tokenizer = Tokenizer::from_file(&path).map_err(|error| FoleyError::Tokenizer {
            path: path.clone(),
            reason: error.to_string(),
        })?;
        // Padding and truncation are the pipeline's decision, not the file's.
        tokenizer
            .with_truncation(None)
            .map_err(|error| FoleyError::Tokenizer {
                path: path.clone(),
                reason: error.to_string(),
            })?
            .with_padding(None);
        let config_path = dir.join("tokenizer_config.json");
        let config: serde_json::Value = if config_path.is_file() {
            read_json(&config_path)?
        } else {
            serde_json::Value::Null
        };
        // transformers writes 1e30 when no limit is known.
        let max_length = config
            .get("model_max_length")
            .and_then(serde_json::Value::as_f64)
            .filter(|length| *length >= 1.0 && *length < 1e9)
            .map_or(default_max_length, |length| length as usize);
        let pad_token = config
            .get("pad_token")
            .and_then(|token| token.as_str().or_else(|| token.get("content")?.as_str()))
            .unwrap_or("<pad>")
            .to_string();
        let class = config
            .get("tokenizer_class")
            .and_then(serde_json::Value::as_str)
            .unwrap_or("");
        let pad_left = match config
            .get("padding_side")
            .and_then(serde_json::Value::as_str)
        {
            Some(side) => side == "left",
            None => class.starts_with("Gemma"),
        };
        let pad_id = tokenizer
            .token_to_id(&pad_token)
            .ok_or_else(|| FoleyError::Tokenizer {
                path: path.clone(),
                reason: format!("pad token {pad_token} is not in the vocabulary"),
            })?;
        Ok(Self {
            tokenizer,
            pad_id,
            max_length,
            pad_left,
            path,
        })
    }

    /// Encodes with special tokens, truncated to `max_length` and, if `pad_to` is given, padded
    /// (or truncated) to exactly that length.
    pub fn encode(&self, text: &str, pad_to: Option<usize>) -> Result<Encoded> {
        // diffusers passes an explicit max_length (the pad length) when it pads.
        let limit = pad_to.unwrap_or(self.max_length);
        let tokenizer_error = |error: tokenizers::Error| FoleyError::Tokenizer {
            path: self.path.clone(),
            reason: error.to_string(),
        };
        // What `encode(text, true)` with truncation does, without cloning the tokenizer to set
        // a limit: truncate the plain encoding to leave room for the special tokens, then add them.
        let mut encoding = self
            .tokenizer
            .encode(text, false)
            .map_err(tokenizer_error)?;
        let special = self
            .tokenizer
            .get_post_processor()
            .map_or(0, |processor| processor.added_tokens(false));
        let room = limit.saturating_sub(special);
        let truncated = encoding.len() > room;
        if truncated {
            encoding.truncate(room, 0, TruncationDirection::Right);
        }
        let mut ids = self
            .tokenizer
            .post_process(encoding, None, true)
            .map_err(tokenizer_error)?
            .get_ids()
            .to_vec();
        let mut mask = vec![1u32; ids.len()];
        if let Some(length) = pad_to {
            let pads = length.saturating_sub(ids.len());
            if self.pad_left {
                ids.splice(0..0, std::iter::repeat_n(self.pad_id, pads));
                mask.splice(0..0, std::iter::repeat_n(0, pads));
            } else {
                ids.resize(ids.len() + pads, self.pad_id);
                mask.resize(ids.len(), 0);
            }
        }
        Ok(Encoded {
            ids,
            mask,
            truncated,
        })
    }
}

//! Finding clips: the search words, tags as typed, and the prompt history.

use super::ClipRecord;

/// Tags typed as "door, Foley  ,take 2": trimmed, lowercase, spaces as '-', no empties or
/// repeats, at most 32 of at most 40 characters each.
pub fn tag_list(text: &str) -> Vec<String> {
    let mut tags: Vec<String> = Vec::new();
    for tag in text.split(',') {
        let tag: String = tag
            .split_whitespace()
            .collect::<Vec<_>>()
            .join("-")
            .to_lowercase()
            .chars()
            .take(40)
            .collect();
        if !tag.is_empty() && !tags.contains(&tag) && tags.len() < 32 {
            tags.push(tag);
        }
    }
    tags
}

/// Whether one lowercase search word matches `record` (see `Library::search`).
fn matches_word(record: &ClipRecord, word: &str) -> bool {
    if let Some(tag) = word.strip_prefix('#') {
        return record.tags.iter().any(|own| own == tag);
    }
    if let Some(level) = word
        .strip_prefix("rating:")
        .or_else(|| word.strip_prefix('*'))
        && let Ok(level) = level.parse::<u8>()
    {
        return record.rating >= level;
    }
    if word == "kept" && record.starred {
        return true;
    }
    if word.trim_start_matches('s').parse::<u64>() == Ok(record.seed) {
        return true;
    }
    let text = format!(
        "{} {} {}",
        record.prompt,
        record.negative_prompt.as_deref().unwrap_or(""),
        record.model
    )
    .to_lowercase();
    text.contains(word) || record.tags.iter().any(|tag| tag.contains(word))
}

/// Records that match every word of `query` (case-insensitive): a word is found in the
/// prompt, negative prompt, model or a tag, or equals the seed; `#tag` asks for that tag,
/// `rating:N` (or `*N`) for a rating of at least N, `kept` for kept clips.
pub fn search<'a>(
    records: &'a [ClipRecord],
    query: &str,
) -> impl Iterator<Item = &'a ClipRecord> + 'a {
    search_indices(records, query).map(|index| &records[index])
}

/// The indices in `records` of what [`search`] finds.
pub fn search_indices<'a>(
    records: &'a [ClipRecord],
    query: &str,
) -> impl Iterator<Item = usize> + 'a {
    let words: Vec<String> = query.split_whitespace().map(str::to_lowercase).collect();
    records
        .iter()
        .enumerate()
        .filter(move |(_, record)| words.iter().all(|word| matches_word(record, word)))
        .map(|(index, _)| index)
}

/// The `limit` latest prompts of `records` (newest first), each once.
pub fn prompt_history(records: &[ClipRecord], limit: usize) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    records
        .iter()
        .map(|record| record.prompt.trim())
        .filter(|prompt| !prompt.is_empty() && seen.insert(*prompt))
        .take(limit)
        .map(str::to_string)
        .collect()
}

//! The run's record: one JSON line per finished job (ok or failed), keyed by its line number so
//! a job appears once however often the run is resumed. Rewritten whole through a temporary
//! file and a rename after every job, so `kill -9` leaves the previous complete version.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::atomic_file::write_atomic;
use crate::error::Result;

/// One finished job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// 1-based line of the jobs file.
    pub line: usize,
    pub name: String,
    /// Output files (WAVs, then their sidecars), relative to the output folder.
    #[serde(default)]
    pub files: Vec<String>,
    #[serde(default)]
    pub seed: Option<u64>,
    /// The job as run: its line with the defaults applied and the model's own defaults filled.
    #[serde(default)]
    pub settings: serde_json::Value,
    /// Seconds per stage.
    #[serde(default)]
    pub timings: serde_json::Value,
    /// CLAP scores of the waveforms, best first, when they were ranked.
    #[serde(default)]
    pub scores: Option<Vec<f32>>,
    /// Why the job failed; `None` when it succeeded.
    #[serde(default)]
    pub error: Option<String>,
    /// Fingerprint of the job's settings (see `jobs::fingerprint`).
    #[serde(default)]
    pub fingerprint: Option<String>,
}

impl Entry {
    pub fn failed(line: usize, name: &str, error: String) -> Self {
        Self {
            line,
            name: name.to_string(),
            files: Vec::new(),
            seed: None,
            settings: serde_json::Value::Null,
            timings: serde_json::Value::Null,
            scores: None,
            error: Some(error),
            fingerprint: None,
        }
    }

    pub fn succeeded(&self) -> bool {
        self.error.is_none()
    }
}

/// The entries of one manifest file, by line.
#[derive(Debug)]
pub struct Manifest {
    path: PathBuf,
    entries: BTreeMap<usize, Entry>,
}

impl Manifest {
    /// Reads `path` if it exists; lines that do not parse (edited by hand) are dropped and
    /// their jobs rerun.
    pub fn open(path: &Path) -> Self {
        let entries = std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| serde_json::from_str::<Entry>(line).ok())
            .map(|entry| (entry.line, entry))
            .collect();
        Self {
            path: path.to_path_buf(),
            entries,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn get(&self, line: usize) -> Option<&Entry> {
        self.entries.get(&line)
    }

    /// Records `entry` (replacing the job's earlier one) and rewrites the file.
    pub fn record(&mut self, entry: Entry) -> Result<()> {
        if self.entries.get(&entry.line) == Some(&entry) {
            return Ok(());
        }
        self.entries.insert(entry.line, entry);
        self.save()
    }

    fn save(&self) -> Result<()> {
        let mut text = String::new();
        for entry in self.entries.values() {
            // An Entry always serialises; the fallback keeps the line count right regardless.
            text.push_str(&serde_json::to_string(entry).unwrap_or_else(|_| "{}".into()));
            text.push('\n');
        }
        write_atomic(&self.path, text.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_job_across_reruns() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("manifest.jsonl");
        let mut manifest = Manifest::open(&path);
        manifest
            .record(Entry::failed(3, "a", "boom".into()))
            .unwrap();
        manifest
            .record(Entry::failed(1, "b", "boom".into()))
            .unwrap();
        let mut again = Manifest::open(&path);
        let mut fixed = Entry::failed(3, "a", String::new());
        fixed.error = None;
        again.record(fixed).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 2);
        assert!(text.lines().next().unwrap().contains("\"line\":1"));
        assert!(Manifest::open(&path).get(3).unwrap().succeeded());
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "temporary left behind"
        );
    }
}

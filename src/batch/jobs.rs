//! The jobs file: one JSON object per line in `foley generate`'s vocabulary (snake_case), an
//! optional first line `{"defaults": {...}}`, and the checks that need every line at once
//! (output names unique across the whole file, so every shard agrees on them).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One request as written in the file; every field may come from the defaults instead.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub negative_prompt: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub steps: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guidance: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheduler: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waveforms: Option<usize>,
    /// `f32`, `pcm16` or `pcm24`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// `native`, `44100` or `48000` (a string or a number).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sample_rate: Option<serde_json::Value>,
    /// Paths are relative to the jobs file's folder.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub init_audio: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub strength: Option<f64>,
    /// Stable Audio 3's audio-to-audio noise level.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub init_noise_level: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encode_mode: Option<String>,
    /// `"START:END"` strings or `[start, end]` pairs, in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inpaint: Option<Vec<serde_json::Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub regenerate_above_hz: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extend: Option<f64>,
    #[serde(rename = "loop", skip_serializing_if = "Option::is_none")]
    pub loop_seconds: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variation_of: Option<PathBuf>,
}

impl JobSpec {
    /// `self`'s fields, with `defaults` filling the ones it leaves out.
    fn over(self, defaults: &JobSpec) -> JobSpec {
        macro_rules! pick {
            ($($field:ident),*) => {
                JobSpec { $($field: self.$field.or_else(|| defaults.$field.clone()),)* }
            };
        }
        pick!(
            name,
            model,
            prompt,
            negative_prompt,
            seed,
            steps,
            guidance,
            duration,
            scheduler,
            waveforms,
            format,
            sample_rate,
            init_audio,
            strength,
            init_noise_level,
            encode_mode,
            inpaint,
            regenerate_above_hz,
            extend,
            loop_seconds,
            variation_of
        )
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    defaults: JobSpec,
}

/// One line of the file that asks for work: its spec (defaults applied) or why it is unusable.
#[derive(Debug, Clone)]
pub struct Job {
    /// 1-based line number in the file.
    pub line: usize,
    /// 0-based position among the job lines: `--shard I/N` takes `index % N == I`.
    pub index: usize,
    /// File stem of the outputs: the `name` field or the line number.
    pub name: String,
    pub spec: Result<JobSpec, String>,
}

/// Longest output name, so `<name>-16.json` stays a valid file name everywhere.
const MAX_NAME_BYTES: usize = 200;

/// A name is used as a file stem in the output folder, so it must not be able to leave it or
/// hide: letters, digits, `.`, `_` and `-`, not starting with `.` or `-`.
pub fn check_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= MAX_NAME_BYTES
        && !name.starts_with(['.', '-'])
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "name {name:?} is not a plain file name (letters, digits, '.', '_', '-'; at most {MAX_NAME_BYTES} bytes; not starting with '.' or '-')"
        ))
    }
}

/// Parses the whole file. `cli_defaults` (from the command line) sit under the header's.
pub fn parse_jobs(text: &str, cli_defaults: &JobSpec) -> Vec<Job> {
    let mut defaults = cli_defaults.clone();
    let mut jobs = Vec::new();
    for (offset, raw) in text.lines().enumerate() {
        let line = offset + 1;
        if raw.trim().is_empty() {
            continue;
        }
        if jobs.is_empty()
            && let Ok(header) = serde_json::from_str::<Header>(raw)
        {
            defaults = header.defaults.over(cli_defaults);
            continue;
        }
        let spec = serde_json::from_str::<JobSpec>(raw)
            .map_err(|error| format!("not a job: {error}"))
            .map(|spec| spec.over(&defaults));
        let name = match &spec {
            Ok(JobSpec {
                name: Some(name), ..
            }) => name.clone(),
            _ => line.to_string(),
        };
        let spec = spec.and_then(|spec| check_name(&name).map(|()| spec));
        let index = jobs.len();
        jobs.push(Job {
            line,
            index,
            name,
            spec,
        });
    }
    reject_duplicate_names(&mut jobs);
    jobs
}

/// Outputs are `<name>.wav` or `<name>-k.wav`; a later job whose files would collide with an
/// earlier one's fails instead of overwriting them (every shard reaches the same verdict).
fn reject_duplicate_names(jobs: &mut [Job]) {
    let mut owners: HashMap<String, usize> = HashMap::new();
    for job in jobs.iter_mut() {
        let waveforms = job
            .spec
            .as_ref()
            .map_or(1, |spec| spec.waveforms.unwrap_or(1).clamp(1, 64));
        let stems: Vec<String> = if waveforms == 1 {
            vec![job.name.clone()]
        } else {
            (1..=waveforms)
                .map(|k| format!("{}-{k}", job.name))
                .collect()
        };
        if job.spec.is_err() {
            continue; // writes nothing, so claims no name
        }
        match stems.iter().find_map(|stem| owners.get(stem).copied()) {
            Some(line) => {
                job.spec = Err(format!(
                    "output name '{}' is already used by line {line}",
                    job.name
                ));
            }
            None => {
                for stem in stems {
                    owners.insert(stem, job.line);
                }
            }
        }
    }
}

/// `--shard I/N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl std::str::FromStr for Shard {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let parsed = text.split_once('/').and_then(|(index, count)| {
            Some((index.trim().parse().ok()?, count.trim().parse().ok()?))
        });
        match parsed {
            Some((index, count)) if count > 0 && index < count => Ok(Self { index, count }),
            _ => Err(format!("--shard '{text}' is not I/N with 0 ≤ I < N")),
        }
    }
}

impl Shard {
    pub fn takes(&self, job: &Job) -> bool {
        job.index % self.count == self.index
    }

    /// `manifest.jsonl` for a whole run, `manifest-I-of-N.jsonl` for a shard.
    pub fn manifest_name(shard: Option<Shard>) -> String {
        match shard {
            Some(shard) => format!("manifest-{}-of-{}.jsonl", shard.index, shard.count),
            None => "manifest.jsonl".into(),
        }
    }
}

/// A path from the jobs file, relative to its folder.
pub fn resolve(base: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    }
}

/// A stable 64-bit FNV-1a hash: the fingerprint of a job's settings in its sidecars, so a
/// rerun can tell a finished job from one whose line has since changed.
pub fn fingerprint(text: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        hash ^= byte as u64;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_and_cli_defaults_fill_lines() {
        let cli = JobSpec {
            model: Some("cli-model".into()),
            steps: Some(3),
            ..Default::default()
        };
        let text = "{\"defaults\": {\"steps\": 5, \"prompt\": \"rain\"}}\n\n{\"seed\": 1}\n{\"prompt\": \"wind\", \"name\": \"w\"}\n";
        let jobs = parse_jobs(text, &cli);
        assert_eq!(jobs.len(), 2);
        let first = jobs[0].spec.as_ref().unwrap();
        assert_eq!(
            (first.steps, first.prompt.as_deref(), first.model.as_deref()),
            (Some(5), Some("rain"), Some("cli-model"))
        );
        assert_eq!(
            (jobs[0].line, jobs[0].index, jobs[0].name.as_str()),
            (3, 0, "3")
        );
        assert_eq!(jobs[1].name, "w");
    }

    #[test]
    fn bad_lines_and_names_are_per_job_errors() {
        let text = "{\"prompt\": \"a\", \"name\": \"../escape\"}\nnot json\n{\"prompt\": \"b\", \"nmae\": \"x\"}\n{\"prompt\": \"c\", \"name\": \"same\"}\n{\"prompt\": \"d\", \"name\": \"same\"}\n{\"prompt\": \"e\", \"name\": \"k\", \"waveforms\": 2}\n{\"prompt\": \"f\", \"name\": \"k-2\"}\n";
        let jobs = parse_jobs(text, &JobSpec::default());
        let errors: Vec<_> = jobs
            .iter()
            .map(|job| job.spec.as_ref().err().cloned())
            .collect();
        assert!(errors[0].as_ref().unwrap().contains("plain file name"));
        assert!(errors[1].as_ref().unwrap().contains("not a job"));
        assert!(errors[2].as_ref().unwrap().contains("nmae"));
        assert!(errors[3].is_none());
        assert!(errors[4].as_ref().unwrap().contains("line 4"));
        assert!(errors[5].is_none());
        assert!(errors[6].as_ref().unwrap().contains("line 6"));
        for name in ["a", "clip_01.v2", "A-b"] {
            assert!(check_name(name).is_ok(), "{name}");
        }
        for name in [
            "",
            ".hidden",
            "-x",
            "a/b",
            "a\\b",
            "a b",
            "é",
            &"x".repeat(201),
        ] {
            assert!(check_name(name).is_err(), "{name}");
        }
    }

    #[test]
    fn shards_split_by_job_index() {
        let shard: Shard = "1/3".parse().unwrap();
        assert_eq!(shard, Shard { index: 1, count: 3 });
        for bad in ["3/3", "1/0", "x/2", "1", "-1/2"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
        assert_eq!(Shard::manifest_name(Some(shard)), "manifest-1-of-3.jsonl");
        assert_eq!(fingerprint("abc"), fingerprint("abc"));
        assert_ne!(fingerprint("abc"), fingerprint("abd"));
    }
}

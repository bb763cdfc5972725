//! `foley batch` as processes: shards running at once into one folder equal one unsharded run
//! bit for bit, SIGKILL at random moments loses nothing once resumed, and bad lines, missing
//! inputs and unwritable outputs are reported per job while the rest run.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::fixtures;

fn foley() -> Command {
    Command::new(env!("CARGO_BIN_EXE_foley"))
}

/// Writes a stereo 16-bit WAV of `frames` at 22.05 kHz.
fn write_input(path: &Path, frames: usize) {
    let spec = hound::WavSpec {
        channels: 2,
        sample_rate: 22_050,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut writer = hound::WavWriter::create(path, spec).unwrap();
    for index in 0..frames {
        let value = ((index as f32 * 0.07).sin() * 12_000.0) as i16;
        writer.write_sample(value).unwrap();
        writer.write_sample(value / 3).unwrap();
    }
    writer.finalize().unwrap();
}

/// A jobs file over two tiny models: text-to-audio seeds, a stochastic scheduler, two
/// waveforms, an edit with a relative input path, an unseeded line and a pcm16 export.
fn write_jobs(dir: &Path) -> PathBuf {
    write_input(&dir.join("input.wav"), 500);
    let audioldm2 = fixtures().join("audioldm2-tiny").display().to_string();
    let audioldm = fixtures().join("audioldm-tiny").display().to_string();
    let mut lines = vec![format!(
        r#"{{"defaults": {{"model": "{audioldm2}", "steps": 3, "prompt": "rain on a tin roof"}}}}"#
    )];
    for seed in 0..5 {
        lines.push(format!(r#"{{"name": "rain-{seed}", "seed": {seed}}}"#));
    }
    lines.push(r#"{"name": "wind", "prompt": "wind", "scheduler": "euler-a", "seed": 9}"#.into());
    lines.push(format!(
        r#"{{"name": "pair", "model": "{audioldm}", "waveforms": 2, "seed": 4, "format": "pcm16", "sample_rate": 48000}}"#
    ));
    lines.push(r#"{"name": "edit", "init_audio": "input.wav", "strength": 0.7, "seed": 2}"#.into());
    lines.push(r#"{"prompt": "thunder"}"#.into());
    lines.push(format!(
        r#"{{"name": "fill", "model": "{audioldm}", "init_audio": "input.wav", "inpaint": ["0.005:0.01"], "seed": 5}}"#
    ));
    let path = dir.join("jobs.jsonl");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

const JOBS: usize = 10;

fn batch(jobs: &Path, out: &Path, extra: &[&str]) -> Command {
    let mut command = foley();
    command
        .arg("batch")
        .arg(jobs)
        .arg("--out")
        .arg(out)
        .arg("--quiet")
        .args(extra);
    command
}

fn run(mut command: Command) -> Output {
    command.output().expect("run foley batch")
}

/// The jobs' WAVs in `dir` (every WAV but the input).
fn wav_paths(dir: &Path) -> impl Iterator<Item = PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "wav"))
        .filter(|path| path.file_name().is_some_and(|name| name != "input.wav"))
}

/// Every job's WAV in `dir`, by name.
fn wavs(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    wav_paths(dir)
        .map(|path| {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).unwrap())
        })
        .collect()
}

/// How many jobs' WAVs are in `dir` (each appears whole: written aside, then renamed).
fn finished(dir: &Path) -> usize {
    wav_paths(dir).count()
}

/// The manifest entries of every manifest in `dir`, as (line, entry).
fn manifest_entries(dir: &Path) -> Vec<(u64, serde_json::Value)> {
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("manifest") && name.ends_with(".jsonl") {
            for line in std::fs::read_to_string(&path).unwrap().lines() {
                let value: serde_json::Value = serde_json::from_str(line).unwrap();
                entries.push((value["line"].as_u64().unwrap(), value));
            }
        }
    }
    entries.sort_by_key(|(line, _)| *line);
    entries
}

fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".partial"))
        .collect()
}

fn assert_each_job_once(dir: &Path) {
    let entries = manifest_entries(dir);
    let lines: Vec<u64> = entries.iter().map(|(line, _)| *line).collect();
    assert_eq!(
        lines,
        (2..2 + JOBS as u64).collect::<Vec<_>>(),
        "manifest lines"
    );
    for (line, entry) in &entries {
        assert!(entry["error"].is_null(), "line {line}: {entry}");
        assert!(!entry["files"].as_array().unwrap().is_empty());
    }
}

/// The reference: one unsharded run.
fn unsharded(dir: &Path, jobs: &Path) -> BTreeMap<String, Vec<u8>> {
    let out = dir.join("whole");
    let output = run(batch(jobs, &out, &[]));
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_each_job_once(&out);
    let files = wavs(&out);
    assert_eq!(files.len(), JOBS + 1, "{:?}", files.keys()); // "pair" writes two
    assert!(files.contains_key("pair-1.wav") && files.contains_key("10.wav"));
    files
}

#[test]
fn four_parallel_shards_equal_one_run_and_a_rerun_skips_everything() {
    let dir = tempfile::tempdir().unwrap();
    let jobs = write_jobs(dir.path());
    let expected = unsharded(dir.path(), &jobs);

    let out = dir.path().join("sharded");
    let children: Vec<Child> = (0..4)
        .map(|shard| {
            batch(&jobs, &out, &["--shard", &format!("{shard}/4")])
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let output = child.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    assert_eq!(
        wavs(&out),
        expected,
        "sharded outputs differ from the unsharded run"
    );
    assert_each_job_once(&out);
    assert!(out.join("manifest-3-of-4.jsonl").exists());
    assert!(leftovers(&out).is_empty(), "{:?}", leftovers(&out));

    // A rerun finds everything done: nothing regenerated, manifests untouched.
    let before = std::fs::read(out.join("manifest-0-of-4.jsonl")).unwrap();
    let output = run(batch(&jobs, &out, &["--shard", "0/4", "--json"]));
    assert!(output.status.success());
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(summary["generated"], 0, "{summary}");
    assert_eq!(summary["skipped"], summary["jobs"]);
    assert_eq!(
        std::fs::read(out.join("manifest-0-of-4.jsonl")).unwrap(),
        before
    );
}

#[test]
fn killed_runs_resume_without_loss_or_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let jobs = write_jobs(dir.path());
    let expected = unsharded(dir.path(), &jobs);
    let out = dir.path().join("killed");
    let mut landed_mid_run = false;
    let mut after_kill = |child: &mut Child| {
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        if out.exists() {
            // Whatever moment the kill hit, the manifest is whole and names each job once.
            let lines: Vec<u64> = manifest_entries(&out)
                .iter()
                .map(|(line, _)| *line)
                .collect();
            let mut unique = lines.clone();
            unique.dedup();
            assert_eq!(lines, unique, "duplicate manifest lines after a kill");
            let done = finished(&out);
            landed_mid_run |= done > 0 && done < JOBS + 1;
        }
    };
    // First a kill as soon as one job is written, which lands mid-run however fast or loaded
    // the machine is (fixed delays alone all fell before the first job when other tests ran
    // beside this one).
    let mut child = batch(&jobs, &out, &[])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    while Instant::now() < deadline
        && child.try_wait().unwrap().is_none()
        && !(out.exists() && finished(&out) > 0)
    {
        std::thread::sleep(Duration::from_millis(2));
    }
    after_kill(&mut child);
    // Then a fixed sequence of kill delays (ms) spread over start-up, loading and writing.
    for delay in [40u64, 170, 90, 260, 130, 320, 60, 210] {
        let mut child = batch(&jobs, &out, &[])
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay));
        after_kill(&mut child);
    }
    assert!(
        landed_mid_run,
        "no kill landed between the first and the last job"
    );
    let output = run(batch(&jobs, &out, &["--json"]));
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(wavs(&out), expected, "resumed outputs differ");
    assert_each_job_once(&out);
    assert!(leftovers(&out).is_empty(), "{:?}", leftovers(&out));
}

#[test]
fn bad_jobs_are_reported_per_line_and_the_rest_run() {
    let dir = tempfile::tempdir().unwrap();
    let model = fixtures().join("audioldm2-tiny").display().to_string();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    // Something that is not a file sits where one job's WAV would go.
    std::fs::create_dir(out.join("blocked.wav")).unwrap();
    let lines = [
        r#"{"name": "ok", "prompt": "rain", "steps": 2}"#,
        "this is not json",
        r#"{"name": "typo", "prompt": "rain", "stpes": 2}"#,
        r#"{"name": "gone", "prompt": "rain", "init_audio": "missing.wav"}"#,
        r#"{"name": "blocked", "prompt": "rain", "steps": 2}"#,
        r#"{"name": "../escape", "prompt": "rain"}"#,
        r#"{"name": "bad-strength", "prompt": "rain", "init_audio": "missing.wav", "strength": 3}"#,
        r#"{"name": "ok", "prompt": "again"}"#,
        r#"{"name": "also-ok", "prompt": "wind", "steps": 2}"#,
    ];
    let jobs = dir.path().join("jobs.jsonl");
    std::fs::write(&jobs, lines.join("\n")).unwrap();
    let output = run(batch(&jobs, &out, &["--model", &model, "--json"]));
    assert!(
        !output.status.success(),
        "failures must show in the exit code"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stderr.contains("7 of 9 jobs failed"), "{stderr}");
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        (summary["generated"].as_u64(), summary["failed"].as_u64()),
        (Some(2), Some(7))
    );
    let entries: BTreeMap<u64, serde_json::Value> = manifest_entries(&out).into_iter().collect();
    let error = |line: u64| entries[&line]["error"].as_str().unwrap_or("").to_string();
    assert!(error(1).is_empty() && error(9).is_empty());
    assert!(error(2).contains("not a job"), "{}", error(2));
    assert!(error(3).contains("stpes"), "{}", error(3));
    assert!(error(4).contains("missing.wav"), "{}", error(4));
    assert!(error(5).contains("blocked.wav"), "{}", error(5));
    assert!(error(6).contains("plain file name"), "{}", error(6));
    assert!(
        error(7).contains("strength") || error(7).contains("missing.wav"),
        "{}",
        error(7)
    );
    assert!(error(8).contains("already used by line 1"), "{}", error(8));
    assert!(!dir.path().join("escape.wav").exists());
    assert!(out.join("ok.wav").exists() && out.join("also-ok.json").exists());
}

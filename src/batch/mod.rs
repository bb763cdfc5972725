//! `foley batch`: many requests from a JSONL file into one folder, resumable and shardable, so
//! that it runs unchanged as a Slurm job array or a Kubernetes Indexed Job.
//!
//! Every job's outputs are its WAVs and their sidecars, each written atomically; a job counts
//! as finished when all its sidecars carry its fingerprint and its WAVs read back, so a rerun
//! skips it, and `kill -9` loses at most the job in flight. Each job is seeded on its own, so a
//! job's samples do not depend on which shard ran it or in what order.

pub mod jobs;
pub mod manifest;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use serde_json::json;

use crate::atomic_file::{is_temporary_of, write_atomic};
use crate::audio::wav::{WavFormat, read_wav};
use crate::cli::{
    EditArgs, output_paths, parse_sample_rate, prompt_for, task_from_args, write_waveforms,
};
use crate::engine::device::{DeviceKind, Plan, parse_dtype};
use crate::engine::hub::resolve_model;
use crate::engine::pipeline::{CancelFlag, Pipeline, Request, validate};
use crate::engine::schedulers::SchedulerKind;
use crate::library::ClipRecord;
use jobs::{Job, JobSpec, Shard, fingerprint, parse_jobs, resolve};
use manifest::{Entry, Manifest};

/// What `foley batch` was asked to do.
#[derive(Debug, Clone)]
pub struct BatchOptions {
    pub jobs: PathBuf,
    pub out: PathBuf,
    /// Model for lines (and header) that name none.
    pub model: Option<String>,
    pub shard: Option<Shard>,
    pub device: String,
    pub dtype: String,
    pub quiet: bool,
}

/// The outcome of one invocation, as `--json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Jobs this invocation (shard) was responsible for.
    pub jobs: usize,
    /// Run now and succeeded.
    pub generated: usize,
    /// Already complete from an earlier run.
    pub skipped: usize,
    pub failed: usize,
    pub manifest: PathBuf,
    pub seconds: f64,
}

impl Summary {
    pub fn all_succeeded(&self) -> bool {
        self.failed == 0
    }
}

/// A job ready to run: the engine request and how to write it.
struct Prepared {
    model: String,
    request: Request,
    /// `None`: the family's diffusers default, filled in once the model is loaded.
    steps: Option<usize>,
    guidance: Option<f64>,
    format: WavFormat,
    output_rate: Option<u32>,
}

pub fn run(options: &BatchOptions) -> anyhow::Result<Summary> {
    let started = Instant::now();
    let text = std::fs::read_to_string(&options.jobs)
        .with_context(|| format!("reading jobs file {}", options.jobs.display()))?;
    let base = options
        .jobs
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let device_kind = options.device.parse::<DeviceKind>()?;
    let plan = Plan::new(device_kind, parse_dtype(&options.dtype)?);
    prepare_output_dir(&options.out)?;

    let cli_defaults = JobSpec {
        model: options.model.clone(),
        ..Default::default()
    };
    let all = parse_jobs(&text, &cli_defaults);
    let mut mine: Vec<&Job> = all
        .iter()
        .filter(|job| options.shard.is_none_or(|shard| shard.takes(job)))
        .collect();
    // Jobs are independent, so grouping them by model changes no sample and loads each once.
    mine.sort_by_key(|job| {
        job.spec
            .as_ref()
            .ok()
            .and_then(|spec| spec.model.clone())
            .unwrap_or_default()
    });

    let manifest_path = options.out.join(Shard::manifest_name(options.shard));
    let owned = owned_files(&mine, &manifest_path);
    remove_stale_temporaries(&options.out, &owned);
    let mut manifest = Manifest::open(&manifest_path);

    let bar = progress_bar(mine.len(), options.quiet);
    if let Some(notice) = plan.notice {
        eprintln!("note: {notice}");
    }
    let device = device_kind.open()?;
    let mut loaded: Option<(String, Pipeline)> = None;
    let mut summary = Summary {
        jobs: mine.len(),
        generated: 0,
        skipped: 0,
        failed: 0,
        manifest: manifest_path.clone(),
        seconds: 0.0,
    };
    for job in mine {
        bar.set_message(job.name.clone());
        let outcome = run_job(
            job,
            &base,
            options,
            &mut manifest,
            &mut loaded,
            &device,
            plan,
        );
        match outcome {
            Ok(Outcome::Generated) => summary.generated += 1,
            Ok(Outcome::Skipped) => summary.skipped += 1,
            Ok(Outcome::Failed) => summary.failed += 1,
            Err(error) => {
                // The manifest itself could not be written: stop, nothing more can be recorded.
                bar.abandon();
                return Err(error.context(format!(
                    "recording line {} in {}",
                    job.line,
                    manifest.path().display()
                )));
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    remove_stale_temporaries(&options.out, &owned);
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

enum Outcome {
    Generated,
    Skipped,
    Failed,
}

/// Runs (or skips) one job and records it; an `Err` only when the manifest cannot be written.
fn run_job(
    job: &Job,
    base: &Path,
    options: &BatchOptions,
    manifest: &mut Manifest,
    loaded: &mut Option<(String, Pipeline)>,
    device: &candle_core::Device,
    plan: Plan,
) -> anyhow::Result<Outcome> {
    let spec = match &job.spec {
        Ok(spec) => spec,
        Err(error) => {
            manifest.record(Entry::failed(job.line, &job.name, error.clone()))?;
            return Ok(Outcome::Failed);
        }
    };
    let settings = serde_json::to_string(spec).unwrap_or_default();
    let print = fingerprint(&format!("{settings}|{}|{}", options.device, options.dtype));
    if let Some(entry) = finished(job, spec, &options.out, &print) {
        if manifest.get(job.line).is_none_or(|old| !old.succeeded()) {
            manifest.record(entry)?;
        }
        return Ok(Outcome::Skipped);
    }
    let result = prepare(job, spec, base).and_then(|prepared| {
        generate(
            job,
            spec,
            prepared,
            &options.out,
            &print,
            loaded,
            device,
            plan,
        )
    });
    match result {
        Ok(entry) => {
            manifest.record(entry)?;
            Ok(Outcome::Generated)
        }
        Err(error) => {
            let message = crate::error::one_line(&format!("{error:#}"));
            manifest.record(Entry::failed(job.line, &job.name, message))?;
            Ok(Outcome::Failed)
        }
    }
}

/// The request a line asks for, checked before any model is loaded.
fn prepare(job: &Job, spec: &JobSpec, base: &Path) -> anyhow::Result<Prepared> {
    let Some(model) = spec.model.clone() else {
        bail!("no model: give --model or a \"model\" field (in the line or the defaults)");
    };
    let inpaint = spec
        .inpaint
        .iter()
        .flatten()
        .map(|range| match range {
            serde_json::Value::String(text) => Ok(text.clone()),
            serde_json::Value::Array(pair) if pair.len() == 2 => {
                Ok(format!("{}:{}", pair[0], pair[1]))
            }
            other => bail!("inpaint range {other} is not \"START:END\" or [start, end]"),
        })
        .collect::<anyhow::Result<_>>()?;
    let edit = EditArgs {
        init_audio: spec.init_audio.as_deref().map(|path| resolve(base, path)),
        strength: spec.strength,
        init_noise_level: spec.init_noise_level,
        encode_mode: spec.encode_mode.clone(),
        inpaint,
        regenerate_above_hz: spec.regenerate_above_hz,
        extend: spec.extend,
        loop_seconds: spec.loop_seconds,
        variation_of: spec.variation_of.as_deref().map(|path| resolve(base, path)),
    };
    let task = task_from_args(&edit, spec.duration)?;
    let Some(prompt) = prompt_for(spec.prompt.as_deref(), &task) else {
        bail!("no prompt (it is optional only with variation_of)");
    };
    let sample_rate = match &spec.sample_rate {
        None => "native".to_string(),
        Some(serde_json::Value::String(text)) => text.clone(),
        Some(other) => other.to_string(),
    };
    let request = Request {
        prompt,
        negative_prompt: spec.negative_prompt.clone(),
        // Unseeded lines get their line number, so reruns and shards agree.
        seed: spec.seed.unwrap_or(job.line as u64),
        steps: spec.steps.unwrap_or(1),
        guidance: spec.guidance.unwrap_or(0.0),
        duration: spec.duration,
        scheduler: spec
            .scheduler
            .as_deref()
            .unwrap_or("ddim")
            .parse::<SchedulerKind>()?,
        waveforms: spec.waveforms.unwrap_or(1),
        task,
    };
    validate(&request)?;
    Ok(Prepared {
        model,
        request,
        steps: spec.steps,
        guidance: spec.guidance,
        format: spec.format.as_deref().unwrap_or("f32").parse()?,
        output_rate: parse_sample_rate(&sample_rate)?,
    })
}

/// Loads (or keeps) the model, runs the request and writes the WAVs, then the sidecars.
#[allow(clippy::too_many_arguments)]
fn generate(
    job: &Job,
    spec: &JobSpec,
    mut prepared: Prepared,
    out: &Path,
    print: &str,
    loaded: &mut Option<(String, Pipeline)>,
    device: &candle_core::Device,
    plan: Plan,
) -> anyhow::Result<Entry> {
    if loaded
        .as_ref()
        .is_none_or(|(model, _)| *model != prepared.model)
    {
        *loaded = None; // free the previous model first
        let dir = resolve_model(&prepared.model)?;
        *loaded = Some((
            prepared.model.clone(),
            Pipeline::load(&dir, device, plan.weights)?,
        ));
    }
    let Some((_, pipeline)) = loaded.as_ref() else {
        bail!("the model did not load");
    };
    let (default_steps, default_guidance) = pipeline.defaults();
    prepared.request.steps = prepared.steps.unwrap_or(default_steps);
    prepared.request.guidance = prepared.guidance.unwrap_or(default_guidance);
    let request = &prepared.request;
    if spec.scheduler.is_some() {
        pipeline.check_scheduler_choice()?;
    }
    let clip = plan.run(|| pipeline.generate(request, &mut |_| {}, &CancelFlag::new()))?;

    let rate = prepared.output_rate.unwrap_or(clip.sample_rate);
    let wavs = output_paths(&out.join(format!("{}.wav", job.name)), clip.waveforms.len());
    let records: Vec<ClipRecord> = wavs
        .iter()
        .enumerate()
        .map(|(index, path)| ClipRecord {
            id: stem_of(path),
            batch_job: Some(print.to_string()),
            ..ClipRecord::of_clip(request, &clip, &prepared.model, index, rate)
        })
        .collect();
    write_waveforms(&wavs, &clip, &records, prepared.format)?;
    let mut files: Vec<String> = Vec::new();
    let mut sidecars = Vec::new();
    for (path, record) in wavs.iter().zip(&records) {
        let stem = stem_of(path);
        let sidecar = out.join(format!("{stem}.json"));
        write_atomic(&sidecar, &serde_json::to_vec_pretty(&record)?)?;
        files.push(format!("{stem}.wav"));
        sidecars.push(format!("{stem}.json"));
    }
    files.extend(sidecars);
    let mut settings = serde_json::to_value(spec)?;
    if let Some(object) = settings.as_object_mut() {
        object.insert("model".into(), json!(prepared.model));
        object.insert("seed".into(), json!(clip.seed));
        object.insert("steps".into(), json!(request.steps));
        object.insert("guidance".into(), json!(request.guidance));
        object.insert("scheduler".into(), json!(clip.scheduler));
        object.insert("duration".into(), json!(clip.duration));
        object.insert("sample_rate".into(), json!(rate));
        object.insert("task".into(), serde_json::to_value(&clip.task)?);
    }
    Ok(Entry {
        line: job.line,
        name: job.name.clone(),
        files,
        seed: Some(clip.seed),
        settings,
        timings: serde_json::to_value(&clip.timings)?,
        scores: clip.scores.clone(),
        error: None,
        fingerprint: Some(print.to_string()),
    })
}

fn stem_of(path: &Path) -> String {
    path.file_stem()
        .map(|stem| stem.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The job's output stems: `<name>` or `<name>-1 … <name>-k`.
fn stems(job: &Job, spec: &JobSpec) -> Vec<String> {
    output_paths(
        Path::new(&format!("{}.wav", job.name)),
        spec.waveforms.unwrap_or(1).max(1),
    )
    .iter()
    .map(|path| stem_of(path))
    .collect()
}

/// The manifest entry of a job an earlier run finished: every sidecar carries this job's
/// fingerprint and every WAV reads back whole. `None` when anything is missing or different.
fn finished(job: &Job, spec: &JobSpec, out: &Path, print: &str) -> Option<Entry> {
    let stems = stems(job, spec);
    let mut records = Vec::new();
    for stem in &stems {
        let text = std::fs::read_to_string(out.join(format!("{stem}.json"))).ok()?;
        let record: ClipRecord = serde_json::from_str(&text).ok()?;
        if record.batch_job.as_deref() != Some(print) {
            return None;
        }
        let (samples, rate) = read_wav(&out.join(format!("{stem}.wav"))).ok()?;
        if samples.is_empty() || rate != record.sample_rate {
            return None;
        }
        records.push(record);
    }
    let first = records.first()?;
    // File names come from the job, never from the sidecars' contents.
    let mut files: Vec<String> = stems.iter().map(|stem| format!("{stem}.wav")).collect();
    files.extend(stems.iter().map(|stem| format!("{stem}.json")));
    let timings: serde_json::Map<String, serde_json::Value> = first
        .timings
        .iter()
        .map(|(stage, seconds)| (stage.clone(), json!(seconds)))
        .collect();
    Some(Entry {
        line: job.line,
        name: job.name.clone(),
        files,
        seed: Some(first.seed),
        settings: serde_json::to_value(spec).ok()?,
        timings: serde_json::Value::Object(timings),
        scores: records.iter().map(|record| record.score).collect(),
        error: None,
        fingerprint: Some(print.to_string()),
    })
}

/// Files only this invocation writes: its jobs' outputs and its manifest.
fn owned_files(jobs: &[&Job], manifest: &Path) -> Vec<String> {
    let mut owned: Vec<String> = jobs
        .iter()
        .filter_map(|job| job.spec.as_ref().ok().map(|spec| (job, spec)))
        .flat_map(|(job, spec)| stems(job, spec))
        .flat_map(|stem| [format!("{stem}.wav"), format!("{stem}.json")])
        .collect();
    if let Some(name) = manifest.file_name() {
        owned.push(name.to_string_lossy().into_owned());
    }
    owned
}

/// Deletes the temporaries a killed run left for files this invocation owns (see
/// `atomic_file`); other shards' in-flight files are not touched.
fn remove_stale_temporaries(dir: &Path, owned: &[String]) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if owned.iter().any(|file| is_temporary_of(&name, file)) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

fn prepare_output_dir(out: &Path) -> anyhow::Result<()> {
    if out.exists() && !out.is_dir() {
        bail!("output {} exists and is not a folder", out.display());
    }
    std::fs::create_dir_all(out)
        .with_context(|| format!("creating output folder {}", out.display()))
}

fn progress_bar(jobs: usize, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(jobs as u64), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("job {pos}/{len} [{bar:30}] {elapsed} eta {eta} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar
}

//! Command-line definitions and handlers: parse, call the engine, print. Nothing numerical here.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;

use crate::audio::wav::{WavFormat, write_wav_with_metadata};
use crate::audio::wav_in::read_input_audio;
use crate::engine::device::{DeviceKind, Plan, parse_dtype};
use crate::engine::dsp::resample::resample_frames;
use crate::engine::hub::{KNOWN_CHECKPOINTS, cached_snapshot, resolve_model};
use crate::engine::kernels::on_compute_pool;
use crate::engine::pipeline::task::DEFAULT_AUDIO_TO_AUDIO_STRENGTH;
use crate::engine::pipeline::{
    CancelFlag, Clip, EncodeMode, Pipeline, Regions, Request, Task, validate,
};
use crate::engine::schedulers::SchedulerKind;
use crate::library::ClipRecord;

#[derive(Debug, Parser)]
#[command(
    name = "foley",
    version = version_line(),
    about = "Local text-to-audio for sound design",
    long_about = "Local text-to-audio for sound design. Without a subcommand, opens the studio."
)]
pub struct Cli {
    /// Model the studio opens with: local diffusers directory or Hugging Face repository id.
    #[arg(long)]
    pub model: Option<String>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The compute backends this build can use.
pub fn backends() -> Vec<&'static str> {
    let mut backends = vec!["cpu"];
    if cfg!(feature = "cuda") {
        backends.push("cuda");
    }
    if cfg!(feature = "cudnn") {
        backends.push("cudnn");
    }
    if cfg!(feature = "metal") {
        backends.push("metal");
    }
    backends
}

/// `foley --version`: the version and the backends compiled in, e.g. `0.1.0 (cpu, cuda)`.
fn version_line() -> &'static str {
    static LINE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    LINE.get_or_init(|| format!("{} ({})", env!("CARGO_PKG_VERSION"), backends().join(", ")))
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Generate audio from a text prompt and write it as WAV.
    Generate(Box<GenerateArgs>),
    /// Run every request of a JSONL file into a folder; resumable, and shardable with --shard.
    Batch(BatchArgs),
    /// List the checkpoints Foley knows, and whether each is in the Hugging Face cache.
    Models(ModelsArgs),
    /// Draw a WAV's spectrogram and waveform into a PNG.
    Plot(PlotArgs),
}

#[derive(Debug, Args)]
pub struct PlotArgs {
    /// The WAV file to draw.
    pub clip: PathBuf,
    /// The PNG to write.
    pub out: PathBuf,
    /// Picture width in pixels.
    #[arg(long, default_value_t = 1200)]
    pub width: u32,
    /// Picture height in pixels.
    #[arg(long, default_value_t = 600)]
    pub height: u32,
}

#[derive(Debug, Args)]
pub struct BatchArgs {
    /// The jobs: one JSON object per line with `foley generate`'s settings in snake_case
    /// (prompt, negative_prompt, seed, steps, …, init_audio, inpaint, …) and an optional
    /// `name`; a first line `{"defaults": {...}}` sets defaults for the rest.
    pub jobs: PathBuf,
    /// Output folder (created if missing): `<name>.wav` + `<name>.json` per job and the manifest.
    #[arg(long)]
    pub out: PathBuf,
    /// Model for the lines that name none (local diffusers directory or hub id).
    #[arg(long)]
    pub model: Option<String>,
    /// Run only the jobs with `index % N == I` (e.g. `$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT`);
    /// the manifest is then `manifest-I-of-N.jsonl`.
    #[arg(long, value_name = "I/N")]
    pub shard: Option<String>,
    /// cpu, cuda or metal.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// f32, f16 or bf16 (on a CPU with AMX or AVX512-BF16, bf16 is the fast mode).
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    /// Print one JSON summary object on stdout.
    #[arg(long)]
    pub json: bool,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct ModelsArgs {
    /// Print one JSON array on stdout instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Local diffusers directory or Hugging Face repository id (e.g. cvssp/audioldm2).
    #[arg(long)]
    pub model: String,
    /// What to hear, e.g. "glass shattering on concrete" (optional with --variation-of).
    #[arg(long)]
    pub prompt: Option<String>,
    /// What to steer away from, e.g. "low quality, noise".
    #[arg(long)]
    pub negative_prompt: Option<String>,
    /// Random seed; equal to torch.Generator("cpu").manual_seed(seed). Random when omitted.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Denoising steps [default: the model family's: AudioLDM 10, MusicLDM and AudioLDM 2 200].
    #[arg(long)]
    pub steps: Option<usize>,
    /// Classifier-free guidance scale, off at or below 1 [default: AudioLDM 2.5, MusicLDM 2.0,
    /// AudioLDM 2 3.5].
    #[arg(long, allow_negative_numbers = true)]
    pub guidance: Option<f64>,
    /// Length in seconds [default: the model's: 5.12 s for AudioLDM, 10.24 s for the others].
    #[arg(long, allow_negative_numbers = true)]
    pub duration: Option<f64>,
    /// Noise scheduler: ddim, ddpm, pndm, lms, euler, euler-a, heun, kdpm2, kdpm2-a, dpm++2m,
    /// dpm++2m-karras, dpm++-single, deis or unipc (built from the checkpoint's config).
    /// [default: ddim; Stable Audio 3 has its own flow-matching sampler and takes none]
    #[arg(long)]
    pub scheduler: Option<String>,
    /// Waveforms to generate for the prompt in one batch; MusicLDM and AudioLDM 2 return them
    /// best first by CLAP score (FILE-1.wav is the best).
    #[arg(long, default_value_t = 1)]
    pub waveforms: usize,
    /// Stable Audio 3: rank several waveforms with the CLAP model of this checkpoint (a
    /// MusicLDM or AudioLDM 2 folder or hub id), scored on their mono fold-down.
    #[arg(long, value_name = "MODEL")]
    pub rank_with: Option<String>,
    /// cpu, cuda or metal.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// f32, f16 or bf16 (on a CPU with AMX or AVX512-BF16, bf16 is the fast mode).
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    /// Output WAV file.
    #[arg(long)]
    pub out: PathBuf,
    /// WAV sample format: f32, pcm16 or pcm24.
    #[arg(long, default_value = "f32")]
    pub format: String,
    /// Output sample rate: native (the model's), 44100 or 48000.
    #[arg(long, default_value = "native")]
    pub sample_rate: String,
    /// Print one JSON object describing the result on stdout.
    #[arg(long)]
    pub json: bool,
    /// No progress bar and no warnings on stderr.
    #[arg(long)]
    pub quiet: bool,
    #[command(flatten)]
    pub edit: EditArgs,
}

/// Editing a sound instead of making one from text alone (research/editing.md).
#[derive(Debug, Args, Default)]
pub struct EditArgs {
    /// The WAV to edit (any rate, mono or stereo, 16/24-bit PCM or 32-bit float). Alone it
    /// asks for audio-to-audio; with --inpaint, --regenerate-above-hz, --extend or --loop for
    /// those edits. --duration then defaults to the file's length.
    #[arg(long)]
    pub init_audio: Option<PathBuf>,
    /// How far from the input to move, 0–1: the fraction of the schedule that is run
    /// [default: 0.5 for audio-to-audio, 1.0 when a region is regenerated].
    #[arg(long, allow_negative_numbers = true)]
    pub strength: Option<f64>,
    /// Stable Audio 3's audio-to-audio: the noise level the input is mixed to, above 0 and
    /// at most 1 (1 ignores the input); every step of the schedule runs from there.
    #[arg(long, allow_negative_numbers = true, value_name = "F")]
    pub init_noise_level: Option<f64>,
    /// How the input becomes latents: `sample` (the VAE posterior, seeded) or `mean`.
    #[arg(long)]
    pub encode_mode: Option<String>,
    /// Regenerate START:END seconds of the input and keep the rest (repeatable).
    #[arg(long, value_name = "START:END", allow_hyphen_values = true)]
    pub inpaint: Vec<String>,
    /// Super-resolution: keep the input below this frequency, regenerate above it.
    #[arg(long, allow_negative_numbers = true)]
    pub regenerate_above_hz: Option<f64>,
    /// Extend the input by this many seconds of new audio that follows on from its end.
    #[arg(long, allow_negative_numbers = true, value_name = "SECONDS")]
    pub extend: Option<f64>,
    /// Append a bridge of this many seconds so that the clip loops seamlessly.
    #[arg(long = "loop", allow_negative_numbers = true, value_name = "SECONDS")]
    pub loop_seconds: Option<f64>,
    /// Generate variations of this WAV: conditioned on its CLAP audio embedding instead of
    /// text (MusicLDM, or an AudioLDM checkpoint with a CLAP audio branch).
    #[arg(long, value_name = "FILE.wav")]
    pub variation_of: Option<PathBuf>,
}

/// `START:END` in seconds.
fn parse_range(text: &str) -> anyhow::Result<(f64, f64)> {
    let parsed = text.split_once(':').and_then(|(start, end)| {
        Some((
            start.trim().parse::<f64>().ok()?,
            end.trim().parse::<f64>().ok()?,
        ))
    });
    match parsed {
        Some((start, end)) if start.is_finite() && end.is_finite() => Ok((start, end)),
        _ => bail!("--inpaint '{text}' is not START:END in seconds (e.g. 1.5:2.25)"),
    }
}

/// The task the editing flags ask for, with the input file read and checked (before any model
/// is loaded, so a bad file costs nothing).
pub(crate) fn task_from_args(edit: &EditArgs, duration: Option<f64>) -> anyhow::Result<Task> {
    let regions = Regions {
        time: edit
            .inpaint
            .iter()
            .map(|range| parse_range(range))
            .collect::<anyhow::Result<_>>()?,
        above_hz: edit.regenerate_above_hz,
    };
    let masked = !regions.time.is_empty() || regions.above_hz.is_some();
    let encode_mode = match &edit.encode_mode {
        Some(name) => Some(name.parse::<EncodeMode>()?),
        None => None,
    };
    if let Some(variation) = &edit.variation_of {
        if edit.init_audio.is_some()
            || masked
            || edit.extend.is_some()
            || edit.loop_seconds.is_some()
        {
            bail!("--variation-of cannot be combined with --init-audio or its edits");
        }
        if edit.strength.is_some() || encode_mode.is_some() || edit.init_noise_level.is_some() {
            bail!(
                "--strength, --init-noise-level and --encode-mode apply to --init-audio, not --variation-of"
            );
        }
        return Ok(Task::Variation {
            input: read_input_audio(variation)?,
        });
    }
    let Some(path) = &edit.init_audio else {
        let flags = [
            (masked, "--inpaint/--regenerate-above-hz"),
            (edit.extend.is_some(), "--extend"),
            (edit.loop_seconds.is_some(), "--loop"),
            (edit.strength.is_some(), "--strength"),
            (edit.init_noise_level.is_some(), "--init-noise-level"),
            (encode_mode.is_some(), "--encode-mode"),
        ];
        if let Some((_, flag)) = flags.iter().find(|(given, _)| *given) {
            bail!("{flag} needs --init-audio FILE.wav");
        }
        return Ok(Task::TextToAudio);
    };
    let chosen = [masked, edit.extend.is_some(), edit.loop_seconds.is_some()];
    if chosen.iter().filter(|given| **given).count() > 1 {
        bail!("choose one edit: --inpaint/--regenerate-above-hz, --extend or --loop");
    }
    if (edit.extend.is_some() || edit.loop_seconds.is_some()) && edit.strength.is_some() {
        bail!("--strength does not apply to --extend or --loop (the new audio starts from noise)");
    }
    if (edit.extend.is_some() || edit.loop_seconds.is_some()) && duration.is_some() {
        bail!(
            "--duration does not apply to --extend or --loop (the result is the input plus the new seconds)"
        );
    }
    if let Some(level) = edit.init_noise_level {
        let mixed = [
            (masked, "--inpaint/--regenerate-above-hz"),
            (edit.extend.is_some(), "--extend"),
            (edit.loop_seconds.is_some(), "--loop"),
            (edit.strength.is_some(), "--strength"),
            (encode_mode.is_some(), "--encode-mode"),
        ];
        if let Some((_, flag)) = mixed.iter().find(|(given, _)| *given) {
            bail!(
                "--init-noise-level (Stable Audio 3's audio-to-audio) cannot be combined with {flag}"
            );
        }
        return Ok(Task::AudioToAudioFromNoise {
            input: read_input_audio(path)?,
            init_noise_level: level,
        });
    }
    let input = read_input_audio(path)?;
    let encode_mode = encode_mode.unwrap_or_default();
    Ok(if let Some(seconds) = edit.extend {
        Task::Continue {
            input,
            seconds,
            encode_mode,
        }
    } else if let Some(seconds) = edit.loop_seconds {
        Task::Loop {
            input,
            seconds,
            encode_mode,
        }
    } else if masked {
        Task::Inpaint {
            input,
            regions,
            strength: edit.strength.unwrap_or(1.0),
            encode_mode,
        }
    } else {
        Task::AudioToAudio {
            input,
            strength: edit.strength.unwrap_or(DEFAULT_AUDIO_TO_AUDIO_STRENGTH),
            encode_mode,
        }
    })
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Some(Command::Generate(args)) => on_compute_pool(|| generate(*args)),
        Some(Command::Batch(args)) => on_compute_pool(|| batch(args)),
        Some(Command::Models(args)) => models(args),
        Some(Command::Plot(args)) => plot(args),
        #[cfg(feature = "studio")]
        None => crate::gui::run(cli.model),
        #[cfg(not(feature = "studio"))]
        None => bail!(
            "this build has no studio (built without the `studio` feature); run a subcommand such as `foley generate` or `foley batch`"
        ),
    }
}

pub(crate) fn parse_sample_rate(value: &str) -> anyhow::Result<Option<u32>> {
    match value {
        "native" => Ok(None),
        "44100" => Ok(Some(44_100)),
        "48000" => Ok(Some(48_000)),
        other => bail!("unknown sample rate '{other}' (native, 44100 or 48000)"),
    }
}

/// Checks the output location before any compute is spent on it.
fn check_output(path: &Path) -> anyhow::Result<()> {
    if path.is_dir() {
        bail!("output {} is a directory", path.display());
    }
    if path
        .as_os_str()
        .to_string_lossy()
        .ends_with(std::path::MAIN_SEPARATOR)
    {
        bail!("output {} names a folder, not a file", path.display());
    }
    crate::atomic_file::check_replaceable(path)?;
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    if !parent.is_dir() {
        bail!("output folder {} does not exist", parent.display());
    }
    let metadata =
        std::fs::metadata(parent).with_context(|| format!("output folder {}", parent.display()))?;
    if metadata.permissions().readonly() {
        bail!("output folder {} is not writable", parent.display());
    }
    Ok(())
}

/// The process's peak resident memory (Linux `VmHWM`); `None` where the OS does not say.
fn peak_memory_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn random_seed() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now()) >> 1
}

fn generate(args: GenerateArgs) -> anyhow::Result<()> {
    let scheduler: SchedulerKind = args.scheduler.as_deref().unwrap_or("ddim").parse()?;
    let device = args.device.parse::<DeviceKind>()?;
    let dtype = parse_dtype(&args.dtype)?;
    let format: WavFormat = args.format.parse()?;
    let output_rate = parse_sample_rate(&args.sample_rate)?;
    // Model-independent checks first, so a typo costs no loading time.
    let task = task_from_args(&args.edit, args.duration)?;
    let Some(prompt) = prompt_for(args.prompt.as_deref(), &task) else {
        bail!("--prompt is required (it is optional only with --variation-of)");
    };
    let mut request = Request {
        task,
        prompt,
        negative_prompt: args.negative_prompt.clone(),
        seed: args.seed.unwrap_or_else(random_seed),
        steps: args.steps.unwrap_or(1),
        guidance: args.guidance.unwrap_or(0.0),
        duration: args.duration,
        scheduler,
        waveforms: args.waveforms,
    };
    validate(&request)?;
    for path in output_paths(&args.out, request.waveforms) {
        check_output(&path)?;
    }

    let started = Instant::now();
    let model_dir = resolve_model(&args.model)?;
    let plan = Plan::new(device, dtype);
    if let Some(notice) = plan.notice {
        eprintln!("note: {notice}");
    }
    let opened = device.open()?;
    let mut pipeline = Pipeline::load(&model_dir, &opened, plan.weights)?;
    if args.scheduler.is_some() {
        pipeline.check_scheduler_choice()?;
    }
    if let Some(judge) = &args.rank_with {
        pipeline.rank_with(&resolve_model(judge)?, &opened, plan.weights)?;
    }
    let load_seconds = started.elapsed().as_secs_f64();
    let (default_steps, default_guidance) = pipeline.defaults();
    request.steps = args.steps.unwrap_or(default_steps);
    request.guidance = args.guidance.unwrap_or(default_guidance);
    // Fail on the duration before encoding any text.
    pipeline.audio_length(request.effective_duration())?;

    let bar = if args.quiet {
        ProgressBar::hidden()
    } else {
        let bar =
            ProgressBar::with_draw_target(Some(request.steps as u64), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} step {pos}/{len} [{bar:30}] {elapsed} eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar
    };
    let cancel = CancelFlag::new();
    let clip = plan.run(|| {
        pipeline.generate(
            &request,
            &mut |progress| {
                bar.set_length(progress.total as u64);
                bar.set_position(progress.step as u64);
            },
            &cancel,
        )
    })?;
    bar.finish_and_clear();
    if !args.quiet {
        for warning in &clip.warnings {
            eprintln!("warning: {warning}");
        }
    }

    let sample_rate = output_rate.unwrap_or(clip.sample_rate);
    let paths = output_paths(&args.out, clip.waveforms.len());
    let records: Vec<ClipRecord> = (0..paths.len())
        .map(|index| ClipRecord::of_clip(&request, &clip, &args.model, index, sample_rate))
        .collect();
    write_waveforms(&paths, &clip, &records, format)?;

    if args.json {
        let report = json!({
            "files": paths,
            "seed": clip.seed,
            "settings": {
                "model": args.model,
                "family": pipeline.name(),
                "prompt": request.prompt,
                "negative_prompt": request.negative_prompt,
                "steps": request.steps,
                "guidance": request.guidance,
                "duration": clip.duration,
                "scheduler": clip.scheduler,
                "waveforms": request.waveforms,
                "device": args.device,
                "dtype": args.dtype,
                "format": args.format,
                "sample_rate": sample_rate,
            },
            "task": clip.task,
            "denoising_steps": clip.denoising_steps,
            "seconds": {
                "load": load_seconds,
                "text_encoding": clip.timings.text_encoding,
                "encoding": clip.timings.encoding,
                "denoising": clip.timings.denoising,
                "per_step": clip.timings.denoising / clip.denoising_steps.max(1) as f64,
                "vae_decode": clip.timings.vae_decode,
                "vocoder": clip.timings.vocoder,
                "total": started.elapsed().as_secs_f64(),
            },
            "peak_memory_bytes": peak_memory_bytes(),
            "clap_scores": clip.scores,
            "warnings": clip.warnings,
        });
        println!("{report}");
    } else if !args.quiet {
        for path in &paths {
            eprintln!("wrote {}", path.display());
        }
    }
    Ok(())
}

/// `FILE.wav` for one waveform; `FILE-1.wav … FILE-N.wav` for several.
fn batch(args: BatchArgs) -> anyhow::Result<()> {
    let shard = match &args.shard {
        Some(text) => Some(
            text.parse::<crate::batch::jobs::Shard>()
                .map_err(anyhow::Error::msg)?,
        ),
        None => None,
    };
    let options = crate::batch::BatchOptions {
        jobs: args.jobs,
        out: args.out,
        model: args.model,
        shard,
        device: args.device,
        dtype: args.dtype,
        quiet: args.quiet,
    };
    let summary = crate::batch::run(&options)?;
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else if !args.quiet {
        eprintln!(
            "{} jobs: {} generated, {} already done, {} failed ({})",
            summary.jobs,
            summary.generated,
            summary.skipped,
            summary.failed,
            summary.manifest.display()
        );
    }
    if !summary.all_succeeded() {
        bail!(
            "{} of {} jobs failed; their errors are in {}",
            summary.failed,
            summary.jobs,
            summary.manifest.display()
        );
    }
    Ok(())
}

/// The prompt a request runs with: the one given, or none for a variation (conditioned on the
/// sound, not on text); `None` when a required prompt is missing.
pub(crate) fn prompt_for(prompt: Option<&str>, task: &Task) -> Option<String> {
    match (prompt, task) {
        (Some(prompt), _) => Some(prompt.to_string()),
        (None, Task::Variation { .. }) => Some(String::new()),
        (None, _) => None,
    }
}

/// Writes the clip's waveforms to `paths` (one each) at their records' rate, atomically, each
/// tagged with its record's prompt and settings as the studio's exports are.
pub(crate) fn write_waveforms(
    paths: &[PathBuf],
    clip: &Clip,
    records: &[ClipRecord],
    format: WavFormat,
) -> anyhow::Result<()> {
    for ((path, waveform), record) in paths.iter().zip(&clip.waveforms).zip(records) {
        let rate = record.sample_rate;
        let samples = resample_frames(waveform, clip.channels, clip.sample_rate, rate);
        // Undated: a rerun, or another shard of a batch, writes the same bytes.
        let metadata = crate::library::export::metadata(&ClipRecord {
            created: 0,
            ..record.clone()
        });
        write_wav_with_metadata(
            path,
            &samples,
            clip.channels as u16,
            rate,
            format,
            Some(&metadata),
        )?;
    }
    Ok(())
}

pub(crate) fn output_paths(out: &Path, count: usize) -> Vec<PathBuf> {
    if count == 1 {
        return vec![out.to_path_buf()];
    }
    let stem = out
        .file_stem()
        .map(|stem| stem.to_string_lossy().into_owned())
        .unwrap_or_default();
    let extension = out
        .extension()
        .map(|ext| ext.to_string_lossy().into_owned())
        .unwrap_or_else(|| "wav".into());
    (1..=count)
        .map(|index| out.with_file_name(format!("{stem}-{index}.{extension}")))
        .collect()
}

fn models(args: ModelsArgs) -> anyhow::Result<()> {
    let rows: Vec<_> = KNOWN_CHECKPOINTS
        .iter()
        .map(|checkpoint| (checkpoint, cached_snapshot(checkpoint.repo)))
        .collect();
    if args.json {
        let list: Vec<_> = rows
            .iter()
            .map(|(checkpoint, cached)| {
                json!({
                    "repo": checkpoint.repo,
                    "task": checkpoint.task,
                    "parameters_millions": checkpoint.parameters_millions,
                    "download_gb": checkpoint.download_gb(),
                    "license": checkpoint.license,
                    "gated": checkpoint.gated,
                    "cached": cached,
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(list));
        return Ok(());
    }
    println!(
        "{:<38} {:<52} {:>7} {:>8}  {:<27} cached",
        "model", "task", "params", "download", "license"
    );
    for (checkpoint, cached) in &rows {
        let license = if checkpoint.gated {
            format!("{} (gated)", checkpoint.license)
        } else {
            checkpoint.license.to_string()
        };
        println!(
            "{:<38} {:<52} {:>6}M {:>6.1}GB  {:<27} {}",
            checkpoint.repo,
            checkpoint.task,
            checkpoint.parameters_millions,
            checkpoint.download_gb(),
            license,
            cached.as_ref().map_or_else(
                || "no".to_string(),
                |path| format!("yes ({})", path.display())
            ),
        );
    }
    if rows.iter().any(|(checkpoint, _)| checkpoint.gated) {
        println!(
            "gated: accept the licence on the model's Hugging Face page, then set HF_TOKEN to an access token of that account"
        );
    }
    Ok(())
}

fn plot(args: PlotArgs) -> anyhow::Result<()> {
    if !(64..=8192).contains(&args.width) || !(64..=8192).contains(&args.height) {
        bail!("picture size must be between 64 and 8192 pixels on each side");
    }
    check_output(&args.out)?;
    let (samples, sample_rate) = crate::audio::wav::read_wav(&args.clip)?;
    let title = args
        .clip
        .file_stem()
        .map_or_else(String::new, |stem| stem.to_string_lossy().into_owned());
    crate::audio::plot::render_plot(
        &samples,
        sample_rate,
        &title,
        &args.out,
        (args.width, args.height),
    )?;
    Ok(())
}

//! The studio's state and frame logic: `logic` drains worker events, `ui` draws the panels.

use std::path::PathBuf;
use std::sync::Arc;

use crossbeam_channel::{Receiver, TryRecvError};
use eframe::egui;

use super::drag_out::{self, DragError, DragOutcome};
use super::settings::Settings;
use super::shortcuts::{self, Shortcut};
use super::views::clip::{ClipAction, ClipView, Place};
use super::worker::{Command, Event, Job, ModelInfo, Worker};
use crate::audio::export::{LOUDNESS_TARGETS, export_clip, picture_path};
use crate::audio::playback::Playback;
use crate::audio::plot::render_plot;
use crate::engine::device::{DeviceKind, parse_dtype, precision_notice};
use crate::engine::hub::KNOWN_CHECKPOINTS;
use crate::engine::pipeline::{CancelFlag, MAX_WAVEFORMS, Request};
use crate::engine::schedulers::SchedulerKind;
use crate::library::{ClipRecord, Library};

const STORAGE_KEY: &str = "foley-settings";

/// How the studio starts; tests use a temporary library and no audio device.
#[derive(Debug, Clone, Default)]
pub struct AppConfig {
    /// Model to load at start (overrides the remembered one).
    pub model: Option<String>,
    /// Library folder (overrides the remembered one).
    pub library_dir: Option<PathBuf>,
    /// Open the audio output device.
    pub audio: bool,
}

/// Where model loading stands.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelState {
    None,
    Loading(String),
    /// Downloading `file`: bytes done of total.
    Downloading {
        model: String,
        file: String,
        done: usize,
        total: usize,
    },
    Ready {
        model: String,
        family: &'static str,
        defaults: (usize, f64),
        /// Seconds of audio when no duration is asked for.
        default_seconds: f64,
    },
    Failed {
        model: String,
        error: String,
    },
}

impl ModelState {
    fn ready(info: ModelInfo) -> Self {
        Self::Ready {
            model: info.model,
            family: info.family,
            defaults: info.defaults,
            default_seconds: info.default_seconds,
        }
    }
}

/// The run in progress: its jobs share one cancel flag.
struct Run {
    id: u64,
    cancel: CancelFlag,
    variations: usize,
    finished: usize,
    /// (variation, step, total, elapsed seconds) of the latest progress event.
    progress: Option<(usize, usize, usize, f64)>,
}

pub struct FoleyApp {
    pub settings: Settings,
    /// The inference thread; None only when it could not be (re)started.
    worker: Option<Worker>,
    /// Wakes the UI; kept to start a new inference thread after one is lost.
    repaint: Arc<dyn Fn() + Send + Sync>,
    playback: Result<Playback, String>,
    library: Result<Library, String>,
    pub model_state: ModelState,
    run: Option<Run>,
    next_run: u64,
    /// Clips of the latest run, side by side.
    pub results: Vec<ClipView>,
    /// The clip open from the library list.
    pub opened: Option<ClipView>,
    /// Which clip plays: (in results?, index or id).
    playing: Option<PlayingClip>,
    /// The result the transport keys act on (Space plays it, arrows move it).
    pub selected: Option<usize>,
    /// The keyboard shortcuts window is open.
    pub show_shortcuts: bool,
    /// Readable messages (errors, warnings) shown until dismissed.
    pub messages: Vec<String>,
    search: String,
    /// The clip the last Delete moved into the library's trash, offered for Undo.
    pub last_deleted: Option<ClipRecord>,
    /// The file the last export wrote, offered for copying and revealing.
    pub last_export: Option<PathBuf>,
    /// The picture "Save picture" wrote last (never offered for dragging into a DAW).
    pub last_picture: Option<PathBuf>,
    /// (step, total) of the latest progress event, kept after the run ends.
    pub last_progress: Option<(usize, usize)>,
    /// Stops the model download in progress.
    load_cancel: CancelFlag,
    /// Kept open: on X11/Wayland the copied file list is served while the clipboard lives.
    clipboard: Option<arboard::Clipboard>,
    /// The studio window's handle this frame: picks how a clip is dragged out.
    window: Option<raw_window_handle::RawWindowHandle>,
    /// The drag-out in progress, reporting how it ended.
    drag: Option<Receiver<Result<DragOutcome, DragError>>>,
}

#[derive(Debug, Clone, PartialEq)]
enum PlayingClip {
    Result(usize),
    Opened,
}

impl FoleyApp {
    /// Builds the studio; fails only when the inference thread cannot be started.
    pub fn new(creation: &eframe::CreationContext<'_>, config: AppConfig) -> std::io::Result<Self> {
        let mut settings: Settings = creation
            .storage
            .and_then(|storage| eframe::get_value(storage, STORAGE_KEY))
            .unwrap_or_default();
        if let Some(model) = &config.model {
            settings.model = model.clone();
        }
        if let Some(dir) = &config.library_dir {
            settings.library_dir = dir.clone();
        }
        let ctx = creation.egui_ctx.clone();
        let repaint: Arc<dyn Fn() + Send + Sync> = Arc::new(move || ctx.request_repaint());
        let worker = Worker::spawn(repaint.clone())?;
        let playback = if config.audio {
            Playback::open()
        } else {
            Err("audio output is switched off".into())
        };
        let library = Library::open(&settings.library_dir).map_err(|error| error.to_string());
        let mut app = Self {
            settings,
            worker: Some(worker),
            repaint,
            playback,
            library,
            model_state: ModelState::None,
            run: None,
            next_run: 1,
            results: Vec::new(),
            opened: None,
            playing: None,
            selected: None,
            show_shortcuts: false,
            messages: Vec::new(),
            search: String::new(),
            last_deleted: None,
            last_export: None,
            last_picture: None,
            last_progress: None,
            load_cancel: CancelFlag::new(),
            clipboard: None,
            window: None,
            drag: None,
        };
        if let Ok(library) = &app.library {
            app.messages.extend(library.problems.iter().cloned());
        }
        if config.model.is_some()
            || crate::engine::hub::cached_snapshot(&app.settings.model).is_some()
            || std::path::Path::new(&app.settings.model).is_dir()
        {
            app.load_model();
        }
        Ok(app)
    }

    /// Index of the result clip that is playing, if any.
    pub fn playing_result(&self) -> Option<usize> {
        match self.playing {
            Some(PlayingClip::Result(index)) => Some(index),
            _ => None,
        }
    }

    pub fn is_busy(&self) -> bool {
        self.run.is_some()
    }

    pub fn library(&self) -> Option<&Library> {
        self.library.as_ref().ok()
    }

    fn load_model(&mut self) {
        let model = self.settings.model.trim().to_string();
        self.load(model);
    }

    fn load(&mut self, model: String) {
        let device = self.settings.device.parse::<DeviceKind>();
        let dtype = parse_dtype(&self.settings.dtype);
        let (device, dtype) = match (device, dtype) {
            (Ok(device), Ok(dtype)) => (device, dtype),
            (Err(error), _) | (_, Err(error)) => {
                self.messages.push(error.to_string());
                return;
            }
        };
        self.load_cancel = CancelFlag::new();
        let cancel = self.load_cancel.clone();
        let Some(worker) = self.worker() else { return };
        worker.send(Command::Load {
            model: model.clone(),
            device,
            dtype,
            cancel,
        });
        self.model_state = ModelState::Loading(model);
    }

    /// The inference thread, started again if it was lost; None (with a message) if it
    /// cannot start.
    fn worker(&mut self) -> Option<&Worker> {
        if self.worker.is_none() {
            match Worker::spawn(self.repaint.clone()) {
                Ok(worker) => self.worker = Some(worker),
                Err(error) => self
                    .messages
                    .push(format!("the inference thread could not start: {error}")),
            }
        }
        self.worker.as_ref()
    }

    /// The inference thread ended without being asked to (a panic outside the engine's
    /// contained calls): leave every busy state with a message, start a new thread and load
    /// the model the old one held.
    fn worker_lost(&mut self) {
        self.worker = None;
        let mut message = String::from("the inference thread stopped unexpectedly");
        if let Some(run) = self.run.take() {
            run.cancel.cancel();
            message.push_str("; the generation in progress was lost");
        }
        self.messages.push(message);
        self.model_state = match std::mem::replace(&mut self.model_state, ModelState::None) {
            ModelState::Ready { model, .. } => return self.load(model),
            ModelState::Loading(model) | ModelState::Downloading { model, .. } => {
                ModelState::Failed {
                    model,
                    error: "the inference thread stopped while loading".into(),
                }
            }
            other => other,
        };
        self.worker();
    }

    /// Stops all work, for a closing window: cancels the run and the download, skips the
    /// queued jobs and lets the inference thread end, waiting for it a moment at most.
    pub fn shut_down(&mut self) {
        if let Some(run) = self.run.take() {
            run.cancel.cancel();
        }
        self.load_cancel.cancel();
        self.worker = None;
    }

    /// Queues a run: one job per variation, seeds seed, seed+1, …
    pub fn generate(&mut self) {
        let ModelState::Ready { defaults, .. } = &self.model_state else {
            self.messages.push("load a model first".into());
            return;
        };
        if self.settings.prompt.trim().is_empty() {
            self.messages.push("type a prompt first".into());
            return;
        }
        let scheduler = match self.settings.scheduler.parse::<SchedulerKind>() {
            Ok(kind) => kind,
            Err(error) => {
                self.messages.push(error.to_string());
                return;
            }
        };
        if self.settings.random_seed {
            use std::hash::{BuildHasher, RandomState};
            self.settings.seed =
                RandomState::new().hash_one(std::time::SystemTime::now()) % 1_000_000_000;
        }
        let (default_steps, default_guidance) = *defaults;
        let run = Run {
            id: self.next_run,
            cancel: CancelFlag::new(),
            variations: self.settings.variations.clamp(1, MAX_WAVEFORMS),
            finished: 0,
            progress: None,
        };
        self.next_run += 1;
        let negative = self.settings.negative_prompt.trim();
        let mut jobs = Vec::with_capacity(run.variations);
        for variation in 0..run.variations {
            let request = Request {
                task: Default::default(),
                prompt: self.settings.prompt.trim().to_string(),
                negative_prompt: (!negative.is_empty()).then(|| negative.to_string()),
                seed: self.settings.seed.wrapping_add(variation as u64),
                steps: if self.settings.steps == 0 {
                    default_steps
                } else {
                    self.settings.steps
                },
                guidance: if self.settings.guidance <= 0.0 {
                    default_guidance
                } else {
                    self.settings.guidance
                },
                duration: (self.settings.duration > 0.0).then_some(self.settings.duration),
                scheduler,
                waveforms: 1,
            };
            jobs.push(Job {
                run: run.id,
                variation,
                request,
                cancel: run.cancel.clone(),
            });
        }
        let Some(worker) = self.worker() else { return };
        for job in jobs {
            worker.send(Command::Generate(job));
        }
        // New clips join the compare board; earlier runs stay on it.
        self.stop_playback();
        self.run = Some(run);
    }

    pub fn cancel(&mut self) {
        if let Some(run) = &self.run {
            run.cancel.cancel();
        }
    }

    /// Handles worker events; called every frame.
    pub fn poll(&mut self) {
        while let Some(worker) = &self.worker {
            match worker.events.try_recv() {
                Ok(event) => self.handle(event),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    self.worker_lost();
                    break;
                }
            }
        }
        if self.playing.is_some()
            && let Ok(playback) = &self.playback
            && !playback.is_playing()
        {
            self.playing = None;
        }
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Loading { model } => self.model_state = ModelState::Loading(model),
            Event::Downloading { file, done, total } => {
                let model = match &self.model_state {
                    ModelState::Loading(model) | ModelState::Downloading { model, .. } => {
                        model.clone()
                    }
                    _ => self.settings.model.clone(),
                };
                self.model_state = ModelState::Downloading {
                    model,
                    file,
                    done,
                    total,
                };
            }
            Event::Loaded(info) => self.model_state = ModelState::ready(info),
            Event::LoadFailed { model, error, kept } => match kept {
                Some(kept) => {
                    self.messages.push(format!(
                        "could not load {model}: {error} (still using {})",
                        kept.model
                    ));
                    self.model_state = ModelState::ready(kept);
                }
                None => {
                    self.messages
                        .push(format!("could not load {model}: {error}"));
                    self.model_state = ModelState::Failed { model, error };
                }
            },
            Event::Progress {
                run,
                variation,
                step,
                total,
                elapsed,
            } => {
                if let Some(current) = self.run.as_mut().filter(|current| current.id == run) {
                    current.progress = Some((variation, step, total, elapsed));
                    self.last_progress = Some((step, total));
                }
            }
            Event::Finished {
                run,
                request,
                model,
                clip,
                ..
            } => {
                let Some(current) = self.run.as_mut().filter(|current| current.id == run) else {
                    return;
                };
                current.finished += 1;
                if current.finished >= current.variations {
                    self.run = None;
                }
                self.messages.extend(clip.warnings.iter().cloned());
                let samples = clip.waveforms.into_iter().next().unwrap_or_default();
                let mel = clip.mels.into_iter().next().map(|mel| (mel, clip.mel_bins));
                let record = ClipRecord {
                    id: String::new(),
                    prompt: request.prompt,
                    negative_prompt: request.negative_prompt,
                    seed: request.seed,
                    steps: request.steps,
                    guidance: request.guidance,
                    scheduler: clip.scheduler.into(),
                    model,
                    duration: clip.duration,
                    sample_rate: clip.sample_rate,
                    channels: clip.channels as u16,
                    timings: vec![
                        ("text_encoding".into(), clip.timings.text_encoding),
                        ("denoising".into(), clip.timings.denoising),
                        ("vae_decode".into(), clip.timings.vae_decode),
                        ("vocoder".into(), clip.timings.vocoder),
                    ],
                    score: clip.scores.and_then(|scores| scores.first().copied()),
                    starred: false,
                    rating: 0,
                    tags: Vec::new(),
                    mel_bins: None,
                    created: std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |elapsed| elapsed.as_secs()),
                    task: None,
                    batch_job: None,
                };
                let saved = match self.library.as_mut() {
                    Ok(library) => library
                        .add(
                            record.clone(),
                            &samples,
                            mel.as_ref().map(|(m, b)| (m.as_slice(), *b)),
                        )
                        .map_err(|error| error.to_string()),
                    Err(error) => Err(error.clone()),
                };
                let record = match saved {
                    Ok(record) => record,
                    Err(error) => {
                        self.messages
                            .push(format!("the clip could not be saved: {error}"));
                        record
                    }
                };
                self.results
                    .push(ClipView::new(record, samples.into(), mel));
                self.selected.get_or_insert(0);
            }
            Event::Failed { run, error } => {
                if let Some(current) = self.run.take_if(|current| current.id == run) {
                    // The other variations would most likely fail the same way.
                    current.cancel.cancel();
                    self.messages.push(format!("generation failed: {error}"));
                }
            }
            Event::Cancelled { run } => {
                if self.run.as_ref().is_some_and(|current| current.id == run) {
                    self.run = None;
                }
            }
        }
    }

    fn stop_playback(&mut self) {
        if let Ok(playback) = &self.playback {
            playback.stop();
        }
        self.playing = None;
    }

    fn play(&mut self, which: PlayingClip, start: f64) {
        let clip = match &which {
            PlayingClip::Result(index) => self.results.get_mut(*index),
            PlayingClip::Opened => self.opened.as_mut(),
        };
        let Some(clip) = clip else { return };
        let started = self.playback.as_ref().map(|playback| {
            let prepared = match &clip.device_samples {
                Some((rate, samples)) if *rate == playback.device_rate => samples.clone(),
                _ => {
                    let samples =
                        playback.prepare(&clip.samples, clip.channels(), clip.record.sample_rate);
                    clip.device_samples = Some((playback.device_rate, samples.clone()));
                    samples
                }
            };
            playback.set_looping(self.settings.loop_playback);
            playback.play_prepared(prepared, start)
        });
        match started {
            Ok(Ok(())) => self.playing = Some(which),
            Ok(Err(error)) => self.messages.push(format!("playback: {error}")),
            Err(error) => {
                let message = format!("playback is unavailable: {error}");
                self.messages.push(message);
            }
        }
    }

    /// A/B: switches playback to result `index` at the current position.
    pub fn switch_to(&mut self, index: usize) {
        if index >= self.results.len() {
            return;
        }
        let position = match &self.playback {
            Ok(playback) if self.playing.is_some() => playback.position_seconds(),
            _ => 0.0,
        };
        self.play(PlayingClip::Result(index), position);
    }

    fn playhead(&self, which: &PlayingClip) -> Option<f64> {
        match (&self.playing, &self.playback) {
            (Some(playing), Ok(playback)) if playing == which => Some(playback.position_seconds()),
            _ => None,
        }
    }

    fn clip(&self, which: &PlayingClip) -> Option<&ClipView> {
        match which {
            PlayingClip::Result(index) => self.results.get(*index),
            PlayingClip::Opened => self.opened.as_ref(),
        }
    }

    fn apply(&mut self, which: PlayingClip, action: ClipAction) {
        let Some((record, samples)) = self
            .clip(&which)
            .map(|clip| (clip.record.clone(), clip.samples.clone()))
        else {
            return;
        };
        match action {
            ClipAction::Play => self.play(which, 0.0),
            ClipAction::Stop => self.stop_playback(),
            ClipAction::Seek(seconds) => {
                if self.playing.as_ref() == Some(&which)
                    && let Ok(playback) = &self.playback
                {
                    playback.seek_seconds(seconds);
                } else {
                    self.play(which, seconds);
                }
            }
            ClipAction::Rate(rating) => {
                if let Ok(library) = self.library.as_mut()
                    && let Err(error) = library.set_rating(&record.id, rating)
                {
                    self.messages.push(error.to_string());
                }
                self.update_views(&record.id, |view| view.rating = rating.min(5));
            }
            ClipAction::SetTags(text) => {
                let tags = crate::library::tag_list(&text);
                if let Ok(library) = self.library.as_mut()
                    && let Err(error) = library.set_tags(&record.id, &tags)
                {
                    self.messages.push(error.to_string());
                }
                self.update_views(&record.id, |view| view.tags = tags.clone());
            }
            ClipAction::ToggleStar => {
                let starred = !record.starred;
                if let Ok(library) = self.library.as_mut()
                    && let Err(error) = library.set_starred(&record.id, starred)
                {
                    self.messages.push(error.to_string());
                }
                for clip in self.results.iter_mut().chain(self.opened.as_mut()) {
                    if clip.record.id == record.id {
                        clip.record.starred = starred;
                    }
                }
            }
            ClipAction::UseSettings => {
                // The model is part of the settings: switch back to it if another is loaded.
                let loaded = match &self.model_state {
                    ModelState::Ready { model, .. } | ModelState::Loading(model) => {
                        Some(model.clone())
                    }
                    _ => None,
                };
                if loaded.as_deref() != Some(record.model.as_str()) {
                    self.settings.model = record.model.clone();
                    self.load_model();
                }
                self.settings.prompt = record.prompt.clone();
                self.settings.negative_prompt = record.negative_prompt.clone().unwrap_or_default();
                self.settings.seed = record.seed;
                self.settings.random_seed = false;
                self.settings.steps = record.steps;
                self.settings.guidance = record.guidance;
                // A model's own sampler (Stable Audio 3's) is not a choice the picker offers.
                if record.scheduler.parse::<SchedulerKind>().is_ok() {
                    self.settings.scheduler = record.scheduler.clone();
                }
                self.settings.duration = record.duration;
            }
            ClipAction::Export => {
                match export_clip(
                    &self.settings.export_dir,
                    &record,
                    &samples,
                    &self.settings.export,
                ) {
                    Ok(path) => self.last_export = Some(path),
                    Err(error) => self.messages.push(format!("export failed: {error}")),
                }
            }
            // Dragging the clip itself: exported with the current settings, then that file
            // is what leaves the window.
            ClipAction::DragOut => {
                match export_clip(
                    &self.settings.export_dir,
                    &record,
                    &samples,
                    &self.settings.export,
                ) {
                    Ok(path) => {
                        self.last_export = Some(path.clone());
                        self.start_drag(path);
                    }
                    Err(error) => self.messages.push(format!("export failed: {error}")),
                }
            }
            ClipAction::SavePicture => {
                let path = picture_path(&self.settings.export_dir, &record);
                let saved = std::fs::create_dir_all(&self.settings.export_dir)
                    .map_err(|error| error.to_string())
                    .and_then(|()| {
                        // The picture shows the mix of a stereo clip, as `foley plot` does.
                        let channels = record.channels.max(1) as usize;
                        let mono: Vec<f32> = samples
                            .chunks(channels)
                            .map(|frame| frame.iter().sum::<f32>() / channels as f32)
                            .collect();
                        render_plot(
                            &mono,
                            record.sample_rate,
                            &record.prompt,
                            &path,
                            (1200, 600),
                        )
                        .map_err(|error| error.to_string())
                    });
                match saved {
                    Ok(()) => self.last_picture = Some(path),
                    Err(error) => self
                        .messages
                        .push(format!("the picture could not be saved: {error}")),
                }
            }
            // Deleting moves the clip into the trash; the bar offers Undo.
            ClipAction::Delete => self.delete(&record.id),
            ClipAction::RemoveFromBoard => {
                if let PlayingClip::Result(index) = which
                    && index < self.results.len()
                {
                    self.stop_playback();
                    self.results.remove(index);
                    self.selected = self
                        .selected
                        .filter(|_| !self.results.is_empty())
                        .map(|selected| selected.min(self.results.len() - 1));
                }
            }
            ClipAction::PinToBoard => {
                if let Some(clip) = self.opened.take() {
                    if self.playing == Some(PlayingClip::Opened) {
                        self.stop_playback();
                    }
                    self.results.push(clip);
                    self.selected = Some(self.results.len() - 1);
                }
            }
        }
    }

    fn open_from_library(&mut self, record: &ClipRecord) {
        let Ok(library) = &self.library else { return };
        match library.load_clip(record) {
            Ok((samples, mel)) => {
                self.stop_playback();
                self.opened = Some(ClipView::new(record.clone(), samples.into(), mel));
            }
            Err(error) => self.messages.push(error.to_string()),
        }
    }

    /// Applies `change` to the record of every view of clip `id` (board and opened).
    fn update_views(&mut self, id: &str, change: impl Fn(&mut ClipRecord)) {
        for clip in self.results.iter_mut().chain(self.opened.as_mut()) {
            if clip.record.id == id {
                change(&mut clip.record);
            }
        }
    }

    /// The record of clip `id` as the board, the opened view or the library has it.
    fn records_by_id(&self, id: &str) -> Option<ClipRecord> {
        self.results
            .iter()
            .chain(self.opened.as_ref())
            .map(|clip| &clip.record)
            .chain(
                self.library
                    .as_ref()
                    .ok()
                    .into_iter()
                    .flat_map(Library::records),
            )
            .find(|record| record.id == id)
            .cloned()
    }

    /// Brings the last deleted clip back from the trash and opens it.
    fn undo_delete(&mut self) {
        let Some(record) = self.last_deleted.take() else {
            return;
        };
        let restored = match self.library.as_mut() {
            Ok(library) => library.restore(&record.id),
            Err(error) => {
                self.messages.push(error.clone());
                return;
            }
        };
        match restored {
            Ok(record) => self.open_from_library(&record),
            Err(error) => self.messages.push(error.to_string()),
        }
    }

    fn delete(&mut self, id: &str) {
        self.stop_playback();
        let record = self.records_by_id(id);
        if let Ok(library) = self.library.as_mut() {
            match library.delete(id) {
                Ok(()) => self.last_deleted = record,
                Err(error) => self.messages.push(error.to_string()),
            }
        }
        self.results.retain(|clip| clip.record.id != id);
        self.selected = self
            .selected
            .filter(|_| !self.results.is_empty())
            .map(|index| index.min(self.results.len() - 1));
        if self
            .opened
            .as_ref()
            .is_some_and(|clip| clip.record.id == id)
        {
            self.opened = None;
        }
    }

    /// Carries out the keys pressed this frame (`shortcuts::read`).
    fn shortcuts(&mut self, ctx: &egui::Context) {
        for shortcut in shortcuts::read(ctx) {
            match shortcut {
                Shortcut::Generate if !self.is_busy() => self.generate(),
                Shortcut::Generate => {}
                Shortcut::Escape if self.show_shortcuts => self.show_shortcuts = false,
                Shortcut::Escape => self.cancel(),
                Shortcut::ToggleHelp => self.show_shortcuts = !self.show_shortcuts,
                Shortcut::PlayStop if self.playing.is_some() => self.stop_playback(),
                Shortcut::PlayStop => match self.selected {
                    Some(index) => self.play(PlayingClip::Result(index), 0.0),
                    None if self.opened.is_some() => self.play(PlayingClip::Opened, 0.0),
                    None => {}
                },
                Shortcut::Previous => self.select(|index, _| index.saturating_sub(1)),
                Shortcut::Next => self.select(|index, count| (index + 1).min(count - 1)),
                Shortcut::First => self.select(|_, _| 0),
                Shortcut::Last => self.select(|_, count| count - 1),
                Shortcut::ToggleLoop => {
                    self.settings.loop_playback = !self.settings.loop_playback;
                    if let Ok(playback) = &self.playback {
                        playback.set_looping(self.settings.loop_playback);
                    }
                }
                Shortcut::Switch(index) if index < self.results.len() => {
                    self.selected = Some(index);
                    self.switch_to(index);
                }
                Shortcut::Switch(_) => {}
            }
        }
    }

    /// Moves the selection to `to(current, count)` and, with auto-audition on, plays the clip
    /// moved to at the current position (from the start when nothing plays).
    fn select(&mut self, to: impl Fn(usize, usize) -> usize) {
        let count = self.results.len();
        if count == 0 {
            return;
        }
        let index = to(self.selected.unwrap_or(0).min(count - 1), count);
        let moved = self.selected != Some(index);
        self.selected = Some(index);
        if moved && self.settings.auto_audition {
            self.switch_to(index);
        }
    }

    fn prompt_panel(&mut self, ui: &mut egui::Ui) {
        ui.heading("Foley");
        ui.add_space(4.0);
        let label = ui.label("Model");
        ui.horizontal(|ui| {
            ui.add(egui::TextEdit::singleline(&mut self.settings.model).desired_width(170.0))
                .labelled_by(label.id);
            if ui.button("Load").clicked() {
                self.load_model();
            }
        });
        ui.horizontal(|ui| {
            egui::ComboBox::from_label("Device")
                .selected_text(self.settings.device.clone())
                .show_ui(ui, |ui| {
                    for device in ["cpu", "cuda", "metal"] {
                        ui.selectable_value(&mut self.settings.device, device.to_string(), device);
                    }
                });
            egui::ComboBox::from_label("Precision")
                .selected_text(self.settings.dtype.clone())
                .show_ui(ui, |ui| {
                    for dtype in ["f32", "f16", "bf16"] {
                        ui.selectable_value(&mut self.settings.dtype, dtype.to_string(), dtype);
                    }
                });
        });
        let device = self.settings.device.parse::<DeviceKind>();
        if let (Ok(device), Ok(dtype)) = (device, parse_dtype(&self.settings.dtype))
            && let Some(notice) = precision_notice(device, dtype)
        {
            ui.weak(notice);
        }
        egui::ComboBox::from_label("Known checkpoints")
            .selected_text("choose…")
            .show_ui(ui, |ui| {
                for checkpoint in KNOWN_CHECKPOINTS {
                    let text = format!("{} · {:.1} GB", checkpoint.repo, checkpoint.download_gb());
                    if ui.selectable_label(false, text).clicked() {
                        self.settings.model = checkpoint.repo.to_string();
                    }
                }
            });
        match &self.model_state {
            ModelState::None => ui.label("No model loaded. Pick a known checkpoint (downloaded on Load) or type a local diffusers folder."),
            ModelState::Loading(model) => ui.label(format!("Loading {model}…")),
            ModelState::Downloading {
                model,
                file,
                done,
                total,
            } => {
                let fraction = *done as f32 / (*total).max(1) as f32;
                ui.label(format!("Downloading {model}"));
                ui.add(egui::ProgressBar::new(fraction).text(format!(
                    "{file}: {:.0} / {:.0} MB",
                    *done as f64 / 1e6,
                    *total as f64 / 1e6
                )));
                if ui.button("Cancel download").clicked() {
                    self.load_cancel.cancel();
                }
                ui.small("Finished files stay in the Hugging Face cache; a new Load resumes.")
            }
            ModelState::Ready { model, family, .. } => ui.label(format!("{family}: {model}")),
            ModelState::Failed { error, .. } => ui.colored_label(ui.visuals().error_fg_color, error),
        };
        ui.separator();
        let history = self
            .library
            .as_ref()
            .map(|library| library.prompt_history())
            .unwrap_or_default();
        let label = ui.label("Prompt");
        if !history.is_empty() {
            egui::ComboBox::from_label("Prompt history")
                .selected_text("earlier prompts")
                .show_ui(ui, |ui| {
                    for prompt in history.iter().take(30) {
                        if ui.selectable_label(false, prompt.as_str()).clicked() {
                            self.settings.prompt = prompt.clone();
                        }
                    }
                });
        }
        ui.add(
            egui::TextEdit::multiline(&mut self.settings.prompt)
                .hint_text("glass shattering on concrete")
                .desired_rows(3),
        )
        .labelled_by(label.id);
        let label = ui.label("Negative prompt");
        ui.add(egui::TextEdit::singleline(
            &mut self.settings.negative_prompt,
        ))
        .labelled_by(label.id);
        // 0 keeps the model's own value; say which value that is.
        let (default_steps, default_guidance, default_seconds) = match &self.model_state {
            ModelState::Ready {
                defaults,
                default_seconds,
                ..
            } => (
                defaults.0.to_string(),
                defaults.1.to_string(),
                format!("{default_seconds:.2}"),
            ),
            _ => (
                "the model's".into(),
                "the model's".into(),
                "the model's".into(),
            ),
        };
        egui::Grid::new("parameters").num_columns(2).show(ui, |ui| {
            let label = ui.label(format!("Duration (s; 0 = {default_seconds})"));
            ui.add(
                egui::DragValue::new(&mut self.settings.duration)
                    .range(0.0..=120.0)
                    .speed(0.1),
            )
            .labelled_by(label.id);
            ui.end_row();
            let label = ui.label(format!("Steps (0 = {default_steps})"));
            ui.add(egui::DragValue::new(&mut self.settings.steps).range(0..=1000))
                .labelled_by(label.id);
            ui.end_row();
            let label = ui.label(format!("Guidance (0 = {default_guidance})"));
            ui.add(
                egui::DragValue::new(&mut self.settings.guidance)
                    .range(0.0..=20.0)
                    .speed(0.1),
            )
            .labelled_by(label.id);
            ui.end_row();
            ui.label("");
            egui::ComboBox::from_label("Scheduler")
                .selected_text(self.settings.scheduler.clone())
                .show_ui(ui, |ui| {
                    for name in SchedulerKind::NAMES {
                        ui.selectable_value(&mut self.settings.scheduler, name.to_string(), *name);
                    }
                });
            ui.end_row();
            let label = ui.label("Seed");
            // A seed typed in is the one the next run uses.
            if ui
                .add(egui::DragValue::new(&mut self.settings.seed))
                .labelled_by(label.id)
                .changed()
            {
                self.settings.random_seed = false;
            }
            ui.end_row();
            ui.label("");
            ui.checkbox(&mut self.settings.random_seed, "New seed every run");
            ui.end_row();
            ui.label("");
            ui.weak(if self.settings.random_seed {
                "Next run: a new random seed".to_string()
            } else {
                format!("Next run: seed {}", self.settings.seed)
            });
            ui.end_row();
            let label = ui.label("Variations");
            ui.add(egui::DragValue::new(&mut self.settings.variations).range(1..=MAX_WAVEFORMS))
                .labelled_by(label.id);
            ui.end_row();
        });
        ui.add_space(6.0);
        ui.horizontal(|ui| {
            let ready = matches!(self.model_state, ModelState::Ready { .. }) && !self.is_busy();
            if ui
                .add_enabled(ready, egui::Button::new("Generate"))
                .on_hover_text("Ctrl+Enter")
                .clicked()
            {
                self.generate();
            }
            if ui
                .add_enabled(self.is_busy(), egui::Button::new("Cancel"))
                .on_hover_text("Esc")
                .clicked()
            {
                self.cancel();
            }
            if ui
                .button("Shortcuts")
                .on_hover_text("F1 or ?: the keyboard shortcuts")
                .clicked()
            {
                self.show_shortcuts = !self.show_shortcuts;
            }
        });
        egui::CollapsingHeader::new("Export options").show(ui, |ui| self.export_options(ui));
        if let Some(run) = &self.run {
            match run.progress {
                Some((variation, step, total, elapsed)) => {
                    let fraction = step as f32 / total.max(1) as f32;
                    let eta = if step > 0 {
                        elapsed / step as f64 * (total - step) as f64
                    } else {
                        0.0
                    };
                    ui.add(egui::ProgressBar::new(fraction).text(format!(
                        "clip {}/{} · step {step}/{total} · {elapsed:.1} s · eta {eta:.1} s",
                        variation + 1,
                        run.variations
                    )));
                }
                None => {
                    ui.add(egui::ProgressBar::new(0.0).text("preparing…"));
                }
            }
        }
        match &self.playback {
            Ok(playback) => {
                if ui
                    .checkbox(&mut self.settings.loop_playback, "Loop playback")
                    .changed()
                {
                    playback.set_looping(self.settings.loop_playback);
                }
                ui.small(format!(
                    "Audio: {} at {} Hz",
                    playback.device_name, playback.device_rate
                ))
            }
            Err(error) => ui.small(format!("Playback unavailable: {error}")),
        };
    }

    fn export_options(&mut self, ui: &mut egui::Ui) {
        let export = &mut self.settings.export;
        egui::ComboBox::from_label("Export format")
            .selected_text(export.format.clone())
            .show_ui(ui, |ui| {
                for (name, text) in [
                    ("pcm16", "16-bit PCM"),
                    ("pcm24", "24-bit PCM"),
                    ("f32", "32-bit float"),
                ] {
                    ui.selectable_value(&mut export.format, name.to_string(), text);
                }
            });
        let rate_text = export
            .sample_rate
            .map_or_else(|| "model rate".to_string(), |rate| format!("{rate} Hz"));
        egui::ComboBox::from_label("Export sample rate")
            .selected_text(rate_text)
            .show_ui(ui, |ui| {
                ui.selectable_value(&mut export.sample_rate, None, "model rate");
                ui.selectable_value(&mut export.sample_rate, Some(44_100), "44100 Hz");
                ui.selectable_value(&mut export.sample_rate, Some(48_000), "48000 Hz");
            });
        let target_text = export
            .loudness_target_lufs
            .map_or_else(|| "off".to_string(), |target| format!("{target} LUFS"));
        egui::ComboBox::from_label("Loudness target")
            .selected_text(target_text)
            .show_ui(ui, |ui| {
                ui.selectable_value(&mut export.loudness_target_lufs, None, "off");
                for target in LOUDNESS_TARGETS {
                    ui.selectable_value(
                        &mut export.loudness_target_lufs,
                        Some(target),
                        format!("{target} LUFS"),
                    );
                }
            });
        if export.loudness_target_lufs.is_some() {
            ui.horizontal(|ui| {
                let label = ui.label("True-peak ceiling (dBTP)");
                ui.add(
                    egui::DragValue::new(&mut export.true_peak_ceiling_dbtp)
                        .range(-12.0..=0.0)
                        .speed(0.1),
                )
                .labelled_by(label.id);
            });
        } else {
            ui.checkbox(&mut export.normalize, "Normalise peak to -1 dBFS");
        }
        ui.horizontal(|ui| {
            let label = ui.label("Fade in (ms)");
            ui.add(egui::DragValue::new(&mut export.fade_in_ms).range(0.0..=5000.0))
                .labelled_by(label.id);
            let label = ui.label("Fade out (ms)");
            ui.add(egui::DragValue::new(&mut export.fade_out_ms).range(0.0..=5000.0))
                .labelled_by(label.id);
        });
        let label = ui.label("Export folder");
        let mut folder = self.settings.export_dir.display().to_string();
        if ui
            .add(egui::TextEdit::singleline(&mut folder))
            .labelled_by(label.id)
            .changed()
        {
            self.settings.export_dir = PathBuf::from(folder);
        }
    }

    /// Puts `path` on the clipboard as a file (a file list / text/uri-list), so pasting into a
    /// DAW or file manager copies the clip; this stands in for dragging out of the window.
    fn copy_file(&mut self, path: &std::path::Path) -> Result<(), arboard::Error> {
        if self.clipboard.is_none() {
            self.clipboard = Some(arboard::Clipboard::new()?);
        }
        match self.clipboard.as_mut() {
            Some(clipboard) => clipboard.set().file_list(&[path]),
            None => Err(arboard::Error::ClipboardNotSupported),
        }
    }

    /// Hands the exported file to the platform's drag-and-drop while the button is held.
    fn start_drag(&mut self, path: PathBuf) {
        if self.drag.is_some() {
            return;
        }
        match drag_out::start(path, self.window) {
            Ok(receiver) => self.drag = Some(receiver),
            Err(error) => self.messages.push(error.to_string()),
        }
    }

    fn poll_drag(&mut self) {
        let Some(receiver) = &self.drag else {
            return;
        };
        let Ok(result) = receiver.try_recv() else {
            return;
        };
        self.drag = None;
        match result {
            Ok(DragOutcome::Dropped | DragOutcome::NoTarget) => {}
            Ok(DragOutcome::Refused) => self
                .messages
                .push("the drop target did not take the file".into()),
            Err(error) => self.messages.push(format!("drag failed: {error}")),
        }
    }

    fn last_export_bar(&mut self, ui: &mut egui::Ui) {
        if let Some(picture) = self.last_picture.clone() {
            ui.horizontal(|ui| {
                if ui.button("Show picture in folder").clicked()
                    && let Err(error) = reveal(&picture)
                {
                    self.messages
                        .push(format!("could not open the folder: {error}"));
                }
                if ui.button("Close picture").clicked() {
                    self.last_picture = None;
                }
                ui.add(egui::Label::new(format!("Saved picture {}", picture.display())).truncate());
            });
        }
        let Some(path) = self.last_export.clone() else {
            return;
        };
        // Only an exported WAV that is still there is offered to a DAW.
        if !path.is_file() {
            ui.horizontal(|ui| {
                if ui.button("Close").clicked() {
                    self.last_export = None;
                }
                ui.label(format!(
                    "The exported file {} is no longer there; export again.",
                    path.display()
                ));
            });
            return;
        }
        ui.horizontal(|ui| {
            let drag = ui
                .add(egui::Button::new("Drag to DAW").sense(egui::Sense::click_and_drag()))
                .on_hover_text("Drag onto a DAW track, the desktop or a file manager");
            if drag.drag_started() {
                self.start_drag(path.clone());
            }
            if ui
                .button("Copy file")
                .on_hover_text("Paste it into a DAW or file manager")
                .clicked()
                && let Err(error) = self.copy_file(&path)
            {
                self.messages
                    .push(format!("could not copy the file: {error}"));
            }
            if ui.button("Copy path").clicked() {
                ui.ctx().copy_text(path.display().to_string());
            }
            if ui.button("Show in folder").clicked()
                && let Err(error) = reveal(&path)
            {
                self.messages
                    .push(format!("could not open the folder: {error}"));
            }
            if ui.button("Close").clicked() {
                self.last_export = None;
            }
            // Buttons first: a long path must not push them out of the window.
            ui.add(egui::Label::new(format!("Exported {}", path.display())).truncate());
        });
    }

    fn library_panel(&mut self, ui: &mut egui::Ui) {
        ui.heading("Library");
        let label = ui.label("Search");
        ui.add(egui::TextEdit::singleline(&mut self.search))
            .labelled_by(label.id)
            .on_hover_text(
                "Words match the prompt, model, tags or seed; #tag for a tag, rating:4 for 4 or more, kept for kept clips",
            );
        let Ok(library) = &self.library else {
            if let Err(error) = &self.library {
                ui.colored_label(ui.visuals().error_fg_color, error);
            }
            return;
        };
        ui.small(library.dir().display().to_string());
        let records: Vec<ClipRecord> = library.search(&self.search).cloned().collect();
        let mut open = None;
        egui::ScrollArea::vertical().show(ui, |ui| {
            for record in &records {
                let star = if record.starred { "[kept] " } else { "" };
                let mut text = format!("{star}{} · s{}", record.prompt, record.seed);
                if record.rating > 0 {
                    text.push_str(&format!(" · rated {}", record.rating));
                }
                for tag in &record.tags {
                    text.push_str(&format!(" #{tag}"));
                }
                if ui.selectable_label(false, text).clicked() {
                    open = Some(record.clone());
                }
            }
        });
        if ui
            .button("Empty trash")
            .on_hover_text("Delete the clips in the library's trash for good")
            .clicked()
            && let Ok(library) = self.library.as_mut()
        {
            match library.empty_trash() {
                Ok(_) => self.last_deleted = None,
                Err(error) => self.messages.push(error.to_string()),
            }
        }
        if let Some(record) = open {
            self.open_from_library(&record);
        }
    }

    fn clips_panel(&mut self, ui: &mut egui::Ui) {
        let mut actions = Vec::new();
        let mut clear_board = false;
        egui::ScrollArea::vertical().show(ui, |ui| {
            if self.results.is_empty() && self.opened.is_none() && self.run.is_none() {
                ui.label("Type a prompt and press Generate (Ctrl+Enter). Clips appear here and in the library.");
            }
            let compact = self.results.len() > 1;
            let playheads: Vec<Option<f64>> = (0..self.results.len())
                .map(|index| self.playhead(&PlayingClip::Result(index)))
                .collect();
            let selected = self.selected;
            for (index, clip) in self.results.iter_mut().enumerate() {
                let mut frame = egui::Frame::group(ui.style());
                if selected == Some(index) && compact {
                    frame = frame.stroke(ui.visuals().selection.stroke);
                }
                frame.show(ui, |ui| {
                    if compact {
                        ui.label(format!("{}", index + 1));
                    }
                    if let Some(action) = clip.ui(ui, playheads[index], compact, Place::Board) {
                        actions.push((PlayingClip::Result(index), action));
                    }
                });
            }
            if compact {
                ui.horizontal(|ui| {
                    ui.small("Keys 1–9 switch between clips at the same position; the arrow keys move.");
                    ui.checkbox(&mut self.settings.auto_audition, "Auto-audition")
                        .on_hover_text("Moving between clips with the arrow keys plays them");
                    if ui
                        .button("Clear board")
                        .on_hover_text("The clips stay in the library")
                        .clicked()
                    {
                        clear_board = true;
                    }
                });
            }
            let opened_playhead = self.playhead(&PlayingClip::Opened);
            if let Some(clip) = self.opened.as_mut() {
                ui.separator();
                ui.label("From the library");
                if let Some(action) = clip.ui(ui, opened_playhead, false, Place::Opened) {
                    actions.push((PlayingClip::Opened, action));
                }
            }
        });
        if clear_board {
            self.stop_playback();
            self.results.clear();
            self.selected = None;
        }
        for (which, action) in actions {
            self.apply(which, action);
        }
    }

    /// The bar under a delete: what went to the trash, with Undo.
    fn deleted_bar(&mut self, ui: &mut egui::Ui) {
        let Some(record) = &self.last_deleted else {
            return;
        };
        let prompt = record.prompt.clone();
        ui.horizontal(|ui| {
            if ui
                .button("Undo")
                .on_hover_text("Bring the clip back")
                .clicked()
            {
                self.undo_delete();
            }
            if ui.button("Dismiss").clicked() {
                self.last_deleted = None;
            }
            ui.add(
                egui::Label::new(format!("Moved \"{prompt}\" to the library's trash")).truncate(),
            );
        });
    }
}

impl eframe::App for FoleyApp {
    fn logic(&mut self, ctx: &egui::Context, _frame: &mut eframe::Frame) {
        self.poll();
        self.poll_drag();
        if self.playing.is_some() || self.run.is_some() {
            ctx.request_repaint_after(std::time::Duration::from_millis(33));
        }
    }

    fn ui(&mut self, ui: &mut egui::Ui, frame: &mut eframe::Frame) {
        use raw_window_handle::HasWindowHandle as _;
        self.shortcuts(&ui.ctx().clone());
        self.window = frame.window_handle().ok().map(|handle| handle.as_raw());
        egui::Panel::left("prompt")
            .default_size(300.0)
            // Scrolls instead of clipping its controls in a small window.
            .show(ui, |ui| {
                egui::ScrollArea::vertical().show(ui, |ui| self.prompt_panel(ui));
            });
        egui::Panel::right("library")
            .default_size(240.0)
            .show(ui, |ui| self.library_panel(ui));
        if !self.messages.is_empty() {
            egui::Panel::bottom("messages").show(ui, |ui| {
                let mut dismiss = false;
                for message in &self.messages {
                    ui.colored_label(ui.visuals().warn_fg_color, message);
                }
                if ui.button("Dismiss messages").clicked() {
                    dismiss = true;
                }
                if dismiss {
                    self.messages.clear();
                }
            });
        }
        if self.last_deleted.is_some() {
            egui::Panel::bottom("deleted").show(ui, |ui| self.deleted_bar(ui));
        }
        if self.last_export.is_some() || self.last_picture.is_some() {
            egui::Panel::bottom("export").show(ui, |ui| self.last_export_bar(ui));
        }
        egui::CentralPanel::default().show(ui, |ui| self.clips_panel(ui));
        let ctx = ui.ctx().clone();
        shortcuts::help_window(&ctx, &mut self.show_shortcuts);
    }

    fn save(&mut self, storage: &mut dyn eframe::Storage) {
        eframe::set_value(storage, STORAGE_KEY, &self.settings);
    }

    fn on_exit(&mut self, _gl: Option<&eframe::glow::Context>) {
        self.shut_down();
    }
}

/// Opens the folder holding `path` in the system's file manager.
fn reveal(path: &std::path::Path) -> std::io::Result<()> {
    let folder = path.parent().unwrap_or(path);
    let program = if cfg!(target_os = "windows") {
        "explorer"
    } else if cfg!(target_os = "macos") {
        "open"
    } else {
        "xdg-open"
    };
    std::process::Command::new(program)
        .arg(folder)
        .spawn()
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use egui_kittest::Harness;

    fn wait(harness: &mut Harness<'static, FoleyApp>, what: &str, done: fn(&FoleyApp) -> bool) {
        let started = std::time::Instant::now();
        while !done(harness.state()) {
            assert!(
                started.elapsed().as_secs() < 60,
                "timed out waiting for {what}"
            );
            harness.step();
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    #[test]
    fn a_lost_inference_thread_ends_the_run_with_a_message_and_is_restarted() {
        let library = tempfile::tempdir().unwrap();
        let model = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/audioldm2-tiny");
        let library_dir = library.path().to_path_buf();
        let mut harness = Harness::builder().build_eframe(move |creation| {
            let config = AppConfig {
                model: Some(model.into()),
                library_dir: Some(library_dir),
                audio: false,
            };
            FoleyApp::new(creation, config).unwrap()
        });
        let ready = |app: &FoleyApp| matches!(app.model_state, ModelState::Ready { .. });
        wait(&mut harness, "the model", ready);
        // A thread that has died, as if a panic escaped: it never answers the run below.
        let dead = Worker::spawn(Arc::new(|| {})).unwrap();
        dead.shutdown();
        while dead.events.recv().is_ok() {}
        let app = harness.state_mut();
        app.worker = Some(dead);
        app.settings.prompt = "rain".into();
        app.generate();
        assert!(app.is_busy());
        wait(&mut harness, "the run to end", |app| !app.is_busy());
        let messages = harness.state().messages.join("\n");
        assert!(messages.contains("inference thread stopped"), "{messages}");
        // The new thread loads the model again and generates.
        wait(&mut harness, "the model again", ready);
        let app = harness.state_mut();
        app.settings.steps = 2;
        app.settings.variations = 1;
        app.generate();
        wait(&mut harness, "the clip", |app| !app.is_busy());
        assert_eq!(
            harness.state().results.len(),
            1,
            "{:?}",
            harness.state().messages
        );
    }
}

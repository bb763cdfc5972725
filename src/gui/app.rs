//! The studio's state and frame logic: `logic` drains the worker's and the disk thread's
//! events, `ui` draws the panels, which queue [`StudioCommand`]s that `execute` carries out.
//!
//! State is of two kinds: `settings` persist between sessions (eframe's storage); everything
//! else (the board, the run, messages, what was exported last) lives for this session only.

use std::path::PathBuf;
use std::sync::Arc;

use crossbeam_channel::{Receiver, TryRecvError};
use eframe::egui;

use super::command::{ClipRef, Move, StudioCommand};
use super::disk::{ClipId, Disk, DiskEvent, DiskJob, ExportOf, LibraryView};
use super::drag_out::{self, DragError, DragOutcome};
use super::settings::Settings;
use super::shortcuts;
use super::views::clip::{ClipAction, ClipView, Edit, Place};
use super::views::step_preview::StepPreview;
use super::worker::{Command, Event, Job, ModelInfo, PromptLimits, Worker};
use crate::audio::playback::Playback;
use crate::engine::device::{DeviceKind, Plan, parse_dtype};
use crate::engine::hub::KNOWN_CHECKPOINTS;
use crate::engine::pipeline::{
    CancelFlag, EncodeMode, InputAudio, MAX_WAVEFORMS, Regions, Request, Task,
};
use crate::engine::schedulers::SchedulerKind;
use crate::library::export::{LOUDNESS_TARGETS, Naming};
use crate::library::{Annotations, ClipRecord, Library};

mod actions;
mod board;
mod commands;
mod events;
mod export_bar;
mod library_panel;
mod prompt_panel;
mod transport;

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
#[derive(Debug, Clone, Default, PartialEq)]
pub enum ModelState {
    #[default]
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
        /// The tokenizers that cut the prompt.
        prompt_limits: PromptLimits,
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
            prompt_limits: info.prompt_limits,
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

/// What the studio shows and works on in this session; nothing here is saved on close (the
/// clips themselves are in the library).
#[derive(Default)]
pub struct Session {
    pub model_state: ModelState,
    run: Option<Run>,
    next_run: u64,
    /// The compare board: the clips of every run and the pinned ones, side by side.
    pub results: Vec<ClipView>,
    /// The clip open from the library list (or a file).
    pub opened: Option<ClipView>,
    /// Which clip plays.
    playing: Option<ClipRef>,
    /// The board clip the transport keys act on (Space plays it, arrows move it).
    pub selected: Option<usize>,
    /// The keyboard shortcuts window is open.
    pub show_shortcuts: bool,
    /// Playing a selection: where playback stops, in seconds.
    play_until: Option<f64>,
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
    /// The run's latest step preview.
    pub preview: Option<StepPreview>,
    /// Numbers the opens sent to the disk thread; the newest is the one shown.
    open_ticket: u64,
    /// What the last export wrote, and of which clip with which options.
    last_export_of: Option<(ExportOf, PathBuf)>,
}

impl Session {
    /// Shows `message` until dismissed; one already shown is not repeated, however many clicks
    /// or events say it again.
    pub fn say(&mut self, message: impl Into<String>) {
        let message = message.into();
        if !self.messages.contains(&message) {
            self.messages.push(message);
        }
    }
}

/// The studio: what persists (`settings`), what lives for this session (`session`), and the
/// threads and devices it drives.
pub struct FoleyApp {
    /// Persisted between sessions (eframe's storage).
    pub settings: Settings,
    /// The inference thread; None only when it could not be (re)started.
    worker: Option<Worker>,
    /// Wakes the UI; kept to start a new inference thread after one is lost.
    repaint: Arc<dyn Fn() + Send + Sync>,
    playback: Result<Playback, String>,
    /// Saves, exports and pictures; None only when it could not be started.
    disk: Option<Disk>,
    /// The library's records as of the disk thread's last report.
    library: Result<LibraryView, String>,
    /// What the panels and keys asked for this frame, carried out after drawing.
    commands: Vec<StudioCommand>,
    /// Numbers the clips waiting for their library save.
    next_save: u64,
    /// This session's state, gone when the window closes.
    pub session: Session,
    /// Stops the model download in progress.
    load_cancel: CancelFlag,
    /// Kept open: on X11/Wayland the copied file list is served while the clipboard lives.
    clipboard: Option<arboard::Clipboard>,
    /// The studio window's handle this frame: picks how a clip is dragged out.
    window: Option<raw_window_handle::RawWindowHandle>,
    /// The drag-out in progress, reporting how it ended.
    drag: Option<Receiver<Result<DragOutcome, DragError>>>,
    /// The primary pointer button is down this frame (a drag-out may still start).
    pointer_down: bool,
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
        let problems = library
            .as_ref()
            .map(|library| library.problems.clone())
            .unwrap_or_default();
        let (disk, library) = Disk::spawn(library, repaint.clone())?;
        let mut app = Self {
            settings,
            worker: Some(worker),
            repaint,
            playback,
            disk: Some(disk),
            library,
            commands: Vec::new(),
            next_save: 1,
            session: Session {
                next_run: 1,
                ..Session::default()
            },
            load_cancel: CancelFlag::new(),
            clipboard: None,
            window: None,
            drag: None,
            pointer_down: false,
        };
        for problem in problems {
            app.session.say(problem);
        }
        let available = |model: &str| {
            crate::engine::hub::cached_snapshot(model).is_some()
                || std::path::Path::new(model).is_dir()
        };
        // A typo left in the Model field at the last quit does not cost the working model.
        if config.model.is_none()
            && !available(&app.settings.model)
            && available(&app.settings.last_loaded_model)
        {
            app.settings.model = app.settings.last_loaded_model.clone();
        }
        if config.model.is_some() || available(&app.settings.model) {
            app.load_model();
        }
        Ok(app)
    }

    /// Index of the result clip that is playing, if any.
    pub fn playing_result(&self) -> Option<usize> {
        match self.session.playing {
            Some(ClipRef::Board(index)) => Some(index),
            _ => None,
        }
    }

    /// A generation is running.
    pub fn is_busy(&self) -> bool {
        self.session.run.is_some()
    }

    /// No save, change, export or picture is waiting for the disk.
    pub fn disk_is_idle(&self) -> bool {
        self.disk.as_ref().is_none_or(Disk::is_idle)
    }

    pub fn library(&self) -> Option<&LibraryView> {
        self.library.as_ref().ok()
    }

    /// Hands `job` to the disk thread; a message when it is gone.
    fn send_to_disk(&mut self, job: DiskJob) {
        if !self.disk.as_mut().is_some_and(|disk| disk.send(job)) {
            self.session
                .say("the disk thread has stopped: nothing can be saved; restart Foley");
        }
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
                self.session.say(error.to_string());
                return;
            }
        };
        // A second Load stops the first one's download.
        self.load_cancel.cancel();
        self.load_cancel = CancelFlag::new();
        let cancel = self.load_cancel.clone();
        let Some(worker) = self.worker() else { return };
        worker.send(Command::Load {
            model: model.clone(),
            device,
            dtype,
            cancel,
        });
        self.session.model_state = ModelState::Loading(model);
    }

    /// The inference thread, started again if it was lost; None (with a message) if it
    /// cannot start.
    fn worker(&mut self) -> Option<&Worker> {
        if self.worker.is_none() {
            match Worker::spawn(self.repaint.clone()) {
                Ok(worker) => self.worker = Some(worker),
                Err(error) => self
                    .session
                    .say(format!("the inference thread could not start: {error}")),
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
        if let Some(run) = self.session.run.take() {
            run.cancel.cancel();
            message.push_str("; the generation in progress was lost");
        }
        self.session.say(message);
        self.session.model_state =
            match std::mem::replace(&mut self.session.model_state, ModelState::None) {
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
        // Clips that finished since the last frame still go to the library.
        self.poll();
        if let Some(run) = self.session.run.take() {
            run.cancel.cancel();
        }
        self.load_cancel.cancel();
        self.worker = None;
        // Waits for the queued saves: a clip that was made is never lost to closing.
        self.disk = None;
    }

    /// Queues a run: one job per variation, seeds seed, seed+1, …
    pub fn generate(&mut self) {
        self.start_run(Task::TextToAudio);
    }

    /// Runs `task` with the current settings (several seeds for "Variations"); the clips
    /// join the board as they finish.
    pub fn start_run(&mut self, task: Task) {
        let ModelState::Ready { defaults, .. } = &self.session.model_state else {
            self.session.say("load a model first");
            return;
        };
        let editing = !matches!(task, Task::TextToAudio);
        if self.settings.prompt.trim().is_empty() && !matches!(task, Task::Variation { .. }) {
            self.session.say("type a prompt first");
            return;
        }
        let scheduler = match self.settings.scheduler.parse::<SchedulerKind>() {
            Ok(kind) => kind,
            Err(error) => {
                self.session.say(error.to_string());
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
            id: self.session.next_run,
            cancel: CancelFlag::new(),
            variations: self.settings.variations.clamp(1, MAX_WAVEFORMS),
            finished: 0,
            progress: None,
        };
        self.session.next_run += 1;
        let negative = self.settings.negative_prompt.trim();
        let mut jobs = Vec::with_capacity(run.variations);
        for variation in 0..run.variations {
            let request = Request {
                task: task.clone(),
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
                // An edit keeps its clip's length.
                duration: (self.settings.duration > 0.0 && !editing)
                    .then_some(self.settings.duration),
                scheduler,
                waveforms: 1,
            };
            jobs.push(Job {
                run: run.id,
                variation,
                request,
                cancel: run.cancel.clone(),
                preview: self.settings.step_preview,
            });
        }
        let Some(worker) = self.worker() else { return };
        for job in jobs {
            worker.send(Command::Generate(job));
        }
        // New clips join the compare board; earlier runs stay on it.
        self.stop_playback();
        self.session.preview = None;
        self.session.run = Some(run);
    }

    pub fn cancel(&mut self) {
        if let Some(run) = &self.session.run {
            run.cancel.cancel();
        }
    }
}

impl eframe::App for FoleyApp {
    fn logic(&mut self, ctx: &egui::Context, _frame: &mut eframe::Frame) {
        self.poll();
        self.poll_drag();
        if let (Some(end), Ok(playback)) = (self.session.play_until, &self.playback)
            && (!playback.is_playing() || playback.position_seconds() >= end)
        {
            self.session.play_until = None;
            self.stop_playback();
        }
        if self.session.playing.is_some() || self.session.run.is_some() {
            ctx.request_repaint_after(std::time::Duration::from_millis(33));
        }
    }

    fn ui(&mut self, ui: &mut egui::Ui, frame: &mut eframe::Frame) {
        use raw_window_handle::HasWindowHandle as _;
        let ctx = ui.ctx().clone();
        self.commands.extend(shortcuts::read(&ctx));
        let dropped = dropped_files(&ctx);
        if !dropped.is_empty() {
            self.commands.push(StudioCommand::OpenFiles(dropped));
        }
        self.window = frame.window_handle().ok().map(|handle| handle.as_raw());
        self.pointer_down = ctx.input(|input| input.pointer.primary_down());
        egui::Panel::left("prompt")
            .default_size(300.0)
            // Scrolls instead of clipping its controls in a small window.
            .show(ui, |ui| {
                egui::ScrollArea::vertical().show(ui, |ui| self.prompt_panel(ui));
            });
        egui::Panel::right("library")
            .default_size(240.0)
            .show(ui, |ui| self.library_panel(ui));
        if !self.session.messages.is_empty() {
            egui::Panel::bottom("messages").show(ui, |ui| {
                for message in &self.session.messages {
                    ui.colored_label(ui.visuals().warn_fg_color, message);
                }
                if ui.button("Dismiss messages").clicked() {
                    self.commands.push(StudioCommand::DismissMessages);
                }
            });
        }
        if self.session.last_deleted.is_some() {
            egui::Panel::bottom("deleted").show(ui, |ui| self.deleted_bar(ui));
        }
        if self.session.last_export.is_some() || self.session.last_picture.is_some() {
            egui::Panel::bottom("export").show(ui, |ui| self.last_export_bar(ui));
        }
        egui::CentralPanel::default().show(ui, |ui| self.clips_panel(ui));
        if shortcuts::help_window(&ctx, self.session.show_shortcuts) {
            self.commands.push(StudioCommand::ToggleHelp);
        }
        for command in std::mem::take(&mut self.commands) {
            self.execute(command);
        }
    }

    fn save(&mut self, storage: &mut dyn eframe::Storage) {
        eframe::set_value(storage, STORAGE_KEY, &self.settings);
    }

    fn on_exit(&mut self, _gl: Option<&eframe::glow::Context>) {
        self.shut_down();
    }
}

/// The files dropped on the window this frame.
fn dropped_files(ctx: &egui::Context) -> Vec<PathBuf> {
    ctx.input(|input| {
        input
            .raw
            .dropped_files
            .iter()
            .map(|file| file.path().to_path_buf())
            .filter(|path| !path.as_os_str().is_empty())
            .collect()
    })
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
        let ready = |app: &FoleyApp| matches!(app.session.model_state, ModelState::Ready { .. });
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
        let messages = harness.state().session.messages.join("\n");
        assert!(messages.contains("inference thread stopped"), "{messages}");
        // The new thread loads the model again and generates.
        wait(&mut harness, "the model again", ready);
        let app = harness.state_mut();
        app.settings.steps = 2;
        app.settings.variations = 1;
        app.generate();
        wait(&mut harness, "the clip", |app| !app.is_busy());
        assert_eq!(
            harness.state().session.results.len(),
            1,
            "{:?}",
            harness.state().session.messages
        );
    }
}

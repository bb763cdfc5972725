//! The inference thread: loads models and runs generations on commands from the UI, reporting
//! back through events. The UI never blocks on it; cancelling is a shared flag checked between
//! denoising steps. A panic in the engine fails the one command; shutting down cancels the
//! work in progress and skips the queue.

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use candle_core::DType;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use crate::audio::loudness::Loudness;
use crate::engine::device::{DeviceKind, Plan};
use crate::engine::hub::{DownloadReport, resolve_model_reporting};
use crate::engine::kernels::{on_compute_pool, release_scratch};
use crate::engine::pipeline::{CancelFlag, Clip, Pipeline, PreviewMel, Request};
use crate::engine::text_tokenizer::TextTokenizer;
use crate::error::FoleyError;

/// Work for the inference thread.
pub enum Command {
    /// Loads a local diffusers folder or hub id, replacing the current model.
    Load {
        model: String,
        device: DeviceKind,
        dtype: DType,
        /// Stops a download between files.
        cancel: CancelFlag,
    },
    Generate(Job),
    Shutdown,
}

/// One generation; a run of variations is several jobs sharing a run id and a cancel flag.
pub struct Job {
    pub run: u64,
    /// Index within the run (0 for a single clip).
    pub variation: usize,
    pub request: Request,
    pub cancel: CancelFlag,
    /// Send a [`Event::Preview`] every few steps.
    pub preview: bool,
}

/// What the inference thread reports.
pub enum Event {
    Loading {
        model: String,
    },
    /// A model file is downloading: bytes done of its total.
    Downloading {
        file: String,
        done: usize,
        total: usize,
    },
    Loaded(ModelInfo),
    LoadFailed {
        model: String,
        error: String,
        /// The model that stays loaded, if one was.
        kept: Option<ModelInfo>,
    },
    Progress {
        run: u64,
        variation: usize,
        step: usize,
        total: usize,
        /// Seconds since this job started.
        elapsed: f64,
    },
    /// The partly denoised clip as a spectrogram, through the model's fitted latent → mel map.
    Preview {
        run: u64,
        variation: usize,
        step: usize,
        mel: PreviewMel,
    },
    Finished {
        run: u64,
        variation: usize,
        request: Box<Request>,
        model: String,
        clip: Box<Clip>,
        /// EBU R128 loudness of the first waveform, measured here rather than on the UI thread.
        loudness: Option<Loudness>,
    },
    Failed {
        run: u64,
        error: String,
    },
    Cancelled {
        run: u64,
    },
}

/// A loaded model as the UI shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelInfo {
    pub model: String,
    pub family: &'static str,
    /// (steps, guidance) diffusers uses for this family.
    pub defaults: (usize, f64),
    /// Seconds of audio when no duration is asked for.
    pub default_seconds: f64,
    /// The model's prompt tokenizers, so the studio can warn while the prompt is typed.
    pub prompt_limits: PromptLimits,
}

/// The tokenizers that cut a prompt, shared with the UI (compared by identity).
#[derive(Clone, Default)]
pub struct PromptLimits(pub Arc<Vec<TextTokenizer>>);

impl PromptLimits {
    /// The smallest token limit `prompt` goes past, if any.
    pub fn exceeded(&self, prompt: &str) -> Option<usize> {
        self.0
            .iter()
            .filter(|tokenizer| {
                tokenizer
                    .encode(prompt, None)
                    .is_ok_and(|encoded| encoded.truncated)
            })
            .map(|tokenizer| tokenizer.max_length)
            .min()
    }
}

impl PartialEq for PromptLimits {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl std::fmt::Debug for PromptLimits {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "PromptLimits({} tokenizers)", self.0.len())
    }
}

/// How long dropping a `Worker` waits for the thread: a cancelled run stops within one
/// denoising step, and a window that closes must not freeze for longer than this.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(800);

/// Handles to a running inference thread.
pub struct Worker {
    pub commands: Sender<Command>,
    pub events: Receiver<Event>,
    control: Arc<Control>,
    /// Disconnects when the thread has ended, by a panic too.
    exited: Receiver<()>,
    thread: Option<JoinHandle<()>>,
}

impl Worker {
    /// Starts the thread; `repaint` is called after every event so the UI wakes up.
    pub fn spawn(repaint: Arc<dyn Fn() + Send + Sync>) -> std::io::Result<Self> {
        let (commands, command_receiver) = crossbeam_channel::unbounded();
        let (event_sender, events) = crossbeam_channel::unbounded();
        let (exit_guard, exited) = crossbeam_channel::bounded::<()>(0);
        let control = Arc::new(Control::default());
        let thread_control = control.clone();
        let thread = std::thread::Builder::new()
            .name("inference".into())
            .spawn(move || {
                // Declared first so it drops last: `exited` disconnects once the model is freed.
                let _exit_guard = exit_guard;
                on_compute_pool(|| run(command_receiver, event_sender, repaint, &thread_control));
            })?;
        Ok(Self {
            commands,
            events,
            control,
            exited,
            thread: Some(thread),
        })
    }

    pub fn send(&self, command: Command) {
        // A failed send means the thread is gone; the UI notices the disconnected events.
        let _ = self.commands.send(command);
    }

    /// Stops the thread soon: the work in progress is cancelled and queued commands are
    /// skipped. Returns at once.
    pub fn shutdown(&self) {
        self.control.shut_down();
        // Wakes a thread that waits for a command.
        let _ = self.commands.send(Command::Shutdown);
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.shutdown();
        let ended = matches!(
            self.exited.recv_timeout(SHUTDOWN_GRACE),
            Err(RecvTimeoutError::Disconnected)
        );
        if let Some(thread) = self.thread.take()
            && ended
        {
            let _ = thread.join();
        }
        // Otherwise the thread is inside a step that cannot be interrupted: it is left to end
        // on its own (or with the process) rather than freezing the window.
    }
}

/// Shared between the UI and the thread: whether to stop, and how to cancel the work in
/// progress. One lock for both, so a shutdown cannot slip between the thread's check and the
/// start of a job.
#[derive(Default)]
struct Control(Mutex<ControlState>);

#[derive(Default)]
struct ControlState {
    shutdown: bool,
    /// The cancel flag of the load or job running now.
    current: Option<CancelFlag>,
}

impl Control {
    fn state(&self) -> std::sync::MutexGuard<'_, ControlState> {
        // The state is two plain fields, valid even if a holder panicked.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records `cancel` as the work in progress; false when shutting down.
    fn begin(&self, cancel: &CancelFlag) -> bool {
        let mut state = self.state();
        if !state.shutdown {
            state.current = Some(cancel.clone());
        }
        !state.shutdown
    }

    fn end(&self) {
        self.state().current = None;
    }

    fn shut_down(&self) {
        let mut state = self.state();
        state.shutdown = true;
        if let Some(cancel) = state.current.take() {
            cancel.cancel();
        }
    }
}

/// Runs `work`, turning a panic into `Err` with the panic's message, so a bug or a malformed
/// model fails one command instead of killing the thread.
pub fn contained<T>(work: impl FnOnce() -> T) -> Result<T, String> {
    std::panic::catch_unwind(AssertUnwindSafe(work)).map_err(|payload| {
        let message = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("no message");
        format!("internal error (panic): {message}")
    })
}

type Emit<'a> = &'a dyn Fn(Event);

fn run(
    commands: Receiver<Command>,
    events: Sender<Event>,
    repaint: Arc<dyn Fn() + Send + Sync>,
    control: &Control,
) {
    let emit = |event: Event| {
        let _ = events.send(event);
        repaint();
    };
    // The model stays loaded until a new one has loaded, so a failed Load changes nothing.
    let mut loaded: Option<Loaded> = None;
    while let Ok(command) = commands.recv() {
        // `begin` is false once shutting down: the queued commands are dropped unrun.
        match command {
            Command::Shutdown => break,
            Command::Load {
                model,
                device,
                dtype,
                cancel,
            } => {
                if !control.begin(&cancel) {
                    break;
                }
                load(model, device, dtype, &cancel, &mut loaded, &emit);
            }
            Command::Generate(job) => {
                if !control.begin(&job.cancel) {
                    break;
                }
                generate(job, loaded.as_ref(), &emit);
            }
        }
        control.end();
        // Nothing queued: the kernels' working buffers (up to a few hundred MB) go back rather
        // than stay held while the studio sits idle. Queued variations keep them.
        if commands.is_empty() {
            release_scratch();
        }
    }
}

fn load(
    model: String,
    device: DeviceKind,
    dtype: DType,
    cancel: &CancelFlag,
    loaded: &mut Option<Loaded>,
    emit: Emit<'_>,
) {
    let plan = Plan::new(device, dtype);
    let result = contained(|| {
        emit(Event::Loading {
            model: model.clone(),
        });
        let mut report = Reporter {
            emit,
            file: String::new(),
            done: 0,
            total: 0,
        };
        resolve_model_reporting(&model, Some(&mut report), Some(cancel))
            .and_then(|dir| Pipeline::load(&dir, &device.open()?, plan.weights))
            .map_err(|error| error.to_string())
    })
    .and_then(|result| result);
    match result {
        Ok(pipeline) => {
            emit(Event::Loaded(info(&model, &pipeline)));
            *loaded = Some(Loaded {
                model,
                pipeline,
                plan,
            });
        }
        Err(error) => emit(Event::LoadFailed {
            model,
            error,
            kept: loaded
                .as_ref()
                .map(|loaded| info(&loaded.model, &loaded.pipeline)),
        }),
    }
}

fn info(model: &str, pipeline: &Pipeline) -> ModelInfo {
    ModelInfo {
        model: model.to_string(),
        family: pipeline.name(),
        defaults: pipeline.defaults(),
        default_seconds: pipeline
            .audio_length(None)
            .map_or(0.0, |length| length.seconds),
        prompt_limits: PromptLimits(Arc::new(
            pipeline.prompt_tokenizers().into_iter().cloned().collect(),
        )),
    }
}

/// The model that stays loaded, with how it computes.
struct Loaded {
    model: String,
    pipeline: Pipeline,
    plan: Plan,
}

fn generate(job: Job, loaded: Option<&Loaded>, emit: Emit<'_>) {
    let Some(Loaded {
        model,
        pipeline,
        plan,
    }) = loaded
    else {
        emit(Event::Failed {
            run: job.run,
            error: "no model is loaded".into(),
        });
        return;
    };
    if job.cancel.is_cancelled() {
        emit(Event::Cancelled { run: job.run });
        return;
    }
    let started = Instant::now();
    let result = contained(|| {
        // Fitted once per model (a few probe sounds through the VAE encoder); a model without a
        // preview map simply shows none.
        let projection = job
            .preview
            .then(|| pipeline.preview_projection().ok())
            .flatten();
        plan.run(|| {
            pipeline.generate(
                &job.request,
                &mut |progress| {
                    emit(Event::Progress {
                        run: job.run,
                        variation: job.variation,
                        step: progress.step,
                        total: progress.total,
                        elapsed: started.elapsed().as_secs_f64(),
                    });
                    // About eight previews a clip, and the last step's.
                    let every = (progress.total / 8).max(1);
                    if let Some(projection) = &projection
                        && (progress.step % every == 0 || progress.step == progress.total)
                        && let Ok(mel) = projection.project(progress.latents)
                    {
                        emit(Event::Preview {
                            run: job.run,
                            variation: job.variation,
                            step: progress.step,
                            mel,
                        });
                    }
                },
                &job.cancel,
            )
        })
    });
    match result {
        Ok(Ok(clip)) => {
            let loudness = clip.waveforms.first().and_then(|samples| {
                crate::audio::loudness::measure(samples, clip.channels, clip.sample_rate).ok()
            });
            emit(Event::Finished {
                run: job.run,
                variation: job.variation,
                request: Box::new(job.request),
                model: model.clone(),
                clip: Box::new(clip),
                loudness,
            })
        }
        Ok(Err(FoleyError::Cancelled)) => emit(Event::Cancelled { run: job.run }),
        Ok(Err(error)) => emit(Event::Failed {
            run: job.run,
            error: error.to_string(),
        }),
        Err(panic) => emit(Event::Failed {
            run: job.run,
            error: panic,
        }),
    }
}

/// Turns hf-hub progress into `Downloading` events, at most one per percent.
struct Reporter<'a> {
    emit: Emit<'a>,
    file: String,
    done: usize,
    total: usize,
}

impl DownloadReport for Reporter<'_> {
    fn started(&mut self, file: &str, bytes: usize) {
        self.file = file.to_string();
        self.done = 0;
        self.total = bytes;
        (self.emit)(Event::Downloading {
            file: self.file.clone(),
            done: 0,
            total: bytes,
        });
    }

    fn advanced(&mut self, bytes: usize) {
        let step = (self.total / 100).max(1);
        let before = self.done / step;
        self.done += bytes;
        if self.done / step != before {
            (self.emit)(Event::Downloading {
                file: self.file.clone(),
                done: self.done,
                total: self.total,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_an_error_with_its_message() {
        let result: Result<(), String> = contained(|| panic!("attempt to divide by zero"));
        let error = result.unwrap_err();
        assert!(error.contains("attempt to divide by zero"), "{error}");
        let formatted: Result<(), String> = contained(|| panic!("index {} out of bounds", 7));
        assert!(formatted.unwrap_err().contains("index 7 out of bounds"));
        assert_eq!(contained(|| 42), Ok(42));
    }

    #[test]
    fn shutting_down_cancels_the_work_in_progress_and_refuses_more() {
        let control = Control::default();
        let running = CancelFlag::new();
        assert!(control.begin(&running));
        control.shut_down();
        assert!(running.is_cancelled());
        let queued = CancelFlag::new();
        assert!(!control.begin(&queued), "queued work must not start");
    }

    #[test]
    fn an_idle_worker_drops_at_once() {
        let started = Instant::now();
        drop(Worker::spawn(Arc::new(|| {})).unwrap());
        assert!(started.elapsed() < SHUTDOWN_GRACE);
    }
}

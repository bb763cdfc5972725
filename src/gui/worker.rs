//! The inference thread: loads models and runs generations on commands from the UI, reporting
//! back through events. The UI never blocks on it; cancelling is a shared flag checked between
//! denoising steps.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use candle_core::DType;
use crossbeam_channel::{Receiver, Sender};

use crate::engine::device::DeviceKind;
use crate::engine::hub::{DownloadReport, resolve_model_reporting};
use crate::engine::pipeline::{CancelFlag, Clip, Pipeline, Request};
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
    Loaded {
        model: String,
        family: &'static str,
        /// (steps, guidance) diffusers uses for this family.
        defaults: (usize, f64),
    },
    LoadFailed {
        model: String,
        error: String,
    },
    Progress {
        run: u64,
        variation: usize,
        step: usize,
        total: usize,
        /// Seconds since this job started.
        elapsed: f64,
    },
    Finished {
        run: u64,
        variation: usize,
        request: Request,
        model: String,
        clip: Box<Clip>,
    },
    Failed {
        run: u64,
        error: String,
    },
    Cancelled {
        run: u64,
    },
}

/// Handles to a running inference thread.
pub struct Worker {
    pub commands: Sender<Command>,
    pub events: Receiver<Event>,
    thread: Option<JoinHandle<()>>,
}

impl Worker {
    /// Starts the thread; `repaint` is called after every event so the UI wakes up.
    pub fn spawn(repaint: Arc<dyn Fn() + Send + Sync>) -> std::io::Result<Self> {
        let (commands, command_receiver) = crossbeam_channel::unbounded();
        let (event_sender, events) = crossbeam_channel::unbounded();
        let thread = std::thread::Builder::new()
            .name("inference".into())
            .spawn(move || run(command_receiver, event_sender, repaint))?;
        Ok(Self {
            commands,
            events,
            thread: Some(thread),
        })
    }

    pub fn send(&self, command: Command) {
        // The thread only stops on Shutdown, so a failed send means it is already gone.
        let _ = self.commands.send(command);
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.commands.send(Command::Shutdown);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(commands: Receiver<Command>, events: Sender<Event>, repaint: Arc<dyn Fn() + Send + Sync>) {
    let emit = |event: Event| {
        let _ = events.send(event);
        repaint();
    };
    let mut loaded: Option<(String, Pipeline)> = None;
    while let Ok(command) = commands.recv() {
        match command {
            Command::Shutdown => break,
            Command::Load {
                model,
                device,
                dtype,
                cancel,
            } => {
                emit(Event::Loading {
                    model: model.clone(),
                });
                loaded = None;
                let mut report = Reporter {
                    emit: &emit,
                    file: String::new(),
                    done: 0,
                    total: 0,
                };
                let result = resolve_model_reporting(&model, Some(&mut report), Some(&cancel))
                    .and_then(|dir| Pipeline::load(&dir, &device.open()?, dtype));
                match result {
                    Ok(pipeline) => {
                        emit(Event::Loaded {
                            model: model.clone(),
                            family: pipeline.name(),
                            defaults: pipeline.defaults(),
                        });
                        loaded = Some((model, pipeline));
                    }
                    Err(error) => emit(Event::LoadFailed {
                        model,
                        error: error.to_string(),
                    }),
                }
            }
            Command::Generate(job) => {
                let Some((model, pipeline)) = &loaded else {
                    emit(Event::Failed {
                        run: job.run,
                        error: "no model is loaded".into(),
                    });
                    continue;
                };
                if job.cancel.is_cancelled() {
                    emit(Event::Cancelled { run: job.run });
                    continue;
                }
                let started = Instant::now();
                let result = pipeline.generate(
                    &job.request,
                    &mut |progress| {
                        emit(Event::Progress {
                            run: job.run,
                            variation: job.variation,
                            step: progress.step,
                            total: progress.total,
                            elapsed: started.elapsed().as_secs_f64(),
                        })
                    },
                    &job.cancel,
                );
                match result {
                    Ok(clip) => emit(Event::Finished {
                        run: job.run,
                        variation: job.variation,
                        request: job.request,
                        model: model.clone(),
                        clip: Box::new(clip),
                    }),
                    Err(FoleyError::Cancelled) => emit(Event::Cancelled { run: job.run }),
                    Err(error) => emit(Event::Failed {
                        run: job.run,
                        error: error.to_string(),
                    }),
                }
            }
        }
    }
}

/// Turns hf-hub progress into `Downloading` events, at most one per percent.
struct Reporter<'a> {
    emit: &'a dyn Fn(Event),
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

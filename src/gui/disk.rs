//! The studio's disk thread: library saves (three fsyncs a clip), changes, deletes, exports and
//! pictures run here, in order, so the UI thread never waits on the disk. It owns the
//! library; the UI keeps a [`LibraryView`] of its records, replaced after every change.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use super::worker::contained;
use crate::audio::loudness::{Loudness, measure};
use crate::audio::plot::render_plot;
use crate::library::export::{ExportOptions, export_clip, picture_path};
use crate::library::{Annotations, ClipRecord, Library, Spectrogram};

/// How long a closing studio waits for the queued saves before it lets the thread finish alone
/// (a save stuck on a dead network share must not freeze the window for good).
const CLOSE_GRACE: Duration = Duration::from_secs(10);

/// Which library clip a job means: its id, or the key of a save queued before it. Jobs run in
/// order, so one queued behind a save finds the id that save gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClipId {
    Id(String),
    Saved(u64),
}

/// Disk work the UI asks for.
pub enum DiskJob {
    /// Saves a new clip; `key` finds its view again when the id comes back.
    Save {
        key: u64,
        record: ClipRecord,
        samples: Arc<[f32]>,
        mel: Option<Spectrogram>,
    },
    Annotate {
        clip: ClipId,
        annotations: Annotations,
    },
    /// Moves a clip into the trash.
    Delete {
        clip: ClipId,
    },
    /// Brings a clip back from the trash and opens it as open number `ticket`.
    Restore {
        id: String,
        ticket: u64,
    },
    EmptyTrash,
    /// Reads library clip `id` for the clip view, as open number `ticket`.
    Open {
        id: String,
        ticket: u64,
    },
    /// Reads an audio file for the clip view, as open number `ticket`.
    OpenFile {
        path: PathBuf,
        ticket: u64,
    },
    /// Writes a WAV for the DAW; `then_drag` starts a drag-out with it.
    Export {
        dir: PathBuf,
        record: ClipRecord,
        samples: Arc<[f32]>,
        options: ExportOptions,
        then_drag: bool,
    },
    Picture {
        dir: PathBuf,
        record: ClipRecord,
        samples: Arc<[f32]>,
    },
}

/// Which export a file is: (clip id, folder, options).
pub type ExportOf = (String, PathBuf, ExportOptions);

/// What the disk thread did.
pub enum DiskEvent {
    /// The library's records after a change, newest first.
    Records(Arc<[ClipRecord]>),
    Saved {
        key: u64,
        record: ClipRecord,
    },
    Deleted(ClipRecord),
    /// What open number `ticket` read; only the newest open is shown.
    Opened {
        ticket: u64,
        record: ClipRecord,
        samples: Vec<f32>,
        mel: Option<Spectrogram>,
        loudness: Option<Loudness>,
    },
    TrashEmptied,
    Exported {
        path: PathBuf,
        of: ExportOf,
        then_drag: bool,
    },
    PictureSaved(PathBuf),
    /// A job failed: a readable message for the studio.
    Failed(String),
    /// One job is over (after its other events), for the count of jobs in flight.
    Done,
}

/// The library's records as the UI shows them, kept current by [`DiskEvent::Records`].
#[derive(Debug, Clone)]
pub struct LibraryView {
    dir: PathBuf,
    records: Arc<[ClipRecord]>,
    /// The last search and the indices of its matches, until the query or the records change
    /// (the panel asks every frame).
    found: Option<(String, Vec<usize>)>,
}

impl LibraryView {
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn records(&self) -> &[ClipRecord] {
        &self.records
    }

    pub fn prompt_history(&self, limit: usize) -> Vec<String> {
        crate::library::prompt_history(&self.records, limit)
    }

    /// Indices into `records` of what `query` finds, searched again only when the query or
    /// the records changed.
    pub fn found(&mut self, query: &str) -> Vec<usize> {
        if let Some((last, found)) = &self.found
            && last == query
        {
            return found.clone();
        }
        let found: Vec<usize> = crate::library::search_indices(&self.records, query).collect();
        self.found = Some((query.to_string(), found.clone()));
        found
    }

    pub(super) fn replace(&mut self, records: Arc<[ClipRecord]>) {
        self.records = records;
        self.found = None;
    }
}

/// Handles to the disk thread. Dropping it finishes the queued jobs first: a save that was
/// asked for is never lost to a closing window.
pub struct Disk {
    jobs: Option<Sender<DiskJob>>,
    pub events: Receiver<DiskEvent>,
    /// Jobs sent and not yet reported `Done`.
    in_flight: usize,
    /// Set on close: what only the window wanted (opens, exports, pictures) is skipped.
    closing: Arc<AtomicBool>,
    /// Disconnects when the thread has ended.
    exited: Receiver<()>,
    thread: Option<JoinHandle<()>>,
}

impl Disk {
    /// Starts the thread with `library` (or why it could not open: exports and pictures work
    /// without one); returns the view of it for the UI.
    pub fn spawn(
        library: Result<Library, String>,
        repaint: Arc<dyn Fn() + Send + Sync>,
    ) -> std::io::Result<(Self, Result<LibraryView, String>)> {
        let view = library
            .as_ref()
            .map_err(Clone::clone)
            .map(|library| LibraryView {
                dir: library.dir().to_path_buf(),
                records: library.records().into(),
                found: None,
            });
        let (jobs, job_receiver) = crossbeam_channel::unbounded();
        let (event_sender, events) = crossbeam_channel::unbounded();
        let (exit_guard, exited) = crossbeam_channel::bounded::<()>(0);
        let closing = Arc::new(AtomicBool::new(false));
        let thread_closing = closing.clone();
        let thread = std::thread::Builder::new()
            .name("disk".into())
            .spawn(move || {
                let _exit_guard = exit_guard;
                run(
                    library,
                    &job_receiver,
                    &event_sender,
                    &*repaint,
                    &thread_closing,
                );
            })?;
        let disk = Self {
            jobs: Some(jobs),
            events,
            in_flight: 0,
            closing,
            exited,
            thread: Some(thread),
        };
        Ok((disk, view))
    }

    /// Queues `job`; false when the thread is gone.
    pub fn send(&mut self, job: DiskJob) -> bool {
        let sent = self
            .jobs
            .as_ref()
            .is_some_and(|jobs| jobs.send(job).is_ok());
        self.in_flight += usize::from(sent);
        sent
    }

    /// Notes a `Done` event.
    pub fn finished_one(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
    }

    /// No job is queued or running.
    pub fn is_idle(&self) -> bool {
        self.in_flight == 0
    }
}

impl Drop for Disk {
    fn drop(&mut self) {
        self.closing.store(true, Ordering::SeqCst);
        // Closing the channel ends the thread once the queue is empty.
        self.jobs = None;
        match self.exited.recv_timeout(CLOSE_GRACE) {
            Err(RecvTimeoutError::Disconnected) => {
                if let Some(thread) = self.thread.take() {
                    let _ = thread.join();
                }
            }
            _ => eprintln!(
                "foley: the disk is not answering; the last saves finish in the background"
            ),
        }
    }
}

/// The disk thread's own state: the library and the ids its saves gave.
struct Keeper {
    library: Result<Library, String>,
    saved: HashMap<u64, String>,
}

fn run(
    library: Result<Library, String>,
    jobs: &Receiver<DiskJob>,
    events: &Sender<DiskEvent>,
    repaint: &(dyn Fn() + Send + Sync),
    closing: &AtomicBool,
) {
    let mut keeper = Keeper {
        library,
        saved: HashMap::new(),
    };
    for job in jobs {
        let mut emit = |event| {
            let _ = events.send(event);
        };
        let for_the_window_only = matches!(
            job,
            DiskJob::Open { .. }
                | DiskJob::OpenFile { .. }
                | DiskJob::Export { .. }
                | DiskJob::Picture { .. }
        );
        // A panic (a bug) fails this job only; the library's records stay consistent because
        // every change writes the disk before it changes the list.
        if !(for_the_window_only && closing.load(Ordering::SeqCst))
            && let Err(panic) = contained(|| keeper.carry_out(job, &mut emit))
        {
            emit(DiskEvent::Failed(panic));
        }
        emit(DiskEvent::Done);
        repaint();
    }
}

impl Keeper {
    fn carry_out(&mut self, job: DiskJob, emit: &mut dyn FnMut(DiskEvent)) {
        let job = match job {
            DiskJob::Export {
                dir,
                record,
                samples,
                options,
                then_drag,
            } => {
                emit(match export_clip(&dir, &record, &samples, &options) {
                    Ok(path) => DiskEvent::Exported {
                        path,
                        of: (record.id, dir, options),
                        then_drag,
                    },
                    Err(error) => DiskEvent::Failed(format!("export failed: {error}")),
                });
                return;
            }
            DiskJob::Picture {
                dir,
                record,
                samples,
            } => {
                emit(match save_picture(&dir, &record, &samples) {
                    Ok(path) => DiskEvent::PictureSaved(path),
                    Err(error) => {
                        DiskEvent::Failed(format!("the picture could not be saved: {error}"))
                    }
                });
                return;
            }
            DiskJob::OpenFile { path, ticket } => {
                emit(match crate::audio::wav::read_wav_frames(&path) {
                    Ok((samples, channels, sample_rate)) => {
                        let name = path
                            .file_stem()
                            .map_or_else(String::new, |stem| stem.to_string_lossy().into_owned());
                        DiskEvent::Opened {
                            ticket,
                            record: ClipRecord::of_file(name, channels, sample_rate, samples.len()),
                            loudness: measure(&samples, channels as usize, sample_rate).ok(),
                            samples,
                            mel: None,
                        }
                    }
                    Err(error) => DiskEvent::Failed(error.to_string()),
                });
                return;
            }
            job => job,
        };
        let library = match &mut self.library {
            Ok(library) => library,
            Err(error) => {
                return emit(DiskEvent::Failed(format!(
                    "the library is unavailable: {error}"
                )));
            }
        };
        let records = |library: &Library| DiskEvent::Records(library.records().into());
        match job {
            DiskJob::Save {
                key,
                record,
                samples,
                mel,
            } => {
                let mel = mel
                    .as_ref()
                    .map(|(values, bins)| (values.as_slice(), *bins));
                match library.add(record, &samples, mel) {
                    Ok(record) => {
                        self.saved.insert(key, record.id.clone());
                        emit(records(library));
                        emit(DiskEvent::Saved { key, record });
                    }
                    Err(error) => emit(DiskEvent::Failed(format!(
                        "the clip could not be saved: {error}"
                    ))),
                }
            }
            DiskJob::Annotate { clip, annotations } => {
                let result = match resolve(&self.saved, clip) {
                    Ok(id) => library
                        .annotate(&id, &annotations)
                        .map_err(|e| e.to_string()),
                    Err(error) => Err(error),
                };
                emit(records(library));
                if let Err(error) = result {
                    emit(DiskEvent::Failed(error));
                }
            }
            DiskJob::Delete { clip } => {
                let listed = resolve(&self.saved, clip).and_then(|id| {
                    library
                        .records()
                        .iter()
                        .find(|record| record.id == id)
                        .cloned()
                        .ok_or_else(|| format!("{id} is no longer in the library"))
                });
                let deleted = listed.and_then(|record| {
                    library
                        .delete(&record.id)
                        .map(|()| record)
                        .map_err(|error| error.to_string())
                });
                // Also after a failure: the list may have changed on the way.
                emit(records(library));
                emit(match deleted {
                    Ok(record) => DiskEvent::Deleted(record),
                    Err(error) => DiskEvent::Failed(error),
                });
            }
            DiskJob::Restore { id, ticket } => {
                let restored = library.restore(&id);
                emit(records(library));
                match restored {
                    Ok(record) => open(library, record, ticket, emit),
                    Err(error) => emit(DiskEvent::Failed(error.to_string())),
                }
            }
            DiskJob::EmptyTrash => match library.empty_trash() {
                Ok(_) => emit(DiskEvent::TrashEmptied),
                Err(error) => emit(DiskEvent::Failed(error.to_string())),
            },
            // Read from the list as it is now, so an annotation queued before shows.
            DiskJob::Open { id, ticket } => {
                match library.records().iter().find(|record| record.id == id) {
                    Some(record) => open(library, record.clone(), ticket, emit),
                    None => emit(DiskEvent::Failed(format!(
                        "{id} is no longer in the library"
                    ))),
                }
            }
            // Handled above: they need no library.
            DiskJob::Export { .. } | DiskJob::Picture { .. } | DiskJob::OpenFile { .. } => {}
        }
    }
}

/// The id `clip` names: its own, or the one its save gave.
fn resolve(saved: &HashMap<u64, String>, clip: ClipId) -> Result<String, String> {
    match clip {
        ClipId::Id(id) => Ok(id),
        ClipId::Saved(key) => saved
            .get(&key)
            .cloned()
            .ok_or_else(|| "this clip is not in the library (its save failed)".to_string()),
    }
}

/// Renders the spectrogram + waveform picture (as `foley plot` draws it) into `dir`.
fn save_picture(dir: &Path, record: &ClipRecord, samples: &[f32]) -> Result<PathBuf, String> {
    let path = picture_path(dir, record);
    std::fs::create_dir_all(dir).map_err(|error| error.to_string())?;
    // The picture shows the mix of a stereo clip.
    let mono = crate::engine::dsp::fold_down(samples, record.channels as usize);
    render_plot(
        &mono,
        record.sample_rate,
        &record.prompt,
        &path,
        (1200, 600),
    )
    .map_err(|error| error.to_string())?;
    Ok(path)
}

fn open(library: &Library, record: ClipRecord, ticket: u64, emit: &mut dyn FnMut(DiskEvent)) {
    match library.load_clip(&record) {
        Ok((samples, mel)) => emit(DiskEvent::Opened {
            ticket,
            loudness: measure(
                &samples,
                record.channels.max(1) as usize,
                record.sample_rate,
            )
            .ok(),
            record,
            samples,
            mel,
        }),
        Err(error) => emit(DiskEvent::Failed(error.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(prompt: &str, seed: u64) -> ClipRecord {
        let mut record = ClipRecord::of_file(prompt.into(), 1, 16_000, 1_600);
        record.seed = seed;
        record
    }

    fn recv(disk: &Disk) -> DiskEvent {
        disk.events
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("the disk thread answers")
    }

    #[test]
    fn closing_finishes_the_queued_saves() {
        let dir = tempfile::tempdir().unwrap();
        let library = Library::open(dir.path()).map_err(|error| error.to_string());
        let (mut disk, view) = Disk::spawn(library, Arc::new(|| {})).unwrap();
        assert!(view.unwrap().records().is_empty());
        let samples: Arc<[f32]> = vec![0.1; 1_600].into();
        for seed in 0..5 {
            assert!(disk.send(DiskJob::Save {
                key: seed,
                record: record("rain", seed),
                samples: samples.clone(),
                mel: None,
            }));
        }
        assert!(!disk.is_idle());
        // As a closing window does: the saves asked for are not lost.
        drop(disk);
        assert_eq!(Library::open(dir.path()).unwrap().records().len(), 5);
    }

    #[test]
    fn jobs_report_in_order_and_failures_are_messages() {
        let dir = tempfile::tempdir().unwrap();
        let library = Library::open(dir.path()).map_err(|error| error.to_string());
        let (mut disk, _) = Disk::spawn(library, Arc::new(|| {})).unwrap();
        let samples: Arc<[f32]> = vec![0.1; 1_600].into();
        disk.send(DiskJob::Save {
            key: 7,
            record: record("door", 1),
            samples,
            mel: None,
        });
        assert!(matches!(recv(&disk), DiskEvent::Records(records) if records.len() == 1));
        let DiskEvent::Saved {
            key: 7,
            record: saved,
        } = recv(&disk)
        else {
            panic!("the save reports its id");
        };
        assert!(matches!(recv(&disk), DiskEvent::Done));
        let annotations = Annotations {
            starred: true,
            rating: 4,
            tags: vec!["wood".into()],
        };
        // Named by its save's key, as a clip whose id the UI has not heard of yet.
        disk.send(DiskJob::Annotate {
            clip: ClipId::Saved(7),
            annotations: annotations.clone(),
        });
        let DiskEvent::Records(records) = recv(&disk) else {
            panic!("the change reports the records");
        };
        assert_eq!(Annotations::of(&records[0]), annotations);
        assert!(matches!(recv(&disk), DiskEvent::Done));
        // A file that is not a clip's: refused with the reason, and the thread goes on.
        disk.send(DiskJob::Open {
            id: "missing_s9".into(),
            ticket: 1,
        });
        assert!(matches!(recv(&disk), DiskEvent::Failed(_)));
        assert!(matches!(recv(&disk), DiskEvent::Done));
        // A key no save gave: refused, not guessed.
        disk.send(DiskJob::Annotate {
            clip: ClipId::Saved(99),
            annotations: Annotations::default(),
        });
        assert!(matches!(recv(&disk), DiskEvent::Records(_)));
        assert!(
            matches!(recv(&disk), DiskEvent::Failed(message) if message.contains("not in the library"))
        );
        assert!(matches!(recv(&disk), DiskEvent::Done));
        disk.send(DiskJob::Delete {
            clip: ClipId::Saved(7),
        });
        assert!(matches!(recv(&disk), DiskEvent::Records(records) if records.is_empty()));
        assert!(matches!(recv(&disk), DiskEvent::Deleted(record) if record.id == saved.id));
    }

    #[test]
    fn exports_work_without_a_library() {
        let out = tempfile::tempdir().unwrap();
        let (mut disk, view) = Disk::spawn(Err("no permission".into()), Arc::new(|| {})).unwrap();
        assert!(view.is_err());
        disk.send(DiskJob::Export {
            dir: out.path().to_path_buf(),
            record: record("bell", 3),
            samples: vec![0.25; 1_600].into(),
            options: ExportOptions::default(),
            then_drag: false,
        });
        let DiskEvent::Exported { path, .. } = recv(&disk) else {
            panic!("the export is written");
        };
        assert!(path.starts_with(out.path()) && path.is_file());
        assert!(matches!(recv(&disk), DiskEvent::Done));
        disk.send(DiskJob::EmptyTrash);
        let DiskEvent::Failed(message) = recv(&disk) else {
            panic!("a library job fails without one");
        };
        assert!(message.contains("no permission"), "{message}");
    }
}

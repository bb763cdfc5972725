//! The studio under failure: an engine panic while loading or generating ends the busy state
//! with a message and leaves the studio working, a failed Load keeps the working model, a very
//! long clip draws within the GPU's texture limit, and closing mid-run stops the work at once.
#![cfg(feature = "studio")]

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::RecvTimeoutError;
use egui_kittest::Harness;
use egui_kittest::kittest::{NodeT, Queryable};
use foley::engine::pipeline::{CancelFlag, Request};
use foley::gui::worker::{Command, Event, Job, Worker};
use foley::gui::{FoleyApp, ModelState};
use foley::library::{ClipRecord, Library};

fn good_model() -> String {
    common::model_dir("audioldm2-tiny").display().to_string()
}

/// A copy of the tiny AudioLDM 2 fixture in `dir` with `key` (dotted path) of `file` set to
/// `value`.
fn corrupt_model(dir: &Path, file: &str, key: &str, value: serde_json::Value) -> String {
    let model = dir.join("model");
    common::copy_dir(&common::model_dir("audioldm2-tiny"), &model);
    let path = model.join(file);
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let mut field = &mut config;
    for part in key.split('.') {
        field = &mut field[part];
    }
    *field = value;
    std::fs::write(&path, serde_json::to_vec(&config).unwrap()).unwrap();
    model.display().to_string()
}

fn model_ready(app: &FoleyApp) -> bool {
    matches!(app.session.model_state, ModelState::Ready { .. })
}

fn loading(app: &FoleyApp) -> bool {
    matches!(
        app.session.model_state,
        ModelState::Loading(_) | ModelState::Downloading { .. }
    )
}

fn load(harness: &mut Harness<'static, FoleyApp>, model: &str) {
    harness.state_mut().settings.model = model.to_string();
    harness.get_by_label("Load").click();
    harness.run_steps(1);
    assert!(loading(harness.state()), "Load starts loading");
    common::wait_until(harness, "the load to end", |app| !loading(app));
}

fn generate_enabled(harness: &Harness<'static, FoleyApp>) -> bool {
    !harness
        .get_by_label("Generate")
        .accesskit_node()
        .is_disabled()
}

/// Generates one 2-step clip and waits for it to join the board.
fn generate_a_clip(harness: &mut Harness<'static, FoleyApp>) {
    let before = harness.state().session.results.len();
    {
        let settings = &mut harness.state_mut().settings;
        settings.prompt = "dog barking".into();
        settings.steps = 2;
        settings.variations = 1;
        settings.scheduler = "ddim".into();
    }
    harness.run_steps(1);
    assert!(generate_enabled(harness));
    harness.get_by_label("Generate").click();
    harness.run_steps(1);
    assert!(harness.state().is_busy());
    common::wait_until(harness, "the clip", |app| !app.is_busy());
    assert_eq!(
        harness.state().session.results.len(),
        before + 1,
        "{:?}",
        harness.state().session.messages
    );
}

#[test]
fn a_broken_model_ends_loading_with_a_message_and_keeps_a_working_model() {
    let temp = tempfile::tempdir().unwrap();
    // A zero head size: once a divide-by-zero panic in the UNet, now rejected by validation;
    // either way the studio must leave "Loading…" with the reason.
    let broken = corrupt_model(
        temp.path(),
        "unet/config.json",
        "attention_head_dim",
        0.into(),
    );
    let mut harness = common::studio(Some(broken.clone()), &temp.path().join("library"));
    common::wait_until(&mut harness, "the load to end", |app| !loading(app));
    assert!(
        matches!(
            harness.state().session.model_state,
            ModelState::Failed { .. }
        ),
        "{:?}",
        harness.state().session.model_state
    );
    // Said once, in the model's status line, not again as a message.
    harness.get_by_label_contains("could not load");
    let messages = harness.state().session.messages.join("\n");
    assert!(!messages.contains("could not load"), "{messages}");

    // The inference thread is still there: a good model loads and generates.
    load(&mut harness, &good_model());
    assert!(model_ready(harness.state()));
    generate_a_clip(&mut harness);

    // Loading the broken model again keeps the good one.
    harness.state_mut().session.messages.clear();
    load(&mut harness, &broken);
    let messages = harness.state().session.messages.join("\n");
    assert!(messages.contains("still using"), "{messages}");
    match &harness.state().session.model_state {
        ModelState::Ready { model, .. } => assert_eq!(model, &good_model()),
        other => panic!("the working model was dropped: {other:?}"),
    }
    generate_a_clip(&mut harness);
}

#[test]
fn a_failed_generation_ends_the_run_with_a_message_and_generate_works_again() {
    let temp = tempfile::tempdir().unwrap();
    let mut harness = common::studio(Some(good_model()), &temp.path().join("library"));
    common::wait_until(&mut harness, "the model", model_ready);
    {
        // The inference thread refuses this guidance (above the engine's MAX_GUIDANCE) when
        // the run starts. Set without a frame in between: the guidance field would clamp it.
        let app = harness.state_mut();
        app.settings.prompt = "rain on a tin roof".into();
        app.settings.steps = 2;
        app.settings.variations = 3;
        app.settings.guidance = 1e9;
        app.generate();
        assert!(app.is_busy());
    }
    common::wait_until(&mut harness, "the run to end", |app| !app.is_busy());
    let messages = harness.state().session.messages.join("\n");
    assert!(messages.contains("generation failed"), "{messages}");
    assert!(harness.state().session.results.is_empty());
    harness.run_steps(1);
    assert!(generate_enabled(&harness), "Generate is enabled again");
    harness.state_mut().settings.guidance = 0.0;
    generate_a_clip(&mut harness);
}

/// A worker whose `repaint` callback panics once, at the call numbered `panic_at`. The
/// callbacks run inside the load and inside the engine (progress), so this is a panic from
/// within the work, whatever the engine validates meanwhile.
struct Panicky {
    worker: Worker,
    panic_at: Arc<AtomicUsize>,
    /// Events received so far; the repaint after event n is call n.
    received: usize,
}

impl Panicky {
    fn spawn() -> Self {
        let calls = AtomicUsize::new(0);
        let panic_at = Arc::new(AtomicUsize::new(usize::MAX));
        let armed = panic_at.clone();
        let repaint = move || {
            if calls.fetch_add(1, Ordering::SeqCst) == armed.load(Ordering::SeqCst) {
                panic!("injected panic");
            }
        };
        Self {
            worker: Worker::spawn(Arc::new(repaint)).unwrap(),
            panic_at,
            received: 0,
        }
    }

    /// Makes the repaint after the next event the worker sends panic.
    fn arm(&self) {
        self.panic_at.store(self.received, Ordering::SeqCst);
    }

    /// The next event that ends a command.
    fn outcome(&mut self) -> Event {
        loop {
            let event = self
                .worker
                .events
                .recv_timeout(Duration::from_secs(60))
                .expect("an event");
            self.received += 1;
            if !matches!(event, Event::Progress { .. } | Event::Loading { .. }) {
                return event;
            }
        }
    }
}

fn job(run: u64, steps: usize) -> Command {
    Command::Generate(Job {
        run,
        variation: 0,
        request: Request {
            prompt: "engine idling".into(),
            negative_prompt: None,
            seed: run,
            steps,
            guidance: 3.5,
            duration: None,
            scheduler: "ddim".parse().unwrap(),
            waveforms: 1,
            task: Default::default(),
        },
        cancel: CancelFlag::new(),
        preview: false,
    })
}

fn load_command(model: String) -> Command {
    Command::Load {
        model,
        device: "cpu".parse().unwrap(),
        dtype: candle_core::DType::F32,
        cancel: CancelFlag::new(),
    }
}

#[test]
fn a_panic_inside_load_or_generate_fails_that_command_and_the_worker_goes_on() {
    let mut panicky = Panicky::spawn();
    panicky.worker.send(load_command(good_model()));
    assert!(matches!(panicky.outcome(), Event::Loaded(_)));

    // A panic while loading: reported, and the model that was loaded stays.
    panicky.arm();
    panicky.worker.send(load_command(good_model()));
    match panicky.outcome() {
        Event::LoadFailed { error, kept, .. } => {
            assert!(error.contains("injected panic"), "{error}");
            assert_eq!(kept.map(|kept| kept.model), Some(good_model()));
        }
        _ => panic!("expected LoadFailed"),
    }

    // A panic in the middle of the denoising loop (from its progress callback).
    panicky.arm();
    panicky.worker.send(job(1, 3));
    match panicky.outcome() {
        Event::Failed { run: 1, error } => assert!(error.contains("injected panic"), "{error}"),
        _ => panic!("expected Failed"),
    }

    // The same thread and model still generate.
    panicky.worker.send(job(2, 2));
    assert!(matches!(panicky.outcome(), Event::Finished { run: 2, .. }));
}

#[test]
fn a_clip_longer_than_the_largest_texture_opens_from_the_library() {
    const FRAMES: usize = 20_000;
    const BINS: usize = 8;
    const MAX_SIDE: usize = 16_384;
    let temp = tempfile::tempdir().unwrap();
    let library_dir = temp.path().join("library");
    let mut library = Library::open(&library_dir).unwrap();
    let record: ClipRecord = serde_json::from_value(serde_json::json!({
        "id": "", "prompt": "a very long drone", "seed": 1, "steps": 2, "guidance": 3.5,
        "scheduler": "ddim", "model": "fixture", "duration": 1.0, "sample_rate": 16000,
        "created": 0,
    }))
    .unwrap();
    let mel: Vec<f32> = (0..FRAMES * BINS)
        .map(|index| (index % 97) as f32)
        .collect();
    library
        .add(record, &vec![0.0; 16_000], Some((&mel, BINS)))
        .unwrap();
    drop(library);

    let mut harness = common::studio(None, &library_dir);
    // What eframe reports for a GPU that allows 16384 pixels a side.
    harness.input_mut().max_texture_side = Some(MAX_SIDE);
    harness.run_steps(1);
    harness.get_by_label_contains("a very long drone").click();
    common::settle(&mut harness);
    harness.run_steps(3);
    let opened = harness
        .state()
        .session
        .opened
        .as_ref()
        .expect("the clip opened");
    assert_eq!(opened.texture_size(), Some([MAX_SIDE, BINS]));
    harness.get_by_label("Spectrogram");

    // A smaller limit (egui's default, 2048) is honoured too.
    let mut small = common::studio(None, &library_dir);
    small.run_steps(1);
    small.get_by_label_contains("a very long drone").click();
    common::settle(&mut small);
    small.run_steps(3);
    let limit = small.ctx.input(|input| input.max_texture_side);
    let size = small
        .state()
        .session
        .opened
        .as_ref()
        .unwrap()
        .texture_size()
        .unwrap();
    assert!(size[0] <= limit && size[1] <= limit, "{size:?} > {limit}");
}

/// Waits for the first event `wanted` accepts, failing after a minute.
fn wait_for(worker: &Worker, what: &str, wanted: impl Fn(&Event) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match worker.events.recv_timeout(left) {
            Ok(event) if wanted(&event) => return,
            Ok(Event::LoadFailed { error, .. } | Event::Failed { error, .. }) => {
                panic!("{what}: {error}")
            }
            Ok(_) => {}
            Err(error) => panic!("waiting for {what}: {error}"),
        }
    }
}

#[test]
fn dropping_the_worker_mid_run_cancels_the_queue_at_once() {
    let worker = Worker::spawn(Arc::new(|| {})).unwrap();
    worker.send(load_command(good_model()));
    wait_for(&worker, "the model", |event| {
        matches!(event, Event::Loaded(_))
    });
    // Four long jobs, each with its own flag that nobody cancels.
    for run in 0..4 {
        worker.send(job(run, 900));
    }
    wait_for(
        &worker,
        "a step",
        |event| matches!(event, Event::Progress { step, .. } if *step > 0),
    );
    let events = worker.events.clone();
    let started = Instant::now();
    drop(worker);
    let took = started.elapsed();
    assert!(took < Duration::from_secs(1), "dropping took {took:?}");
    // The thread has ended (its events disconnect) without finishing a clip.
    let mut cancelled = false;
    loop {
        match events.recv_timeout(Duration::from_millis(100)) {
            Ok(Event::Finished { .. }) => panic!("a clip finished after the shutdown"),
            Ok(Event::Cancelled { .. }) => cancelled = true,
            Ok(_) => {}
            Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => panic!("the inference thread is still running"),
        }
    }
    assert!(cancelled, "the running job reports its cancel");
}

#[test]
fn closing_the_studio_mid_run_returns_within_a_second() {
    let temp = tempfile::tempdir().unwrap();
    let library: PathBuf = temp.path().join("library");
    let mut harness = common::studio(Some(good_model()), &library);
    common::wait_until(&mut harness, "the model", model_ready);
    {
        let settings = &mut harness.state_mut().settings;
        settings.prompt = "wind through pines".into();
        settings.steps = 900;
        settings.variations = 4;
    }
    harness.run_steps(1);
    harness.get_by_label("Generate").click();
    common::wait_until(&mut harness, "the run to start", |app| {
        app.session.last_progress.is_some_and(|(step, _)| step > 0)
    });
    // What eframe does when the window closes: on_exit, then drop the app.
    let started = Instant::now();
    harness.state_mut().shut_down();
    assert!(!harness.state().is_busy());
    drop(harness);
    let took = started.elapsed();
    assert!(took < Duration::from_secs(1), "closing took {took:?}");
    let records = Library::open(&library).unwrap().records().len();
    assert_eq!(records, 0, "no clip of the cancelled run was saved");
}

/// The step preview: with it on, the worker sends the partly denoised clip as a finite
/// spectrogram every few steps and at the last one, as long as the clip's own mel; with it
/// off, none.
#[test]
fn step_previews_arrive_every_few_steps_and_at_the_last() {
    let worker = Worker::spawn(Arc::new(|| {})).unwrap();
    worker.send(load_command(good_model()));
    let next = || {
        worker
            .events
            .recv_timeout(Duration::from_secs(60))
            .expect("an event")
    };
    while !matches!(next(), Event::Loaded(_)) {}
    for preview in [true, false] {
        let Command::Generate(mut generate) = job(1, 16) else {
            unreachable!()
        };
        generate.preview = preview;
        worker.send(Command::Generate(generate));
        let mut steps = Vec::new();
        let clip = loop {
            match next() {
                Event::Preview { step, mel, .. } => {
                    assert!(mel.bins > 0 && mel.frames() > 0);
                    assert!(mel.values.iter().all(|value| value.is_finite()));
                    steps.push((step, mel));
                }
                Event::Finished { clip, .. } => break clip,
                Event::Progress { .. } => {}
                _ => panic!("the run fails"),
            }
        };
        if !preview {
            assert!(steps.is_empty());
            continue;
        }
        let numbers: Vec<usize> = steps.iter().map(|(step, _)| *step).collect();
        assert_eq!(numbers, vec![2, 4, 6, 8, 10, 12, 14, 16]);
        let (_, last) = steps.last().unwrap();
        assert_eq!(last.bins, clip.mel_bins);
        assert_eq!(last.frames(), clip.mels[0].len() / clip.mel_bins);
    }
}

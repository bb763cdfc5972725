//! The studio driven through its accessible labels (egui_kittest) with a tiny fixture model:
//! type a prompt, generate, see the clip, cancel, run variations, and find the library intact
//! after a restart.
#![cfg(feature = "studio")]

mod common;

use std::path::{Path, PathBuf};

use eframe::egui;
use egui_kittest::Harness;
use egui_kittest::kittest::{NodeT, Queryable};
use foley::gui::FoleyApp;

/// The studio with the tiny AudioLDM 2 fixture.
fn studio(library: &Path) -> Harness<'static, FoleyApp> {
    let model = common::model_dir("audioldm2-tiny").display().to_string();
    common::studio(Some(model), library)
}

/// Steps the UI until `done` holds, failing after a minute.
/// Focuses the prompt field and types into it, as a user would.
fn type_prompt(harness: &mut Harness<'static, FoleyApp>, text: &str) {
    harness.get_by_label("Prompt").focus();
    harness.run_steps(1);
    harness.get_by_label("Prompt").type_text(text);
    harness.run_steps(1);
    assert_eq!(harness.state().settings.prompt, text);
}

/// Clicks Generate with the settings as they are and waits for the one clip it makes.
fn generate_one(harness: &mut Harness<'static, FoleyApp>) {
    harness.run_steps(2);
    harness.get_by_label("Generate").click();
    common::wait_until(harness, "the clip and its save", |app| {
        app.session.results.len() == 1 && !app.is_busy() && app.disk_is_idle()
    });
}

/// Drags across the first clip's spectrogram from share `from` to share `to` of its width, as
/// a user selects a range; returns the selected seconds.
fn select_on_spectrogram(
    harness: &mut Harness<'static, FoleyApp>,
    from: f32,
    to: f32,
) -> (f64, f64) {
    let rect = harness.get_by_label("Spectrogram").rect();
    let from = rect.left_center() + egui::vec2(rect.width() * from, 0.0);
    let to = rect.left_center() + egui::vec2(rect.width() * to, 0.0);
    harness.drag_at(from);
    harness.run_steps(1);
    harness.hover_at(to);
    harness.run_steps(1);
    harness.drop_at(to);
    harness.run_steps(2);
    harness.state().session.results[0]
        .selection
        .expect("a selection")
}

/// Clicks Generate for a 900-step run, long enough to act on while it goes, and checks it runs.
fn start_a_long_run(harness: &mut Harness<'static, FoleyApp>) {
    harness.state_mut().settings.steps = 900;
    harness.run_steps(2);
    harness.get_by_label("Generate").click();
    harness.run_steps(2);
    assert!(harness.state().is_busy());
}

fn model_ready(app: &FoleyApp) -> bool {
    matches!(
        app.session.model_state,
        foley::gui::ModelState::Ready { .. }
    )
}

/// A studio on a fresh library with the tiny AudioLDM 2 loaded and `prompt` typed, set to
/// 2 steps and a fixed seed.
fn ready(prompt: &str) -> (tempfile::TempDir, Harness<'static, FoleyApp>) {
    let library = tempfile::tempdir().unwrap();
    let mut harness = studio(library.path());
    common::wait_until(&mut harness, "the model", model_ready);
    type_prompt(&mut harness, prompt);
    {
        let settings = &mut harness.state_mut().settings;
        settings.steps = 2;
        settings.random_seed = false;
    }
    (library, harness)
}

#[test]
fn generate_a_clip_and_find_it_after_a_restart() {
    let (library, mut harness) = ready("glass shattering on concrete");
    harness.state_mut().settings.steps = 3;
    harness.state_mut().settings.random_seed = false;
    generate_one(&mut harness);
    let app = harness.state();
    assert!(
        app.session.messages.is_empty(),
        "{:?}",
        app.session.messages
    );
    assert_eq!(
        app.session.results[0].record.prompt,
        "glass shattering on concrete"
    );
    assert_eq!(app.session.results[0].record.steps, 3);
    assert_eq!(
        app.session.last_progress,
        Some((3, 3)),
        "progress reached N/N"
    );
    assert!(app.session.results[0].mel.is_some());
    harness.get_by_label("Spectrogram");
    harness.get_by_label("Waveform");
    harness.get_by_label("Time ruler");
    drop(harness);

    let mut reopened = studio(library.path());
    common::wait_until(&mut reopened, "the model", model_ready);
    let records = reopened.state().library().unwrap().records().to_vec();
    assert_eq!(records.len(), 1);
    reopened
        .get_by_label_contains("glass shattering on concrete")
        .click();
    common::settle(&mut reopened);
    let opened = reopened
        .state()
        .session
        .opened
        .as_ref()
        .expect("clip opened from the library");
    assert!(
        opened.mel.is_some(),
        "the spectrogram is stored with the clip"
    );
}

#[test]
fn cancel_stops_a_run() {
    let (_library, mut harness) = ready("rain");
    start_a_long_run(&mut harness);
    harness.get_by_label("Cancel").click();
    common::wait_until(&mut harness, "the cancel", |app| !app.is_busy());
    assert!(harness.state().session.results.is_empty());
    // Nothing reaches the library either, once the disk thread has done all it was asked.
    common::settle(&mut harness);
    assert!(harness.state().library().unwrap().records().is_empty());
}

#[test]
fn variations_use_consecutive_seeds() {
    let (_library, mut harness) = ready("door creak");
    {
        let settings = &mut harness.state_mut().settings;
        settings.steps = 2;
        settings.variations = 4;
        settings.random_seed = false;
        settings.seed = 100;
    }
    harness.run_steps(2);
    harness.get_by_label("Generate").click();
    common::wait_until(&mut harness, "four clips", |app| {
        app.session.results.len() == 4 && !app.is_busy()
    });
    let seeds: Vec<u64> = harness
        .state()
        .session
        .results
        .iter()
        .map(|clip| clip.record.seed)
        .collect();
    assert_eq!(seeds, vec![100, 101, 102, 103]);
    // The clips reach the board before the disk thread has saved the last of them.
    common::settle(&mut harness);
    assert_eq!(harness.state().library().unwrap().records().len(), 4);
    // Without an audio device, A/B switching explains itself instead of failing.
    harness.key_press(eframe::egui::Key::Num2);
    harness.run_steps(2);
    assert!(
        harness
            .state()
            .session
            .messages
            .iter()
            .any(|m| m.contains("playback is unavailable"))
    );
}

/// A Stable Audio 3 clip stays stereo all the way: the view draws both channels, the library
/// keeps a stereo WAV, the export writes one, and the clip reopens as stereo after a restart.
#[test]
fn stable_audio_3_clips_stay_stereo() {
    let library = tempfile::tempdir().unwrap();
    let exports = tempfile::tempdir().unwrap();
    let model = common::model_dir("sa3-tiny").display().to_string();
    let mut harness = common::studio(Some(model.clone()), library.path());
    common::wait_until(&mut harness, "the model", model_ready);
    type_prompt(&mut harness, "rain on a tin roof");
    {
        let settings = &mut harness.state_mut().settings;
        settings.steps = 2;
        settings.duration = 0.3;
        settings.random_seed = false;
        settings.export_dir = exports.path().to_path_buf();
        settings.export.format = "pcm24".into();
        settings.export.sample_rate = Some(48_000);
    }
    generate_one(&mut harness);
    let app = harness.state();
    assert!(
        app.session.messages.is_empty(),
        "{:?}",
        app.session.messages
    );
    let clip = &app.session.results[0];
    assert_eq!(clip.record.channels, 2);
    assert_eq!(clip.record.sample_rate, 44_100);
    assert_eq!(clip.record.scheduler, "flow-match-ping-pong");
    assert!((clip.seconds() - 0.3).abs() < 1e-3, "{} s", clip.seconds());
    harness.get_by_label("Waveform");
    let scheduler = app.settings.scheduler.clone();
    let stored = library
        .path()
        .join(app.session.results[0].record.wav_name());
    let spec = hound::WavReader::open(&stored).unwrap().spec();
    assert_eq!((spec.channels, spec.sample_rate), (2, 44_100));

    harness.get_by_label("Export").click();
    common::settle(&mut harness);
    harness.run_steps(2);
    let exported = harness
        .state()
        .session
        .last_export
        .clone()
        .expect("an exported file");
    let reader = hound::WavReader::open(&exported).unwrap();
    assert_eq!(
        (reader.spec().channels, reader.spec().sample_rate),
        (2, 48_000)
    );
    assert_eq!(
        reader.len() as usize,
        2 * (0.3f64 * 48_000.0).ceil() as usize
    );
    // Its settings come back, but SA3's own sampler is not put into the scheduler picker.
    harness.get_by_label("Use these settings").click();
    harness.run_steps(2);
    assert_eq!(harness.state().settings.scheduler, scheduler);
    assert_eq!(harness.state().settings.steps, 2);
    drop(harness);

    let mut reopened = common::studio(Some(model), library.path());
    common::wait_until(&mut reopened, "the model", model_ready);
    reopened.get_by_label_contains("rain on a tin roof").click();
    common::settle(&mut reopened);
    reopened.run_steps(3);
    let opened = reopened
        .state()
        .session
        .opened
        .as_ref()
        .expect("clip opened from the library");
    assert_eq!(opened.channels(), 2);
    assert!((opened.seconds() - 0.3).abs() < 1e-3);
}

/// The card reads the clip's EBU R128 loudness, and an export with a loudness target chosen in
/// the export options meets it (or stops at the true-peak ceiling) and fills the BWF fields.
#[test]
fn loudness_is_shown_and_exports_meet_the_target() {
    use foley::audio::loudness::measure;
    let exports = tempfile::tempdir().unwrap();
    let (_library, mut harness) = ready("engine idle");
    {
        let settings = &mut harness.state_mut().settings;
        settings.steps = 2;
        // Long enough for the 400 ms blocks integrated loudness is gated on.
        settings.duration = 1.5;
        settings.random_seed = false;
        settings.export_dir = exports.path().to_path_buf();
        settings.export.format = "f32".into();
        settings.export.sample_rate = None;
    }
    generate_one(&mut harness);
    let clip = &harness.state().session.results[0];
    let loudness = measure(&clip.samples, 1, clip.record.sample_rate).unwrap();
    let expected = foley::gui::views::clip::loudness_text(&loudness).expect("a loud clip");
    assert_eq!(clip.loudness, Some(loudness));
    harness.get_by_label(&expected);

    harness.get_by_label("Export options").click();
    harness.run_steps(2);
    harness.get_by_label("Loudness target").click();
    harness.run_steps(2);
    harness.get_by_label("-16 LUFS").click();
    harness.run_steps(2);
    assert_eq!(
        harness.state().settings.export.loudness_target_lufs,
        Some(-16.0)
    );
    harness.get_by_label("True-peak ceiling (dBTP)");
    harness.get_by_label("Export").click();
    common::settle(&mut harness);
    harness.run_steps(2);
    let path = harness
        .state()
        .session
        .last_export
        .clone()
        .expect("an exported file");
    let (samples, rate) = foley::audio::wav::read_wav(&path).unwrap();
    let written = measure(&samples, 1, rate).unwrap();
    let integrated = written.integrated_lufs.unwrap();
    let peak = written.true_peak_dbtp.unwrap();
    assert!(peak <= -0.95, "true peak {peak} dBTP over the -1 ceiling");
    assert!(
        (integrated + 16.0).abs() <= 0.1 || (peak + 1.0).abs() <= 0.05,
        "{integrated} LUFS, {peak} dBTP"
    );
    let fields = foley::audio::wav::read_wav_metadata(&path)
        .unwrap()
        .loudness
        .expect("BWF loudness fields");
    assert!((f64::from(fields.loudness_value) / 100.0 - integrated).abs() <= 0.01);
}

#[test]
fn export_writes_a_tagged_wav_for_the_daw() {
    let exports = tempfile::tempdir().unwrap();
    let (_library, mut harness) = ready("thunder rumble");
    {
        let settings = &mut harness.state_mut().settings;
        settings.steps = 2;
        settings.random_seed = false;
        settings.seed = 9;
        settings.export_dir = exports.path().to_path_buf();
        settings.export.format = "pcm16".into();
        settings.export.sample_rate = Some(44_100);
    }
    generate_one(&mut harness);
    harness.get_by_label("Export").click();
    common::settle(&mut harness);
    harness.run_steps(2);
    let path = harness
        .state()
        .session
        .last_export
        .clone()
        .expect("an exported file");
    assert!(path.starts_with(exports.path()));
    assert!(
        path.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("thunder-rumble_audioldm2-tiny_s9")
    );
    let reader = hound::WavReader::open(&path).unwrap();
    assert_eq!(reader.spec().sample_rate, 44_100);
    assert_eq!(reader.spec().bits_per_sample, 16);
    let metadata = foley::audio::wav::read_wav_metadata(&path).unwrap();
    assert!(
        metadata.description.starts_with("thunder rumble | seed 9"),
        "{metadata:?}"
    );
    assert!(metadata.comment.contains("steps: 2"), "{metadata:?}");
    harness.get_by_label("Copy path");
    harness.get_by_label("Show in folder");
    // Dragging the export out: the test harness has no native window, so the studio explains
    // that dragging out is unavailable instead of failing silently (tests/drag_out.rs drives
    // the X11 drag itself).
    let handle = harness.get_by_label("Drag to DAW").rect().center();
    harness.drag_at(handle);
    harness.run_steps(1);
    harness.hover_at(handle + egui::vec2(40.0, -300.0));
    harness.run_steps(2);
    harness.drop_at(handle + egui::vec2(40.0, -300.0));
    common::settle(&mut harness);
    harness.run_steps(1);
    assert!(
        harness
            .state()
            .session
            .messages
            .iter()
            .any(|message| message.contains("not available here")),
        "{:?}",
        harness.state().session.messages
    );
    harness.get_by_label("Save picture").click();
    common::settle(&mut harness);
    harness.run_steps(2);
    let picture = harness
        .state()
        .session
        .last_picture
        .clone()
        .expect("a saved picture");
    // The bar still offers the WAV to a DAW, never the picture.
    assert_eq!(
        harness.state().session.last_export.as_deref(),
        Some(path.as_path())
    );
    assert_eq!(picture.extension().unwrap(), "png");
    assert_eq!(&std::fs::read(&picture).unwrap()[1..4], b"PNG");
}

#[test]
fn an_unavailable_device_is_explained_not_fatal() {
    let library = tempfile::tempdir().unwrap();
    let mut harness = studio(library.path());
    common::wait_until(&mut harness, "the model", model_ready);
    harness.state_mut().settings.device = "cuda".into();
    harness.get_by_label("Load").click();
    common::wait_until(&mut harness, "the load to fail", |app| {
        !app.session.messages.is_empty()
    });
    let messages = harness.state().session.messages.join("\n");
    assert!(messages.contains("CUDA"), "{messages}");
    // The model that was working stays loaded.
    assert!(model_ready(harness.state()), "{messages}");
    assert!(messages.contains("still using"), "{messages}");
    // Back on the CPU the studio works again.
    harness.state_mut().settings.device = "cpu".into();
    harness.get_by_label("Load").click();
    harness.run_steps(1);
    assert!(!model_ready(harness.state()), "Load starts loading");
    common::wait_until(&mut harness, "the model", model_ready);
}

/// The transport keys: arrows, Home and End move the selection over the clips of a run (and,
/// with auto-audition, try to play it: there is no audio device here, so the studio says so),
/// L toggles looping, F1 opens the shortcuts list and Esc closes it; keys typed into the prompt
/// stay text.
#[test]
fn transport_keys_move_between_clips_and_open_the_shortcuts() {
    let (_library, mut harness) = ready("bells");
    {
        let settings = &mut harness.state_mut().settings;
        settings.steps = 2;
        settings.variations = 3;
        settings.random_seed = false;
        settings.loop_playback = false;
    }
    harness.run_steps(2);
    harness.get_by_label("Generate").click();
    common::wait_until(&mut harness, "three clips", |app| {
        app.session.results.len() == 3 && !app.is_busy()
    });
    // Typing into the prompt: "l" is a letter there, not the loop key.
    harness.get_by_label("Prompt").focus();
    harness.run_steps(1);
    harness.get_by_label("Prompt").type_text(" l");
    harness.run_steps(2);
    assert!(!harness.state().settings.loop_playback);
    assert_eq!(harness.state().settings.prompt, "bells l");
    // Leave the text field, then drive the transport.
    harness.key_press(egui::Key::Escape);
    harness.run_steps(1);
    harness.state_mut().session.messages.clear();
    assert_eq!(harness.state().session.selected, Some(0));
    for (key, expected) in [
        (egui::Key::ArrowRight, 1),
        (egui::Key::ArrowDown, 2),
        (egui::Key::ArrowRight, 2),
        (egui::Key::Home, 0),
        (egui::Key::End, 2),
        (egui::Key::ArrowLeft, 1),
        (egui::Key::Num1, 0),
    ] {
        harness.key_press(key);
        harness.run_steps(1);
        assert_eq!(harness.state().session.selected, Some(expected), "{key:?}");
    }
    assert!(
        harness
            .state()
            .session
            .messages
            .iter()
            .any(|message| message.contains("playback is unavailable")),
        "auto-audition tried to play: {:?}",
        harness.state().session.messages
    );
    harness.key_press(egui::Key::L);
    harness.run_steps(1);
    assert!(harness.state().settings.loop_playback);
    harness.key_press(egui::Key::F1);
    harness.run_steps(2);
    assert!(harness.state().session.show_shortcuts);
    harness.get_by_label("Keyboard shortcuts");
    harness.get_by_label("Play or stop the selected clip");
    harness.key_press(egui::Key::Escape);
    harness.run_steps(2);
    assert!(!harness.state().session.show_shortcuts);
    assert!(harness.query_by_label("Keyboard shortcuts").is_none());
}

/// Compare across runs: a second Generate adds to the board instead of replacing it, a clip
/// from the library can be pinned beside them, keys 1–9 switch over the whole board, and clips
/// come off it (one, or all) while staying in the library.
#[test]
fn the_compare_board_keeps_runs_and_pinned_library_clips() {
    let (_library, mut harness) = ready("door creak");
    {
        let settings = &mut harness.state_mut().settings;
        settings.steps = 2;
        settings.random_seed = false;
        settings.seed = 5;
    }
    generate_one(&mut harness);
    harness.state_mut().settings.seed = 6;
    harness.run_steps(2);
    harness.get_by_label("Generate").click();
    common::wait_until(&mut harness, "the second run", |app| {
        app.session.results.len() == 2 && !app.is_busy()
    });
    let seeds: Vec<u64> = harness
        .state()
        .session
        .results
        .iter()
        .map(|clip| clip.record.seed)
        .collect();
    assert_eq!(seeds, [5, 6], "both runs on the board");
    // Each card says what made it.
    harness.get_by_label_contains("audioldm2-tiny · seed 5 · 2 steps");

    // Take the first clip off the board, then pin it back from the library.
    harness
        .get_all_by_label("Remove from board")
        .next()
        .unwrap()
        .click();
    common::settle(&mut harness);
    harness.run_steps(2);
    assert_eq!(harness.state().session.results.len(), 1);
    assert_eq!(
        harness.state().library().unwrap().records().len(),
        2,
        "still in the library"
    );
    harness.get_by_label_contains("door creak · s5").click();
    common::settle(&mut harness);
    harness.run_steps(3);
    harness.get_by_label("Pin to board").click();
    harness.run_steps(2);
    let seeds: Vec<u64> = harness
        .state()
        .session
        .results
        .iter()
        .map(|clip| clip.record.seed)
        .collect();
    assert_eq!(seeds, [6, 5]);
    assert!(harness.state().session.opened.is_none());
    assert_eq!(
        harness.state().session.selected,
        Some(1),
        "the pinned clip is selected"
    );
    // A/B over the board: key 1 is the first card whatever run it came from.
    harness.key_press(egui::Key::Num1);
    harness.run_steps(1);
    assert_eq!(harness.state().session.selected, Some(0));

    harness.get_by_label("Clear board").click();
    harness.run_steps(2);
    assert!(harness.state().session.results.is_empty());
    assert_eq!(harness.state().library().unwrap().records().len(), 2);
}

/// Honest controls: the labels give the model's real defaults, a typed seed is the one used
/// (typing turns "New seed every run" off, and the line below says what the next run does),
/// and "Use these settings" brings back the clip's model as well.
#[test]
fn controls_say_what_they_will_do() {
    let library = tempfile::tempdir().unwrap();
    let mut harness = studio(library.path());
    common::wait_until(&mut harness, "the model", model_ready);
    // AudioLDM 2's diffusers defaults: 200 steps, guidance 3.5.
    harness.get_by_label("Steps (0 = 200)");
    harness.get_by_label("Guidance (0 = 3.5)");
    harness.get_by_label_contains("Duration (s; 0 = ");

    harness.state_mut().settings.random_seed = true;
    harness.run_steps(2);
    harness.get_by_label("Next run: a new random seed");
    harness.get_by_label("Seed").click();
    harness.run_steps(1);
    harness.get_by_label("Seed").type_text("1234");
    harness.key_press(egui::Key::Enter);
    harness.run_steps(2);
    assert!(
        !harness.state().settings.random_seed,
        "a typed seed is used"
    );
    assert_eq!(harness.state().settings.seed, 1234);
    harness.get_by_label("Next run: seed 1234");

    // The token limit is told while typing.
    let long = "wind ".repeat(120);
    harness.state_mut().settings.prompt = long.trim().to_string();
    harness.run_steps(2);
    harness.get_by_label_contains("tokens of the prompt; the rest is ignored");
    harness.state_mut().settings.prompt.clear();
    harness.run_steps(2);
    assert!(
        harness
            .query_by_label_contains("the rest is ignored")
            .is_none()
    );
    type_prompt(&mut harness, "wind");
    harness.state_mut().settings.steps = 2;
    generate_one(&mut harness);
    assert_eq!(harness.state().session.results[0].record.seed, 1234);
    let first = common::model_dir("audioldm2-tiny").display().to_string();
    // Another model, then back to the clip's settings: its model comes back too.
    harness.state_mut().settings.model = common::model_dir("musicldm-tiny").display().to_string();
    harness.get_by_label("Load").click();
    harness.run_steps(1);
    common::wait_until(
        &mut harness,
        "the other model",
        |app| matches!(&app.session.model_state, foley::gui::ModelState::Ready { family, .. } if *family == "MusicLDM"),
    );
    harness.get_by_label("Use these settings").click();
    harness.run_steps(1);
    common::wait_until(
        &mut harness,
        "the clip's model",
        |app| matches!(&app.session.model_state, foley::gui::ModelState::Ready { model, .. } if *model == first),
    );
    assert_eq!(harness.state().settings.model, first);
}

/// Dragging a clip's waveform exports it with the current export settings and drags that file
/// (the test harness has no native window, so the studio says dragging out is unavailable, as
/// for the bar's handle); a file deleted since its export is no longer offered.
#[test]
fn dragging_a_clip_exports_it_and_a_stale_file_is_not_offered() {
    let exports = tempfile::tempdir().unwrap();
    let (_library, mut harness) = ready("metal clang");
    {
        let settings = &mut harness.state_mut().settings;
        settings.steps = 2;
        settings.random_seed = false;
        settings.export_dir = exports.path().to_path_buf();
        settings.export.format = "pcm16".into();
    }
    generate_one(&mut harness);
    assert!(harness.state().session.last_export.is_none());
    let handle = harness.get_by_label("Waveform").rect().center();
    harness.drag_at(handle);
    harness.run_steps(1);
    harness.hover_at(handle + egui::vec2(60.0, -200.0));
    // The export is written while the button is still held, so the drag goes on with it.
    common::settle(&mut harness);
    harness.drop_at(handle + egui::vec2(60.0, -200.0));
    common::settle(&mut harness);
    harness.run_steps(2);
    let exported = harness
        .state()
        .session
        .last_export
        .clone()
        .expect("the drag exported the clip");
    assert!(exported.starts_with(exports.path()));
    assert_eq!(exported.extension().unwrap(), "wav");
    assert_eq!(
        hound::WavReader::open(&exported)
            .unwrap()
            .spec()
            .bits_per_sample,
        16
    );
    assert!(
        harness
            .state()
            .session
            .messages
            .iter()
            .any(|message| message.contains("not available here")),
        "{:?}",
        harness.state().session.messages
    );
    harness.get_by_label("Drag to DAW");

    // Dragging it out again with the same options drags the same file, not a second copy.
    harness.drag_at(handle);
    harness.run_steps(1);
    harness.hover_at(handle + egui::vec2(60.0, -200.0));
    common::settle(&mut harness);
    harness.drop_at(handle + egui::vec2(60.0, -200.0));
    common::settle(&mut harness);
    assert_eq!(
        harness.state().session.last_export.as_ref(),
        Some(&exported)
    );
    let written = std::fs::read_dir(exports.path()).unwrap().count();
    assert_eq!(written, 1, "one file for two drags");

    std::fs::remove_file(&exported).unwrap();
    harness.run_steps(2);
    assert!(
        harness.query_by_label("Drag to DAW").is_none(),
        "a deleted file is not offered"
    );
    harness.get_by_label_contains("is no longer there");
}

/// Delete moves a clip to the library's trash with Undo at hand; Undo brings it back (and opens
/// it), and Empty trash makes a delete final.
#[test]
fn delete_goes_to_the_trash_and_undo_brings_it_back() {
    let (library, mut harness) = ready("owl hoot");
    harness.state_mut().settings.steps = 2;
    generate_one(&mut harness);
    let id = harness.state().session.results[0].record.id.clone();
    harness.get_by_label_contains("owl hoot · s").click();
    common::settle(&mut harness);
    harness.run_steps(3);
    // The board's card and the opened view both offer it.
    harness.get_all_by_label("Delete").next().unwrap().click();
    common::settle(&mut harness);
    harness.run_steps(2);
    assert!(harness.state().library().unwrap().records().is_empty());
    assert!(
        harness.state().session.results.is_empty(),
        "off the board too"
    );
    assert!(
        library
            .path()
            .join("trash")
            .join(format!("{id}.wav"))
            .exists()
    );
    harness.get_by_label_contains("to the library's trash");

    harness.get_by_label("Undo").click();
    common::settle(&mut harness);
    harness.run_steps(3);
    assert_eq!(harness.state().library().unwrap().records().len(), 1);
    assert_eq!(
        harness.state().session.opened.as_ref().unwrap().record.id,
        id
    );
    assert!(harness.state().session.last_deleted.is_none());

    harness.get_by_label("Delete").click();
    common::settle(&mut harness);
    harness.run_steps(2);
    harness.get_by_label("Empty trash").click();
    common::settle(&mut harness);
    harness.run_steps(2);
    assert!(
        harness.query_by_label("Undo").is_none(),
        "nothing left to undo"
    );
    assert!(
        !library
            .path()
            .join("trash")
            .join(format!("{id}.wav"))
            .exists()
    );
}

/// Rating, tags and search from the studio: a clip rated and tagged on its card is found by
/// `#tag` and `rating:N` in the library's search, and its prompt comes back from the history.
#[test]
fn rate_tag_search_and_reuse_a_prompt() {
    let (library, mut harness) = ready("wooden door slam");
    harness.state_mut().settings.steps = 2;
    generate_one(&mut harness);
    let id = harness.state().session.results[0].record.id.clone();

    harness.get_by_label("Tags").focus();
    harness.run_steps(1);
    harness.get_by_label("Tags").type_text("Door, wood");
    harness.run_steps(1);
    harness.key_press(egui::Key::Enter);
    common::settle(&mut harness);
    harness.run_steps(2);
    for _ in 0..4 {
        harness
            .get_by_role_and_label(egui::accesskit::Role::Slider, "Rating")
            .focus();
        harness.run_steps(1);
        harness.key_press(egui::Key::ArrowRight);
        common::settle(&mut harness);
        harness.run_steps(1);
    }
    harness.run_steps(2);
    let saved = harness
        .state()
        .library()
        .unwrap()
        .records()
        .iter()
        .find(|record| record.id == id)
        .cloned()
        .unwrap();
    assert_eq!(saved.tags, ["door", "wood"]);
    assert_eq!(saved.rating, 4);
    let sidecar = common::read_json(&library.path().join(format!("{id}.json")));
    assert_eq!(sidecar["rating"], 4);

    for (query, found) in [
        ("#door", true),
        ("rating:4", true),
        ("rating:5", false),
        ("#metal", false),
    ] {
        harness.state_mut().session.messages.clear();
        harness.get_by_label("Search").focus();
        harness.run_steps(1);
        harness.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::A);
        harness.get_by_label("Search").type_text(query);
        harness.run_steps(2);
        let listed = harness
            .query_by_label_contains("wooden door slam · s")
            .is_some();
        assert_eq!(listed, found, "search {query}");
    }

    harness.state_mut().settings.prompt.clear();
    harness.run_steps(1);
    harness.get_by_label("Prompt history").click();
    harness.run_steps(2);
    // The popup's entry; the card's title and the library list carry the same words.
    let entry = harness
        .get_all_by_label("wooden door slam")
        .find(|node| node.accesskit_node().role() != egui::accesskit::Role::Label)
        .expect("the history entry");
    entry.click();
    harness.run_steps(2);
    assert_eq!(harness.state().settings.prompt, "wooden door slam");
}

/// UCS file names from the export options: CatID, FXName from the prompt, creator and source.
#[test]
fn exports_can_be_named_the_ucs_way() {
    let exports = tempfile::tempdir().unwrap();
    let (_library, mut harness) = ready("creaky wooden door");
    {
        let settings = &mut harness.state_mut().settings;
        settings.steps = 2;
        settings.random_seed = false;
        settings.seed = 3;
        settings.export_dir = exports.path().to_path_buf();
    }
    generate_one(&mut harness);
    harness.get_by_label("Export options").click();
    harness.run_steps(2);
    harness.get_by_label("File names").click();
    harness.run_steps(2);
    harness.get_by_label("UCS").click();
    harness.run_steps(2);
    for (field, text) in [
        ("UCS CatID", "DOORWood"),
        ("Creator ID", "AB"),
        ("Source ID", "Demo"),
    ] {
        harness.get_by_label(field).focus();
        harness.run_steps(1);
        harness.get_by_label(field).type_text(text);
        harness.run_steps(1);
    }
    harness.key_press(egui::Key::Escape);
    harness.run_steps(1);
    harness.get_by_label("Export").click();
    common::settle(&mut harness);
    harness.run_steps(2);
    let path = harness
        .state()
        .session
        .last_export
        .clone()
        .expect("an exported file");
    assert_eq!(
        path.file_name().unwrap(),
        "DOORWood_Creaky Wooden Door_AB_Demo_s3.wav"
    );
}

/// Editing on the clip: drag a range on the spectrogram, regenerate it (inpainting), extend the
/// clip, move it towards the prompt; each result joins the board with its task recorded, and a
/// task the model cannot do says why.
#[test]
fn select_and_regenerate_extend_and_restyle_on_the_board() {
    let (_library, mut harness) = ready("hammer on metal");
    {
        let settings = &mut harness.state_mut().settings;
        settings.steps = 2;
        settings.duration = 1.0;
        settings.random_seed = false;
        settings.edit_seconds = 0.5;
    }
    generate_one(&mut harness);
    let (start, end) = select_on_spectrogram(&mut harness, 0.2, 0.6);
    assert!(
        (start - 0.2).abs() < 0.05 && (end - 0.6).abs() < 0.05,
        "{start}–{end}"
    );

    harness.get_by_label("Regenerate selection").click();
    common::wait_until(&mut harness, "the inpainted clip", |app| {
        app.session.results.len() == 2 && !app.is_busy()
    });
    let task = harness.state().session.results[1]
        .record
        .task
        .clone()
        .expect("an edit's task");
    assert_eq!(task["name"], "inpaint");
    assert!((task["regions"]["time"][0][0].as_f64().unwrap() - start).abs() < 1e-9);

    harness.get_all_by_label("Extend").next().unwrap().click();
    common::wait_until(&mut harness, "the extended clip", |app| {
        app.session.results.len() == 3 && !app.is_busy()
    });
    let extended = &harness.state().session.results[2];
    assert_eq!(extended.record.task.as_ref().unwrap()["name"], "continue");
    assert!(
        (extended.seconds() - 1.5).abs() < 0.05,
        "{} s",
        extended.seconds()
    );

    harness
        .get_all_by_label("Audio-to-audio")
        .next()
        .unwrap()
        .click();
    common::wait_until(&mut harness, "the restyled clip", |app| {
        app.session.results.len() == 4 && !app.is_busy()
    });
    let task = harness.state().session.results[3]
        .record
        .task
        .clone()
        .unwrap();
    assert_eq!(
        (task["name"].as_str(), task["strength"].as_f64()),
        (Some("audio_to_audio"), Some(0.5))
    );

    // AudioLDM 2 cannot make variations of a sound: the studio says so and carries on.
    harness.state_mut().session.messages.clear();
    harness
        .get_all_by_label("Variation of this")
        .next()
        .unwrap()
        .click();
    harness.run_steps(1);
    common::wait_until(&mut harness, "the refusal", |app| !app.is_busy());
    assert!(
        harness
            .state()
            .session
            .messages
            .iter()
            .any(|message| message.contains("MusicLDM")),
        "{:?}",
        harness.state().session.messages
    );
    assert_eq!(harness.state().session.results.len(), 4);
}

/// A file dropped on the window, as the native integration hands it over.
#[derive(Debug)]
struct DroppedWav(std::path::PathBuf);

impl egui::DroppedFile for DroppedWav {
    fn path(&self) -> &Path {
        &self.0
    }
    fn bytes(&self) -> Result<Vec<u8>, String> {
        std::fs::read(&self.0).map_err(|error| error.to_string())
    }
}

/// Drops `path` on the window, as a file manager does, and lets the studio take it in.
fn drop_file(harness: &mut Harness<'static, FoleyApp>, path: PathBuf) {
    harness
        .input_mut()
        .dropped_files
        .push(std::sync::Arc::new(DroppedWav(path)));
    common::settle(harness);
}

/// A WAV dropped on the window opens as a clip that can be played, edited (its audio-to-audio
/// joins the board) and pinned; a file that is not audio says so.
#[test]
fn a_dropped_wav_opens_for_editing() {
    let library = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let wav = files.path().join("my take.wav");
    let tone: Vec<f32> = (0..16_000).map(|n| 0.3 * (n as f32 * 0.06).sin()).collect();
    foley::audio::wav::write_wav(&wav, &tone, 16_000, foley::audio::wav::WavFormat::Pcm16).unwrap();
    let mut harness = studio(library.path());
    common::wait_until(&mut harness, "the model", model_ready);
    type_prompt(&mut harness, "a cello");
    harness.state_mut().settings.steps = 2;
    drop_file(&mut harness, wav);
    let opened = harness
        .state()
        .session
        .opened
        .as_ref()
        .expect("the dropped file is open");
    assert_eq!(opened.record.prompt, "my take");
    assert!((opened.seconds() - 1.0).abs() < 1e-6);
    harness
        .get_all_by_label("Audio-to-audio")
        .next()
        .unwrap()
        .click();
    common::wait_until(&mut harness, "the edit", |app| {
        app.session.results.len() == 1 && !app.is_busy()
    });
    let task = harness.state().session.results[0]
        .record
        .task
        .clone()
        .unwrap();
    assert_eq!(task["input"], "my take");

    let text = files.path().join("notes.wav");
    std::fs::write(&text, b"not a wav").unwrap();
    drop_file(&mut harness, text);
    assert!(
        harness
            .state()
            .session
            .messages
            .iter()
            .any(|message| message.contains("notes.wav")),
        "{:?}",
        harness.state().session.messages
    );
}

/// Zoom and scroll along a clip: the buttons and Ctrl+wheel (a zoom event) narrow the seconds
/// shown around the same point, a sideways scroll moves along the clip and stops at its end,
/// a selection can be zoomed to, and Show all comes back.
#[test]
fn zoom_and_scroll_along_a_clip() {
    let (_library, mut harness) = ready("thunder roll");
    generate_one(&mut harness);
    let window = |harness: &Harness<'static, FoleyApp>| harness.state().session.results[0].window;
    let full = window(&harness);
    assert!(full.is_full() && full.span() > 0.0);
    assert!(harness.query_by_label("Show all").is_none());

    harness.get_by_label("Zoom in").click();
    harness.run_steps(2);
    let zoomed = window(&harness);
    assert!(
        (zoomed.span() - full.span() / 2.0).abs() < 1e-9,
        "{zoomed:?}"
    );
    assert!(
        (zoomed.start + zoomed.end - full.span()).abs() < 1e-9,
        "kept centred"
    );
    harness.get_by_label("Scroll");

    // Sideways scroll over the waveform moves later, never past the end.
    let waveform = harness.get_by_label("Waveform").rect().center();
    harness.hover_at(waveform);
    for _ in 0..5 {
        harness.event(egui::Event::MouseWheel {
            unit: egui::MouseWheelUnit::Point,
            delta: egui::vec2(-400.0, 0.0),
            phase: egui::TouchPhase::Move,
            source: egui::MouseWheelSource::Unknown,
            modifiers: egui::Modifiers::NONE,
        });
        harness.run_steps(3);
    }
    let scrolled = window(&harness);
    assert!(scrolled.start > zoomed.start, "{scrolled:?}");
    assert!(
        (scrolled.end - full.end).abs() < 1e-9,
        "stopped at the end: {scrolled:?}"
    );
    assert!((scrolled.span() - zoomed.span()).abs() < 1e-9);

    // Ctrl+wheel zooms in around the pointer.
    harness.event(egui::Event::Zoom(1.25));
    harness.run_steps(2);
    let closer = window(&harness);
    assert!(
        (closer.span() - zoomed.span() / 1.25).abs() < 1e-9,
        "{closer:?} from {zoomed:?}"
    );

    harness.get_by_label("Show all").click();
    harness.run_steps(2);
    assert!(window(&harness).is_full());

    // A selection dragged on the spectrogram can be zoomed to.
    let (start, end) = select_on_spectrogram(&mut harness, 0.2, 0.7);
    harness.get_by_label("Zoom to selection").click();
    harness.run_steps(2);
    let shown = window(&harness);
    assert!(
        (shown.start - start).abs() < 1e-6 && (shown.end - end).abs() < 1e-6,
        "{shown:?}"
    );
}

/// While a run goes, the left panel shows the partly denoised clip ("Step preview"); a new run
/// starts without the old one's, and with the preview off none comes.
#[test]
fn a_run_shows_its_step_preview() {
    let (_library, mut harness) = ready("distant thunder");
    start_a_long_run(&mut harness);
    common::wait_until(&mut harness, "a preview", |app| {
        app.is_busy() && app.session.preview.is_some()
    });
    harness.run_steps(1);
    harness.get_by_role_and_label(egui::accesskit::Role::Image, "Step preview");
    harness.get_by_label_contains("preview at step");
    harness.get_by_label("Cancel").click();
    common::wait_until(&mut harness, "the cancel", |app| !app.is_busy());

    harness.get_by_label("Show step preview").click();
    harness.run_steps(1);
    assert!(!harness.state().settings.step_preview);
    harness.state_mut().settings.steps = 16;
    harness.get_by_label("Generate").click();
    common::wait_until(&mut harness, "the clip", |app| {
        !app.is_busy() && !app.session.results.is_empty()
    });
    assert!(harness.state().session.preview.is_none());
}

/// Messages say a thing once however often it happens, and Enter in the Model field loads the
/// model it names, as the Load button does.
#[test]
fn a_repeated_message_is_said_once_and_enter_loads_the_model() {
    let library = tempfile::tempdir().unwrap();
    let mut harness = studio(library.path());
    common::wait_until(&mut harness, "the model", model_ready);
    for _ in 0..3 {
        harness.get_by_label("Generate").click();
        harness.run_steps(1);
    }
    let said = |harness: &Harness<'static, FoleyApp>| {
        harness
            .state()
            .session
            .messages
            .iter()
            .filter(|message| message.contains("type a prompt first"))
            .count()
    };
    assert_eq!(said(&harness), 1);

    let other = common::model_dir("musicldm-tiny").display().to_string();
    harness.get_by_label("Model").focus();
    harness.run_steps(1);
    harness.state_mut().settings.model = other.clone();
    harness.run_steps(1);
    harness.key_press(egui::Key::Enter);
    common::wait_until(
        &mut harness,
        "the other model",
        |app| matches!(&app.session.model_state, foley::gui::ModelState::Ready { family, .. } if *family == "MusicLDM"),
    );
}

/// Esc in a text field only leaves the field; pressed again it cancels the run.
#[test]
fn esc_leaves_a_text_field_before_it_cancels() {
    let (_library, mut harness) = ready("low drone");
    start_a_long_run(&mut harness);
    harness.get_by_label("Prompt").focus();
    harness.run_steps(1);
    harness.key_press(egui::Key::Escape);
    harness.run_steps(2);
    assert!(
        harness.state().is_busy(),
        "Esc in the prompt cancelled the run"
    );
    harness.key_press(egui::Key::Escape);
    common::wait_until(&mut harness, "the cancel", |app| !app.is_busy());
}

/// Opens arrive in the order they were asked for: a library clip clicked before a file is
/// dropped never replaces the file when its read comes back later.
#[test]
fn the_newest_open_wins() {
    let files = tempfile::tempdir().unwrap();
    let wav = files.path().join("field recording.wav");
    let tone: Vec<f32> = (0..8_000).map(|n| 0.2 * (n as f32 * 0.03).sin()).collect();
    foley::audio::wav::write_wav(&wav, &tone, 16_000, foley::audio::wav::WavFormat::Pcm16).unwrap();
    let (_library, mut harness) = ready("church bell");
    generate_one(&mut harness);
    harness.get_by_label_contains("church bell · s").click();
    harness.run_steps(1);
    drop_file(&mut harness, wav);
    let opened = harness
        .state()
        .session
        .opened
        .as_ref()
        .expect("an open clip");
    assert_eq!(opened.record.prompt, "field recording");

    // Clicking the library clip now opens it; clicking it again keeps the view (and its zoom).
    harness.get_by_label_contains("church bell · s").click();
    common::settle(&mut harness);
    harness
        .state_mut()
        .session
        .opened
        .as_mut()
        .unwrap()
        .window
        .zoom(2.0, 0.0);
    harness.get_by_label_contains("church bell · s").click();
    common::settle(&mut harness);
    let opened = harness.state().session.opened.as_ref().unwrap();
    assert_eq!(opened.record.prompt, "church bell");
    assert!(
        !opened.window.is_full(),
        "the second click did not reload it"
    );
}

//! The studio with a real audio stream (ALSA's null device in a private HOME): four variations,
//! then keys 1-4 switch playback between them (A/B) while looping, and Space stops and plays.
#![cfg(feature = "studio")]

mod common;

use eframe::egui::{Key, Vec2};
use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;
use foley::gui::{AppConfig, FoleyApp, ModelState};

#[cfg(target_os = "linux")]
#[test]
fn number_keys_switch_playback_between_variations() {
    let home = tempfile::tempdir().unwrap();
    std::fs::write(
        home.path().join(".asoundrc"),
        "pcm.!default { type plug; slave.pcm \"nullpcm\" }\npcm.nullpcm { type null }\n",
    )
    .unwrap();
    // SAFETY: this test binary runs this single test; nothing else reads the environment.
    unsafe { std::env::set_var("HOME", home.path()) };

    let model = common::model_dir("audioldm2-tiny").display().to_string();
    let library = home.path().join("library");
    let mut harness = Harness::builder()
        .with_size(Vec2::new(1280.0, 900.0))
        .build_eframe(move |creation| {
            FoleyApp::new(
                creation,
                AppConfig {
                    model: Some(model),
                    library_dir: Some(library),
                    audio: true,
                },
            )
            .expect("the studio starts")
        });
    common::wait_until(&mut harness, "the model", |app| {
        matches!(app.session.model_state, ModelState::Ready { .. })
    });
    {
        let settings = &mut harness.state_mut().settings;
        settings.prompt = "footsteps on gravel".into();
        settings.steps = 2;
        settings.variations = 4;
        settings.random_seed = false;
    }
    harness.get_by_label("Loop playback").click();
    harness.run_steps(2);
    assert!(harness.state().settings.loop_playback);
    harness.get_by_label("Generate").click();
    common::wait_until(&mut harness, "four clips", |app| {
        app.session.results.len() == 4 && !app.is_busy()
    });
    for (key, index) in [
        (Key::Num1, 0),
        (Key::Num3, 2),
        (Key::Num2, 1),
        (Key::Num4, 3),
    ] {
        harness.key_press(key);
        harness.run_steps(2);
        assert_eq!(
            harness.state().playing_result(),
            Some(index),
            "after {key:?}"
        );
    }
    assert!(
        harness.state().session.messages.is_empty(),
        "{:?}",
        harness.state().session.messages
    );
    // The playing card offers Stop (it may be scrolled below the window); Space stops too.
    harness.get_by_label("Stop");
    harness.key_press(Key::Space);
    harness.run_steps(2);
    assert_eq!(harness.state().playing_result(), None);
    // Space again plays the selected clip (the one key 4 chose).
    harness.key_press(Key::Space);
    harness.run_steps(2);
    assert_eq!(harness.state().playing_result(), Some(3));
    harness.key_press(Key::Space);
    harness.run_steps(2);
    assert_eq!(harness.state().playing_result(), None);
}

//! Pictures of the main studio screens, rendered by egui_kittest (wgpu, software rasteriser) and
//! compared with tests/snapshots/*.png. `UPDATE_SNAPSHOTS=1 cargo test --test studio_snapshots`
//! rewrites them after an intended change.
#![cfg(feature = "studio")]

mod common;

use eframe::egui::Vec2;
use egui_kittest::Harness;
use foley::gui::{AppConfig, FoleyApp, ModelState};

#[test]
fn main_screens_look_as_recorded() {
    // Fixed paths: the window shows them, so they must not change between runs or machines.
    let library = std::env::temp_dir().join("foley-snapshot-library");
    let _ = std::fs::remove_dir_all(&library);
    let mut harness = Harness::builder()
        .with_size(Vec2::new(1200.0, 760.0))
        .wgpu()
        .build_eframe(move |creation| {
            FoleyApp::new(
                creation,
                AppConfig {
                    model: Some("tests/fixtures/audioldm2-tiny-deep".into()),
                    library_dir: Some(library),
                    audio: false,
                },
            )
            .expect("the studio starts")
        });
    common::wait_until(&mut harness, "the model", |app| {
        matches!(app.session.model_state, ModelState::Ready { .. })
    });
    harness.run_steps(2);
    harness.snapshot("studio_start");

    {
        let settings = &mut harness.state_mut().settings;
        settings.prompt = "glass shattering on concrete".into();
        settings.steps = 10;
        settings.random_seed = false;
        settings.seed = 42;
        settings.variations = 3;
    }
    harness.state_mut().generate();
    common::wait_until(&mut harness, "three clips", |app| {
        app.session.results.len() == 3 && !app.is_busy()
    });
    harness.run_steps(2);
    // The library lists them once their saves are done.
    common::settle(&mut harness);
    harness.snapshot("studio_variations");
}

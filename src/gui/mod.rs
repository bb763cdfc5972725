//! The desktop studio (eframe/egui): prompt panel, generation progress, clip views with
//! spectrogram, waveform and playback, seed variations, and the clip library.

mod app;
pub mod settings;
pub mod views;
pub mod worker;

pub use app::{AppConfig, FoleyApp, ModelState};

/// Opens the studio window; `model` preselects (and loads) a model.
pub fn run(model: Option<String>) -> anyhow::Result<()> {
    let options = eframe::NativeOptions {
        viewport: eframe::egui::ViewportBuilder::default()
            .with_title("Foley")
            .with_inner_size([1200.0, 760.0]),
        ..Default::default()
    };
    let config = AppConfig {
        model,
        library_dir: None,
        audio: true,
    };
    eframe::run_native(
        "Foley",
        options,
        Box::new(move |creation| {
            let app = FoleyApp::new(creation, config)?;
            Ok(Box::new(app) as Box<dyn eframe::App>)
        }),
    )
    .map_err(|error| anyhow::anyhow!("the studio window could not open: {error}"))
}

//! The desktop studio (eframe/egui): prompt panel, generation progress, clip views with
//! spectrogram, waveform and playback, seed variations, and the clip library.

mod app;
pub mod command;
pub mod disk;
pub mod drag_out;
pub mod fonts;
pub mod settings;
mod shortcuts;
pub mod views;
pub mod worker;

pub use app::{AppConfig, FoleyApp, ModelState, Session};
pub use command::{ClipRef, Move, StudioCommand};

/// The app icon (packaging/icons, rendered from assets/icon.svg) for the title bar and task bar.
fn window_icon() -> std::sync::Arc<eframe::egui::IconData> {
    let png = include_bytes!("../../packaging/icons/png/foley-256x256.png");
    // A broken PNG is a build mistake, not a reason to refuse to open: fall back to no icon.
    std::sync::Arc::new(eframe::icon_data::from_png_bytes(png).unwrap_or_default())
}

/// Opens the studio window; `model` preselects (and loads) a model.
pub fn run(model: Option<String>) -> anyhow::Result<()> {
    let options = eframe::NativeOptions {
        viewport: eframe::egui::ViewportBuilder::default()
            .with_title("Foley")
            .with_icon(window_icon())
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
            fonts::install_fallback(&creation.egui_ctx, fonts::fallback_candidates());
            let app = FoleyApp::new(creation, config)?;
            Ok(Box::new(app) as Box<dyn eframe::App>)
        }),
    )
    .map_err(|error| anyhow::anyhow!("the studio window could not open: {error}"))
}

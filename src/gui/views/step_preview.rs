//! The run's step preview: the partly denoised clip as a spectrogram, so a take that is going
//! wrong can be cancelled before its last step.

use eframe::egui::{self, TextureHandle, TextureOptions, Vec2};

use super::spectrogram::spectrogram_image;
use crate::engine::pipeline::PreviewMel;

pub struct StepPreview {
    pub run: u64,
    pub variation: usize,
    /// The denoising step it shows (1-based).
    pub step: usize,
    pub mel: PreviewMel,
    texture: Option<TextureHandle>,
}

impl StepPreview {
    pub fn new(run: u64, variation: usize, step: usize, mel: PreviewMel) -> Self {
        Self {
            run,
            variation,
            step,
            mel,
            texture: None,
        }
    }

    pub fn ui(&mut self, ui: &mut egui::Ui) {
        if self.texture.is_none() {
            let max_side = ui.ctx().input(|input| input.max_texture_side);
            let Some(image) = spectrogram_image(&self.mel.values, self.mel.bins, max_side) else {
                return;
            };
            self.texture = Some(ui.ctx().load_texture(
                "step-preview",
                image,
                TextureOptions::LINEAR,
            ));
        }
        let Some(texture) = &self.texture else { return };
        let size = Vec2::new(ui.available_width().max(60.0), 70.0);
        let response = ui.add(egui::Image::new((texture.id(), size)));
        response.widget_info(|| egui::WidgetInfo::labeled(egui::Role::Image, true, "Step preview"));
        response.on_hover_text("The clip as it stands at this step (an approximation of the VAE)");
        ui.small(format!(
            "clip {}: preview at step {}",
            self.variation + 1,
            self.step
        ));
    }
}

//! One clip: its mel spectrogram, its waveform with a playhead, its settings and actions.

use std::sync::Arc;

use eframe::egui::{self, Rect, Sense, TextureHandle, TextureOptions, Vec2};

use super::spectrogram::spectrogram_image;
use super::time_window::TimeWindow;
use super::timeline::{WaveformCache, draw_playhead, draw_selection, draw_waveform, time_ruler};
use crate::audio::loudness::Loudness;
use crate::library::ClipRecord;
use crate::library::export::short_model_name;

/// What the user asked a clip view to do; the app carries it out.
#[derive(Debug, Clone, PartialEq)]
pub enum ClipAction {
    Play,
    Stop,
    /// Seconds into the clip.
    Seek(f64),
    ToggleStar,
    UseSettings,
    /// Write a WAV for the DAW with the export options.
    Export,
    /// Save the spectrogram + waveform picture (as `foley plot` draws it).
    SavePicture,
    Delete,
    /// Take the clip off the compare board (it stays in the library).
    RemoveFromBoard,
    /// Put a library clip on the compare board.
    PinToBoard,
    /// The waveform is being dragged out of the window: export it and drag the file.
    DragOut,
    /// A new rating, 0 (unrated) to 5.
    Rate(u8),
    /// New tags, as typed (comma-separated).
    SetTags(String),
    /// Edit this clip with the loaded model; the result joins the board.
    Edit(Edit),
    /// Play the selected seconds.
    PlaySelection {
        start: f64,
        end: f64,
    },
}

/// The editing tasks a clip view offers (research/editing.md; Stable Audio 3 has its own).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Edit {
    /// Regenerate the selected seconds and keep the rest (inpainting).
    RegenerateSelection { start: f64, end: f64 },
    /// The clip moved towards the prompt, by the editing strength.
    AudioToAudio,
    /// More audio that follows on from the end.
    Extend,
    /// A bridge from the end back to the start, so the clip loops.
    MakeLoop,
    /// A new clip conditioned on this one's sound (MusicLDM).
    Variation,
}

/// Where a clip view is drawn: on the compare board or as the clip opened from the library.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    Board,
    Opened,
}

/// A clip on screen: the saved record, its samples and its spectrogram.
pub struct ClipView {
    pub record: ClipRecord,
    /// Frames of `record.channels` samples, interleaved.
    pub samples: Arc<[f32]>,
    /// Each channel on its own for the waveform lanes (empty for mono, which draws `samples`).
    lanes: Vec<Vec<f32>>,
    /// EBU R128 loudness of the samples, measured once.
    pub loudness: Option<Loudness>,
    /// The tags field as being typed; saved when it loses focus.
    tags_text: String,
    /// The selected seconds (start, end), dragged on the spectrogram (or Shift-dragged on the
    /// waveform).
    pub selection: Option<(f64, f64)>,
    /// Where the selection drag started, in seconds.
    selecting_from: Option<f64>,
    /// The VAE's log-mel, (frames × bins) row-major, when known.
    pub mel: Option<(Vec<f32>, usize)>,
    texture: Option<TextureHandle>,
    /// The samples converted to the audio device's rate (rate, samples), kept so switching
    /// between clips does not resample again.
    pub device_samples: Option<(u32, Arc<[f32]>)>,
    /// The seconds shown: zoomed and scrolled, or the whole clip.
    pub window: TimeWindow,
    /// The waveform lanes as drawn for the window and width.
    waveform: WaveformCache,
    /// Set while the library save of a new clip is under way (its record has no id yet).
    pub save_key: Option<u64>,
}

impl ClipView {
    /// A view of `samples` (frames of `record.channels`) with its spectrogram and loudness, both
    /// made off the UI thread.
    pub fn new(
        record: ClipRecord,
        samples: Arc<[f32]>,
        mel: Option<(Vec<f32>, usize)>,
        loudness: Option<Loudness>,
    ) -> Self {
        let channels = record.channels.max(1) as usize;
        let lanes = if channels == 1 {
            Vec::new()
        } else {
            crate::engine::dsp::deinterleave(&samples, channels)
        };
        let tags_text = record.tags.join(", ");
        let window = TimeWindow::full(duration(&samples, channels, record.sample_rate));
        Self {
            window,
            waveform: WaveformCache::default(),
            record,
            samples,
            lanes,
            loudness,
            tags_text,
            selection: None,
            selecting_from: None,
            mel,
            texture: None,
            device_samples: None,
            save_key: None,
        }
    }

    pub fn channels(&self) -> usize {
        self.record.channels.max(1) as usize
    }

    /// Seconds of audio.
    pub fn seconds(&self) -> f64 {
        duration(&self.samples, self.channels(), self.record.sample_rate)
    }

    /// Draws the clip; `playhead` is the playback position in seconds when this clip plays.
    pub fn ui(
        &mut self,
        ui: &mut egui::Ui,
        playhead: Option<f64>,
        compact: bool,
        place: Place,
    ) -> Option<ClipAction> {
        let mut action = None;
        ui.horizontal(|ui| {
            let star = if self.record.starred { "Kept" } else { "Keep" };
            if ui.button(star).on_hover_text("Keep this clip").clicked() {
                action = Some(ClipAction::ToggleStar);
            }
            ui.strong(&self.record.prompt);
        });
        ui.horizontal(|ui| {
            let mut rating = self.record.rating;
            if ui
                .add(egui::Slider::new(&mut rating, 0..=5).text("Rating"))
                .on_hover_text("0 is unrated")
                .changed()
            {
                action = Some(ClipAction::Rate(rating));
            }
            let label = ui.label("Tags");
            let field = ui
                .add(
                    egui::TextEdit::singleline(&mut self.tags_text)
                        .hint_text("door, wood, close")
                        .desired_width(180.0),
                )
                .labelled_by(label.id);
            if field.lost_focus() && crate::library::tag_list(&self.tags_text) != self.record.tags {
                action = Some(ClipAction::SetTags(self.tags_text.clone()));
            } else if !field.has_focus() && !field.lost_focus() {
                // Tags changed in the clip's other view (or cleaned up on save) show here too.
                if crate::library::tag_list(&self.tags_text) != self.record.tags {
                    self.tags_text = self.record.tags.join(", ");
                }
            }
        });
        let model = short_model_name(&self.record.model);
        ui.label(format!(
            "{model} · seed {} · {} steps · guidance {} · {} · {:.2} s{}",
            self.record.seed,
            self.record.steps,
            self.record.guidance,
            self.record.scheduler,
            self.seconds(),
            self.record
                .score
                .map(|score| format!(" · CLAP {score:.3}"))
                .unwrap_or_default()
        ));
        if let Some(text) = self.loudness.as_ref().and_then(loudness_text) {
            ui.small(text).on_hover_text(
                "EBU R128: integrated loudness, the loudest 3 s (short-term) and the true peak",
            );
        }
        let width = ui.available_width().max(120.0);
        let height = if compact { 60.0 } else { 140.0 };
        let (from, to) = self.window.fractions();
        if let Some(texture) = self.spectrogram_texture(ui.ctx()).map(TextureHandle::id) {
            let uv = Rect::from_min_max(egui::pos2(from as f32, 0.0), egui::pos2(to as f32, 1.0));
            let response = ui.add(
                egui::Image::new((texture, Vec2::new(width, height)))
                    .uv(uv)
                    .sense(Sense::click_and_drag()),
            );
            response
                .widget_info(|| egui::WidgetInfo::labeled(egui::Role::Image, true, "Spectrogram"));
            let response = response.on_hover_text(
                "Click to play from here; drag to select; Ctrl+wheel zooms, Shift+wheel scrolls",
            );
            if let Some(seek) = self.select_or_seek(&response) {
                action = Some(seek);
            }
            self.zoom_and_scroll(ui, &response);
            draw_selection(ui, response.rect, self.selection, &self.window);
            draw_playhead(ui, response.rect, playhead, &self.window);
        }
        let (response, painter) =
            ui.allocate_painter(Vec2::new(width, height * 0.6), Sense::click_and_drag());
        response.widget_info(|| egui::WidgetInfo::labeled(egui::Role::Image, true, "Waveform"));
        let response = response.on_hover_text("Click to play from here; drag into a DAW");
        painter.rect_filled(response.rect, 2.0, ui.visuals().extreme_bg_color);
        let color = ui.visuals().widgets.active.fg_stroke.color;
        let columns = response.rect.width().max(1.0) as usize;
        let lanes: Vec<&[f32]> = if self.lanes.is_empty() {
            vec![&self.samples]
        } else {
            self.lanes.iter().map(Vec::as_slice).collect()
        };
        let shapes = self.waveform.get(&lanes, &self.window, columns);
        // One lane per channel, left on top.
        let height = response.rect.height() / shapes.len().max(1) as f32;
        for (index, shape) in shapes.iter().enumerate() {
            let top = response.rect.top() + index as f32 * height;
            let rect = Rect::from_min_size(
                egui::pos2(response.rect.left(), top),
                Vec2::new(response.rect.width(), height),
            );
            let rate = self.record.sample_rate;
            draw_waveform(&painter, rect, shape, &self.window, rate, color);
        }
        let shift = ui.input(|input| input.modifiers.shift);
        if response.drag_started() && !shift && self.selecting_from.is_none() {
            action = Some(ClipAction::DragOut);
        } else if let Some(seek) = self.select_or_seek(&response) {
            action = Some(seek);
        }
        self.zoom_and_scroll(ui, &response);
        draw_selection(ui, response.rect, self.selection, &self.window);
        draw_playhead(ui, response.rect, playhead, &self.window);
        time_ruler(ui, width, &self.window);
        self.zoom_row(ui);
        if let Some(edit) = self.edit_row(ui) {
            action = Some(edit);
        }
        ui.horizontal_wrapped(|ui| {
            if playhead.is_some() {
                if ui.button("Stop").clicked() {
                    action = Some(ClipAction::Stop);
                }
            } else if ui.button("Play").clicked() {
                action = Some(ClipAction::Play);
            }
            if ui.button("Use these settings").clicked() {
                action = Some(ClipAction::UseSettings);
            }
            if ui
                .button("Export")
                .on_hover_text("Write a WAV with the export options")
                .clicked()
            {
                action = Some(ClipAction::Export);
            }
            if !compact && ui.button("Save picture").clicked() {
                action = Some(ClipAction::SavePicture);
            }
            if !compact && ui.button("Delete").clicked() {
                action = Some(ClipAction::Delete);
            }
            match place {
                Place::Board => {
                    if ui
                        .button("Remove from board")
                        .on_hover_text("The clip stays in the library")
                        .clicked()
                    {
                        action = Some(ClipAction::RemoveFromBoard);
                    }
                }
                Place::Opened => {
                    if ui
                        .button("Pin to board")
                        .on_hover_text("Compare it with the board's clips (keys 1–9)")
                        .clicked()
                    {
                        action = Some(ClipAction::PinToBoard);
                    }
                }
            }
        });
        action
    }

    /// Ctrl+wheel (or a pinch) over the clip zooms around the pointer; a sideways scroll
    /// (Shift+wheel) moves along it.
    fn zoom_and_scroll(&mut self, ui: &egui::Ui, response: &egui::Response) {
        let Some(pointer) = response.hover_pos() else {
            return;
        };
        let (zoom, scroll) = ui.input(|input| (input.zoom_delta(), input.smooth_scroll_delta));
        if zoom != 1.0 {
            let anchor = self.window.time_at(response.rect, pointer.x);
            self.window.zoom(zoom as f64, anchor);
        }
        if scroll.x != 0.0 && !self.window.is_full() {
            let seconds_per_point = self.window.span() / response.rect.width().max(1.0) as f64;
            self.window.pan(-scroll.x as f64 * seconds_per_point);
        }
    }

    /// Zoom buttons and, while zoomed, a scroll bar over the whole clip.
    fn zoom_row(&mut self, ui: &mut egui::Ui) {
        ui.horizontal(|ui| {
            let middle = (self.window.start + self.window.end) / 2.0;
            if ui.small_button("Zoom in").clicked() {
                self.window.zoom(2.0, middle);
            }
            if ui.small_button("Zoom out").clicked() {
                self.window.zoom(0.5, middle);
            }
            if let Some((start, end)) = self.selection
                && ui.small_button("Zoom to selection").clicked()
            {
                self.window.show(start, end);
            }
            if !self.window.is_full() {
                if ui.small_button("Show all").clicked() {
                    self.window = TimeWindow::full(self.seconds());
                }
                let mut start = self.window.start;
                let last_start = (self.seconds() - self.window.span()).max(0.0);
                let slider = egui::Slider::new(&mut start, 0.0..=last_start)
                    .show_value(false)
                    .text("Scroll");
                if ui.add(slider).changed() {
                    self.window.pan(start - self.window.start);
                }
            }
        });
    }

    /// A drag selects seconds (kept in `selection`); a click seeks and clears the selection.
    fn select_or_seek(&mut self, response: &egui::Response) -> Option<ClipAction> {
        let position = response.interact_pointer_pos()?;
        let seconds = self.window.time_at(response.rect, position.x);
        if response.drag_started() {
            // A drag is recognised only after the pointer moved: it began where it was pressed.
            let origin = response
                .ctx
                .input(|input| input.pointer.press_origin())
                .unwrap_or(position);
            self.selecting_from = Some(self.window.time_at(response.rect, origin.x));
        }
        if let Some(from) = self.selecting_from
            && response.dragged()
        {
            self.selection = Some((from.min(seconds), from.max(seconds)))
                .filter(|(start, end)| end - start > 0.0);
        }
        if response.drag_stopped() {
            self.selecting_from = None;
        }
        if response.clicked() {
            self.selection = None;
            return Some(ClipAction::Seek(seconds));
        }
        None
    }

    /// The editing buttons; the selection's only when there is one.
    fn edit_row(&mut self, ui: &mut egui::Ui) -> Option<ClipAction> {
        let mut edit = None;
        ui.horizontal_wrapped(|ui| {
            if let Some((start, end)) = self.selection {
                ui.small(format!("selected {start:.2}–{end:.2} s"));
                if ui.button("Play selection").clicked() {
                    edit = Some(ClipAction::PlaySelection { start, end });
                }
                if ui
                    .button("Regenerate selection")
                    .on_hover_text("Inpainting: new audio there, the rest kept")
                    .clicked()
                {
                    edit = Some(ClipAction::Edit(Edit::RegenerateSelection { start, end }));
                }
            }
            for (label, hover, kind) in [
                (
                    "Audio-to-audio",
                    "Move it towards the prompt by the editing strength",
                    Edit::AudioToAudio,
                ),
                (
                    "Extend",
                    "More audio that follows on from its end",
                    Edit::Extend,
                ),
                (
                    "Make loop",
                    "A bridge from its end back to its start",
                    Edit::MakeLoop,
                ),
                (
                    "Variation of this",
                    "A new clip from its sound (MusicLDM)",
                    Edit::Variation,
                ),
            ] {
                if ui.button(label).on_hover_text(hover).clicked() {
                    edit = Some(ClipAction::Edit(kind));
                }
            }
        });
        edit
    }

    /// (width, height) of the spectrogram texture once it has been drawn.
    pub fn texture_size(&self) -> Option<[usize; 2]> {
        self.texture.as_ref().map(TextureHandle::size)
    }

    fn spectrogram_texture(&mut self, ctx: &egui::Context) -> Option<&TextureHandle> {
        if self.texture.is_none() {
            let (mel, bins) = self.mel.as_ref()?;
            // The renderer panics on a texture wider than the GPU allows (16384 frames is about
            // 4 s on the tiny models, 164 s on the real ones).
            let max_side = ctx.input(|input| input.max_texture_side);
            let image = spectrogram_image(mel, *bins, max_side)?;
            self.texture = Some(ctx.load_texture(
                format!("spectrogram-{}", self.record.id),
                image,
                TextureOptions::LINEAR,
            ));
        }
        self.texture.as_ref()
    }
}

/// Seconds of `samples` (frames of `channels` interleaved) at `sample_rate`.
fn duration(samples: &[f32], channels: usize, sample_rate: u32) -> f64 {
    (samples.len() / channels.max(1)) as f64 / f64::from(sample_rate.max(1))
}

/// "-23.4 LUFS · short-term max -20.1 · true peak -1.2 dBTP", or `None` for silence.
pub fn loudness_text(loudness: &Loudness) -> Option<String> {
    let integrated = loudness.integrated_lufs?;
    let mut text = format!("{integrated:.1} LUFS");
    if let Some(short_term) = loudness.short_term_max_lufs {
        text.push_str(&format!(" · short-term max {short_term:.1}"));
    }
    if let Some(peak) = loudness.true_peak_dbtp {
        text.push_str(&format!(" · true peak {peak:.1} dBTP"));
    }
    Some(text)
}

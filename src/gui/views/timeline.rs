//! The time axis of a clip view: the ruler, the shaded selection, the playhead and the
//! waveform, each placed through the view's [`TimeWindow`].

use eframe::egui::{self, Color32, Rect, Sense, Stroke, Vec2};

use super::time_window::TimeWindow;
use crate::audio::peaks::peaks;

/// Seconds between ruler ticks: the shortest of a few round steps that keeps ticks at least
/// 60 px apart.
fn ruler_step(width: f32, seconds: f64) -> f64 {
    const STEPS: [f64; 15] = [
        0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0,
    ];
    let per_pixel = seconds / width.max(1.0) as f64;
    STEPS
        .into_iter()
        .find(|step| step / per_pixel >= 60.0)
        .unwrap_or(120.0)
}

/// A strip of second marks under the clip, aligned with its spectrogram and waveform.
pub fn time_ruler(ui: &mut egui::Ui, width: f32, window: &TimeWindow) {
    let (response, painter) = ui.allocate_painter(Vec2::new(width, 14.0), Sense::hover());
    response.widget_info(|| egui::WidgetInfo::labeled(egui::Role::Image, true, "Time ruler"));
    if window.span() <= 0.0 {
        return;
    }
    let rect = response.rect;
    let step = ruler_step(rect.width(), window.span());
    let color = ui.visuals().weak_text_color();
    let font = egui::FontId::proportional(10.0);
    let decimals = if step < 0.01 {
        3
    } else if step < 0.1 {
        2
    } else if step < 1.0 {
        1
    } else {
        0
    };
    // The first round tick in the window.
    let mut tick = (window.start / step).ceil() * step;
    while tick <= window.end + 1e-9 {
        let x = window.x_of(rect, tick);
        painter.line_segment(
            [egui::pos2(x, rect.top()), egui::pos2(x, rect.top() + 4.0)],
            Stroke::new(1.0, color),
        );
        painter.text(
            egui::pos2(x + 2.0, rect.top() + 3.0),
            egui::Align2::LEFT_TOP,
            format!("{tick:.decimals$} s"),
            font.clone(),
            color,
        );
        tick += step;
    }
}

/// The selected seconds, shaded over `rect` where they are in the window.
pub fn draw_selection(
    ui: &egui::Ui,
    rect: Rect,
    selection: Option<(f64, f64)>,
    window: &TimeWindow,
) {
    let Some((start, end)) = selection else {
        return;
    };
    let x = |time: f64| window.x_of(rect, time).clamp(rect.left(), rect.right());
    let shade = Rect::from_min_max(
        egui::pos2(x(start), rect.top()),
        egui::pos2(x(end), rect.bottom()),
    );
    let fill = ui.visuals().selection.bg_fill.gamma_multiply(0.35);
    ui.painter().rect_filled(shade, 0.0, fill);
}

/// What a waveform lane draws for one window and width: min/max per pixel column, or, zoomed
/// in past one sample per column, the samples themselves. Kept between frames (see
/// [`WaveformCache`]) so a repaint while playing does not visit every sample again.
pub enum LaneShape {
    Peaks(Vec<(f32, f32)>),
    /// The first sample's index and the samples.
    Samples(usize, Vec<f32>),
}

impl LaneShape {
    /// The shape of `lane` from share `from` to share `to` of it, `columns` pixels wide.
    pub fn of(lane: &[f32], from: f64, to: f64, columns: usize) -> Self {
        let count = lane.len();
        let first = ((from * count as f64) as usize).min(count);
        let last = ((to * count as f64).ceil() as usize).clamp(first, count);
        let shown = &lane[first..last];
        if shown.len() < columns {
            // One sample either side, so the line reaches the window's edges.
            let first = first.saturating_sub(1);
            let last = (last + 1).min(count);
            Self::Samples(first, lane[first..last].to_vec())
        } else {
            Self::Peaks(peaks(shown, columns))
        }
    }
}

/// The lanes' shapes for the window and width they were made for.
#[derive(Default)]
pub struct WaveformCache {
    key: Option<(u64, u64, usize)>,
    pub lanes: Vec<LaneShape>,
}

impl WaveformCache {
    /// The shapes of `lanes` for `window` at `columns` pixels, made again only when either
    /// changed.
    pub fn get(&mut self, lanes: &[&[f32]], window: &TimeWindow, columns: usize) -> &[LaneShape] {
        let (from, to) = window.fractions();
        let key = (from.to_bits(), to.to_bits(), columns);
        if self.key != Some(key) || self.lanes.len() != lanes.len() {
            self.lanes = lanes
                .iter()
                .map(|lane| LaneShape::of(lane, from, to, columns))
                .collect();
            self.key = Some(key);
        }
        &self.lanes
    }
}

/// One channel's waveform in `rect`; a line through the samples is placed by their times
/// (`sample_rate`), so it stays on the ruler and playhead at any zoom.
pub fn draw_waveform(
    painter: &egui::Painter,
    rect: Rect,
    shape: &LaneShape,
    window: &TimeWindow,
    sample_rate: u32,
    color: Color32,
) {
    let middle = rect.center().y;
    let half = rect.height() / 2.0;
    match shape {
        LaneShape::Samples(first, samples) => {
            let rate = f64::from(sample_rate.max(1));
            let points = samples
                .iter()
                .enumerate()
                .map(|(index, value)| {
                    let x = window.x_of(rect, (first + index) as f64 / rate);
                    egui::pos2(x, middle - value * half)
                })
                .collect();
            painter
                .with_clip_rect(rect)
                .add(egui::Shape::line(points, Stroke::new(1.0, color)));
        }
        LaneShape::Peaks(peaks) => {
            for (column, (low, high)) in peaks.iter().enumerate() {
                let x = rect.left() + column as f32 + 0.5;
                painter.line_segment(
                    [
                        egui::pos2(x, middle - high * half),
                        egui::pos2(x, middle - low * half),
                    ],
                    Stroke::new(1.0, color),
                );
            }
        }
    }
}

pub fn draw_playhead(ui: &egui::Ui, rect: Rect, playhead: Option<f64>, window: &TimeWindow) {
    if let Some(position) = playhead
        && (window.start..=window.end).contains(&position)
    {
        let x = window.x_of(rect, position);
        ui.painter().line_segment(
            [egui::pos2(x, rect.top()), egui::pos2(x, rect.bottom())],
            Stroke::new(1.5, Color32::WHITE),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ruler_ticks_stay_readable() {
        assert_eq!(ruler_step(600.0, 10.0), 1.0);
        assert_eq!(ruler_step(600.0, 0.5), 0.05);
        assert_eq!(ruler_step(600.0, 300.0), 30.0);
        assert_eq!(ruler_step(10.0, 1e6), 120.0);
    }

    #[test]
    fn lanes_draw_peaks_when_wide_and_samples_when_zoomed_in() {
        let lane: Vec<f32> = (0..1000).map(|n| (n as f32 * 0.1).sin()).collect();
        let mut cache = WaveformCache::default();
        let full = TimeWindow::full(1.0);
        match &cache.get(&[&lane], &full, 100)[0] {
            LaneShape::Peaks(peaks) => assert_eq!(peaks.len(), 100),
            LaneShape::Samples(..) => panic!("1000 samples in 100 columns are peaks"),
        }
        let mut zoomed = full;
        zoomed.show(0.5, 0.55);
        match &cache.get(&[&lane], &zoomed, 100)[0] {
            // Samples 500..550 and one either side, so the line meets both edges.
            LaneShape::Samples(first, samples) => {
                assert_eq!(*first, 499);
                assert_eq!(samples.len(), 52);
                assert_eq!(samples[1], lane[500]);
            }
            LaneShape::Peaks(_) => panic!("50 samples in 100 columns are drawn as a line"),
        }
        // Two lanes (stereo) after one: made again.
        assert_eq!(cache.get(&[&lane, &lane], &zoomed, 100).len(), 2);
    }
}

//! The seconds of a clip that its views show: zoomed in around a point, scrolled, or the whole
//! clip. Every time ↔ x conversion of the clip view goes through it, so the spectrogram, the
//! waveform, the selection, the playhead and the ruler always line up.

use eframe::egui::Rect;

/// The narrowest window, in seconds: a few milliseconds still show single cycles.
const MIN_SPAN: f64 = 0.005;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TimeWindow {
    /// Length of the whole clip.
    seconds: f64,
    pub start: f64,
    pub end: f64,
}

impl TimeWindow {
    /// The whole clip of `seconds`.
    pub fn full(seconds: f64) -> Self {
        let seconds = seconds.max(0.0);
        Self {
            seconds,
            start: 0.0,
            end: seconds,
        }
    }

    pub fn span(&self) -> f64 {
        self.end - self.start
    }

    pub fn is_full(&self) -> bool {
        self.start <= 0.0 && self.end >= self.seconds
    }

    /// Shows `span / factor` seconds (factor > 1 zooms in), keeping the time under `anchor`
    /// where it is on screen.
    pub fn zoom(&mut self, factor: f64, anchor: f64) {
        if !(factor.is_finite() && factor > 0.0) || self.seconds <= 0.0 {
            return;
        }
        let span = (self.span() / factor).clamp(MIN_SPAN.min(self.seconds), self.seconds);
        let anchor = anchor.clamp(self.start, self.end);
        let share = if self.span() > 0.0 {
            (anchor - self.start) / self.span()
        } else {
            0.5
        };
        self.start = anchor - share * span;
        self.end = self.start + span;
        self.keep_inside();
    }

    /// Scrolls by `seconds` (positive moves later), stopping at the clip's ends.
    pub fn pan(&mut self, seconds: f64) {
        if !seconds.is_finite() {
            return;
        }
        self.start += seconds;
        self.end += seconds;
        self.keep_inside();
    }

    /// Shows `start..end` (a selection), at least the narrowest span.
    pub fn show(&mut self, start: f64, end: f64) {
        if !(start.is_finite() && end.is_finite()) {
            return;
        }
        let middle = (start + end) / 2.0;
        let span = (end - start)
            .abs()
            .clamp(MIN_SPAN.min(self.seconds), self.seconds);
        self.start = middle - span / 2.0;
        self.end = middle + span / 2.0;
        self.keep_inside();
    }

    /// The seconds at `x` in `rect`, clamped to the window.
    pub fn time_at(&self, rect: Rect, x: f32) -> f64 {
        let fraction = ((x - rect.left()) / rect.width().max(1.0)).clamp(0.0, 1.0);
        self.start + fraction as f64 * self.span()
    }

    /// Where `time` is drawn in `rect` (outside it when the time is not in the window).
    pub fn x_of(&self, rect: Rect, time: f64) -> f32 {
        let fraction = if self.span() > 0.0 {
            (time - self.start) / self.span()
        } else {
            0.0
        };
        rect.left() + fraction as f32 * rect.width()
    }

    /// The window as a share of the clip, for texture coordinates and sample ranges.
    pub fn fractions(&self) -> (f64, f64) {
        if self.seconds <= 0.0 {
            return (0.0, 1.0);
        }
        (self.start / self.seconds, self.end / self.seconds)
    }

    fn keep_inside(&mut self) {
        let span = self.span().min(self.seconds);
        if self.start < 0.0 {
            self.start = 0.0;
        }
        if self.start + span > self.seconds {
            self.start = self.seconds - span;
        }
        self.end = self.start + span;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use eframe::egui::{pos2, vec2};

    #[test]
    fn zooming_keeps_the_anchor_in_place_and_stays_inside_the_clip() {
        let rect = Rect::from_min_size(pos2(100.0, 0.0), vec2(400.0, 50.0));
        let mut window = TimeWindow::full(10.0);
        let x = window.x_of(rect, 7.5);
        window.zoom(4.0, 7.5);
        assert!((window.span() - 2.5).abs() < 1e-9);
        assert!((window.x_of(rect, 7.5) - x).abs() < 1e-3);
        assert!((window.time_at(rect, x) - 7.5).abs() < 1e-6);
        window.zoom(1e9, 7.5);
        assert!((window.span() - MIN_SPAN).abs() < 1e-12);
        window.zoom(1e-9, 0.0);
        assert!(window.is_full());
    }

    #[test]
    fn panning_stops_at_the_ends() {
        let mut window = TimeWindow::full(10.0);
        window.zoom(5.0, 0.0);
        window.pan(-3.0);
        assert_eq!((window.start, window.end), (0.0, 2.0));
        window.pan(100.0);
        assert_eq!((window.start, window.end), (8.0, 10.0));
        window.pan(f64::NAN);
        assert_eq!((window.start, window.end), (8.0, 10.0));
    }

    #[test]
    fn showing_a_selection_and_an_empty_clip() {
        let mut window = TimeWindow::full(10.0);
        window.show(9.5, 11.0);
        assert!(window.end <= 10.0 && window.start >= 0.0);
        assert!((window.span() - 1.5).abs() < 1e-9);
        let mut empty = TimeWindow::full(0.0);
        empty.zoom(2.0, 0.0);
        empty.pan(1.0);
        assert_eq!(empty.fractions(), (0.0, 1.0));
    }
}

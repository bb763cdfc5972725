//! Playback and the transport: which clip plays, A/B switching and the selection the arrow
//! keys move.

use super::*;

impl FoleyApp {
    pub(super) fn stop_playback(&mut self) {
        if let Ok(playback) = &self.playback {
            playback.stop();
        }
        self.session.playing = None;
    }

    pub(super) fn play(&mut self, which: ClipRef, start: f64) {
        let clip = match &which {
            ClipRef::Board(index) => self.session.results.get_mut(*index),
            ClipRef::Opened => self.session.opened.as_mut(),
        };
        let Some(clip) = clip else { return };
        let started = self.playback.as_ref().map(|playback| {
            let prepared = match &clip.device_samples {
                Some((rate, samples)) if *rate == playback.device_rate => samples.clone(),
                _ => {
                    let samples =
                        playback.prepare(&clip.samples, clip.channels(), clip.record.sample_rate);
                    clip.device_samples = Some((playback.device_rate, samples.clone()));
                    samples
                }
            };
            playback.set_looping(self.settings.loop_playback);
            playback.play_prepared(prepared, start)
        });
        match started {
            Ok(Ok(())) => self.session.playing = Some(which),
            Ok(Err(error)) => self.session.say(format!("playback: {error}")),
            Err(error) => {
                let message = format!("playback is unavailable: {error}");
                self.session.say(message);
            }
        }
    }

    /// A/B: switches playback to result `index` at the current position.
    pub fn switch_to(&mut self, index: usize) {
        if index >= self.session.results.len() {
            return;
        }
        let position = match &self.playback {
            Ok(playback) if self.session.playing.is_some() => playback.position_seconds(),
            _ => 0.0,
        };
        self.play(ClipRef::Board(index), position);
    }

    pub(super) fn playhead(&self, which: ClipRef) -> Option<f64> {
        match (&self.session.playing, &self.playback) {
            (Some(playing), Ok(playback)) if *playing == which => Some(playback.position_seconds()),
            _ => None,
        }
    }

    /// Moves the board's selection and, with auto-audition on, plays the clip moved to at the
    /// current position (from the start when nothing plays).
    pub(super) fn select(&mut self, to: Move) {
        let count = self.session.results.len();
        if count == 0 {
            return;
        }
        let current = self.session.selected.unwrap_or(0).min(count - 1);
        let index = match to {
            Move::Previous => current.saturating_sub(1),
            Move::Next => (current + 1).min(count - 1),
            Move::First => 0,
            Move::Last => count - 1,
        };
        let moved = self.session.selected != Some(index);
        self.session.selected = Some(index);
        if moved && self.settings.auto_audition {
            self.switch_to(index);
        }
    }
}

//! Playback and the keyboard transport: which clip plays, A/B switching, the selection the
//! arrow keys move, and the shortcuts read each frame.

use super::*;

impl FoleyApp {
    pub(super) fn stop_playback(&mut self) {
        if let Ok(playback) = &self.playback {
            playback.stop();
        }
        self.playing = None;
    }

    pub(super) fn play(&mut self, which: PlayingClip, start: f64) {
        let clip = match &which {
            PlayingClip::Result(index) => self.results.get_mut(*index),
            PlayingClip::Opened => self.opened.as_mut(),
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
            Ok(Ok(())) => self.playing = Some(which),
            Ok(Err(error)) => self.messages.push(format!("playback: {error}")),
            Err(error) => {
                let message = format!("playback is unavailable: {error}");
                self.messages.push(message);
            }
        }
    }

    /// A/B: switches playback to result `index` at the current position.
    pub fn switch_to(&mut self, index: usize) {
        if index >= self.results.len() {
            return;
        }
        let position = match &self.playback {
            Ok(playback) if self.playing.is_some() => playback.position_seconds(),
            _ => 0.0,
        };
        self.play(PlayingClip::Result(index), position);
    }

    pub(super) fn playhead(&self, which: &PlayingClip) -> Option<f64> {
        match (&self.playing, &self.playback) {
            (Some(playing), Ok(playback)) if playing == which => Some(playback.position_seconds()),
            _ => None,
        }
    }

    /// Carries out the keys pressed this frame (`shortcuts::read`).
    pub(super) fn shortcuts(&mut self, ctx: &egui::Context) {
        for shortcut in shortcuts::read(ctx) {
            match shortcut {
                Shortcut::Generate if !self.is_busy() => self.generate(),
                Shortcut::Generate => {}
                Shortcut::Escape if self.show_shortcuts => self.show_shortcuts = false,
                Shortcut::Escape => self.cancel(),
                Shortcut::ToggleHelp => self.show_shortcuts = !self.show_shortcuts,
                Shortcut::PlayStop if self.playing.is_some() => self.stop_playback(),
                Shortcut::PlayStop => match self.selected {
                    Some(index) => self.play(PlayingClip::Result(index), 0.0),
                    None if self.opened.is_some() => self.play(PlayingClip::Opened, 0.0),
                    None => {}
                },
                Shortcut::Previous => self.select(|index, _| index.saturating_sub(1)),
                Shortcut::Next => self.select(|index, count| (index + 1).min(count - 1)),
                Shortcut::First => self.select(|_, _| 0),
                Shortcut::Last => self.select(|_, count| count - 1),
                Shortcut::ToggleLoop => {
                    self.settings.loop_playback = !self.settings.loop_playback;
                    if let Ok(playback) = &self.playback {
                        playback.set_looping(self.settings.loop_playback);
                    }
                }
                Shortcut::Switch(index) if index < self.results.len() => {
                    self.selected = Some(index);
                    self.switch_to(index);
                }
                Shortcut::Switch(_) => {}
            }
        }
    }

    /// Moves the selection to `to(current, count)` and, with auto-audition on, plays the clip
    /// moved to at the current position (from the start when nothing plays).
    pub(super) fn select(&mut self, to: impl Fn(usize, usize) -> usize) {
        let count = self.results.len();
        if count == 0 {
            return;
        }
        let index = to(self.selected.unwrap_or(0).min(count - 1), count);
        let moved = self.selected != Some(index);
        self.selected = Some(index);
        if moved && self.settings.auto_audition {
            self.switch_to(index);
        }
    }
}

//! What a clip view's buttons ask for, carried out in one place.

use super::*;

impl FoleyApp {
    pub(super) fn clip(&self, which: &PlayingClip) -> Option<&ClipView> {
        match which {
            PlayingClip::Result(index) => self.results.get(*index),
            PlayingClip::Opened => self.opened.as_ref(),
        }
    }

    pub(super) fn apply(&mut self, which: PlayingClip, action: ClipAction) {
        let Some((record, samples)) = self
            .clip(&which)
            .map(|clip| (clip.record.clone(), clip.samples.clone()))
        else {
            return;
        };
        match action {
            ClipAction::PlaySelection { start, end } => {
                self.play(which, start);
                self.play_until = Some(end);
            }
            ClipAction::Edit(edit) => {
                let planes = crate::engine::dsp::deinterleave(&samples, record.channels as usize);
                let name = if record.id.is_empty() {
                    record.prompt.clone()
                } else {
                    record.wav_name()
                };
                let input = InputAudio::new(planes, record.sample_rate, name);
                let task = self.edit_task(edit, input);
                self.start_run(task);
            }
            ClipAction::Play => self.play(which, 0.0),
            ClipAction::Stop => self.stop_playback(),
            ClipAction::Seek(seconds) => {
                if self.playing.as_ref() == Some(&which)
                    && let Ok(playback) = &self.playback
                {
                    playback.seek_seconds(seconds);
                } else {
                    self.play(which, seconds);
                }
            }
            ClipAction::Rate(rating) => self.change_record(
                &record.id,
                |library, id| library.set_rating(id, rating),
                |view| view.rating = rating.min(5),
            ),
            ClipAction::SetTags(text) => {
                let tags = crate::library::tag_list(&text);
                self.change_record(
                    &record.id,
                    |library, id| library.set_tags(id, &tags),
                    |view| view.tags = tags.clone(),
                );
            }
            ClipAction::ToggleStar => {
                let starred = !record.starred;
                self.change_record(
                    &record.id,
                    |library, id| library.set_starred(id, starred),
                    |view| view.starred = starred,
                );
            }
            ClipAction::UseSettings => {
                // The model is part of the settings: switch back to it if another is loaded.
                let loaded = match &self.model_state {
                    ModelState::Ready { model, .. } | ModelState::Loading(model) => {
                        Some(model.clone())
                    }
                    _ => None,
                };
                if loaded.as_deref() != Some(record.model.as_str()) {
                    self.settings.model = record.model.clone();
                    self.load_model();
                }
                self.settings.prompt = record.prompt.clone();
                self.settings.negative_prompt = record.negative_prompt.clone().unwrap_or_default();
                self.settings.seed = record.seed;
                self.settings.random_seed = false;
                self.settings.steps = record.steps;
                self.settings.guidance = record.guidance;
                // A model's own sampler (Stable Audio 3's) is not a choice the picker offers.
                if record.scheduler.parse::<SchedulerKind>().is_ok() {
                    self.settings.scheduler = record.scheduler.clone();
                }
                self.settings.duration = record.duration;
            }
            ClipAction::Export => {
                self.export(&record, &samples);
            }
            // Dragging the clip itself: exported with the current settings, then that file
            // is what leaves the window.
            ClipAction::DragOut => {
                if let Some(path) = self.export(&record, &samples) {
                    self.start_drag(path);
                }
            }
            ClipAction::SavePicture => {
                let path = picture_path(&self.settings.export_dir, &record);
                let saved = std::fs::create_dir_all(&self.settings.export_dir)
                    .map_err(|error| error.to_string())
                    .and_then(|()| {
                        // The picture shows the mix of a stereo clip, as `foley plot` does.
                        let mono =
                            crate::engine::dsp::fold_down(&samples, record.channels as usize);
                        render_plot(
                            &mono,
                            record.sample_rate,
                            &record.prompt,
                            &path,
                            (1200, 600),
                        )
                        .map_err(|error| error.to_string())
                    });
                match saved {
                    Ok(()) => self.last_picture = Some(path),
                    Err(error) => self
                        .messages
                        .push(format!("the picture could not be saved: {error}")),
                }
            }
            // Deleting moves the clip into the trash; the bar offers Undo.
            ClipAction::Delete => self.delete(&record.id),
            ClipAction::RemoveFromBoard => {
                if let PlayingClip::Result(index) = which
                    && index < self.results.len()
                {
                    self.stop_playback();
                    self.results.remove(index);
                    self.selected = self
                        .selected
                        .filter(|_| !self.results.is_empty())
                        .map(|selected| selected.min(self.results.len() - 1));
                }
            }
            ClipAction::PinToBoard => {
                if let Some(clip) = self.opened.take() {
                    if self.playing == Some(PlayingClip::Opened) {
                        self.stop_playback();
                    }
                    self.results.push(clip);
                    self.selected = Some(self.results.len() - 1);
                }
            }
        }
    }

    /// The task an edit asks of the loaded model, with the editing settings.
    pub(super) fn edit_task(&self, edit: Edit, input: InputAudio) -> Task {
        let stable_audio = matches!(
            &self.model_state,
            ModelState::Ready { family, .. } if *family == "Stable Audio 3"
        );
        let strength = self.settings.edit_strength.clamp(0.0, 1.0);
        let seconds = self.settings.edit_seconds;
        let encode_mode = EncodeMode::default();
        match edit {
            Edit::RegenerateSelection { start, end } => Task::Inpaint {
                input,
                regions: Regions {
                    time: vec![(start, end)],
                    above_hz: None,
                },
                strength: 1.0,
                encode_mode,
            },
            // Stable Audio 3 moves by its own noise level, not img2img's strength.
            Edit::AudioToAudio if stable_audio => Task::AudioToAudioFromNoise {
                input,
                init_noise_level: strength.max(0.01),
            },
            Edit::AudioToAudio => Task::AudioToAudio {
                input,
                strength,
                encode_mode,
            },
            Edit::Extend => Task::Continue {
                input,
                seconds,
                encode_mode,
            },
            Edit::MakeLoop => Task::Loop {
                input,
                seconds,
                encode_mode,
            },
            Edit::Variation => Task::Variation { input },
        }
    }

    /// Exports a clip with the current export settings and offers it in the bar; a failure
    /// becomes a message.
    fn export(&mut self, record: &ClipRecord, samples: &[f32]) -> Option<PathBuf> {
        match export_clip(
            &self.settings.export_dir,
            record,
            samples,
            &self.settings.export,
        ) {
            Ok(path) => {
                self.last_export = Some(path.clone());
                Some(path)
            }
            Err(error) => {
                self.messages.push(format!("export failed: {error}"));
                None
            }
        }
    }
}

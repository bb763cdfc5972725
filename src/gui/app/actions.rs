//! Carrying out `StudioCommand::Clip`: what a clip view's buttons ask for, and the library
//! changes they make (annotate, delete).

use super::*;

impl FoleyApp {
    pub(super) fn clip(&self, which: ClipRef) -> Option<&ClipView> {
        match which {
            ClipRef::Board(index) => self.session.results.get(index),
            ClipRef::Opened => self.session.opened.as_ref(),
        }
    }

    /// Every clip view: the board's and the opened one.
    pub(super) fn views_mut(&mut self) -> impl Iterator<Item = &mut ClipView> {
        self.session
            .results
            .iter_mut()
            .chain(self.session.opened.as_mut())
    }

    /// Keeps the board's selection on a clip that is there.
    pub(super) fn clamp_selection(&mut self) {
        let count = self.session.results.len();
        self.session.selected = self
            .session
            .selected
            .filter(|_| count > 0)
            .map(|selected| selected.min(count - 1));
    }

    /// Shows `view` as the opened clip, stopping the one it replaces if that one plays.
    pub(super) fn show_opened(&mut self, view: ClipView) {
        if self.session.playing == Some(ClipRef::Opened) {
            self.stop_playback();
        }
        self.session.opened = Some(view);
    }

    pub(super) fn clip_mut(&mut self, which: ClipRef) -> Option<&mut ClipView> {
        match which {
            ClipRef::Board(index) => self.session.results.get_mut(index),
            ClipRef::Opened => self.session.opened.as_mut(),
        }
    }

    /// Carries out what a clip view's buttons asked for.
    pub(super) fn apply(&mut self, which: ClipRef, action: ClipAction) {
        let Some((record, samples)) = self
            .clip(which)
            .map(|clip| (clip.record.clone(), clip.samples.clone()))
        else {
            return;
        };
        match action {
            ClipAction::PlaySelection { start, end } => {
                self.play(which, start);
                self.session.play_until = Some(end);
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
                if self.session.playing.as_ref() == Some(&which)
                    && let Ok(playback) = &self.playback
                {
                    playback.seek_seconds(seconds);
                } else {
                    self.play(which, seconds);
                }
            }
            ClipAction::Rate(rating) => {
                self.annotate(which, |record| record.rating = rating.min(5))
            }
            ClipAction::SetTags(text) => {
                let tags = crate::library::tag_list(&text);
                self.annotate(which, |record| record.tags = tags.clone());
            }
            ClipAction::ToggleStar => {
                let starred = !record.starred;
                self.annotate(which, |record| record.starred = starred);
            }
            ClipAction::UseSettings => {
                // The model is part of the settings: switch back to it if another is loaded.
                let loaded = match &self.session.model_state {
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
            ClipAction::Export => self.export(record, samples, false),
            // Dragging the clip itself: exported with the current settings, then that file
            // is what leaves the window.
            ClipAction::DragOut => self.export(record, samples, true),
            ClipAction::SavePicture => {
                if let Some(dir) = self.export_dir() {
                    self.send_to_disk(DiskJob::Picture {
                        dir,
                        record,
                        samples,
                    });
                }
            }
            // Deleting moves the clip into the trash; the bar offers Undo.
            ClipAction::Delete => self.delete(which),
            ClipAction::RemoveFromBoard => {
                if let ClipRef::Board(_) = which {
                    self.close(which);
                }
            }
            ClipAction::PinToBoard => {
                if let Some(clip) = self.session.opened.take() {
                    if self.session.playing == Some(ClipRef::Opened) {
                        self.stop_playback();
                    }
                    self.session.results.push(clip);
                    self.session.selected = Some(self.session.results.len() - 1);
                }
            }
        }
    }

    /// Takes clip `which` off the screen (the board or the opened view).
    pub(super) fn close(&mut self, which: ClipRef) {
        self.stop_playback();
        match which {
            ClipRef::Board(index) if index < self.session.results.len() => {
                self.session.results.remove(index);
                self.clamp_selection();
            }
            ClipRef::Board(_) => {}
            ClipRef::Opened => self.session.opened = None,
        }
    }

    /// The task an edit asks of the loaded model, with the editing settings.
    pub(super) fn edit_task(&self, edit: Edit, input: InputAudio) -> Task {
        let stable_audio = matches!(
            &self.session.model_state,
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

    /// Exports a clip with the current export settings on the disk thread; the bar offers the
    /// file when it is written, and `then_drag` drags it out of the window.
    fn export(&mut self, record: ClipRecord, samples: Arc<[f32]>, then_drag: bool) {
        let Some(dir) = self.export_dir() else { return };
        // Dragging the same library clip out again with the same options drags the file
        // already written, instead of writing another copy beside it.
        let made = (record.id.clone(), dir.clone(), self.settings.export.clone());
        if then_drag
            && !record.id.is_empty()
            && let Some((of, path)) = &self.session.last_export_of
            && *of == made
            && path.is_file()
        {
            let path = path.clone();
            self.session.last_export = Some(path.clone());
            return self.start_drag(path);
        }
        self.send_to_disk(DiskJob::Export {
            dir,
            record,
            samples,
            options: self.settings.export.clone(),
            then_drag,
        });
    }

    /// The export folder, when it is a full path: a relative or empty one would put files
    /// wherever the studio happened to start, which is not where the user asked.
    fn export_dir(&mut self) -> Option<PathBuf> {
        let dir = self.settings.export_dir.clone();
        if dir.is_absolute() {
            return Some(dir);
        }
        self.session.say(format!(
            "the export folder \"{}\" is not a full path; choose a folder in Export options",
            dir.display()
        ));
        None
    }

    /// Applies `change` to the clip `which` (and to the other view of the same library clip)
    /// and saves what the user says of it to the library; a clip whose save is still queued is
    /// named by its save's key. An opened file has nothing to save.
    pub(super) fn annotate(&mut self, which: ClipRef, change: impl Fn(&mut ClipRecord)) {
        let Some(clip) = self.clip(which) else {
            return;
        };
        let target = library_clip(clip);
        let id = clip.record.id.clone();
        if id.is_empty() {
            if let Some(clip) = self.clip_mut(which) {
                change(&mut clip.record);
            }
        } else {
            for clip in self.views_mut().filter(|clip| clip.record.id == id) {
                change(&mut clip.record);
            }
        }
        let (Some(clip), Some(target)) = (self.clip(which), target) else {
            return;
        };
        let annotations = Annotations::of(&clip.record);
        self.send_to_disk(DiskJob::Annotate {
            clip: target,
            annotations,
        });
    }

    /// Moves clip `which` to the library's trash (the bar then offers Undo) and takes every
    /// view of it off the screen; a clip outside the library only leaves the screen.
    pub(super) fn delete(&mut self, which: ClipRef) {
        let Some(clip) = self.clip(which) else {
            return;
        };
        let id = clip.record.id.clone();
        let target = library_clip(clip);
        self.stop_playback();
        if let Some(clip) = target {
            // Undo offers this delete once the disk has done it, never an earlier one.
            self.session.last_deleted = None;
            self.send_to_disk(DiskJob::Delete { clip });
        }
        if id.is_empty() {
            return self.close(which);
        }
        self.session.results.retain(|clip| clip.record.id != id);
        self.clamp_selection();
        if self
            .session
            .opened
            .as_ref()
            .is_some_and(|clip| clip.record.id == id)
        {
            self.session.opened = None;
        }
    }
}

/// How the disk thread knows `clip`: its library id, or the key of its queued save; None for
/// a clip outside the library (an opened file).
fn library_clip(clip: &ClipView) -> Option<ClipId> {
    if clip.record.id.is_empty() {
        clip.save_key.map(ClipId::Saved)
    } else {
        Some(ClipId::Id(clip.record.id.clone()))
    }
}

//! What the inference thread and the disk thread report, applied to the studio's state.

use super::*;

impl FoleyApp {
    /// Handles the worker's and the disk thread's events; called every frame.
    pub fn poll(&mut self) {
        self.poll_disk();
        while let Some(worker) = &self.worker {
            match worker.events.try_recv() {
                Ok(event) => self.handle(event),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    self.worker_lost();
                    break;
                }
            }
        }
        if self.session.playing.is_some()
            && let Ok(playback) = &self.playback
            && !playback.is_playing()
        {
            self.session.playing = None;
        }
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Loading { model } => self.session.model_state = ModelState::Loading(model),
            Event::Downloading { file, done, total } => {
                let model = match &self.session.model_state {
                    ModelState::Loading(model) | ModelState::Downloading { model, .. } => {
                        model.clone()
                    }
                    _ => self.settings.model.clone(),
                };
                self.session.model_state = ModelState::Downloading {
                    model,
                    file,
                    done,
                    total,
                };
            }
            Event::Loaded(info) => {
                self.settings.last_loaded_model = info.model.clone();
                self.session.model_state = ModelState::ready(info);
            }
            Event::LoadFailed { model, error, kept } => match kept {
                Some(kept) => {
                    self.session.say(format!(
                        "could not load {model}: {error} (still using {})",
                        kept.model
                    ));
                    self.session.model_state = ModelState::ready(kept);
                }
                // Said once, in the model's status line.
                None => self.session.model_state = ModelState::Failed { model, error },
            },
            Event::Progress {
                run,
                variation,
                step,
                total,
                elapsed,
            } => {
                if let Some(current) = self
                    .session
                    .run
                    .as_mut()
                    .filter(|current| current.id == run)
                {
                    current.progress = Some((variation, step, total, elapsed));
                    self.session.last_progress = Some((step, total));
                }
            }
            Event::Preview {
                run,
                variation,
                step,
                mel,
            } => {
                if self
                    .session
                    .run
                    .as_ref()
                    .is_some_and(|current| current.id == run)
                {
                    self.session.preview = Some(StepPreview::new(run, variation, step, mel));
                }
            }
            Event::Finished {
                run,
                request,
                model,
                clip,
                loudness,
                ..
            } => {
                let Some(current) = self
                    .session
                    .run
                    .as_mut()
                    .filter(|current| current.id == run)
                else {
                    return;
                };
                current.finished += 1;
                if current.finished >= current.variations {
                    self.session.run = None;
                }
                for warning in &clip.warnings {
                    self.session.say(warning.clone());
                }
                let record = ClipRecord::of_clip(&request, &clip, &model, 0, clip.sample_rate);
                let samples: Arc<[f32]> =
                    clip.waveforms.into_iter().next().unwrap_or_default().into();
                let mel = clip.mels.into_iter().next().map(|mel| (mel, clip.mel_bins));
                // On the board at once; the library save follows on the disk thread.
                let key = self.next_save;
                self.next_save += 1;
                let mut view =
                    ClipView::new(record.clone(), samples.clone(), mel.clone(), loudness);
                view.save_key = Some(key);
                self.session.results.push(view);
                self.session.selected.get_or_insert(0);
                self.send_to_disk(DiskJob::Save {
                    key,
                    record,
                    samples,
                    mel,
                });
            }
            Event::Failed { run, error } => {
                if let Some(current) = self.session.run.take_if(|current| current.id == run) {
                    // The other variations would most likely fail the same way.
                    current.cancel.cancel();
                    self.session.say(format!("generation failed: {error}"));
                }
            }
            Event::Cancelled { run } => {
                if self
                    .session
                    .run
                    .as_ref()
                    .is_some_and(|current| current.id == run)
                {
                    self.session.run = None;
                }
            }
        }
    }

    fn poll_disk(&mut self) {
        let mut events = Vec::new();
        if let Some(disk) = &self.disk {
            events.extend(disk.events.try_iter());
        }
        for event in events {
            self.handle_disk(event);
        }
    }

    fn handle_disk(&mut self, event: DiskEvent) {
        match event {
            DiskEvent::Records(records) => {
                if let Ok(library) = &mut self.library {
                    library.replace(records);
                }
            }
            DiskEvent::Saved { key, record } => {
                let Some(view) = self
                    .session
                    .results
                    .iter_mut()
                    .find(|view| view.save_key == Some(key))
                else {
                    return;
                };
                // What was said of it meanwhile went to the disk by its key, after the save.
                view.record.id = record.id;
                view.record.mel_bins = record.mel_bins;
            }
            DiskEvent::Deleted(record) => self.session.last_deleted = Some(record),
            // Only the newest open is shown: a slow one never replaces what came after it.
            DiskEvent::Opened {
                ticket,
                record,
                samples,
                mel,
                loudness,
            } => {
                if ticket == self.session.open_ticket {
                    self.show_opened(ClipView::new(record, samples.into(), mel, loudness));
                }
            }
            DiskEvent::TrashEmptied => self.session.last_deleted = None,
            // The drag goes on only while the button that began it is still down.
            DiskEvent::Exported {
                path,
                of,
                then_drag,
            } => {
                self.session.last_export = Some(path.clone());
                self.session.last_export_of = Some((of, path.clone()));
                if then_drag && self.pointer_down {
                    self.start_drag(path);
                }
            }
            DiskEvent::PictureSaved(path) => self.session.last_picture = Some(path),
            DiskEvent::Failed(message) => self.session.say(message),
            DiskEvent::Done => {
                if let Some(disk) = &mut self.disk {
                    disk.finished_one();
                }
            }
        }
    }
}

//! The left panel: model, device, prompt and generation settings, and the export options.

use super::*;

impl FoleyApp {
    pub(super) fn prompt_panel(&mut self, ui: &mut egui::Ui) {
        ui.heading("Foley");
        ui.add_space(4.0);
        let label = ui.label("Model");
        ui.horizontal(|ui| {
            let field = ui
                .add(egui::TextEdit::singleline(&mut self.settings.model).desired_width(150.0))
                .labelled_by(label.id);
            let entered =
                field.lost_focus() && ui.input(|input| input.key_pressed(egui::Key::Enter));
            if ui.button("Load").clicked() || entered {
                self.commands.push(StudioCommand::LoadModel);
            }
            if ui
                .button("Browse…")
                .on_hover_text("Choose a local diffusers model folder")
                .clicked()
            {
                self.commands.push(StudioCommand::ChooseModelFolder);
            }
        });
        ui.horizontal(|ui| {
            egui::ComboBox::from_label("Device")
                .selected_text(self.settings.device.clone())
                .show_ui(ui, |ui| {
                    for device in ["cpu", "cuda", "metal"] {
                        ui.selectable_value(&mut self.settings.device, device.to_string(), device);
                    }
                });
            egui::ComboBox::from_label("Precision")
                .selected_text(self.settings.dtype.clone())
                .show_ui(ui, |ui| {
                    for dtype in ["f32", "f16", "bf16"] {
                        ui.selectable_value(&mut self.settings.dtype, dtype.to_string(), dtype);
                    }
                });
        });
        let device = self.settings.device.parse::<DeviceKind>();
        if let (Ok(device), Ok(dtype)) = (device, parse_dtype(&self.settings.dtype))
            && let Some(notice) = Plan::new(device, dtype).notice
        {
            ui.weak(notice);
        }
        egui::ComboBox::from_label("Known checkpoints")
            .selected_text("choose…")
            .show_ui(ui, |ui| {
                for checkpoint in KNOWN_CHECKPOINTS {
                    let text = format!("{} · {:.1} GB", checkpoint.repo, checkpoint.download_gb());
                    if ui.selectable_label(false, text).clicked() {
                        self.settings.model = checkpoint.repo.to_string();
                    }
                }
            });
        match &self.session.model_state {
            ModelState::None => ui.label("No model loaded. Pick a known checkpoint (downloaded on Load) or type a local diffusers folder."),
            ModelState::Loading(model) => ui.label(format!("Loading {model}…")),
            ModelState::Downloading {
                model,
                file,
                done,
                total,
            } => {
                let fraction = *done as f32 / (*total).max(1) as f32;
                ui.label(format!("Downloading {model}"));
                ui.add(egui::ProgressBar::new(fraction).text(format!(
                    "{file}: {:.0} / {:.0} MB",
                    *done as f64 / 1e6,
                    *total as f64 / 1e6
                )));
                if ui.button("Cancel download").clicked() {
                    self.commands.push(StudioCommand::CancelDownload);
                }
                ui.small("Finished files stay in the Hugging Face cache; a new Load resumes.")
            }
            ModelState::Ready { model, family, .. } => ui.label(format!("{family}: {model}")),
            ModelState::Failed { model, error } => ui.colored_label(
                ui.visuals().error_fg_color,
                format!("could not load {model}: {error}"),
            ),
        };
        ui.separator();
        let label = ui.label("Prompt");
        if let Ok(library) = &self.library
            && library
                .records()
                .iter()
                .any(|record| !record.prompt.trim().is_empty())
        {
            // Listed only while the popup is open: not a scan of the library every frame.
            egui::ComboBox::from_label("Prompt history")
                .selected_text("earlier prompts")
                .show_ui(ui, |ui| {
                    for prompt in library.prompt_history(30) {
                        if ui.selectable_label(false, prompt.as_str()).clicked() {
                            self.settings.prompt = prompt;
                        }
                    }
                });
        }
        ui.add(
            egui::TextEdit::multiline(&mut self.settings.prompt)
                .hint_text("glass shattering on concrete")
                .desired_rows(3),
        )
        .labelled_by(label.id);
        // Said while typing, not after a generation: the end of a long prompt is not read.
        if let ModelState::Ready {
            prompt_limits,
            family,
            ..
        } = &self.session.model_state
            && let Some(limit) = prompt_limits.exceeded(&self.settings.prompt)
        {
            ui.colored_label(
                ui.visuals().warn_fg_color,
                format!("{family} reads {limit} tokens of the prompt; the rest is ignored"),
            );
        }
        let label = ui.label("Negative prompt");
        ui.add(egui::TextEdit::singleline(
            &mut self.settings.negative_prompt,
        ))
        .labelled_by(label.id);
        // 0 keeps the model's own value; say which value that is.
        let (default_steps, default_guidance, default_seconds) = match &self.session.model_state {
            ModelState::Ready {
                defaults,
                default_seconds,
                ..
            } => (
                defaults.0.to_string(),
                defaults.1.to_string(),
                format!("{default_seconds:.2}"),
            ),
            _ => (
                "the model's".into(),
                "the model's".into(),
                "the model's".into(),
            ),
        };
        egui::Grid::new("parameters").num_columns(2).show(ui, |ui| {
            let label = ui.label(format!("Duration (s; 0 = {default_seconds})"));
            ui.add(
                egui::DragValue::new(&mut self.settings.duration)
                    .range(0.0..=120.0)
                    .speed(0.1),
            )
            .labelled_by(label.id);
            ui.end_row();
            let label = ui.label(format!("Steps (0 = {default_steps})"));
            ui.add(egui::DragValue::new(&mut self.settings.steps).range(0..=1000))
                .labelled_by(label.id);
            ui.end_row();
            let label = ui.label(format!("Guidance (0 = {default_guidance})"));
            ui.add(
                egui::DragValue::new(&mut self.settings.guidance)
                    .range(0.0..=20.0)
                    .speed(0.1),
            )
            .labelled_by(label.id);
            ui.end_row();
            ui.label("");
            egui::ComboBox::from_label("Scheduler")
                .selected_text(self.settings.scheduler.clone())
                .show_ui(ui, |ui| {
                    for name in SchedulerKind::NAMES {
                        ui.selectable_value(&mut self.settings.scheduler, name.to_string(), *name);
                    }
                });
            ui.end_row();
            let label = ui.label("Seed");
            // A seed typed in is the one the next run uses.
            if ui
                .add(egui::DragValue::new(&mut self.settings.seed))
                .labelled_by(label.id)
                .changed()
            {
                self.settings.random_seed = false;
            }
            ui.end_row();
            ui.label("");
            ui.checkbox(&mut self.settings.random_seed, "New seed every run");
            ui.end_row();
            ui.label("");
            ui.weak(if self.settings.random_seed {
                "Next run: a new random seed".to_string()
            } else {
                format!("Next run: seed {}", self.settings.seed)
            });
            ui.end_row();
            let label = ui.label("Variations");
            ui.add(egui::DragValue::new(&mut self.settings.variations).range(1..=MAX_WAVEFORMS))
                .labelled_by(label.id);
            ui.end_row();
        });
        ui.add_space(6.0);
        ui.horizontal(|ui| {
            let ready =
                matches!(self.session.model_state, ModelState::Ready { .. }) && !self.is_busy();
            if ui
                .add_enabled(ready, egui::Button::new("Generate"))
                .on_hover_text("Ctrl+Enter")
                .clicked()
            {
                self.commands.push(StudioCommand::Generate);
            }
            if ui
                .add_enabled(self.is_busy(), egui::Button::new("Cancel"))
                .on_hover_text("Esc")
                .clicked()
            {
                self.commands.push(StudioCommand::Cancel);
            }
            if ui
                .button("Shortcuts")
                .on_hover_text("F1 or ?: the keyboard shortcuts")
                .clicked()
            {
                self.commands.push(StudioCommand::ToggleHelp);
            }
        });
        egui::CollapsingHeader::new("Editing").show(ui, |ui| {
            ui.add(
                egui::Slider::new(&mut self.settings.edit_strength, 0.0..=1.0)
                    .text("Editing strength"),
            )
            .on_hover_text(
                "Audio-to-audio: 0 keeps the clip, 1 ignores it (Stable Audio 3: its noise level)",
            );
            ui.horizontal(|ui| {
                let label = ui.label("Extend / loop (s)");
                ui.add(
                    egui::DragValue::new(&mut self.settings.edit_seconds)
                        .range(0.1..=60.0)
                        .speed(0.1),
                )
                .labelled_by(label.id);
            });
            ui.small("Drag on a clip's spectrogram (Shift-drag its waveform) to select.");
        });
        egui::CollapsingHeader::new("Export options").show(ui, |ui| self.export_options(ui));
        if let Some(run) = &self.session.run {
            match run.progress {
                Some((variation, step, total, elapsed)) => {
                    let fraction = step as f32 / total.max(1) as f32;
                    let eta = if step > 0 {
                        elapsed / step as f64 * (total - step) as f64
                    } else {
                        0.0
                    };
                    ui.add(egui::ProgressBar::new(fraction).text(format!(
                        "clip {}/{} · step {step}/{total} · {elapsed:.1} s · eta {eta:.1} s",
                        variation + 1,
                        run.variations
                    )));
                }
                None => {
                    ui.add(egui::ProgressBar::new(0.0).text("preparing…"));
                }
            }
            if let Some(preview) = self
                .session
                .preview
                .as_mut()
                .filter(|preview| preview.run == run.id && self.settings.step_preview)
            {
                preview.ui(ui);
            }
        }
        ui.checkbox(&mut self.settings.step_preview, "Show step preview")
            .on_hover_text("A spectrogram of the clip every few steps while it is made");
        match &self.playback {
            Ok(playback) => {
                let mut looping = self.settings.loop_playback;
                if ui.checkbox(&mut looping, "Loop playback").changed() {
                    self.commands.push(StudioCommand::ToggleLoop);
                }
                ui.small(format!(
                    "Audio: {} at {} Hz",
                    playback.device_name, playback.device_rate
                ))
            }
            Err(error) => ui.small(format!("Playback unavailable: {error}")),
        };
    }

    pub(super) fn export_options(&mut self, ui: &mut egui::Ui) {
        let export = &mut self.settings.export;
        egui::ComboBox::from_label("Export format")
            .selected_text(export.format.clone())
            .show_ui(ui, |ui| {
                for (name, text) in [
                    ("pcm16", "16-bit PCM"),
                    ("pcm24", "24-bit PCM"),
                    ("f32", "32-bit float"),
                ] {
                    ui.selectable_value(&mut export.format, name.to_string(), text);
                }
            });
        let rate_text = export
            .sample_rate
            .map_or_else(|| "model rate".to_string(), |rate| format!("{rate} Hz"));
        egui::ComboBox::from_label("Export sample rate")
            .selected_text(rate_text)
            .show_ui(ui, |ui| {
                ui.selectable_value(&mut export.sample_rate, None, "model rate");
                ui.selectable_value(&mut export.sample_rate, Some(44_100), "44100 Hz");
                ui.selectable_value(&mut export.sample_rate, Some(48_000), "48000 Hz");
            });
        let target_text = export
            .loudness_target_lufs
            .map_or_else(|| "off".to_string(), |target| format!("{target} LUFS"));
        egui::ComboBox::from_label("Loudness target")
            .selected_text(target_text)
            .show_ui(ui, |ui| {
                ui.selectable_value(&mut export.loudness_target_lufs, None, "off");
                for target in LOUDNESS_TARGETS {
                    ui.selectable_value(
                        &mut export.loudness_target_lufs,
                        Some(target),
                        format!("{target} LUFS"),
                    );
                }
            });
        if export.loudness_target_lufs.is_some() {
            ui.horizontal(|ui| {
                let label = ui.label("True-peak ceiling (dBTP)");
                ui.add(
                    egui::DragValue::new(&mut export.true_peak_ceiling_dbtp)
                        .range(-12.0..=0.0)
                        .speed(0.1),
                )
                .labelled_by(label.id);
            });
        } else {
            ui.checkbox(&mut export.normalize, "Normalise peak to -1 dBFS");
        }
        ui.horizontal(|ui| {
            let label = ui.label("Fade in (ms)");
            ui.add(egui::DragValue::new(&mut export.fade_in_ms).range(0.0..=5000.0))
                .labelled_by(label.id);
            let label = ui.label("Fade out (ms)");
            ui.add(egui::DragValue::new(&mut export.fade_out_ms).range(0.0..=5000.0))
                .labelled_by(label.id);
        });
        let ucs = matches!(export.naming, Naming::Ucs { .. });
        egui::ComboBox::from_label("File names")
            .selected_text(if ucs { "UCS" } else { "prompt_model_seed" })
            .show_ui(ui, |ui| {
                if ui.selectable_label(!ucs, "prompt_model_seed").clicked() {
                    export.naming = Naming::Prompt;
                }
                if ui
                    .selectable_label(ucs, "UCS")
                    .on_hover_text("CatID_FXName_CreatorID_SourceID, as sound libraries name files")
                    .clicked()
                    && !ucs
                {
                    export.naming = Naming::Ucs {
                        category: String::new(),
                        creator: String::new(),
                        source: String::new(),
                    };
                }
            });
        if let Naming::Ucs {
            category,
            creator,
            source,
        } = &mut export.naming
        {
            for (text, field, hint) in [
                ("UCS CatID", category, "GLASBrk"),
                ("Creator ID", creator, "initials"),
                ("Source ID", source, "project"),
            ] {
                ui.horizontal(|ui| {
                    let label = ui.label(text);
                    ui.add(
                        egui::TextEdit::singleline(field)
                            .hint_text(hint)
                            .desired_width(120.0),
                    )
                    .labelled_by(label.id);
                });
            }
        }
        let label = ui.label("Export folder");
        let mut folder = self.settings.export_dir.display().to_string();
        if ui
            .add(egui::TextEdit::singleline(&mut folder))
            .labelled_by(label.id)
            .changed()
        {
            self.settings.export_dir = PathBuf::from(folder);
        }
    }
}

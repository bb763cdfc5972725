//! Editing (research/editing.md) against the Python reference built from diffusers components
//! by `tools/reference/build_editing_fixtures.py`: the front-end, the VAE encoder, audio-to-audio,
//! inpainting, super-resolution and variations for every family, and the properties the spec
//! promises (strength 1 is text-to-audio, kept latent rows are exact, loops have no seam).

mod common;

use candle_core::{DType, Device, Tensor};
use common::edits::{self, EDIT_VARIANTS, channels, reference_dir, run, tensors, values};
use common::{fixtures, model_dir, read_json};
use foley::engine::dsp::frontend::MelFrontEnd;
use foley::engine::dsp::mel_filters::mel_filters;
use foley::engine::dsp::sinc_resample::resample;
use foley::engine::pipeline::editing::truncation;
use foley::engine::pipeline::{
    CancelFlag, EncodeMode, InputAudio, Pipeline, Regions, Request, Task,
};
use foley::engine::schedulers::{SchedulerConfig, SchedulerKind};

fn max_abs_diff(actual: &[f32], expected: &[f32]) -> f32 {
    assert_eq!(actual.len(), expected.len(), "length mismatch");
    actual
        .iter()
        .zip(expected)
        .map(|(a, e)| (a - e).abs())
        .fold(0.0, f32::max)
}

/// FE-4: librosa's Slaney filter bank; FE-2: torchaudio's resampler; FE-1/FE-3: the whole
/// front-end on synthetic signals (and silence) against torch.stft + librosa.
#[test]
fn front_end_matches_torchaudio_and_librosa() {
    let reference = tensors("frontend");
    let filters = mel_filters(16_000, 1024, 64, 0.0, 8000.0);
    assert!(max_abs_diff(&filters, &values(&reference, "mel_filters.real")) <= 1e-7);
    let filters = mel_filters(16_000, 32, 8, 0.0, 8000.0);
    assert!(max_abs_diff(&filters, &values(&reference, "mel_filters.tiny")) <= 1e-7);

    let json = read_json(&reference_dir().join("frontend.json"));
    let mut resampled = 0;
    for key in reference
        .keys()
        .filter(|key| key.starts_with("resample.") && key.ends_with(".input"))
    {
        let stem = key.trim_end_matches(".input");
        let rates = stem.trim_start_matches("resample.");
        let (from, to) = rates.split_once('_').unwrap();
        let output = resample(
            &values(&reference, key),
            from.parse().unwrap(),
            to.parse().unwrap(),
        );
        // The exact kernel (torchaudio in float64) to 1e-6; torchaudio's own float32 kernel is
        // itself up to ~2e-5 away from it (11.025 kHz).
        let error = max_abs_diff(&output, &values(&reference, &format!("{stem}.output")));
        assert!(error <= 1e-6, "{rates}: max |Δ| {error}");
        let error = max_abs_diff(&output, &values(&reference, &format!("{stem}.output_f32")));
        assert!(
            error <= 5e-5,
            "{rates}: max |Δ| vs float32 torchaudio {error}"
        );
        resampled += 1;
    }
    assert!(resampled >= 5, "only {resampled} resampler cases");

    let front = MelFrontEnd::for_checkpoint(16_000, 160, 64, 4).unwrap();
    let cases = json["fbank"].as_array().expect("fbank cases");
    assert!(cases.len() >= 6);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let input = channels(&reference, &format!("fbank.{name}.input"));
        let rate = case["rate"].as_u64().unwrap() as u32;
        let frames = case["frames"].as_u64().unwrap() as usize;
        let mel = front.fbank(&input, rate, frames).unwrap();
        let expected = values(&reference, &format!("fbank.{name}.logmel"));
        let error = max_abs_diff(&mel.values, &expected);
        assert!(error <= 1e-4, "{name}: max |Δ log-mel| {error}");
        let gain = values(&reference, &format!("fbank.{name}.gain"))[0];
        assert!(
            (mel.gain - gain).abs() <= 1e-6 * gain.abs().max(1.0),
            "{name}: gain {} vs {gain}",
            mel.gain
        );
    }
}

/// VAE-1: the encoder's moments, mean and std for a random mel, every family.
#[test]
fn vae_encoder_matches_diffusers() {
    for variant in EDIT_VARIANTS {
        let reference = tensors(variant);
        let pipeline = Pipeline::load(&model_dir(variant), &Device::Cpu, DType::F32).unwrap();
        let posterior = pipeline
            .decoder()
            .expect("a mel-based pipeline")
            .encoder()
            .unwrap()
            .encode(&reference["vae.mel"])
            .unwrap();
        for (name, tensor) in [
            ("moments", &posterior.moments),
            ("mean", &posterior.mean),
            ("std", &posterior.std),
        ] {
            let actual: Vec<f32> = tensor.flatten_all().unwrap().to_vec1().unwrap();
            let error = max_abs_diff(&actual, &values(&reference, &format!("vae.{name}")));
            assert!(error <= 1e-5, "{variant} {name}: max |Δ| {error}");
        }
    }
}

/// A2A-4/5, INP-4, super-resolution and VAR (MusicLDM): the waveform of every reference case
/// within 1e-4 relative L2, with diffusers' number of UNet calls.
#[test]
fn edits_match_the_python_reference() {
    let count = edits::check_edits_on(&Device::Cpu, 1e-4);
    assert!(count >= 20, "only {count} reference cases");
}

fn mel_pipeline() -> Pipeline {
    Pipeline::load(&model_dir("audioldm-tiny-mel"), &Device::Cpu, DType::F32).unwrap()
}

/// A stereo test signal at 44.1 kHz: a chirp and noise-like harmonics.
fn test_input(seconds: f64) -> InputAudio {
    let rate = 44_100;
    let frames = (seconds * rate as f64) as usize;
    let left: Vec<f32> = (0..frames)
        .map(|i| {
            let t = i as f32 / rate as f32;
            0.3 * (2.0 * std::f32::consts::PI * (200.0 + 900.0 * t) * t).sin()
                + 0.1 * (2.0 * std::f32::consts::PI * 3100.0 * t).sin()
        })
        .collect();
    let right: Vec<f32> = left.iter().map(|v| v * 0.7).collect();
    InputAudio::new(vec![left, right], rate, "test-input")
}

fn base_request(scheduler: SchedulerKind, task: Task) -> Request {
    Request {
        prompt: "A hammer hitting a wooden surface".into(),
        negative_prompt: Some("low quality".into()),
        seed: 11,
        steps: 5,
        guidance: 2.5,
        duration: None,
        scheduler,
        waveforms: 1,
        task,
    }
}

/// A2A-1 and INP-1: strength 1 is text-to-audio bit for bit, and so is inpainting that
/// regenerates everything with the posterior mean (no extra draw), for deterministic and
/// stochastic schedulers alike.
#[test]
fn full_strength_edits_are_text_to_audio() {
    let pipeline = mel_pipeline();
    let input = test_input(0.32);
    for scheduler in [
        SchedulerKind::Ddim,
        SchedulerKind::EulerAncestral,
        SchedulerKind::DpmSolverMultistep,
        SchedulerKind::Heun,
        SchedulerKind::Pndm,
        SchedulerKind::UniPc,
        SchedulerKind::Kdpm2Ancestral,
        SchedulerKind::Ddpm,
    ] {
        let text = Request {
            duration: Some(input.seconds()),
            ..base_request(scheduler, Task::TextToAudio)
        };
        let (expected, _) = run(&pipeline, &text);
        let a2a = base_request(
            scheduler,
            Task::AudioToAudio {
                input: input.clone(),
                strength: 1.0,
                encode_mode: EncodeMode::Sample,
            },
        );
        let (clip, _) = run(&pipeline, &a2a);
        assert_eq!(
            clip.waveforms, expected.waveforms,
            "{scheduler:?} strength 1"
        );
        let everything = Task::Inpaint {
            input: input.clone(),
            regions: Regions {
                time: vec![(0.0, 100.0)],
                above_hz: None,
            },
            strength: 1.0,
            encode_mode: EncodeMode::Mean,
        };
        let (clip, _) = run(&pipeline, &base_request(scheduler, everything));
        assert_eq!(
            clip.waveforms, expected.waveforms,
            "{scheduler:?} regenerate all"
        );
    }
}

/// The input's clean latents `sf · mean`, computed the way the planner does.
fn clean_latents(pipeline: &Pipeline, input: &InputAudio) -> Tensor {
    let decoder = pipeline.decoder().expect("a mel-based pipeline");
    let length = pipeline.audio_length(Some(input.seconds())).unwrap();
    let mel = decoder
        .front_end()
        .unwrap()
        .fbank(&input.channels, input.sample_rate, length.mel_frames)
        .unwrap();
    let mel = Tensor::from_vec(mel.values, (1, 1, mel.frames, mel.n_mels), &Device::Cpu).unwrap();
    let posterior = decoder.encoder().unwrap().encode(&mel).unwrap();
    (posterior.mean * decoder.vae_config.scaling_factor).unwrap()
}

/// A2A-2 / INP-2: strength 0 (or nothing to regenerate) returns the input through the VAE and
/// vocoder with no UNet call; A2A-3: the number of UNet calls follows `int(N · strength)`.
#[test]
fn low_strength_runs_fewer_steps_and_zero_is_encode_decode() {
    let pipeline = mel_pipeline();
    let input = test_input(0.32);
    let zero = Task::AudioToAudio {
        input: input.clone(),
        strength: 0.0,
        encode_mode: EncodeMode::Mean,
    };
    let (clip, _) = run(&pipeline, &base_request(SchedulerKind::Ddim, zero));
    assert_eq!(clip.denoising_steps, 0);
    let clean = clean_latents(&pipeline, &input);
    let mel = pipeline
        .decoder()
        .expect("a mel-based pipeline")
        .decode_latents(&clean)
        .unwrap();
    let expected: Vec<f32> = pipeline
        .decoder()
        .expect("a mel-based pipeline")
        .vocoder
        .forward(&mel)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    assert_eq!(clip.waveforms[0], expected[..clip.waveforms[0].len()]);

    let config = SchedulerConfig::load(
        &model_dir("audioldm-tiny-mel").join("scheduler/scheduler_config.json"),
    )
    .unwrap();
    for (kind, strength, calls) in [
        (SchedulerKind::Ddim, 0.1, 0),
        (SchedulerKind::Ddim, 0.2, 1),
        (SchedulerKind::Ddim, 0.5, 2),
        (SchedulerKind::Ddim, 0.79, 3),
        (SchedulerKind::Ddim, 0.8, 4),
        (SchedulerKind::Ddim, 0.99, 4),
        (SchedulerKind::Heun, 0.5, 3),
    ] {
        let scheduler = kind.build(&config, 5).unwrap();
        let (begin, runs) = truncation(5, strength, scheduler.as_ref());
        assert_eq!(runs, (5.0 * strength) as usize);
        let entries = scheduler.timesteps().len() - begin;
        let expected_entries = if runs == 0 { entries } else { calls };
        assert_eq!(entries, expected_entries, "{kind:?} strength {strength}");
    }
    // f64 like Python: int(100 · 0.29) = 28 (f32 would give 29).
    let scheduler = SchedulerKind::Ddim.build(&config, 100).unwrap();
    assert_eq!(truncation(100, 0.29, scheduler.as_ref()).1, 28);
}

/// INP-3: after the last step the kept latent rows and columns are the input's clean latents,
/// bit for bit, for a time range plus a frequency cut.
#[test]
fn inpainting_keeps_the_unmasked_latents_exactly() {
    let pipeline = mel_pipeline();
    let input = test_input(0.32);
    let clean = clean_latents(&pipeline, &input);
    for scheduler in [
        SchedulerKind::Ddim,
        SchedulerKind::EulerAncestral,
        SchedulerKind::DpmSolverMultistep,
    ] {
        let task = Task::Inpaint {
            input: input.clone(),
            regions: Regions {
                time: vec![(0.08, 0.16)],
                above_hz: Some(4000.0),
            },
            strength: 1.0,
            encode_mode: EncodeMode::Mean,
        };
        let (_, latents) = run(&pipeline, &base_request(scheduler, task));
        let latents = latents.unwrap();
        let (_, channels, rows, columns) = latents.dims4().unwrap();
        let actual: Vec<f32> = latents.flatten_all().unwrap().to_vec1().unwrap();
        let expected: Vec<f32> = clean.flatten_all().unwrap().to_vec1().unwrap();
        // Rows 2..4 (0.08–0.16 s at 25 rows/s) and columns 12.. are regenerated.
        let mut kept = 0;
        for channel in 0..channels {
            for row in 0..rows {
                for column in 0..columns {
                    let index = (channel * rows + row) * columns + column;
                    let regenerated = (2..4).contains(&row) || column >= 12;
                    if regenerated {
                        continue;
                    }
                    assert_eq!(
                        actual[index], expected[index],
                        "{scheduler:?} c{channel} r{row} k{column}"
                    );
                    kept += 1;
                }
            }
        }
        assert!(kept > 0);
        assert_ne!(actual, expected, "{scheduler:?}: nothing was regenerated");
    }
}

/// Continuation keeps the user's audio (crossfaded only at the join) and adds the asked-for
/// seconds; a loop's wrap from end to start is no rougher than the clip itself.
#[test]
fn continuation_and_loop_keep_the_input_and_join_smoothly() {
    let pipeline = mel_pipeline();
    let input = test_input(0.4);
    let source = resample(&input.mono(), 44_100, 16_000);
    let task = Task::Continue {
        input: input.clone(),
        seconds: 0.24,
        encode_mode: EncodeMode::Sample,
    };
    let (clip, _) = run(
        &pipeline,
        &base_request(SchedulerKind::DpmSolverMultistep, task),
    );
    let out = &clip.waveforms[0];
    assert_eq!(out.len(), source.len() + 3840);
    let fade = 800;
    assert_eq!(out[..source.len() - fade], source[..source.len() - fade]);
    assert!(
        out[source.len()..].iter().any(|v| v.abs() > 1e-4),
        "the extension is silent"
    );
    assert_eq!(clip.task.name, "continue");

    let task = Task::Loop {
        input: input.clone(),
        seconds: 0.24,
        encode_mode: EncodeMode::Sample,
    };
    let (clip, _) = run(
        &pipeline,
        &base_request(SchedulerKind::DpmSolverMultistep, task),
    );
    let out = &clip.waveforms[0];
    assert_eq!(out.len(), source.len() + 3840);
    assert_eq!(
        out[fade..source.len() - fade],
        source[fade..source.len() - fade]
    );
    let largest_step = out
        .windows(2)
        .map(|pair| (pair[1] - pair[0]).abs())
        .fold(0.0, f32::max);
    let seam = (out[0] - out[out.len() - 1]).abs();
    assert!(
        seam <= largest_step,
        "loop seam {seam} > largest step inside {largest_step}"
    );
}

/// VAR-2: a variation is text-to-audio with the sound's CLAP audio embedding as the prompt
/// embedding; checkpoints without an audio branch say so.
#[test]
fn variations_need_a_clap_audio_branch() {
    let input = test_input(0.05);
    let request = Request {
        prompt: String::new(),
        ..base_request(
            SchedulerKind::Ddim,
            Task::Variation {
                input: input.clone(),
            },
        )
    };
    let audioldm = Pipeline::load(&model_dir("audioldm-tiny"), &Device::Cpu, DType::F32).unwrap();
    let error = audioldm
        .generate(&request, &mut |_| {}, &CancelFlag::new())
        .unwrap_err()
        .to_string();
    assert!(error.contains("CLAP audio branch"), "{error}");
    let musicldm = Pipeline::load(&model_dir("musicldm-tiny"), &Device::Cpu, DType::F32).unwrap();
    let clip = musicldm
        .generate(&request, &mut |_| {}, &CancelFlag::new())
        .unwrap();
    assert!(clip.waveforms[0].iter().all(|v| v.is_finite()));
    assert_eq!(clip.task.name, "variation");
}

/// An HTSAT stage whose map is no larger than `window_size` attends it as one window, unshifted,
/// as transformers' `set_shift_and_window_size` does: at equality (transformers' own output) and
/// smaller, with the bias table sized for the clamped window (a model transformers builds only
/// with its attention resized; `from_pretrained` refuses it, Foley loads it).
#[test]
fn clap_audio_clamps_the_window_to_small_maps() {
    use foley::engine::models::clap_audio::{ClapAudioModel, ClapModelAudioConfig};
    for (fixture, reference, input) in [
        ("clap-small-map", "clap_small_map", "input_features.full"),
        ("clap-smaller-map", "clap_smaller_map", "input_features"),
    ] {
        let dir = fixtures().join(fixture);
        let config: ClapModelAudioConfig =
            serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap())
                .unwrap();
        let weights = dir.join("model.safetensors");
        let vb = unsafe {
            candle_nn::VarBuilder::from_mmaped_safetensors(&[weights], DType::F32, &Device::Cpu)
                .unwrap()
        };
        let model = ClapAudioModel::new(&config.audio(), config.projection_dim, vb)
            .unwrap_or_else(|error| panic!("{fixture}: {error}"));
        let reference = tensors(reference);
        let suffix = input.strip_prefix("input_features").unwrap();
        let embeds = model.audio_embeds(&reference[input]).unwrap();
        let actual: Vec<f32> = embeds.flatten_all().unwrap().to_vec1().unwrap();
        let error = max_abs_diff(
            &actual,
            &values(&reference, &format!("audio_embeds{suffix}")),
        );
        assert!(error <= 1e-5, "{fixture}: audio_embeds max |Δ| {error}");
        let pooled: Vec<f32> = model
            .pooled(&reference[input])
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let error = max_abs_diff(&pooled, &values(&reference, &format!("pooled{suffix}")));
        assert!(error <= 1e-5, "{fixture}: pooled max |Δ| {error}");
    }
    // The same model saved with window-4-sized tables for the clamped stage (what a checkpoint
    // written for the configured window holds): the 3×3 offsets sit at the centre of the 7×7
    // table and the rest must not matter.
    let dir = tempfile::tempdir().unwrap();
    let source = fixtures().join("clap-smaller-map");
    std::fs::copy(source.join("config.json"), dir.path().join("config.json")).unwrap();
    let mut weights =
        candle_core::safetensors::load(source.join("model.safetensors"), &Device::Cpu).unwrap();
    let mut widened = 0;
    for (name, table) in weights.iter_mut() {
        if !name.ends_with("relative_position_bias_table") || table.dim(0).unwrap() != 9 {
            continue;
        }
        let small: Vec<Vec<f32>> = table.to_vec2().unwrap();
        let heads = small[0].len();
        let mut large = vec![vec![1000f32; heads]; 49];
        for dy in 0..3 {
            for dx in 0..3 {
                large[(dy + 2) * 7 + (dx + 2)] = small[dy * 3 + dx].clone();
            }
        }
        *table = Tensor::new(large, &Device::Cpu).unwrap();
        widened += 1;
    }
    assert_eq!(widened, 2);
    weights.retain(|name, _| !name.ends_with("relative_position_index"));
    candle_core::safetensors::save(&weights, dir.path().join("model.safetensors")).unwrap();
    let config: ClapModelAudioConfig =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("config.json")).unwrap())
            .unwrap();
    let vb = unsafe {
        candle_nn::VarBuilder::from_mmaped_safetensors(
            &[dir.path().join("model.safetensors")],
            DType::F32,
            &Device::Cpu,
        )
        .unwrap()
    };
    let model = ClapAudioModel::new(&config.audio(), config.projection_dim, vb).unwrap();
    let reference = tensors("clap_smaller_map");
    let embeds: Vec<f32> = model
        .audio_embeds(&reference["input_features"])
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let error = max_abs_diff(&embeds, &values(&reference, "audio_embeds"));
    assert!(
        error <= 1e-5,
        "widened tables: audio_embeds max |Δ| {error}"
    );
}

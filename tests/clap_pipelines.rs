//! AudioLDM and MusicLDM against diffusers: CLAP text vectors, UNet with class embedding
//! (no context), VAE (including legacy attention names), vocoder and whole generations.

mod common;

use candle_core::{DType, Device};
use common::{Reference, assert_close, check_e2e, model_dir, read_json};
use foley::engine::kernels::gemm_bf16::Engine;
use foley::engine::kernels::with_bf16_products;
use foley::engine::models::unet::UNetConditioning;
use foley::engine::pipeline::{AudioLdmPipeline, CancelFlag, ClapFamily, Request};
use foley::engine::schedulers::SchedulerKind;

const VARIANTS: [&str; 4] = [
    "audioldm-tiny",
    "audioldm-tiny-deep",
    "musicldm-tiny",
    "musicldm-tiny-deep",
];
const COMPONENT_TOLERANCE: f64 = 1e-5;

fn pipeline(variant: &str) -> AudioLdmPipeline {
    AudioLdmPipeline::load(&model_dir(variant), &Device::Cpu, DType::F32)
        .unwrap_or_else(|error| panic!("loading {variant}: {error}"))
}

#[test]
fn families_are_recognised() {
    for variant in VARIANTS {
        let expected = if variant.starts_with("music") {
            ClapFamily::MusicLdm
        } else {
            ClapFamily::AudioLdm
        };
        assert_eq!(pipeline(variant).family(), expected, "{variant}");
    }
}

/// In the CPU's bf16 mode the CLAP text encoder still takes f32 products
/// (`kernels::with_f32_products`), so the prompt's vectors are f32's bit for bit; the emulated
/// engine would round any operand it multiplied.
#[test]
fn prompts_encode_with_f32_products_in_the_bf16_mode() {
    for variant in [VARIANTS[0], VARIANTS[2]] {
        let pipe = pipeline(variant);
        let encode = || {
            let embeddings =
                pipe.encode_prompt("a dog barks twice", Some("rain"), true, &mut Vec::new());
            let values: Vec<f32> = embeddings
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            values.into_iter().map(f32::to_bits).collect::<Vec<_>>()
        };
        let f32 = encode();
        assert!(
            f32 == with_bf16_products(Some(Engine::Emulated), encode),
            "{variant}"
        );
    }
}

#[test]
fn clap_text_vectors_match() {
    for variant in VARIANTS {
        let pipe = pipeline(variant);
        let reference = Reference::load(variant, "text");
        let json = read_json(
            &common::fixtures()
                .join("reference")
                .join(variant)
                .join("text.json"),
        );
        let prompts = json
            .get("prompts")
            .unwrap_or(&json)
            .as_array()
            .unwrap()
            .clone();
        for (index, prompt) in prompts.iter().enumerate() {
            let prompt = prompt.as_str().unwrap();
            let tokenizer = pipe.tokenizer();
            let tokens = tokenizer
                .encode(prompt, Some(tokenizer.max_length))
                .unwrap();
            assert_eq!(
                vec![tokens.ids.clone()],
                reference.rows(&format!("clap_ids.{index}")),
                "{variant} ids of {prompt:?}"
            );
            assert_eq!(
                vec![tokens.mask.clone()],
                reference.rows(&format!("clap_mask.{index}")),
                "{variant} mask of {prompt:?}"
            );
            let embeds = pipe
                .clap()
                .text_features(&[tokens.ids], &[tokens.mask], &Device::Cpu)
                .unwrap();
            let expected = reference.f32(&format!("text_embeds.{index}"));
            assert_close(
                &embeds,
                &expected,
                COMPONENT_TOLERANCE,
                &format!("{variant} CLAP {index}"),
            );
        }
    }
}

#[test]
fn unet_with_class_labels_matches() {
    for variant in VARIANTS {
        let pipe = pipeline(variant);
        let reference = Reference::load(variant, "unet");
        for case in 0..2 {
            let sample = reference.f32(&format!("sample.{case}"));
            let timestep = reference.ints(&format!("timestep.{case}"))[0] as f64;
            let labels = reference.f32(&format!("class_labels.{case}"));
            let conditioning = UNetConditioning {
                class_labels: Some(&labels),
                ..Default::default()
            };
            let out = pipe
                .unet()
                .forward(&sample, timestep, conditioning)
                .unwrap();
            let what = format!("{variant} UNet case {case} {:?}", sample.dims());
            assert_close(
                &out,
                &reference.f32(&format!("out.{case}")),
                COMPONENT_TOLERANCE,
                &what,
            );
        }
    }
}

#[test]
fn vae_and_vocoder_match() {
    for variant in VARIANTS {
        let pipe = pipeline(variant);
        let vae = Reference::load(variant, "vae");
        let mel = pipe.decoder().vae.decode(&vae.f32("latents")).unwrap();
        assert_close(
            &mel,
            &vae.f32("mel"),
            COMPONENT_TOLERANCE,
            &format!("{variant} VAE"),
        );
        let vocoder = Reference::load(variant, "vocoder");
        let waveform = pipe.decoder().vocoder.forward(&vocoder.f32("mel")).unwrap();
        assert_close(
            &waveform,
            &vocoder.f32("waveform"),
            COMPONENT_TOLERANCE,
            &format!("{variant} vocoder"),
        );
    }
}

#[test]
fn generations_match_diffusers() {
    for variant in VARIANTS {
        check_e2e(variant, 8);
    }
}

#[test]
fn several_waveforms_are_generated_in_one_batch_like_diffusers() {
    for variant in ["musicldm-tiny", "musicldm-tiny-deep"] {
        let pipe = pipeline(variant);
        let reference = Reference::load(variant, "ranking");
        let request = Request {
            task: Default::default(),
            prompt: "A hammer hitting a wooden surface".into(),
            negative_prompt: None,
            seed: 42,
            steps: 4,
            guidance: 2.0,
            duration: None,
            scheduler: SchedulerKind::Ddim,
            waveforms: 3,
        };
        let clip = pipe
            .generate_unranked(&request, &mut |_| {}, &CancelFlag::new())
            .unwrap();
        let expected = reference.f32("unsorted");
        let actual = candle_core::Tensor::new(clip.waveforms, &Device::Cpu).unwrap();
        assert_close(
            &actual,
            &expected,
            common::WAVEFORM_TOLERANCE,
            &format!("{variant} batch of 3"),
        );
    }
}

#[test]
fn several_waveforms_come_back_best_first_like_diffusers() {
    for variant in ["musicldm-tiny", "musicldm-tiny-deep"] {
        let pipe = pipeline(variant);
        let reference = Reference::load(variant, "ranking");
        let request = Request {
            task: Default::default(),
            prompt: "A hammer hitting a wooden surface".into(),
            negative_prompt: None,
            seed: 42,
            steps: 4,
            guidance: 2.0,
            duration: None,
            scheduler: SchedulerKind::Ddim,
            waveforms: 3,
        };
        let clip = pipe
            .generate(&request, &mut |_| {}, &CancelFlag::new())
            .unwrap();
        let actual = candle_core::Tensor::new(clip.waveforms.clone(), &Device::Cpu).unwrap();
        assert_close(
            &actual,
            &reference.f32("sorted"),
            common::WAVEFORM_TOLERANCE,
            &format!("{variant} ranked"),
        );
        let scores = clip.scores.expect("ranked clips carry scores");
        assert!(
            scores.windows(2).all(|pair| pair[0] >= pair[1]),
            "{variant}: {scores:?} not best first"
        );
        let logits = reference.values("logits_per_text");
        let order: Vec<usize> = reference
            .ints("order")
            .into_iter()
            .map(|i| i as usize)
            .collect();
        let expected: Vec<f32> = order.iter().map(|index| logits[*index]).collect();
        for (ours, theirs) in scores.iter().zip(&expected) {
            assert!(
                (ours - theirs).abs() <= 1e-4 * theirs.abs().max(1.0),
                "{variant}: {scores:?} vs {expected:?}"
            );
        }
    }
}

#[test]
fn audioldm_returns_several_waveforms_in_generation_order() {
    let pipe = pipeline("audioldm-tiny");
    let request = Request {
        task: Default::default(),
        prompt: "A hammer hitting a wooden surface".into(),
        negative_prompt: None,
        seed: 42,
        steps: 2,
        guidance: 2.5,
        duration: None,
        scheduler: SchedulerKind::Ddim,
        waveforms: 2,
    };
    let ranked = pipe
        .generate(&request, &mut |_| {}, &CancelFlag::new())
        .unwrap();
    let unranked = pipe
        .generate_unranked(&request, &mut |_| {}, &CancelFlag::new())
        .unwrap();
    // diffusers' AudioLDM has no score_waveforms.
    assert_eq!(ranked.waveforms, unranked.waveforms);
    assert!(ranked.scores.is_none());
}

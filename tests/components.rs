//! Parity of every AudioLDM 2 component with the tensors diffusers/transformers recorded
//! (tools/reference/build_fixtures.py), on both fixture variants.

mod common;

use candle_core::{DType, Device};
use common::{Reference, VARIANTS, assert_close, model_dir, read_json};
use foley::engine::kernels::gemm_bf16::Engine;
use foley::engine::kernels::with_bf16_products;
use foley::engine::models::unet::UNetConditioning;
use foley::engine::noise::TorchGenerator;
use foley::engine::pipeline::AudioLdm2Pipeline;
use foley::engine::schedulers::SchedulerKind;

const COMPONENT_TOLERANCE: f64 = 1e-5;

fn pipeline(variant: &str) -> AudioLdm2Pipeline {
    AudioLdm2Pipeline::load(&model_dir(variant), &Device::Cpu, DType::F32)
        .unwrap_or_else(|error| panic!("loading {variant}: {error}"))
}

fn prompts(variant: &str) -> Vec<String> {
    let path = common::fixtures()
        .join("reference")
        .join(variant)
        .join("text.json");
    let json = read_json(&path);
    let list = json.get("prompts").unwrap_or(&json);
    list.as_array()
        .expect("text.json lists prompts")
        .iter()
        .map(|prompt| prompt.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn tokenizers_match_transformers() {
    for variant in VARIANTS {
        let pipe = pipeline(variant);
        let reference = Reference::load(variant, "text");
        for (index, prompt) in prompts(variant).iter().enumerate() {
            let clap_tokenizer = pipe.clap_tokenizer();
            let clap = clap_tokenizer
                .encode(prompt, Some(clap_tokenizer.max_length))
                .unwrap();
            assert_eq!(
                vec![clap.ids],
                reference.rows(&format!("clap_ids.{index}")),
                "{variant} CLAP ids of {prompt:?}"
            );
            assert_eq!(
                vec![clap.mask],
                reference.rows(&format!("clap_mask.{index}")),
                "{variant} CLAP mask of {prompt:?}"
            );
            let t5 = pipe.t5_tokenizer().encode(prompt, None).unwrap();
            assert_eq!(
                vec![t5.ids],
                reference.rows(&format!("t5_ids.{index}")),
                "{variant} T5 ids of {prompt:?}"
            );
            assert_eq!(
                vec![t5.mask],
                reference.rows(&format!("t5_mask.{index}")),
                "{variant} T5 mask of {prompt:?}"
            );
        }
    }
}

#[test]
fn long_prompts_are_truncated_and_flagged() {
    let pipe = pipeline(VARIANTS[0]);
    let long = "glass shattering on concrete ".repeat(60);
    let tokenizer = pipe.clap_tokenizer();
    let encoded = tokenizer.encode(&long, Some(tokenizer.max_length)).unwrap();
    assert!(encoded.truncated);
    assert_eq!(encoded.ids.len(), tokenizer.max_length);
    let short = tokenizer
        .encode("glass", Some(tokenizer.max_length))
        .unwrap();
    assert!(!short.truncated);
}

#[test]
fn clap_text_features_match() {
    for variant in VARIANTS {
        let pipe = pipeline(variant);
        let reference = Reference::load(variant, "text");
        for index in 0..prompts(variant).len() {
            let ids = reference.rows(&format!("clap_ids.{index}"));
            let mask = reference.rows(&format!("clap_mask.{index}"));
            let features = pipe
                .clap()
                .text_features(&ids, &mask, &Device::Cpu)
                .unwrap();
            let expected = reference.f32(&format!("clap_features.{index}"));
            assert_close(
                &features,
                &expected,
                COMPONENT_TOLERANCE,
                &format!("{variant} CLAP {index}"),
            );
        }
    }
}

#[test]
fn t5_hidden_states_match() {
    for variant in VARIANTS {
        let pipe = pipeline(variant);
        let reference = Reference::load(variant, "text");
        for index in 0..prompts(variant).len() {
            let ids = reference.rows(&format!("t5_ids.{index}"));
            let mask = reference.rows(&format!("t5_mask.{index}"));
            let hidden = pipe.t5().forward(&ids, &mask, &Device::Cpu).unwrap();
            let expected = reference.f32(&format!("t5_hidden.{index}"));
            assert_close(
                &hidden,
                &expected,
                COMPONENT_TOLERANCE,
                &format!("{variant} T5 {index}"),
            );
        }
    }
}

#[test]
fn projection_matches() {
    for variant in VARIANTS {
        let pipe = pipeline(variant);
        let reference = Reference::load(variant, "projection");
        let (out, mask) = pipe
            .projection()
            .forward(
                &reference.f32("hidden_states"),
                &reference.f32("hidden_states_1"),
                &reference.get("attention_mask_1"),
            )
            .unwrap();
        assert_close(&out, &reference.f32("out"), COMPONENT_TOLERANCE, variant);
        let mask: Vec<Vec<u32>> = mask.to_vec2().unwrap();
        assert_eq!(
            mask,
            reference.rows("out_mask"),
            "{variant} projection mask"
        );
    }
}

#[test]
fn gpt2_hidden_states_and_generation_match() {
    for variant in VARIANTS {
        let pipe = pipeline(variant);
        let reference = Reference::load(variant, "gpt2");
        let embeds = reference.f32("inputs_embeds");
        let mask = reference.get("attention_mask");
        let hidden = pipe.language_model().forward(&embeds, &mask).unwrap();
        assert_close(
            &hidden,
            &reference.f32("hidden_last"),
            COMPONENT_TOLERANCE,
            variant,
        );
        let generated = pipe.language_model().generate(&embeds, &mask, 8).unwrap();
        assert_close(
            &generated,
            &reference.f32("generated"),
            COMPONENT_TOLERANCE,
            variant,
        );
    }
}

/// In the CPU's bf16 mode the prompt still takes f32 products (`kernels::with_f32_products`:
/// CLAP, T5 and GPT-2 see a few dozen tokens once a generation), so the embeddings are f32's bit
/// for bit. The emulated engine rounds every operand it multiplies, so a bf16 product anywhere
/// in the encoders would show.
#[test]
fn prompts_encode_with_f32_products_in_the_bf16_mode() {
    let pipe = pipeline(VARIANTS[0]);
    let encode = || {
        pipe.encode_prompt("a dog barks twice", Some("rain"), true)
            .unwrap()
    };
    let f32 = encode();
    let bf16 = with_bf16_products(Some(Engine::Emulated), encode);
    let bits = |tensor: &candle_core::Tensor| -> Vec<u32> {
        let values: Vec<f32> = tensor.flatten_all().unwrap().to_vec1().unwrap();
        values.into_iter().map(f32::to_bits).collect()
    };
    assert!(bits(&f32.text) == bits(&bf16.text), "T5 states differ");
    assert!(
        bits(&f32.generated) == bits(&bf16.generated),
        "GPT-2 states differ"
    );
}

#[test]
fn encode_prompt_matches() {
    for variant in VARIANTS {
        let pipe = pipeline(variant);
        let reference = Reference::load(variant, "encode_prompt");
        let cases = read_json(
            &common::fixtures()
                .join("reference")
                .join(variant)
                .join("encode_prompt.json"),
        );
        let cases = cases
            .get("cases")
            .unwrap_or(&cases)
            .as_array()
            .unwrap()
            .clone();
        for (index, case) in cases.iter().enumerate() {
            let prompt = case["prompt"].as_str().unwrap();
            let negative = case["negative_prompt"].as_str();
            let embeddings = pipe.encode_prompt(prompt, negative, true).unwrap();
            let what = format!("{variant} case {index}");
            assert_close(
                &embeddings.text,
                &reference.f32(&format!("prompt_embeds.{index}")),
                COMPONENT_TOLERANCE,
                &what,
            );
            let mask: Vec<Vec<u32>> = embeddings.text_mask.to_vec2().unwrap();
            assert_eq!(
                mask,
                reference.rows(&format!("attention_mask.{index}")),
                "{what}"
            );
            assert_close(
                &embeddings.generated,
                &reference.f32(&format!("generated_prompt_embeds.{index}")),
                COMPONENT_TOLERANCE,
                &what,
            );
        }
    }
}

#[test]
fn unet_forward_matches_including_odd_heights() {
    for variant in VARIANTS {
        let pipe = pipeline(variant);
        let reference = Reference::load(variant, "unet");
        for case in 0..2 {
            let sample = reference.f32(&format!("sample.{case}"));
            let timestep = reference.ints(&format!("timestep.{case}"))[0] as f64;
            let generated = reference.f32(&format!("encoder_hidden_states.{case}"));
            let text = reference.f32(&format!("encoder_hidden_states_1.{case}"));
            let mask = reference.get(&format!("encoder_attention_mask_1.{case}"));
            let conditioning = UNetConditioning {
                generated: Some(&generated),
                text: Some(&text),
                text_mask: Some(&mask),
                class_labels: None,
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
fn vae_decode_matches() {
    for variant in VARIANTS {
        let pipe = pipeline(variant);
        let reference = Reference::load(variant, "vae");
        let mel = pipe
            .decoder()
            .vae
            .decode(&reference.f32("latents"))
            .unwrap();
        assert_close(&mel, &reference.f32("mel"), COMPONENT_TOLERANCE, variant);
    }
}

#[test]
fn vocoder_matches() {
    for variant in VARIANTS {
        let pipe = pipeline(variant);
        let reference = Reference::load(variant, "vocoder");
        let waveform = pipe
            .decoder()
            .vocoder
            .forward(&reference.f32("mel"))
            .unwrap();
        assert_close(
            &waveform,
            &reference.f32("waveform"),
            COMPONENT_TOLERANCE,
            variant,
        );
    }
}

#[test]
fn schedulers_match_timesteps_and_steps() {
    for variant in VARIANTS {
        let pipe = pipeline(variant);
        let reference = Reference::load(variant, "scheduler");
        for (kind, prefix) in [
            (SchedulerKind::Ddim, "ddim"),
            (SchedulerKind::DpmSolverMultistep, "dpmpp2m"),
        ] {
            for steps in [1usize, 2, 3, 4, 10, 25, 200] {
                let scheduler = kind.build(pipe.scheduler_config(), steps).unwrap();
                let expected: Vec<f64> = reference
                    .ints(&format!("{prefix}.{steps}.timesteps"))
                    .into_iter()
                    .map(|t| t as f64)
                    .collect();
                assert_eq!(
                    scheduler.timesteps(),
                    expected,
                    "{variant} {prefix} {steps} steps"
                );
                assert_eq!(
                    scheduler.init_noise_sigma() as f32,
                    reference.values(&format!("{prefix}.init_noise_sigma"))[0]
                );
            }
            for steps in [4usize, 10] {
                let mut scheduler = kind.build(pipe.scheduler_config(), steps).unwrap();
                let mut generator = TorchGenerator::new(0);
                for index in 0..steps {
                    let key = |name: &str| format!("{prefix}.{steps}.{name}.{index}");
                    let sample = reference.f32(&key("sample"));
                    let output = reference.f32(&key("model_output"));
                    let previous = scheduler
                        .step(&output, index, &sample, &mut generator)
                        .unwrap();
                    assert_close(
                        &previous,
                        &reference.f32(&key("prev_sample")),
                        COMPONENT_TOLERANCE,
                        &format!("{variant} {prefix} {steps} steps, step {index}"),
                    );
                }
            }
        }
    }
}

#[test]
fn unknown_scheduler_is_a_clear_error() {
    let error = "euler-z".parse::<SchedulerKind>().unwrap_err().to_string();
    assert!(
        error.contains("euler-z") && error.contains("ddim"),
        "{error}"
    );
}

#[test]
fn a_config_that_does_not_describe_its_weights_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    common::copy_dir(&model_dir("audioldm2-tiny-deep"), &model);
    // One transformer block per attention instead of two: the second blocks are left over.
    let config_path = model.join("unet/config.json");
    let mut config = read_json(&config_path);
    config["transformer_layers_per_block"] = serde_json::json!(1);
    std::fs::write(&config_path, config.to_string()).unwrap();
    let error = AudioLdm2Pipeline::load(&model, &Device::Cpu, DType::F32)
        .err()
        .expect("mismatched config must not load")
        .to_string();
    assert!(
        error.contains("unet/config.json") && error.contains("not described"),
        "{error}"
    );
    assert!(error.contains("transformer_blocks.1"), "{error}");
}

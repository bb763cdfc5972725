#!/usr/bin/env python3
"""Build Foley's AudioLDM (v1) and MusicLDM test fixtures plus reference tensors.

Run from the repository root, after ``build_fixtures.py`` (the AudioLDM2 ranking reference reads
its ``audioldm2-tiny-deep`` fixture):

    tools/reference/.venv/bin/python tools/reference/build_fixtures.py
    tools/reference/.venv/bin/python tools/reference/build_ldm1_fixtures.py

Outputs (each deleted and rebuilt; nothing else under ``tests/fixtures/`` is touched):

* ``tests/fixtures/{audioldm-tiny,audioldm-tiny-deep,musicldm-tiny,musicldm-tiny-deep}/``
  pipelines saved with ``save_pretrained(safe_serialization=True)``
* ``tests/fixtures/reference/<same four names>/``  per-module, end-to-end and ranking references
* ``tests/fixtures/reference/audioldm2-tiny-deep/ranking.{safetensors,json}``  CLAP re-ranking of the
  AudioLDM2 deep pipeline (the other files of that folder belong to ``build_fixtures.py``; see
  ``build_audioldm2_ranking``)

Conventions are those of ``build_fixtures.py`` (same locally trained RoBERTa BPE tokenizer, same
weight perturbation, eval mode, references computed from the pipeline reloaded from disk, float32 /
int64 tensors). The AudioLDM/MusicLDM pipelines are deprecated in diffusers 0.42 and need the
transformers-5 shims of ``shims.py``. See ``tools/reference/README.md``.
"""

from __future__ import annotations

import os

os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import contextlib
import functools
import inspect
import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
import build_fixtures as bf  # noqa: E402  (sets nothing global besides env defaults and imports)
import shims  # noqa: E402

import diffusers.utils.logging  # noqa: E402
import transformers.utils.logging  # noqa: E402
from diffusers import (  # noqa: E402
    AudioLDMPipeline,
    AutoencoderKL,
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    MusicLDMPipeline,
    PNDMScheduler,
    UNet2DConditionModel,
)
from transformers import (  # noqa: E402
    ClapAudioConfig,
    ClapConfig,
    ClapFeatureExtractor,
    ClapModel,
    ClapTextConfig,
    ClapTextModelWithProjection,
    SpeechT5HifiGan,
    SpeechT5HifiGanConfig,
)

try:  # score_waveforms needs librosa; without it the ranking references are skipped
    import librosa
except ImportError:  # pragma: no cover
    librosa = None

GENERATOR_NAME = "tools/reference/build_ldm1_fixtures.py"
FIXTURES = bf.FIXTURES
REFERENCE = bf.REFERENCE
VARIANTS = ["audioldm-tiny", "audioldm-tiny-deep", "musicldm-tiny", "musicldm-tiny-deep"]

TEXT_PROMPTS = bf.TEXT_PROMPTS  # the brief's five prompts; index 3 overflows 77 tokens
E2E_PROMPT = "A hammer hitting a wooden surface"
E2E_SEED = 42
E2E_STEPS = 4
E2E_GUIDANCE = {"audioldm": 2.5, "musicldm": 2.0}  # the pipelines' __call__ defaults
ODD_AUDIO_LENGTH_S = bf.ODD_AUDIO_LENGTH_S  # 0.0125 s: odd latent height in every variant
RANKING_WAVEFORMS = 3
AUDIOLDM2_GUIDANCE = bf.E2E_GUIDANCE  # 3.5, as the AudioLDM2 e2e references

# --------------------------------------------------------------------------------------------------
# Small utilities
# --------------------------------------------------------------------------------------------------


def family(variant: str) -> str:
    return variant.split("-")[0]  # "audioldm" | "musicldm" | "audioldm2"


def save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    """Like build_fixtures.save_tensors (int64 / float32, contiguous CPU copies), own metadata."""
    out = {}
    for name, t in tensors.items():
        t = t.detach().cpu()
        if t.dtype in (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8, torch.bool):
            t = t.to(torch.int64)
        else:
            t = t.to(torch.float32)
        out[name] = t.contiguous().clone()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(out, str(path), metadata={"generator": GENERATOR_NAME})


write_json = bf.write_json
seeded_randn = bf.seeded_randn
assert_finite = bf.assert_finite


def plain_config(config) -> dict:
    """A scheduler/feature-extractor config without private keys (e.g. `_use_default_values`)."""
    items = config.items() if hasattr(config, "items") else config.to_dict().items()
    out = {}
    for k, v in sorted(items):
        if k.startswith("_") or k in ("mel_filters", "mel_filters_slaney"):
            continue
        if isinstance(v, np.ndarray):
            v = v.tolist()
        out[k] = v
    return out


def timestep_value(t) -> int | float:
    """Timesteps as JSON numbers: ints where integral (DDIM/DPM/PNDM int64, Euler float32)."""
    v = float(t)
    return int(v) if v.is_integer() else v


# --------------------------------------------------------------------------------------------------
# Pipeline components
# --------------------------------------------------------------------------------------------------


def tiny_vocoder() -> SpeechT5HifiGan:
    """The vocoder of the old AudioLDM / MusicLDM fast tests (and of AudioLDM2's)."""
    return SpeechT5HifiGan(
        SpeechT5HifiGanConfig(
            model_in_dim=8,
            sampling_rate=16000,
            upsample_initial_channel=16,
            upsample_rates=[2, 2],
            upsample_kernel_sizes=[4, 4],
            resblock_kernel_sizes=[3, 7],
            resblock_dilation_sizes=[[1, 3, 5], [1, 3, 5]],
            normalize_before=False,
        )
    )


def deep_vocoder() -> SpeechT5HifiGan:
    """Three resblock kernels like the real checkpoints; kernel 5 at stride 2 makes the output one
    sample longer than 2x, so the final trim to audio_length_in_s is exercised (as in audioldm2-tiny-deep)."""
    return SpeechT5HifiGan(
        SpeechT5HifiGanConfig(
            model_in_dim=16,
            sampling_rate=16000,
            upsample_initial_channel=16,
            upsample_rates=[2, 2],
            upsample_kernel_sizes=[5, 4],
            resblock_kernel_sizes=[3, 7, 11],
            resblock_dilation_sizes=[[1, 3, 5], [1, 3, 5], [1, 3, 5]],
            normalize_before=False,
        )
    )


def tiny_ddim() -> DDIMScheduler:
    return DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False
    )


def deep_unet(proj_dim: int) -> UNet2DConditionModel:
    """Like the real AudioLDM-s / MusicLDM UNet (8 latent channels, DownBlock2D first, per-block
    cross_attention_dim = block channels, simple_projection class embedding concatenated to the time
    embedding) scaled down: 3 blocks, 2 layers per block, 2 heads, 8 GroupNorm groups."""
    return UNet2DConditionModel(
        block_out_channels=(16, 32, 32),
        layers_per_block=2,
        norm_num_groups=8,
        attention_head_dim=2,  # legacy meaning: number of heads (real checkpoints: 8)
        sample_size=32,
        in_channels=8,
        out_channels=8,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=(16, 32, 32),
        class_embed_type="simple_projection",
        projection_class_embeddings_input_dim=proj_dim,
        class_embeddings_concat=True,
    )


def deep_vae(scaling_factor: float) -> AutoencoderKL:
    """Like the real AudioLDM / MusicLDM VAE (3 blocks => vae_scale_factor 4, 8 latent channels,
    2 resnets per block) at 8/16/16 channels."""
    return AutoencoderKL(
        block_out_channels=[8, 16, 16],
        in_channels=1,
        out_channels=1,
        norm_num_groups=8,
        layers_per_block=2,
        down_block_types=["DownEncoderBlock2D"] * 3,
        up_block_types=["UpDecoderBlock2D"] * 3,
        latent_channels=8,
        scaling_factor=scaling_factor,
    )


def audioldm_tiny_components(tokenizer) -> dict:
    """Exactly the old diffusers AudioLDM fast test (components.md §6.2), same manual_seed calls."""
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16),
        layers_per_block=1,
        norm_num_groups=8,
        sample_size=32,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=(8, 16),
        class_embed_type="simple_projection",
        projection_class_embeddings_input_dim=8,
        class_embeddings_concat=True,
    )
    scheduler = tiny_ddim()
    torch.manual_seed(0)
    vae = AutoencoderKL(
        block_out_channels=[8, 16],
        in_channels=1,
        out_channels=1,
        norm_num_groups=8,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
        latent_channels=4,
    )
    torch.manual_seed(0)
    text_encoder = ClapTextModelWithProjection(
        ClapTextConfig(
            bos_token_id=0, eos_token_id=2, hidden_size=8, intermediate_size=37, layer_norm_eps=1e-05,
            num_attention_heads=1, num_hidden_layers=1, pad_token_id=1, vocab_size=1000, projection_dim=8,
        )
    )
    # As in the old test: no manual_seed before the vocoder (it continues the global stream).
    vocoder = tiny_vocoder()
    return dict(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler, vocoder=vocoder)


AUDIOLDM_DEEP_PROJ = 24  # differs from every width (hidden 16, channels 16/32), like 512 in the real model


def audioldm_deep_components(tokenizer) -> dict:
    torch.manual_seed(11)
    unet = deep_unet(AUDIOLDM_DEEP_PROJ)
    scheduler = DDIMScheduler(**bf.REAL_DDIM_CONFIG)  # cvssp/audioldm* ship the same DDIM config
    torch.manual_seed(12)
    vae = deep_vae(0.9227914214134216)
    torch.manual_seed(13)
    text_encoder = ClapTextModelWithProjection(
        ClapTextConfig(
            bos_token_id=0, eos_token_id=2, hidden_size=16, intermediate_size=37, layer_norm_eps=1e-05,
            num_attention_heads=2, num_hidden_layers=2, pad_token_id=1, vocab_size=1000,
            projection_dim=AUDIOLDM_DEEP_PROJ,
        )
    )
    torch.manual_seed(14)
    vocoder = deep_vocoder()
    return dict(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler, vocoder=vocoder)


def musicldm_tiny_components(tokenizer) -> dict:
    """Exactly the old diffusers MusicLDM fast test (components.md §6.3), same manual_seed calls.

    `ClapConfig.from_text_audio_configs` is gone in transformers 5; `ClapConfig(text_config=dict,
    audio_config=dict, projection_dim=32)` is what it did (projection_dim overrides both branches).
    The feature extractor is built from its defaults with hop_length=7900 (the test loaded
    hf-internal-testing/tiny-random-ClapModel's, which is unreachable): truncation "fusion" gives
    4 stacked mel channels, which the audio branch's patch_embed_input_channels=4 consumes.
    """
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=2,
        sample_size=32,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=(32, 64),
        class_embed_type="simple_projection",
        projection_class_embeddings_input_dim=32,
        class_embeddings_concat=True,
    )
    scheduler = tiny_ddim()
    torch.manual_seed(0)
    vae = AutoencoderKL(
        block_out_channels=[32, 64],
        in_channels=1,
        out_channels=1,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
        latent_channels=4,
    )
    torch.manual_seed(0)
    text_branch_config = ClapTextConfig(
        bos_token_id=0, eos_token_id=2, hidden_size=16, intermediate_size=37, layer_norm_eps=1e-05,
        num_attention_heads=2, num_hidden_layers=2, pad_token_id=1, vocab_size=1000,
    )
    audio_branch_config = ClapAudioConfig(
        spec_size=64, window_size=4, num_mel_bins=64, intermediate_size=37, layer_norm_eps=1e-05, depths=[2, 2],
        num_attention_heads=[2, 2], num_hidden_layers=2, hidden_size=192, patch_size=2, patch_stride=2,
        patch_embed_input_channels=4,
    )
    text_encoder = ClapModel(
        ClapConfig(
            text_config=text_branch_config.to_dict(), audio_config=audio_branch_config.to_dict(), projection_dim=32
        )
    )
    feature_extractor = ClapFeatureExtractor(hop_length=7900)
    torch.manual_seed(0)
    vocoder = tiny_vocoder()
    return dict(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, feature_extractor=feature_extractor, unet=unet,
        scheduler=scheduler, vocoder=vocoder,
    )


MUSICLDM_DEEP_PROJ = 24


def musicldm_deep_components(tokenizer) -> dict:
    """Deeper MusicLDM: real-like UNet/VAE layout, CLAP text 2 layers 2 heads, a small HTSAT audio
    branch laid out like laion/clap-htsat-unfused (1 input channel, no fusion, spec_size 256 with
    64 mel bins => freq_ratio 4, patch 4, window 8) and the unfused feature-extractor settings
    (truncation rand_trunc, slaney mel filters, frequency_min 50) except hop_length 7900."""
    torch.manual_seed(21)
    unet = deep_unet(MUSICLDM_DEEP_PROJ)
    scheduler = DDIMScheduler(**bf.REAL_DDIM_CONFIG)  # ucsd-reach/musicldm: same config as AudioLDM
    torch.manual_seed(22)
    vae = deep_vae(1.075324296951294)
    torch.manual_seed(23)
    text_branch_config = ClapTextConfig(
        bos_token_id=0, eos_token_id=2, hidden_size=16, intermediate_size=37, layer_norm_eps=1e-05,
        num_attention_heads=2, num_hidden_layers=2, pad_token_id=1, vocab_size=1000,
    )
    audio_branch_config = ClapAudioConfig(
        spec_size=256, window_size=8, num_mel_bins=64, intermediate_size=37, layer_norm_eps=1e-05, depths=[1, 1],
        num_attention_heads=[2, 2], num_hidden_layers=2, patch_embeds_hidden_size=8, hidden_size=16,
        patch_size=4, patch_stride=4, patch_embed_input_channels=1, enable_fusion=False,
    )
    text_encoder = ClapModel(
        ClapConfig(
            text_config=text_branch_config.to_dict(),
            audio_config=audio_branch_config.to_dict(),
            projection_dim=MUSICLDM_DEEP_PROJ,
        )
    )
    feature_extractor = ClapFeatureExtractor(
        feature_size=64, sampling_rate=48000, hop_length=7900, max_length_s=10, fft_window_size=1024,
        padding="repeatpad", truncation="rand_trunc", frequency_min=50, frequency_max=14000,
    )
    torch.manual_seed(24)
    vocoder = deep_vocoder()
    return dict(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, feature_extractor=feature_extractor, unet=unet,
        scheduler=scheduler, vocoder=vocoder,
    )


BUILDERS = {
    "audioldm-tiny": (audioldm_tiny_components, 300),
    "audioldm-tiny-deep": (audioldm_deep_components, 400),
    "musicldm-tiny": (musicldm_tiny_components, 500),
    "musicldm-tiny-deep": (musicldm_deep_components, 600),
}
MODULE_NAMES = ["vae", "text_encoder", "unet", "vocoder"]


@torch.no_grad()
def make_weights_informative(components: dict, seed: int) -> None:
    """build_fixtures.make_weights_informative for these pipelines' modules.

    * HiFi-GAN convs redrawn with std 1/sqrt(fan_in) (transformers 5's N(0, 0.01) makes the output ~1e-6).
    * Constant-initialised parameters (norm weights 1, biases 0) get N(0, 0.1) noise.
    * The CLAP audio branch's BatchNorm running statistics (buffers, mean 0 / var 1) get the same
      treatment (var multiplied by exp(N(0, 0.1))) so that the ranking references catch a port that
      skips or mis-applies that normalisation.
    """
    g = torch.Generator("cpu").manual_seed(seed)
    for module in components["vocoder"].modules():
        if isinstance(module, (torch.nn.Conv1d, torch.nn.ConvTranspose1d)):
            w = module.weight
            fan_in = (w.shape[0] if isinstance(module, torch.nn.ConvTranspose1d) else w.shape[1]) * w.shape[2]
            w.copy_(torch.randn(w.shape, generator=g) / math.sqrt(fan_in))
    for name in MODULE_NAMES:
        for _, p in components[name].named_parameters():
            if p.numel() > 1 and bool((p == p.reshape(-1)[0]).all()):
                p.add_(0.1 * torch.randn(p.shape, generator=g))
    for module in components["text_encoder"].modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.add_(0.1 * torch.randn(module.running_mean.shape, generator=g))
            module.running_var.mul_(torch.exp(0.1 * torch.randn(module.running_var.shape, generator=g)))


def build_pipeline(variant: str, tokenizer):
    builder, seed = BUILDERS[variant]
    components = builder(tokenizer)
    make_weights_informative(components, seed)
    for name in MODULE_NAMES:
        components[name].eval()
    cls = AudioLDMPipeline if family(variant) == "audioldm" else MusicLDMPipeline
    return cls(**components)


def load_pipeline(variant: str):
    fixture_dir = FIXTURES / variant
    if family(variant) == "audioldm":
        pipe = AudioLDMPipeline.from_pretrained(fixture_dir)
    else:
        pipe = shims.load_musicldm_pipeline(fixture_dir)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to("cpu")


# --------------------------------------------------------------------------------------------------
# Reference dumps
# --------------------------------------------------------------------------------------------------


def dims(pipe) -> dict:
    return {
        "proj": pipe.text_encoder.config.projection_dim,
        "latent_channels": pipe.unet.config.in_channels,
        "mel_bins": pipe.vocoder.config.model_in_dim,
    }


@torch.no_grad()
def text_embedding(pipe, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The per-prompt embedding exactly as `_encode_prompt` computes it."""
    if isinstance(pipe, AudioLDMPipeline):
        out = pipe.text_encoder(input_ids, attention_mask=attention_mask).text_embeds
        return F.normalize(out, dim=-1)
    # MusicLDM: ClapModel.get_text_features (already L2-normalised with F.normalize).
    return shims.clap_text_features(pipe.text_encoder, input_ids, attention_mask)


@torch.no_grad()
def dump_text(pipe, out_dir: Path, fixture_dir: Path) -> dict:
    from tokenizers import Tokenizer

    tok = pipe.tokenizer
    raw = Tokenizer.from_file(str(fixture_dir / "tokenizer" / "tokenizer.json"))
    raw.enable_truncation(tok.model_max_length)
    raw.enable_padding(pad_id=tok.pad_token_id, pad_token=tok.pad_token, length=tok.model_max_length)
    tensors = {}
    for i, prompt in enumerate(TEXT_PROMPTS):
        enc = tok(prompt, padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt")
        raw_enc = raw.encode(prompt)
        assert raw_enc.ids == enc.input_ids[0].tolist() and raw_enc.attention_mask == enc.attention_mask[0].tolist()
        tensors[f"clap_ids.{i}"] = enc.input_ids
        tensors[f"clap_mask.{i}"] = enc.attention_mask
        tensors[f"text_embeds.{i}"] = text_embedding(pipe, enc.input_ids, enc.attention_mask)
        assert tensors[f"text_embeds.{i}"].shape == (1, dims(pipe)["proj"])
    # Cross-check with the pipeline itself: without guidance `_encode_prompt` returns the embedding.
    via_pipeline = pipe._encode_prompt(TEXT_PROMPTS[0], "cpu", 1, False)
    assert torch.equal(via_pipeline, tensors["text_embeds.0"]), "text_embeds differ from _encode_prompt"
    assert len(tok(bf.LONG_PROMPT).input_ids) > tok.model_max_length
    proj = dims(pipe)["proj"]
    save_tensors(out_dir / "text.safetensors", tensors)
    info = {
        "prompts": TEXT_PROMPTS,
        "clap": {"padding": "max_length", "max_length": tok.model_max_length, "truncation": True},
        "untruncated_lengths": [len(tok(p).input_ids) for p in TEXT_PROMPTS],
        "text_embeds": (
            "F.normalize(ClapTextModelWithProjection(ids, attention_mask).text_embeds, dim=-1)"
            if isinstance(pipe, AudioLDMPipeline)
            else "ClapModel.get_text_features(ids, attention_mask) (transformers 5: .pooler_output), L2-normalised"
        ),
        "negative_prompt_max_length": proj,
        "negative_prompt_note": (
            "_encode_prompt tokenizes the negative prompt with max_length = prompt_embeds.shape[1], i.e. the "
            f"projection dim ({proj}), not tokenizer.model_max_length ({tok.model_max_length}); in the real "
            "checkpoints both are 512. Pads are masked, so only truncation of a negative prompt longer than "
            "that changes the result."
        ),
        "negative_prompt_token_lengths": {p: len(tok(p).input_ids) for p in ["", "egg cracking"]},
    }
    write_json(out_dir / "text.json", info)
    return info


@torch.no_grad()
def dump_unet(pipe, out_dir: Path) -> None:
    d = dims(pipe)
    width = d["mel_bins"] // pipe.vae_scale_factor
    heights = [pipe.unet.config.sample_size, 25]  # default (even) and an odd latent height
    tensors = {}
    for k, height in enumerate(heights):
        sample = seeded_randn(2200 + 10 * k, 2, d["latent_channels"], height, width)
        timestep = torch.tensor([501], dtype=torch.int64)
        class_labels = seeded_randn(2201 + 10 * k, 2, d["proj"])
        out = pipe.unet(sample, timestep, encoder_hidden_states=None, class_labels=class_labels).sample
        assert out.shape == sample.shape
        assert_finite("unet", out)
        tensors.update(
            {f"sample.{k}": sample, f"timestep.{k}": timestep, f"class_labels.{k}": class_labels, f"out.{k}": out}
        )
    save_tensors(out_dir / "unet.safetensors", tensors)


@torch.no_grad()
def dump_vae(pipe, out_dir: Path) -> None:
    d = dims(pipe)
    latents = seeded_randn(2300, 1, d["latent_channels"], 25, d["mel_bins"] // pipe.vae_scale_factor)
    mel = pipe.vae.decode(latents).sample
    save_tensors(out_dir / "vae.safetensors", {"latents": latents, "mel": mel})


@torch.no_grad()
def dump_vocoder(pipe, out_dir: Path) -> None:
    mel = seeded_randn(2400, 1, 37, pipe.vocoder.config.model_in_dim)
    waveform = pipe.vocoder(mel)
    save_tensors(out_dir / "vocoder.safetensors", {"mel": mel, "waveform": waveform})


E2E_SCHEDULERS = {
    "ddim": DDIMScheduler,
    "dpm++2m": DPMSolverMultistepScheduler,
    "euler-a": EulerAncestralDiscreteScheduler,
    "pndm": PNDMScheduler,
}


def make_scheduler(name: str, checkpoint_config):
    """`<Class>.from_config(checkpoint scheduler config)` as is (e.g. PNDM keeps skip_prk_steps=False)."""
    return E2E_SCHEDULERS[name].from_config(checkpoint_config)


def e2e_case_list() -> list[tuple[str, str, str | None, float | None]]:
    cases = []
    for sched in ["ddim", "dpm++2m"]:
        for neg_index, negative_prompt in enumerate([None, "egg cracking"]):
            for len_index, length in enumerate([None, ODD_AUDIO_LENGTH_S]):
                cases.append((f"{sched}.neg{neg_index}.len{len_index}", sched, negative_prompt, length))
    cases.append(("euler-a.neg0.len0", "euler-a", None, None))
    cases.append(("pndm.neg0.len0", "pndm", None, None))
    return cases


def instrument_scheduler(sched) -> list:
    """Record (timestep, prev_sample) after every `scheduler.step` (every loop iteration).

    functools.wraps keeps the signature visible to `prepare_extra_step_kwargs` (inspect.signature
    follows __wrapped__), so eta/generator are still passed exactly as without the wrapper.
    """
    records = []
    original = sched.step

    @functools.wraps(original)
    def step(model_output, timestep, sample, *args, **kwargs):
        out = original(model_output, timestep, sample, *args, **kwargs)
        prev = out.prev_sample if hasattr(out, "prev_sample") else out[0]
        records.append((timestep, prev.detach().clone()))
        return out

    sched.step = step
    return records


@torch.no_grad()
def run_pipeline(pipe, sched_name: str, checkpoint_config, guidance: float, **kwargs):
    pipe.scheduler = make_scheduler(sched_name, checkpoint_config)
    records = instrument_scheduler(pipe.scheduler)
    callbacks = []

    def callback(step: int, t, latents: torch.Tensor) -> None:
        callbacks.append((step, t, latents.detach().clone()))

    audio = pipe(
        E2E_PROMPT,
        num_inference_steps=E2E_STEPS,
        guidance_scale=guidance,
        callback=callback,
        callback_steps=1,
        output_type="pt",
        **kwargs,
    ).audios
    return audio, records, callbacks, pipe.scheduler


@contextlib.contextmanager
def capture_euler_noise():
    """Record the noise EulerAncestralDiscreteScheduler.step draws (module-level randn_tensor)."""
    import diffusers.schedulers.scheduling_euler_ancestral_discrete as euler_module

    drawn, original = [], euler_module.randn_tensor

    def randn_tensor(*args, **kwargs):
        t = original(*args, **kwargs)
        drawn.append(t.clone())
        return t

    euler_module.randn_tensor = randn_tensor
    try:
        yield drawn
    finally:
        euler_module.randn_tensor = original


@torch.no_grad()
def dump_e2e(pipe, variant: str, out_dir: Path) -> list[dict]:
    checkpoint_config = pipe.scheduler.config
    original_scheduler = pipe.scheduler
    guidance = E2E_GUIDANCE[family(variant)]
    tensors, cases = {}, []
    for name, sched_name, negative_prompt, audio_length_in_s in e2e_case_list():
        geometry = bf.pipeline_geometry(pipe, audio_length_in_s)
        if audio_length_in_s is not None:
            assert geometry["latent_shape"][2] % 2 == 1, geometry
        with capture_euler_noise() as drawn:
            waveform, records, callbacks, sched = run_pipeline(
                pipe, sched_name, checkpoint_config, guidance,
                negative_prompt=negative_prompt,
                audio_length_in_s=audio_length_in_s,
                generator=torch.Generator("cpu").manual_seed(E2E_SEED),
            )
        gen = torch.Generator("cpu").manual_seed(E2E_SEED)
        initial_noise = torch.randn(geometry["latent_shape"], generator=gen)
        stochastic = sched_name == "euler-a"
        # Re-run from the stored noise. Deterministic schedulers draw nothing else; EulerAncestral draws
        # one randn(latent_shape) per step from the same generator, right after the initial latents.
        waveform_again, _, _, _ = run_pipeline(
            pipe, sched_name, checkpoint_config, guidance,
            negative_prompt=negative_prompt,
            audio_length_in_s=audio_length_in_s,
            latents=initial_noise.clone(),
            generator=gen if stochastic else None,
        )
        assert torch.equal(waveform, waveform_again), f"{name}: stored initial noise does not reproduce the run"
        n_iter = len(sched.timesteps)
        assert len(records) == n_iter, name
        # The pipeline's callback fires on (i+1) > num_warmup_steps; for PNDM's PRK warm-up only for the last
        # `steps` iterations, with step index i. Everything the callback saw must match the step records.
        for step, t, latents in callbacks:
            assert torch.equal(latents, records[step][1]) and float(t) == float(records[step][0]), name
        assert list(records[0][1].shape) == geometry["latent_shape"], name
        assert_finite(name, waveform)
        assert float(waveform.abs().max()) > 1e-3, f"{name}: waveform is (numerically) silent"
        tensors[f"{name}.waveform"] = waveform
        tensors[f"{name}.initial_noise"] = initial_noise
        for i, (_, latents) in enumerate(records):
            tensors[f"{name}.latents.{i}"] = latents
        if stochastic:
            stream = torch.Generator("cpu").manual_seed(E2E_SEED)
            torch.randn(geometry["latent_shape"], generator=stream)  # the initial noise
            assert len(drawn) == n_iter, name
            for i in range(n_iter):
                tensors[f"{name}.step_noise.{i}"] = torch.randn(geometry["latent_shape"], generator=stream)
                assert torch.equal(tensors[f"{name}.step_noise.{i}"], drawn[i]), name
        else:
            assert not drawn, name
        case = {
            "name": name,
            "prompt": E2E_PROMPT,
            "negative_prompt": negative_prompt,
            "seed": E2E_SEED,
            "steps": E2E_STEPS,
            "guidance": guidance,
            "audio_length_in_s": geometry["audio_length_in_s"],
            "audio_length_in_s_argument": audio_length_in_s,
            "scheduler": sched_name,
            "scheduler_class": type(sched).__name__,
            "timesteps": [timestep_value(t) for t, _ in records],
            "latent_shape": geometry["latent_shape"],
            "mel_frames": geometry["mel_frames"],
            "waveform_length": int(waveform.shape[-1]),
            "waveform_abs_max": float(waveform.abs().max()),
            "init_noise_sigma": float(sched.init_noise_sigma),
            "unet_evaluations": n_iter,
            "callback_step_indices": [c[0] for c in callbacks],
        }
        cases.append(case)
    pipe.scheduler = original_scheduler
    save_tensors(out_dir / "e2e.safetensors", tensors)
    write_json(
        out_dir / "e2e.json",
        {
            "cases": cases,
            "notes": {
                "latents": "{case}.latents.{i}: latents after loop iteration i (one UNet evaluation each; "
                "PNDM with skip_prk_steps=False runs 3 Runge-Kutta steps of 4 evaluations, then 1 PLMS step: 13 entries "
                "for 4 steps, and the pipeline's callback only sees the last 4 of them, as step indices 9..12)",
                "initial_noise": "torch.randn(latent_shape, generator=torch.Generator('cpu').manual_seed(seed)), "
                "before the multiplication by init_noise_sigma",
                "euler-a": "EulerAncestralDiscreteScheduler draws randn(latent_shape) from the pipeline generator "
                "at every step, right after the initial noise; {case}.step_noise.{i} holds those draws",
                "timesteps": "the timestep of every loop iteration (Euler's are float32 in torch, integral here)",
            },
        },
    )
    return cases


# --------------------------------------------------------------------------------------------------
# CLAP re-ranking (score_waveforms): MusicLDM and AudioLDM2
# --------------------------------------------------------------------------------------------------


@torch.no_grad()
def dump_ranking(pipe, out_dir: Path, guidance: float) -> dict:
    """Run the pipeline with num_waveforms_per_prompt=3 and record every stage of `score_waveforms`."""
    captured = {}
    original = pipe.score_waveforms

    def score_waveforms(text, audio, num_waveforms_per_prompt, device, dtype):
        captured["unsorted"] = audio.clone()
        np.random.seed(0)  # ClapFeatureExtractor's "fusion" mode draws one np.random index (is_longer only)
        out = original(text, audio, num_waveforms_per_prompt, device, dtype)
        captured["sorted"] = out.clone()
        return out

    pipe.score_waveforms = score_waveforms
    checkpoint_config = pipe.scheduler.config
    original_scheduler = pipe.scheduler
    pipe.scheduler = DDIMScheduler.from_config(checkpoint_config)
    try:
        audio = pipe(
            E2E_PROMPT,
            num_inference_steps=E2E_STEPS,
            guidance_scale=guidance,
            num_waveforms_per_prompt=RANKING_WAVEFORMS,
            generator=torch.Generator("cpu").manual_seed(E2E_SEED),
            output_type="pt",
        ).audios
    finally:
        del pipe.score_waveforms
        pipe.scheduler = original_scheduler
    assert torch.equal(audio, captured["sorted"])

    # Recompute the stages exactly as score_waveforms does (diffusers 0.42.1).
    unsorted = captured["unsorted"]
    fe = pipe.feature_extractor
    inputs = pipe.tokenizer(E2E_PROMPT, return_tensors="pt", padding=True)
    resampled = librosa.resample(unsorted.numpy(), orig_sr=pipe.vocoder.config.sampling_rate, target_sr=fe.sampling_rate)
    np.random.seed(0)
    feats = fe(list(resampled), return_tensors="pt", sampling_rate=fe.sampling_rate)
    input_features = feats.input_features.type(torch.float32)
    out = pipe.text_encoder(
        input_ids=inputs.input_ids, attention_mask=inputs.attention_mask, input_features=input_features
    )
    logits = out.logits_per_text
    order = torch.argsort(logits, dim=1, descending=True)[:, :RANKING_WAVEFORMS].reshape(-1)
    assert torch.equal(torch.index_select(unsorted, 0, order), captured["sorted"]), "ranking recomputation differs"
    # The ClapModel's normalised embeddings agree with get_text_features / get_audio_features.
    text_feats = shims.clap_text_features(pipe.text_encoder, inputs.input_ids, inputs.attention_mask)
    audio_feats = shims.clap_audio_features(pipe.text_encoder, input_features)
    assert torch.allclose(text_feats, out.text_embeds, atol=1e-6) and torch.allclose(audio_feats, out.audio_embeds, atol=1e-6)
    assert len(set(order.tolist())) == RANKING_WAVEFORMS

    n_samples = int(unsorted.shape[-1] * fe.sampling_rate / pipe.vocoder.config.sampling_rate)
    assert n_samples <= fe.nb_max_samples, "ranking clips must be shorter than nb_max_samples (repeatpad path)"
    save_tensors(
        out_dir / "ranking.safetensors",
        {
            "unsorted": unsorted,
            "resampled": torch.from_numpy(np.ascontiguousarray(resampled)),
            "input_features": input_features,
            "input_ids": inputs.input_ids,
            "attention_mask": inputs.attention_mask,
            "text_embeds": out.text_embeds,
            "audio_embeds": out.audio_embeds,
            "logits_per_text": logits,
            "order": order,
            "sorted": captured["sorted"],
        },
    )
    res_type = inspect.signature(librosa.resample).parameters["res_type"].default
    fe_config = plain_config(fe.to_dict())
    info = {
        "prompt": E2E_PROMPT,
        "seed": E2E_SEED,
        "steps": E2E_STEPS,
        "guidance": guidance,
        "scheduler": "ddim",
        "num_waveforms_per_prompt": RANKING_WAVEFORMS,
        "audio_length_in_s": bf.pipeline_geometry(pipe, None)["audio_length_in_s"],
        "waveform_length": int(unsorted.shape[-1]),
        "resample": {
            "function": "librosa.resample(audio, orig_sr=16000, target_sr=48000) along the last axis",
            "res_type": res_type,
            "librosa": librosa.__version__,
            "soxr": sys.modules["soxr"].__version__ if "soxr" in sys.modules else None,
            "orig_sr": pipe.vocoder.config.sampling_rate,
            "target_sr": fe.sampling_rate,
            "resampled_length": int(resampled.shape[-1]),
        },
        "feature_extractor": fe_config,
        "feature_path": (
            f"clips of {n_samples} samples at 48 kHz are shorter than nb_max_samples {fe.nb_max_samples}: "
            "padding 'repeatpad' (np.tile by int(max/len), then zero-pad to max) - deterministic, no random crop. "
            + (
                "truncation 'fusion': mel with the HTK filterbank (mel_filters), stacked 4 times => 4 channels; "
                "is_longer is not passed to the model by score_waveforms (enable_fusion false)"
                if fe.truncation == "fusion"
                else "truncation 'rand_trunc': one mel with the slaney filterbank (mel_filters_slaney) => 1 channel"
            )
        ),
        "input_features_shape": list(input_features.shape),
        "tokenizer": "pipe.tokenizer(prompt, padding=True) (longest, no max_length padding); input_ids/attention_mask stored",
        "logits_per_text": "text_embeds @ audio_embeds.T * exp(logit_scale_t) (embeddings normalised by x / ||x||)",
        "logit_scale_t": float(pipe.text_encoder.logit_scale_t),
        "order": "torch.argsort(logits_per_text, dim=1, descending=True)[:, :3].reshape(-1)",
        "order_values": order.tolist(),
    }
    write_json(out_dir / "ranking.json", info)
    return info


def build_audioldm2_ranking() -> dict:
    """Ranking reference for the audioldm2-tiny-deep pipeline written by build_fixtures.py.

    Its CLAP audio branch has the real HTSAT geometry. The diffusers test configuration used by
    audioldm2-tiny cannot be scored at all: its branch (spec_size 8, patch_stride 2, window_size 4,
    depths [1, 1]) reaches a 2x2 grid in stage 2, smaller than the window, and transformers 5.23's
    Swin attention fails for every input; its feature extractor (64 mel bins) does not even fit the
    branch's 8.
    """
    out_dir = REFERENCE / "audioldm2-tiny-deep"
    pipe = shims.load_audioldm2_pipeline(FIXTURES / "audioldm2-tiny-deep")
    pipe.set_progress_bar_config(disable=True)
    pipe.to("cpu")
    return dump_ranking(pipe, out_dir, AUDIOLDM2_GUIDANCE)


# --------------------------------------------------------------------------------------------------
# Legacy VAE attention key names (audioldm-tiny-deep)
# --------------------------------------------------------------------------------------------------

LEGACY_ATTENTION_NAMES = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}


def rewrite_vae_legacy_attention(fixture_dir: Path) -> list[str]:
    """Rename the VAE mid-block attention keys to the pre-0.14 names that the original AudioLDM
    conversion script wrote (query/key/value/proj_attn); diffusers renames them back at load time
    (ModelMixin._fix_state_dict_keys_on_load, for modules built with _from_deprecated_attn_block)."""
    path = fixture_dir / "vae" / "diffusion_pytorch_model.safetensors"
    with safe_open(str(path), "pt") as f:
        metadata = f.metadata()
    state = load_file(str(path))
    renamed, out = [], {}
    for key, value in state.items():
        new = key
        if ".mid_block.attentions." in key:
            for modern, legacy in LEGACY_ATTENTION_NAMES.items():
                marker = f".{modern}."
                if marker in key:
                    new = key.replace(marker, f".{legacy}.")
                    renamed.append(new)
        out[new] = value
    assert len(renamed) == 16, renamed  # encoder+decoder x (q,k,v,out) x (weight,bias)
    save_file(out, str(path), metadata=metadata)
    return sorted(renamed)


@torch.no_grad()
def verify_variant(variant: str) -> None:
    """Reload the saved fixture as Foley would and check it reproduces the references."""
    out_dir = REFERENCE / variant
    pipe = load_pipeline(variant)
    vae_ref = load_file(str(out_dir / "vae.safetensors"))
    assert torch.equal(pipe.vae.decode(vae_ref["latents"]).sample, vae_ref["mel"]), f"{variant}: vae"
    unet_ref = load_file(str(out_dir / "unet.safetensors"))
    out = pipe.unet(unet_ref["sample.1"], unet_ref["timestep.1"], encoder_hidden_states=None,
                    class_labels=unet_ref["class_labels.1"]).sample
    assert torch.equal(out, unet_ref["out.1"]), f"{variant}: unet"
    e2e = load_file(str(out_dir / "e2e.safetensors"))
    guidance = E2E_GUIDANCE[family(variant)]
    for name in ["ddim.neg1.len1", "euler-a.neg0.len0"]:
        sched = name.split(".")[0]
        length = ODD_AUDIO_LENGTH_S if name.endswith("len1") else None
        negative = "egg cracking" if ".neg1." in name else None
        waveform, _, _, _ = run_pipeline(
            pipe, sched, pipe.scheduler.config, guidance, negative_prompt=negative, audio_length_in_s=length,
            generator=torch.Generator("cpu").manual_seed(E2E_SEED),
        )
        assert torch.equal(waveform, e2e[f"{name}.waveform"]), f"{variant}: fixture does not reproduce {name}"


# --------------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------------


def build_variant(variant: str, tokenizer) -> dict:
    fixture_dir = FIXTURES / variant
    out_dir = REFERENCE / variant
    for path in (fixture_dir, out_dir):
        if path.exists():
            shutil.rmtree(path)
    built = build_pipeline(variant, tokenizer)
    built.save_pretrained(fixture_dir, safe_serialization=True)
    pipe = load_pipeline(variant)  # references come from the pipeline as reloaded from disk

    text_info = dump_text(pipe, out_dir, fixture_dir)
    dump_unet(pipe, out_dir)
    dump_vae(pipe, out_dir)
    dump_vocoder(pipe, out_dir)
    cases = dump_e2e(pipe, variant, out_dir)
    ranking = None
    if family(variant) == "musicldm" and librosa is not None:
        ranking = dump_ranking(pipe, out_dir, E2E_GUIDANCE["musicldm"])
    legacy = None
    if variant == "audioldm-tiny-deep":
        legacy = rewrite_vae_legacy_attention(fixture_dir)
        reloaded = AutoencoderKL.from_pretrained(fixture_dir / "vae")
        modern = pipe.vae.state_dict()
        assert reloaded.state_dict().keys() == modern.keys()
        assert all(torch.equal(reloaded.state_dict()[k], v) for k, v in modern.items()), "legacy VAE reload differs"
    geometry = {
        "default": bf.pipeline_geometry(pipe, None),
        "odd": bf.pipeline_geometry(pipe, ODD_AUDIO_LENGTH_S),
    }
    return {
        "variant": variant,
        "pipeline_class": type(pipe).__name__,
        "text_encoder_class": type(pipe.text_encoder).__name__,
        "projection_dim": dims(pipe)["proj"],
        "vae_scale_factor": pipe.vae_scale_factor,
        "vae_scaling_factor": pipe.vae.config.scaling_factor,
        "geometry": geometry,
        "checkpoint_scheduler": plain_config(pipe.scheduler.config),
        "e2e": [
            {k: c[k] for k in ("name", "scheduler_class", "timesteps", "init_noise_sigma", "latent_shape", "waveform_length")}
            for c in cases
        ],
        "negative_prompt_token_lengths": text_info["negative_prompt_token_lengths"],
        "ranking": None if ranking is None else {k: ranking[k] for k in ("order_values", "input_features_shape")},
        "legacy_vae_keys": legacy,
    }


def main() -> None:
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)

    tokenizer = bf.train_clap_tokenizer(bf.build_corpus())  # the same tokenizer as the AudioLDM2 fixtures
    summaries = [build_variant(variant, tokenizer) for variant in VARIANTS]
    for variant in VARIANTS:
        verify_variant(variant)
    ranking2 = None
    if librosa is not None:
        ranking2 = build_audioldm2_ranking()
    else:
        print("librosa is not installed: ranking references skipped")

    written = [FIXTURES / v for v in VARIANTS] + [REFERENCE / v for v in VARIANTS]
    for root in written:
        for path in root.rglob("*"):
            if path.is_file():
                path.chmod(0o644)
    for name in ["ranking.safetensors", "ranking.json"]:
        if (REFERENCE / "audioldm2-tiny-deep" / name).exists():
            (REFERENCE / "audioldm2-tiny-deep" / name).chmod(0o644)

    for s in summaries:
        print(json.dumps(s, indent=1))
    if ranking2 is not None:
        print("audioldm2-tiny-deep ranking:", ranking2["order_values"], ranking2["input_features_shape"])


if __name__ == "__main__":
    main()

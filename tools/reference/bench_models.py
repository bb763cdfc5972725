#!/usr/bin/env python3
"""Build real-size, random-weight AudioLDM 2 / AudioLDM / MusicLDM / Stable Audio 3 pipelines for CPU benchmarks.

Run from the repository root:

    tools/reference/.venv/bin/python tools/reference/bench_models.py            # all three, if missing
    tools/reference/.venv/bin/python tools/reference/bench_models.py --only musicldm --force

Each pipeline has exactly the configuration of the published checkpoint (shapes, layer counts, vocabulary
sizes, scheduler, VAE scaling factor; components.md §3, §5, §7), so it does the same compute as the real
model, but its weights are random (fixed ``torch.manual_seed``): the audio is noise. Diffusers and Foley load
the *same* directory, which is what makes their timings comparable. The Hugging Face Hub is unreachable from
the build machines, so the tokenizers are trained locally (build_fixtures.py) with the real
``model_max_length`` values (CLAP 512, padded to it; T5 128) and ids below the models' real vocabulary sizes.

Outputs go to ``$FOLEY_BENCH_DIR`` (default ``~/.cache/foley-bench``)``/<name>``, written with
``save_pretrained(safe_serialization=True)`` into ``<name>.partial`` and renamed when complete, so a
directory that exists is complete. Names:

* ``audioldm2``          cvssp/audioldm2 (AudioLDM2Pipeline, 1.1 B parameters, ~4.5 GB)
* ``audioldm-s-full-v2`` cvssp/audioldm-s-full-v2 (AudioLDMPipeline, 421 M, ~1.7 GB)
* ``musicldm``           ucsd-reach/musicldm (MusicLDMPipeline, ~490 M, ~2.0 GB)
* ``sa3-medium``         stabilityai/stable-audio-3-medium (StableAudio3Pipeline, distilled scheduler, 2.59 B:
                         DiT 1453 M + SAME-L 852 M + T5Gemma-B encoder 282 M), **stored in bfloat16** (~5.2 GB;
                         float32 would be ~10.4 GB). Foley and diffusers both load it as float32
                         (``from_pretrained(torch_dtype=torch.float32)``), so the compute is float32 as for the
                         others; only the weight values are bf16-rounded (buffers such as the Fourier ``freqs``
                         and RoPE ``inv_freq`` stay float32). Not built by default (pass ``--only sa3-medium``).

One pipeline is in memory at a time (the AudioLDM 2 build peaks at about 2x its 4.5 GB of weights).
See tools/reference/README.md ("CPU benchmark against diffusers").
"""

from __future__ import annotations

import os

os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import argparse
import gc
import json
import math
import resource
import shutil
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import build_fixtures as bf  # noqa: E402  (tokenizer training, corpus, the real DDIM config)

from diffusers import (  # noqa: E402
    AudioLDM2Pipeline,
    AudioLDM2ProjectionModel,
    AudioLDM2UNet2DConditionModel,
    AudioLDMPipeline,
    AutoencoderKL,
    DDIMScheduler,
    MusicLDMPipeline,
    UNet2DConditionModel,
)
from transformers import (  # noqa: E402
    ClapConfig,
    ClapFeatureExtractor,
    ClapModel,
    ClapTextConfig,
    ClapTextModelWithProjection,
    GPT2Config,
    GPT2LMHeadModel,
    RobertaTokenizerFast,
    SpeechT5HifiGan,
    SpeechT5HifiGanConfig,
    T5Config,
    T5EncoderModel,
    T5TokenizerFast,
)

NAMES = ["audioldm2", "audioldm-s-full-v2", "musicldm"]  # built when no --only is given
SA3_NAMES = ["sa3-medium"]  # only with --only (large; needs diffusers >= 0.42 with Stable Audio 3)
ALL_NAMES = NAMES + SA3_NAMES

# The benchmark prompts (bench_diffusers.py / bench_compare.py). They are added to the tokenizer corpus so
# that they split into roughly word-sized pieces, as with the real RoBERTa / Flan-T5 vocabularies (the
# T5 sequence length sets the T5 and cross-attention cost; CLAP is always padded to 512 tokens).
BENCH_PROMPT = "The sound of Brazilian samba drums with waves gently crashing in the background"
BENCH_NEGATIVE_PROMPT = "Low quality, average quality."

CLAP_MAX_LENGTH = 512  # tokenizer_config.json of every published CLAP tokenizer (components.md §5)
T5_MAX_LENGTH = 128  # set by the AudioLDM 2 conversion script (components.md §2.4)

# cvssp/audioldm2 and ucsd-reach/musicldm `text_encoder` (components.md §3.5, §3.6; params_meta.py):
# RoBERTa-base text branch (vocab 50265) + HTSAT audio branch, projection 512 (relu).
CLAP_TEXT = dict(fusion_hidden_size=768, fusion_num_hidden_layers=2, projection_hidden_size=768)
CLAP_AUDIO = dict(
    depths=[2, 2, 12, 2],
    fusion_num_hidden_layers=2,
    hidden_size=1024,
    patch_embeds_hidden_size=128,
    projection_hidden_size=768,
    enable_fusion=False,
)

VAE_SCALING = {
    "audioldm2": 0.4110932946205139,
    "audioldm-s-full-v2": 0.9392935633659363,
    "musicldm": 1.075324296951294,
}
VAE_SAMPLE_SIZE = {"audioldm2": 1024, "audioldm-s-full-v2": 512, "musicldm": 1024}

SEEDS = {"audioldm2": 1000, "audioldm-s-full-v2": 2000, "musicldm": 3000, "sa3-medium": 4000}

# Stable Audio 3 medium (research/sa3_notes.md §1-2). The T5Gemma encoder of google/t5gemma-b-b-ul2: Gemma-2
# vocabulary 256000, hidden 768, 12 layers, 12 heads (MHA: 12 kv heads) of 64, query_pre_attn_scalar 64, MLP 2048,
# attention softcap 50, sliding window 4096 with transformers' default alternating sliding/full layer_types,
# RoPE theta 10000. Derivation of the shape: T5GemmaForConditionalGeneration with this config as both encoder and
# decoder (cross_attention_hidden_size 768, lm_head tied to the decoder embedding) has exactly 591,490,560
# parameters (counted on the meta device), the published size of T5Gemma B/B; of these the encoder is
# 281,580,288 (196,608,000 of them the 256000x768 embedding; 7,080,960 per layer; 768 final norm) and the decoder
# 309,910,272. SA3 uses the encoder only (T5GemmaEncoderModel).
SA3_T5_ENCODER = dict(
    vocab_size=256000,
    hidden_size=768,
    intermediate_size=2048,
    num_hidden_layers=12,
    num_attention_heads=12,
    num_key_value_heads=12,
    head_dim=64,
    query_pre_attn_scalar=64,
    attn_logit_softcapping=50.0,
    final_logit_softcapping=30.0,  # decoder-only (lm_head); unused by the encoder
    sliding_window=4096,
    rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
    rms_norm_eps=1e-6,
    hidden_activation="gelu_pytorch_tanh",
    max_position_embeddings=8192,
    pad_token_id=0,
    eos_token_id=1,
    bos_token_id=2,
)
# SAME-L (stabilityai/SAME-L, 852 M): the SAME-S defaults with 256 base channels, 12 layers and 8 sin-gated
# trailing decoder layers.
SA3_VAE = dict(encoder_channels=256, encoder_transformer_depths=(12,), decoder_sinusoidal_blocks=(8,))
# The distilled "medium" checkpoint's scheduler (8 steps by default, stochastic ping-pong).
SA3_SCHEDULER = dict(num_train_timesteps=1, shift=1.0, stochastic_sampling=True)
# Weights stored in this dtype (parameters only; buffers keep float32). Absent: float32.
STORAGE_DTYPE = {"sa3-medium": torch.bfloat16}


def bench_dir() -> Path:
    return Path(os.environ.get("FOLEY_BENCH_DIR", "~/.cache/foley-bench")).expanduser()


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# --------------------------------------------------------------------------------------------------
# Tokenizers
# --------------------------------------------------------------------------------------------------


def corpus() -> list[str]:
    return bf.build_corpus() + [BENCH_PROMPT, BENCH_NEGATIVE_PROMPT] * 20


def clap_tokenizer() -> RobertaTokenizerFast:
    """RoBERTa-style byte-level BPE (1000 ids < 50265), model_max_length 512."""
    trained = bf.train_clap_tokenizer(corpus())
    return RobertaTokenizerFast(tokenizer_object=trained.backend_tokenizer, model_max_length=CLAP_MAX_LENGTH)


def t5_tokenizer() -> T5TokenizerFast:
    """T5-style Unigram (~950 ids < 32128), model_max_length 128."""
    trained = bf.train_t5_tokenizer(corpus())
    return T5TokenizerFast(tokenizer_object=trained.backend_tokenizer, model_max_length=T5_MAX_LENGTH, extra_ids=0)


# --------------------------------------------------------------------------------------------------
# Components (real configurations)
# --------------------------------------------------------------------------------------------------


def real_scheduler() -> DDIMScheduler:
    """The DDIM config every one of these checkpoints ships (components.md §4.1)."""
    return DDIMScheduler(**bf.REAL_DDIM_CONFIG)


def real_vae(name: str) -> AutoencoderKL:
    return AutoencoderKL(
        in_channels=1,
        out_channels=1,
        latent_channels=8,
        block_out_channels=[128, 256, 512],
        layers_per_block=2,
        norm_num_groups=32,
        down_block_types=["DownEncoderBlock2D"] * 3,
        up_block_types=["UpDecoderBlock2D"] * 3,
        act_fn="silu",
        sample_size=VAE_SAMPLE_SIZE[name],
        scaling_factor=VAE_SCALING[name],
    )


def real_vocoder() -> SpeechT5HifiGan:
    return SpeechT5HifiGan(
        SpeechT5HifiGanConfig(
            model_in_dim=64,
            sampling_rate=16000,
            upsample_initial_channel=1024,
            upsample_rates=[5, 4, 2, 2, 2],
            upsample_kernel_sizes=[16, 16, 8, 4, 4],
            resblock_kernel_sizes=[3, 7, 11],
            resblock_dilation_sizes=[[1, 3, 5], [1, 3, 5], [1, 3, 5]],
            leaky_relu_slope=0.1,
            normalize_before=False,
        )
    )


def real_clap_model() -> ClapModel:
    return ClapModel(
        ClapConfig(text_config=dict(CLAP_TEXT), audio_config=dict(CLAP_AUDIO), projection_dim=512,
                   projection_hidden_act="relu")
    )


def real_feature_extractor() -> ClapFeatureExtractor:
    """cvssp/audioldm2's preprocessor_config.json (components.md §2.5): the unfused HTSAT settings.
    (The class defaults use truncation "fusion", i.e. 4 stacked mels, which this unfused audio branch
    cannot take; only score_waveforms uses it, i.e. never with one waveform per prompt.)"""
    return ClapFeatureExtractor(
        feature_size=64, sampling_rate=48000, hop_length=480, max_length_s=10, fft_window_size=1024,
        padding="repeatpad", truncation="rand_trunc", frequency_min=50, frequency_max=14000,
    )


LDM1_DOWN = ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"]
LDM1_UP = ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"]


def ldm1_unet_s(sample_size: int) -> UNet2DConditionModel:
    """AudioLDM-s / MusicLDM UNet (components.md §3.1): 128 model channels, CLAP vector as class embedding."""
    channels = [128, 256, 384, 640]
    return UNet2DConditionModel(
        sample_size=sample_size,
        in_channels=8,
        out_channels=8,
        block_out_channels=channels,
        layers_per_block=2,
        down_block_types=LDM1_DOWN,
        up_block_types=LDM1_UP,
        cross_attention_dim=channels,
        attention_head_dim=8,
        class_embed_type="simple_projection",
        projection_class_embeddings_input_dim=512,
        class_embeddings_concat=True,
        flip_sin_to_cos=True,
        freq_shift=0,
        norm_num_groups=32,
        norm_eps=1e-5,
        use_linear_projection=False,
        act_fn="silu",
    )


def audioldm2_components() -> dict:
    name = "audioldm2"
    torch.manual_seed(SEEDS[name])
    unet = AudioLDM2UNet2DConditionModel(
        sample_size=256,
        in_channels=8,
        out_channels=8,
        block_out_channels=[128, 256, 384, 640],
        layers_per_block=2,
        down_block_types=LDM1_DOWN,
        up_block_types=LDM1_UP,
        mid_block_type="UNetMidBlock2DCrossAttn",
        cross_attention_dim=[[None, 768, 1024]] * 4,
        transformer_layers_per_block=1,
        attention_head_dim=8,
        flip_sin_to_cos=True,
        freq_shift=0,
        norm_num_groups=32,
        norm_eps=1e-5,
        use_linear_projection=False,
        act_fn="silu",
    )
    vae = real_vae(name)
    text_encoder = real_clap_model()
    text_encoder_2 = T5EncoderModel(
        T5Config(
            vocab_size=32128, d_model=1024, d_kv=64, d_ff=2816, num_layers=24, num_heads=16,
            feed_forward_proj="gated-gelu", relative_attention_num_buckets=32, relative_attention_max_distance=128,
            layer_norm_epsilon=1e-6, tie_word_embeddings=False, pad_token_id=0, eos_token_id=1,
            decoder_start_token_id=0,
        )
    )
    # GPT-2 base (vocab 50257). The real repo stores a plain GPT2Model; diffusers 0.42 + transformers 5
    # cannot run one (shims.py, item 2), so this is saved as GPT2LMHeadModel (same weights under
    # `transformer.`, lm_head tied to wte and never used). Foley accepts both layouts.
    language_model = GPT2LMHeadModel(GPT2Config(n_embd=768, n_head=12, n_layer=12, n_positions=1024))
    language_model.config.max_new_tokens = 8
    projection_model = AudioLDM2ProjectionModel(text_encoder_dim=512, text_encoder_1_dim=1024, langauge_model_dim=768)
    vocoder = real_vocoder()
    return dict(
        vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2, projection_model=projection_model,
        language_model=language_model, tokenizer=clap_tokenizer(), tokenizer_2=t5_tokenizer(),
        feature_extractor=real_feature_extractor(), unet=unet, scheduler=real_scheduler(), vocoder=vocoder,
    )


def audioldm_components() -> dict:
    name = "audioldm-s-full-v2"
    torch.manual_seed(SEEDS[name])
    unet = ldm1_unet_s(sample_size=128)
    vae = real_vae(name)
    text_encoder = ClapTextModelWithProjection(ClapTextConfig(projection_dim=512, projection_hidden_act="relu"))
    vocoder = real_vocoder()
    return dict(
        vae=vae, text_encoder=text_encoder, tokenizer=clap_tokenizer(), unet=unet, scheduler=real_scheduler(),
        vocoder=vocoder,
    )


def musicldm_components() -> dict:
    name = "musicldm"
    torch.manual_seed(SEEDS[name])
    unet = ldm1_unet_s(sample_size=256)
    vae = real_vae(name)
    text_encoder = real_clap_model()
    vocoder = real_vocoder()
    return dict(
        vae=vae, text_encoder=text_encoder, tokenizer=clap_tokenizer(), feature_extractor=real_feature_extractor(),
        unet=unet, scheduler=real_scheduler(), vocoder=vocoder,
    )


def sa3_tokenizer():
    """Gemma-style byte-fallback BPE built offline exactly as build_sa3_fixtures.py does (768 ids < 256000, <pad>=0
    <eos>=1 <bos>=2, BOS added by the post-processor, model_max_length 1e30 so the pipeline pads to 256). The
    prompt is always padded to 256 tokens, so the vocabulary size changes nothing in the compute."""
    import build_sa3_fixtures as sf  # noqa: PLC0415  (needs diffusers with Stable Audio 3)

    return sf.train_gemma_tokenizer(sf.build_corpus() + [BENCH_PROMPT, BENCH_NEGATIVE_PROMPT] * 20)


def to_storage_dtype(module: torch.nn.Module, dtype: torch.dtype, what: str) -> None:
    """Cast the parameters (not the buffers) in place, and fail on any non-finite value after rounding."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.is_floating_point():
                p.data = p.data.to(dtype)
                if not torch.isfinite(p.data).all():
                    raise RuntimeError(f"{what}.{name}: non-finite after the cast to {dtype}")
        for name, b in module.named_buffers():
            if b.is_floating_point() and not torch.isfinite(b).all():
                raise RuntimeError(f"{what}.{name}: non-finite buffer")


@torch.no_grad()
def sa3_redraw_zero_outputs(module: torch.nn.Module, seed: int) -> list[str]:
    """Redraw the zero-initialised tensors that would make whole sub-networks an identity (SAME's attention
    `to_out` and feed-forward `proj_out`: with the default init every SAME transformer block adds exactly 0, and
    the decoder is a linear map) or constant (DiT pre/post-process residual convs, padding embedding, SAME
    `new_tokens` at 1e-5). Compute does not depend on the values; this only makes the random run exercise every
    path numerically (so the finite check means something). Weights: N(0, s/sqrt(fan_in)). The DiT's
    `to_local_embed` (inpainting only) stays zero. Returns the names redrawn."""
    g = torch.Generator("cpu").manual_seed(seed)
    redrawn = []
    for name, p in module.named_parameters():
        if not p.is_floating_point():
            continue
        fan_in = int(math.prod(p.shape[1:])) if p.ndim > 1 else p.shape[0]
        if name.endswith(("attn.to_out.weight", "ff.proj_out.weight")) and not p.any():
            new = torch.randn(p.shape, generator=g) / math.sqrt(fan_in)
        elif name.endswith(("preprocess_conv.weight", "postprocess_conv.weight")):
            new = torch.randn(p.shape, generator=g) * (0.5 / math.sqrt(fan_in))
        elif name == "prompt_padding_embedding":
            new = torch.randn(p.shape, generator=g)
        elif name.endswith("new_tokens"):
            new = torch.randn(p.shape, generator=g) * 0.5
        else:
            continue
        p.copy_(new.to(p.dtype))
        redrawn.append(name)
    return redrawn


def sa3_medium_components() -> dict:
    """stabilityai/stable-audio-3-medium in diffusers layout (research/sa3_notes.md §1-2). Each component is cast to
    the storage dtype (bfloat16) as soon as it is built, which keeps the build's peak memory near the float32 DiT
    (5.8 GB) plus the bf16 rest."""
    from diffusers import AutoencoderSAME, FlowMatchEulerDiscreteScheduler, StableAudio3DiTModel  # noqa: PLC0415
    from diffusers.pipelines.stable_audio_3.modeling_stable_audio_3 import (  # noqa: PLC0415
        StableAudio3DurationEmbedder,
    )
    from transformers import T5GemmaConfig, T5GemmaEncoderModel  # noqa: PLC0415

    name = "sa3-medium"
    dtype = STORAGE_DTYPE[name]
    seed = SEEDS[name]
    tokenizer = sa3_tokenizer()

    torch.manual_seed(seed)
    t5_config = T5GemmaConfig(
        encoder=dict(SA3_T5_ENCODER),
        decoder=dict(SA3_T5_ENCODER),  # B/B: the decoder has the encoder's shape (config only; not built)
        vocab_size=SA3_T5_ENCODER["vocab_size"],
        is_encoder_decoder=False,
        tie_word_embeddings=True,
    )
    t5_config.architectures = ["T5GemmaEncoderModel"]
    text_encoder = T5GemmaEncoderModel(t5_config).eval()  # transformers' init: N(0, 0.02), norms 0 (x*(1+w))
    to_storage_dtype(text_encoder, dtype, "text_encoder")

    torch.manual_seed(seed + 1)
    duration_embedder = StableAudio3DurationEmbedder().eval()  # output 768, 256 Fourier features, 0..384 s
    to_storage_dtype(duration_embedder, dtype, "duration_embedder")

    torch.manual_seed(seed + 2)
    transformer = StableAudio3DiTModel().eval()  # the defaults are SA3 medium's DiT (1.453 B)
    sa3_redraw_zero_outputs(transformer, seed + 3)
    to_storage_dtype(transformer, dtype, "transformer")
    gc.collect()

    torch.manual_seed(seed + 4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.nn.utils.weight_norm deprecation
        vae = AutoencoderSAME(**SA3_VAE).eval()
    sa3_redraw_zero_outputs(vae, seed + 5)
    with torch.no_grad():
        # The waveform comes out of the last decoder mapping (weight-normed 1x1 conv, |w| row = weight_g). Halved,
        # the random decode has std ~0.3 instead of ~0.65, so ~1 % instead of ~12 % of the samples hit the
        # pipeline's clamp to [-1, 1] (checked at 1 s, 8 steps). No effect on the compute.
        vae.decoder.blocks[-1].mapping.weight_g.mul_(0.5)
    to_storage_dtype(vae, dtype, "vae")
    gc.collect()

    return dict(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, duration_embedder=duration_embedder,
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(**SA3_SCHEDULER),
    )


def _sa3_pipeline_class():
    from diffusers import StableAudio3Pipeline  # noqa: PLC0415

    return StableAudio3Pipeline


BUILDERS = {
    "audioldm2": (audioldm2_components, lambda: AudioLDM2Pipeline),
    "audioldm-s-full-v2": (audioldm_components, lambda: AudioLDMPipeline),
    "musicldm": (musicldm_components, lambda: MusicLDMPipeline),
    "sa3-medium": (sa3_medium_components, _sa3_pipeline_class),
}


@torch.no_grad()
def scale_vocoder(vocoder: SpeechT5HifiGan, seed: int) -> None:
    """transformers 5 initialises the HiFi-GAN convs with N(0, 0.01); redraw them with std 1/sqrt(fan_in)
    (as build_fixtures.make_weights_informative does) so that the activations keep their size through the
    upsampling stages instead of shrinking layer by layer (tiny values are not free on a CPU: subnormals)."""
    g = torch.Generator("cpu").manual_seed(seed)
    for module in vocoder.modules():
        if isinstance(module, (torch.nn.Conv1d, torch.nn.ConvTranspose1d)):
            w = module.weight
            fan_in = (w.shape[0] if isinstance(module, torch.nn.ConvTranspose1d) else w.shape[1]) * w.shape[2]
            w.copy_(torch.randn(w.shape, generator=g) / math.sqrt(fan_in))


def build(name: str, root: Path) -> Path:
    target = root / name
    partial = root / f"{name}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    started = time.perf_counter()
    builder, pipeline_class = BUILDERS[name]
    cls = pipeline_class()
    components = builder()
    if "vocoder" in components:
        scale_vocoder(components["vocoder"], SEEDS[name] + 1)
    counts = {}
    for key, value in components.items():
        if isinstance(value, torch.nn.Module):
            value.eval()
            counts[key] = params(value)
    pipe = cls(**components)
    del components
    partial.mkdir(parents=True)
    pipe.save_pretrained(partial, safe_serialization=True)
    del pipe
    gc.collect()
    if target.exists():
        shutil.rmtree(target)
    partial.rename(target)
    sizes = {p.name: dir_size(p) for p in sorted(target.iterdir()) if p.is_dir()}
    print(
        json.dumps(
            {
                "built": name,
                "path": str(target),
                "seconds": round(time.perf_counter() - started, 1),
                "parameters_millions": {k: round(v / 1e6, 2) for k, v in counts.items()},
                "parameters_millions_total": round(sum(counts.values()) / 1e6, 1),
                "storage_dtype": str(STORAGE_DTYPE.get(name, torch.float32)).removeprefix("torch."),
                "component_bytes": sizes,
                "bytes": dir_size(target),
                "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            }
        ),
        flush=True,
    )
    return target


def ensure(name: str, force: bool = False, root: Path | None = None) -> Path:
    """The model directory, built first if missing (or if `force`)."""
    if name not in BUILDERS:
        raise SystemExit(f"unknown model {name!r}; known: {', '.join(ALL_NAMES)}")
    root = root or bench_dir()
    root.mkdir(parents=True, exist_ok=True)
    target = root / name
    if force or not (target / "model_index.json").is_file():
        return build(name, root)
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=ALL_NAMES, action="append",
                        help=f"build only this model (repeatable) [default: {', '.join(NAMES)}]")
    parser.add_argument("--force", action="store_true", help="rebuild even if the directory exists")
    parser.add_argument("--threads", type=int, default=None, help="torch threads while building")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    root = bench_dir()
    for name in args.only or NAMES:
        path = ensure(name, force=args.force, root=root)
        print(f"{name}: {path} {dir_size(path) / 1e9:.2f} GB", flush=True)


if __name__ == "__main__":
    main()

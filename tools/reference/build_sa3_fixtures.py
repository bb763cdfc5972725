#!/usr/bin/env python3
"""Reference fixtures for the Stable Audio 3 (SA3) port: tiny random pipelines and reference tensors.

Run from the repository root:

    tools/reference/.venv/bin/python tools/reference/build_sa3_fixtures.py \
        [--diffusers-repo PATH] [--official-src PATH] [--skip-conversion-check]

Outputs (each deleted and rebuilt; nothing else under ``tests/fixtures/`` is touched):

* ``tests/fixtures/sa3-tiny/``           ``StableAudio3Pipeline`` (diffusers layout), distilled scheduler
                                          (``stochastic_sampling=True``)
* ``tests/fixtures/sa3-tiny-base/``      the same weights with the base scheduler (``stochastic_sampling=False``)
* ``tests/fixtures/sa3-tiny-official/``  the same weights in Stability's own layout (``model.safetensors`` +
                                          ``model_config.json`` + ``t5gemma-b-b-ul2/``) and ``LAYOUT.md``
* ``tests/fixtures/reference/sa3/``      reference tensors (``*.safetensors``), ``cases.json``, ``input.wav``

Everything is built from configs with random weights (the Hub is unreachable): the tokenizer is a Gemma-style
byte-fallback BPE trained here on generated sound descriptions, every parameter is redrawn from a fixed generator
(zero-initialised ones included), and the references come from the REAL diffusers pipelines loaded from the saved
directories (CPU, float32, one thread).

The official layout is the inverse of diffusers' ``scripts/convert_stable_audio_3_to_diffusers.py``; the script is
read from a diffusers checkout/git dir (``--diffusers-repo``, env ``DIFFUSERS_REPO``) and run on the official
fixture, and every converted tensor must equal the diffusers-layout tensor bit for bit. ``--official-src`` (env
``SA3_OFFICIAL_SRC``: a checkout of github.com/Stability-AI/stable-audio-3 whose imports, incl. ``einops``, resolve)
additionally builds Stability's own model from ``model_config.json``, loads ``model.safetensors`` with
``strict=True`` and compares its DiT / SAME / conditioner outputs with diffusers'.

Deterministic: fixed seeds, single thread, single-threaded tokenizer training. See tools/reference/README.md.
"""

from __future__ import annotations

import os
import time

PROCESS_START = time.time()

os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import argparse
import contextlib
import copy
import hashlib
import io
import json
import math
import shutil
import subprocess
import sys
import tempfile
import types
import warnings
from pathlib import Path

import numpy as np
import scipy.io.wavfile
import torch
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

sys.path.insert(0, str(Path(__file__).resolve().parent))
import build_fixtures as bf  # noqa: E402  (word lists of the generated corpus)

import diffusers  # noqa: E402
import diffusers.utils.logging  # noqa: E402
import transformers  # noqa: E402
import transformers.utils.logging  # noqa: E402
from diffusers import (  # noqa: E402
    AutoencoderSAME,
    FlowMatchEulerDiscreteScheduler,
    StableAudio3AudioToAudioPipeline,
    StableAudio3DiTModel,
    StableAudio3InpaintPipeline,
    StableAudio3Pipeline,
)
from diffusers.pipelines.stable_audio_3.modeling_stable_audio_3 import StableAudio3DurationEmbedder  # noqa: E402
from diffusers.pipelines.stable_audio_3.pipeline_stable_audio_3 import (  # noqa: E402
    logsnr_sigma_schedule,
    retrieve_timesteps,
)
from transformers import (  # noqa: E402
    GemmaTokenizer,
    T5GemmaConfig,
    T5GemmaEncoderModel,
    T5GemmaForConditionalGeneration,
)

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"
TINY_DIR = FIXTURES / "sa3-tiny"
BASE_DIR = FIXTURES / "sa3-tiny-base"
OFFICIAL_DIR = FIXTURES / "sa3-tiny-official"
REF_DIR = FIXTURES / "reference" / "sa3"
GENERATOR = "tools/reference/build_sa3_fixtures.py"

CONVERT_SCRIPT = "scripts/convert_stable_audio_3_to_diffusers.py"
DEFAULT_DIFFUSERS_REPOS = ["/work/.mirror/huggingface+diffusers/repo"]
T5_SUBFOLDER = "t5gemma-b-b-ul2"
VERY_LARGE_INTEGER = int(1e30)  # transformers' VERY_LARGE_INTEGER, the real Gemma `model_max_length`
SR = 44100

# ------------------------------------------------------------------------------------------------
# Tiny configurations
# ------------------------------------------------------------------------------------------------

TOKENIZER_VOCAB = 768  # 5 specials + 256 byte-fallback tokens + 507 trained BPE tokens
SPECIAL_TOKENS = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]  # ids 0..4, as in Gemma's vocabulary

T5_ENCODER = dict(
    vocab_size=TOKENIZER_VOCAB,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_key_value_heads=1,  # GQA
    head_dim=16,
    query_pre_attn_scalar=24,  # != head_dim: the attention scale is 24**-0.5
    attn_logit_softcapping=5.0,
    final_logit_softcapping=30.0,
    sliding_window=128,  # < 256: the band of the sliding layer matters for prompts of > 128 tokens
    layer_types=["sliding_attention", "full_attention"],
    rms_norm_eps=1e-6,
    hidden_activation="gelu_pytorch_tanh",
    max_position_embeddings=8192,
    pad_token_id=0,
    eos_token_id=1,
    bos_token_id=2,
)
# Decoder of the official `t5gemma-b-b-ul2/` (encoder-decoder) checkpoint; never used by SA3.
T5_DECODER = dict(T5_ENCODER, num_hidden_layers=1, layer_types=["sliding_attention"])

TEXT_HIDDEN = T5_ENCODER["hidden_size"]

DURATION = dict(output_dim=TEXT_HIDDEN, fourier_dim=256, min_val=0.0, max_val=384.0, min_freq=0.5, max_freq=10000.0)

# dim_heads = 128 / 2 = 64. Must be >= 64 for the official layout: Stability's ContinuousTransformer builds its
# RoPE over max(dim_heads // 2, 32) channels while diffusers uses dim_heads // 2, so a smaller head width has no
# consistent official checkpoint (the conversion script would fail on `rotary_pos_emb.inv_freq`).
DIT = dict(
    io_channels=8,
    patch_size=1,
    embed_dim=128,
    # One block: every block's code runs once; a second only repeats it, and the committed tree
    # must stay small enough to travel to a GPU machine with the check bundle (64 MiB).
    depth=1,
    num_heads=2,
    cond_token_dim=TEXT_HIDDEN,
    global_cond_dim=TEXT_HIDDEN,
    local_add_cond_dim=9,  # 1 + latent_dim
    timestep_features_dim=16,
    ff_mult=1,
    num_memory_tokens=4,
    use_differential_attention=True,
)

VAE = dict(
    audio_channels=2,
    patch_size=32,
    encoder_channels=8,
    encoder_c_mults=[4],  # transformer width 32 -> 2 heads of 16
    encoder_strides=[8],  # ratio 32 * 8 = 256
    encoder_transformer_depths=[2],
    latent_dim=8,
    use_differential_attention=True,
    dim_heads=16,
    ff_mult=3,
    sliding_window=1,
    encoder_sinusoidal_blocks=[0],
    # layer i of a level is sin-gated iff (depth - i) < sinusoidal_blocks: with depth 2, 2 gates layer 1 only
    # (1 would gate none -- the reference's off-by-one, kept by diffusers).
    decoder_sinusoidal_blocks=[2],
    sampling_rate=SR,
)

SCHED_DISTILLED = dict(num_train_timesteps=1, shift=1.0, stochastic_sampling=True)
SCHED_BASE = dict(num_train_timesteps=1, shift=1.0, stochastic_sampling=False)

# ------------------------------------------------------------------------------------------------
# Prompts and cases
# ------------------------------------------------------------------------------------------------

LONG_PROMPT = " ".join(
    f"{w} {bf._SOURCES[i % len(bf._SOURCES)]}" for i, w in enumerate(bf._TAG_WORDS[:90])
)  # > 256 tokens: truncated to 256 (BOS + 255)
TOKENIZER_PROMPTS = [
    "glass shattering on concrete",
    "",
    "Café crème brûlée sizzling, naïve jalapeño señor — déjà vu",
    "雨の音と遠くの雷",
    LONG_PROMPT,
    "  two   spaces,\ta tab\nand a newline  ",
]
TEXT_ENCODER_PROMPTS = ["glass shattering on concrete", LONG_PROMPT]
DURATIONS = [0.375, 0.0, 1.5, 500.0]

CORPUS_EXTRA = [
    "glass shattering on concrete",
    "a dog barking in the distance",
    "low quality, noise",
    "muffled, distorted",
    "Café ambience with an espresso machine hissing",
    "a café terrace at night with soft chatter",
    "wind chimes and rain in a café garden",
]

INPUT_SAMPLES = 17777  # reference audio length (0.4031 s)


# ------------------------------------------------------------------------------------------------
# Utilities
# ------------------------------------------------------------------------------------------------


def log(msg: str) -> None:
    print(msg, flush=True)


def gen(seed: int) -> torch.Generator:
    return torch.Generator("cpu").manual_seed(seed)


def seeded_randn(seed: int, *shape: int, std: float = 1.0) -> torch.Tensor:
    return torch.randn(shape, generator=gen(seed), dtype=torch.float32) * std


def save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    """Flat dict -> safetensors: integers and masks as int64, floats as float32, contiguous CPU copies."""
    out = {}
    for name, t in tensors.items():
        t = t.detach().cpu()
        if t.dtype in (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8, torch.bool):
            t = t.to(torch.int64)
        else:
            t = t.to(torch.float32)
        out[name] = t.contiguous().clone()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(out, str(path), metadata={"generator": GENERATOR})


def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def assert_finite(name: str, t: torch.Tensor) -> None:
    if not torch.isfinite(t).all():
        raise RuntimeError(f"{name}: non-finite values")


def rel_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def shape(t: torch.Tensor) -> list[int]:
    return list(t.shape)


@contextlib.contextmanager
def quiet():
    """Silence stdout (the conversion script and the official code print a lot)."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield buf


# ------------------------------------------------------------------------------------------------
# Tokenizer
# ------------------------------------------------------------------------------------------------


def build_corpus() -> list[str]:
    lines = bf.build_corpus(2500) + CORPUS_EXTRA + [p for p in TOKENIZER_PROMPTS if p and p.isascii()]
    return [line for line in lines if line.strip()]


def train_gemma_tokenizer(corpus: list[str]) -> GemmaTokenizer:
    """Gemma-style BPE: byte fallback, normalizer Replace(" ", "▁"), ids <pad>=0 <eos>=1 <bos>=2 <unk>=3 <mask>=4.

    Training splits words at "▁" (merged with the next word) so merges stay within words; the final tokenizer has
    GemmaTokenizer's own pre-tokenizer (Split(" ", merged_with_previous), which is a no-op after the normalizer, as in
    the real Gemma tokenizer.json). The 256 byte tokens <0x00>..<0xFF> follow the specials (ids 5..260), then the
    trained tokens in trainer order.
    """
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Replace(" ", "▁")
    tok.pre_tokenizer = pre_tokenizers.Split("▁", behavior="merged_with_next")
    trainer = trainers.BpeTrainer(
        vocab_size=TOKENIZER_VOCAB - 256, min_frequency=2, special_tokens=SPECIAL_TOKENS, show_progress=False
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    trained = json.loads(tok.to_str())["model"]
    trained_vocab = sorted(trained["vocab"].items(), key=lambda kv: kv[1])
    vocab: dict[str, int] = {t: i for i, t in enumerate(SPECIAL_TOKENS)}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    for token, _ in trained_vocab:
        if token in SPECIAL_TOKENS:
            continue
        if token in vocab:
            raise RuntimeError(f"duplicate token {token!r}")
        vocab[token] = len(vocab)
    if len(vocab) != TOKENIZER_VOCAB:
        raise RuntimeError(f"vocabulary has {len(vocab)} entries, expected {TOKENIZER_VOCAB}")
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in trained["merges"]]
    # add_bos_token must be explicit: transformers 5 defaults it to False for a tokenizer built from a vocabulary
    # (the real Gemma tokenizer_config.json has add_bos_token true and its tokenizer.json a <bos> template).
    return GemmaTokenizer(vocab=vocab, merges=merges, model_max_length=VERY_LARGE_INTEGER,
                          add_bos_token=True, add_eos_token=False)


def tokenize(tokenizer, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Exactly the pipeline's call (P:250-259)."""
    max_length = min(tokenizer.model_max_length, 256)
    enc = tokenizer(prompts, padding="max_length", max_length=max_length, truncation=True, return_tensors="pt")
    return enc.input_ids, enc.attention_mask


def raw_tokenize(tokenizer_json: Path, prompt: str, max_length: int = 256) -> tuple[list[int], list[int]]:
    """What a port does with tokenizer.json alone: encode without specials, keep the first max_length - 1 tokens,
    put BOS (the post-processor's only special) in front, left-pad with <pad>=0."""
    tok = Tokenizer.from_file(str(tokenizer_json))
    if tok.padding is not None or tok.truncation is not None:
        raise RuntimeError("tokenizer.json unexpectedly carries padding/truncation settings")
    content = tok.encode(prompt, add_special_tokens=False).ids
    if tok.encode(prompt).ids != [2] + content:
        raise RuntimeError(f"post-processor does not just prepend <bos> for {prompt!r}")
    ids = [2] + content[: max_length - 1]
    pad = max_length - len(ids)
    return [0] * pad + ids, [0] * pad + [1] * len(ids)


# ------------------------------------------------------------------------------------------------
# Components
# ------------------------------------------------------------------------------------------------


def t5gemma_config(encoder_decoder: bool) -> T5GemmaConfig:
    cfg = T5GemmaConfig(
        encoder=dict(T5_ENCODER),
        decoder=dict(T5_DECODER),
        vocab_size=TOKENIZER_VOCAB,
        is_encoder_decoder=encoder_decoder,
        tie_word_embeddings=True,
    )
    cfg.architectures = ["T5GemmaForConditionalGeneration" if encoder_decoder else "T5GemmaEncoderModel"]
    return cfg


def randomise(module: torch.nn.Module, seed: int, rules) -> None:
    """Redraw every floating parameter and buffer (except fixed frequency tables) from a dedicated generator.

    `rules(name, tensor, g)` returns the new tensor or None (keep). Zero-initialised and constant-initialised tensors
    (residual convs, gates, memory tokens, padding embedding, norm gains, DyT, weight-norm g/v, bottleneck) all get
    random values so a port that drops or swaps any of them fails the references.
    """
    g = gen(seed)
    with torch.no_grad():
        for name, t in list(module.named_parameters()) + list(module.named_buffers()):
            if not t.is_floating_point():
                continue
            new = rules(name, t, g)
            if new is None:
                continue
            t.copy_(new.to(t.dtype).reshape(t.shape))


def _normal(t: torch.Tensor, g: torch.Generator, std: float, mean: float = 0.0) -> torch.Tensor:
    return torch.randn(t.shape, generator=g) * std + mean


def _fan_in(t: torch.Tensor) -> int:
    return int(np.prod(t.shape[1:])) if t.ndim > 1 else t.shape[0]


def rules_t5(name: str, t: torch.Tensor, g: torch.Generator):
    if "inv_freq" in name or "rotary" in name:
        return None
    if name.endswith("norm.weight") or "layernorm" in name:  # Gemma RMSNorm: x * (1 + w)
        return _normal(t, g, 0.1)
    if "embed_tokens" in name:
        return _normal(t, g, 0.3)
    if name.endswith(("q_proj.weight", "k_proj.weight")):
        # large enough that attention logits reach the tanh region of the softcap (|s| ~ 5)
        return _normal(t, g, 2.5 / math.sqrt(_fan_in(t)))
    if t.ndim >= 2:
        return _normal(t, g, 1.0 / math.sqrt(_fan_in(t)))
    return _normal(t, g, 0.1)


def rules_dit(name: str, t: torch.Tensor, g: torch.Generator):
    if name.endswith("inv_freq"):
        return None
    if name.endswith("gamma"):
        return _normal(t, g, 0.1, 1.0)
    if name == "prompt_padding_embedding":
        return _normal(t, g, 1.0)
    if name == "memory_tokens":
        return _normal(t, g, 0.5)
    if name.endswith("to_scale_shift_gate"):
        return _normal(t, g, 0.3)
    if name in ("preprocess_conv.weight", "postprocess_conv.weight"):
        return _normal(t, g, 0.5 / math.sqrt(_fan_in(t)))
    if t.ndim >= 2:
        return _normal(t, g, 1.0 / math.sqrt(_fan_in(t)))
    return _normal(t, g, 0.1)  # biases


def rules_vae(name: str, t: torch.Tensor, g: torch.Generator):
    if name.endswith("inv_freq"):
        return None
    if name == "bottleneck.running_std":
        return torch.tensor([1.37])
    if name == "bottleneck.scale":
        return _normal(t, g, 0.2, 1.0)
    if name == "bottleneck.bias":
        return _normal(t, g, 0.1)
    if name.endswith(".alpha"):  # DyT scalar
        return 0.8 + 0.6 * torch.rand(t.shape, generator=g)
    if name.endswith(".gamma"):
        return _normal(t, g, 0.1, 1.0)
    if name.endswith("weight_g"):  # row norms of the weight-normed 1x1 mappings: sets the output level
        # (waveform std ~0.42, ~0.5 % of the e2e samples reach the final clamp to [-1, 1])
        return 0.6 + 0.5 * torch.rand(t.shape, generator=g)
    if name.endswith("new_tokens"):
        return _normal(t, g, 0.5)
    if t.ndim >= 2:
        return _normal(t, g, 1.0 / math.sqrt(_fan_in(t)))
    return _normal(t, g, 0.1)  # biases, DyT beta, bottleneck bias


def rules_duration(name: str, t: torch.Tensor, g: torch.Generator):
    if name == "freqs":
        return None
    if t.ndim >= 2:
        return _normal(t, g, 1.0 / math.sqrt(_fan_in(t)))
    return _normal(t, g, 0.1)


def build_components(tokenizer: GemmaTokenizer) -> tuple[dict, T5GemmaForConditionalGeneration]:
    torch.manual_seed(0)
    t5_full = T5GemmaForConditionalGeneration(t5gemma_config(encoder_decoder=True)).eval()
    randomise(t5_full, 101, rules_t5)
    text_encoder = T5GemmaEncoderModel(t5gemma_config(encoder_decoder=False)).eval()
    missing, unexpected = text_encoder.load_state_dict(
        {k[len("model."):]: v for k, v in t5_full.state_dict().items() if k.startswith("model.encoder.")},
        strict=False,
    )
    if [k for k in missing if "rotary" not in k] or unexpected:
        raise RuntimeError(f"text encoder copy: missing {missing} unexpected {unexpected}")

    torch.manual_seed(1)
    duration_embedder = StableAudio3DurationEmbedder(**DURATION).eval()
    randomise(duration_embedder, 102, rules_duration)

    torch.manual_seed(2)
    transformer = StableAudio3DiTModel(**DIT).eval()
    randomise(transformer, 103, rules_dit)

    torch.manual_seed(3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.nn.utils.weight_norm deprecation
        vae = AutoencoderSAME(**VAE).eval()
    randomise(vae, 104, rules_vae)

    components = dict(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        duration_embedder=duration_embedder,
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(**SCHED_DISTILLED),
    )
    return components, t5_full


def load_pipeline(cls, path: Path):
    with quiet():
        pipe = cls.from_pretrained(str(path), torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    for name in ("vae", "text_encoder", "duration_embedder", "transformer"):
        getattr(pipe, name).eval()
    return pipe


def state_dicts_equal(a: dict, b: dict, what: str, ignore_extra_a: set[str] = frozenset()) -> None:
    ka, kb = set(a) - set(ignore_extra_a), set(b)
    if ka != kb:
        raise RuntimeError(f"{what}: key sets differ: only left {sorted(ka - kb)[:8]}, only right {sorted(kb - ka)[:8]}")
    for k in sorted(kb):
        x, y = a[k], b[k]
        if x.dtype != y.dtype or x.shape != y.shape or not torch.equal(x, y):
            raise RuntimeError(f"{what}: tensor {k} differs ({x.dtype} {tuple(x.shape)} vs {y.dtype} {tuple(y.shape)})")


# ------------------------------------------------------------------------------------------------
# Official (stable-audio-tools / Stability) layout: the inverse of convert_stable_audio_3_to_diffusers.py
# ------------------------------------------------------------------------------------------------

VAE_TRB_RENAMES = [  # diffusers -> official, inside encoder/decoder TRB blocks (inverse of _TRB_BLOCK_RENAMES)
    ("norm_attn.", "pre_norm."),
    ("attn.to_qkv.", "self_attn.to_qkv."),
    ("attn.to_out.", "self_attn.to_out."),
    ("attn.q_norm.", "self_attn.q_norm."),
    ("attn.k_norm.", "self_attn.k_norm."),
    ("norm_ff.", "ff_norm."),
    ("ff.proj_in.", "ff.ff.0.proj."),
    ("ff.proj_out.", "ff.ff.2."),
]
DIT_BLOCK_RENAMES = [("ff.proj_in.", "ff.ff.0.proj."), ("ff.proj_out.", "ff.ff.2.")]
DIT_TOP_RENAMES = {
    "proj_in.weight": "transformer.project_in.weight",
    "proj_out.weight": "transformer.project_out.weight",
    "memory_tokens": "transformer.memory_tokens",
    "rotary_pos_emb.inv_freq": "transformer.rotary_pos_emb.inv_freq",
}


def qkv_to_official(w: torch.Tensor) -> torch.Tensor:
    """diffusers [q1|q2|k1|k2|v] -> reference [q|k|v|q2|k2] (rows; each block = dim rows)."""
    q1, q2, k1, k2, v = w.chunk(5, dim=0)
    return torch.cat([q1, k1, v, q2, k2], dim=0)


def rename_first(key: str, renames) -> str:
    for old, new in renames:
        if old in key:
            return key.replace(old, new, 1)
    return key


def to_official_state_dict(pipe) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Return (official state dict, official key -> "component/diffusers key[ (reorder_qkv)]" or "(ignored)")."""
    out: dict[str, torch.Tensor] = {}
    names: dict[str, str] = {}

    def put(key: str, value: torch.Tensor, source: str) -> None:
        if key in out:
            raise RuntimeError(f"duplicate official key {key}")
        out[key] = value
        names[key] = source

    # DiT: model.model.*
    for k, v in pipe.transformer.state_dict().items():
        src = f"transformer/{k}"
        if k == "prompt_padding_embedding":
            put("conditioner.conditioners.prompt.padding_embedding", v, src)
        elif k.startswith("transformer_blocks."):
            idx, local = k[len("transformer_blocks."):].split(".", 1)
            local = rename_first(local, DIT_BLOCK_RENAMES)
            if local == "self_attn.to_qkv.weight":
                v, src = qkv_to_official(v), src + " (reorder_qkv)"
            put(f"model.model.transformer.layers.{idx}.{local}", v, src)
        elif k.startswith("global_cond_embedder."):
            put(f"model.model.transformer.{k}", v, src)
        elif k in DIT_TOP_RENAMES:
            put(f"model.model.{DIT_TOP_RENAMES[k]}", v, src)
        else:  # to_timestep_embed, to_cond_embed, to_global_embed, pre/postprocess_conv
            put(f"model.model.{k}", v, src)
    # Duration embedder: conditioner.conditioners.seconds_total.embedder.embedding.1.* (index 0 = Fourier features,
    # no parameters; `freqs` is not stored)
    for k, v in pipe.duration_embedder.state_dict().items():
        if k.startswith("linear."):
            put(f"conditioner.conditioners.seconds_total.embedder.embedding.1.{k[len('linear.'):]}", v,
                f"duration_embedder/{k}")
        elif k != "freqs":
            raise RuntimeError(f"unexpected duration embedder key {k}")
    # SAME: pretransform.model.*
    p = "pretransform.model."
    n_levels = len(VAE["encoder_strides"])
    for k, v in pipe.vae.state_dict().items():
        src = f"vae/{k}"
        if k.startswith(("encoder.blocks.", "decoder.blocks.")):
            side, _, rest = k.split(".", 2)
            idx, local = rest.split(".", 1)
            layer = int(idx) if side == "encoder" else 3 + int(idx)
            local = rename_first(local, VAE_TRB_RENAMES)
            if local.endswith("self_attn.to_qkv.weight"):
                v, src = qkv_to_official(v), src + " (reorder_qkv)"
            put(f"{p}{side}.layers.{layer}.{local}", v, src)
        elif k.startswith("encoder.proj."):
            put(f"{p}encoder.layers.{n_levels + 1}.{k[len('encoder.proj.'):]}", v, src)
        elif k.startswith("decoder.proj."):
            put(f"{p}decoder.layers.1.{k[len('decoder.proj.'):]}", v, src)
        elif k == "bottleneck.scale":
            put(f"{p}bottleneck.scaling_factor", v, src)
        elif k in ("bottleneck.bias", "bottleneck.running_std"):
            put(f"{p}{k}", v, src)
        else:
            raise RuntimeError(f"unexpected VAE key {k}")
    # Keys Stability's model has and diffusers does not (the conversion script drops them):
    put(f"{p}bottleneck.noise_scaling_factor", torch.ones(1, 0, 1), "(ignored)")  # noise_augment_dim = 0
    for side, blocks, first in (("encoder", pipe.vae.encoder.blocks, 0), ("decoder", pipe.vae.decoder.blocks, 3)):
        for i, blk in enumerate(blocks):
            for j, tb in enumerate(blk.transformers):
                # per-layer RotaryEmbedding(dim_heads // 2) buffer: persistent in Stability's code, recomputed
                # (non-persistent) by diffusers
                put(f"{p}{side}.layers.{first + i}.transformers.{j}.rope.inv_freq", tb.attn.rope.inv_freq.clone(),
                    "(ignored)")
    return {k: v.detach().contiguous().clone() for k, v in out.items()}, names


def official_model_config(distilled: bool) -> dict:
    """Stability's model_config.json for the tiny model (the schema read by stable_audio_3/factory.py)."""
    same_common = dict(
        channels=VAE["encoder_channels"],
        c_mults=VAE["encoder_c_mults"],
        strides=VAE["encoder_strides"],
        transformer_depths=VAE["encoder_transformer_depths"],
        latent_dim=VAE["latent_dim"],
        sliding_window=[VAE["sliding_window"], VAE["sliding_window"]],
        dim_heads=VAE["dim_heads"],
        differential=True,
        variable_stride=True,  # one shared new token per TRB (new_tokens (1, 1, C)), as diffusers assumes
        ff_mult=VAE["ff_mult"],
        dyt=True,
    )
    patched = VAE["audio_channels"] * VAE["patch_size"]
    ratio = VAE["patch_size"] * math.prod(VAE["encoder_strides"])
    return {
        "model_type": "diffusion_cond_inpaint",
        "sample_size": 16777216,
        "sample_rate": SR,
        "audio_channels": VAE["audio_channels"],
        "model": {
            "pretransform": {
                "type": "autoencoder",
                "config": {
                    # (no encoder `sinusoidal_blocks`: SAMEEncoder would forward a list to every TRB; the
                    # conversion script defaults it to [0] per level)
                    "encoder": {"type": "same", "config": dict(same_common, in_channels=patched)},
                    "decoder": {"type": "same", "config": dict(same_common, out_channels=patched,
                                                                sinusoidal_blocks=VAE["decoder_sinusoidal_blocks"])},
                    "bottleneck": {"type": "soft_norm", "config": {"dim": VAE["latent_dim"], "auto_scale": True}},
                    "pretransform": {"type": "patched", "config": {"channels": VAE["audio_channels"],
                                                                    "patch_size": VAE["patch_size"]}},
                    "latent_dim": VAE["latent_dim"],
                    "downsampling_ratio": ratio,
                    "io_channels": VAE["audio_channels"],
                },
            },
            "conditioning": {
                "configs": [
                    {
                        "id": "prompt",
                        "type": "t5gemma",
                        "config": {
                            "model_name": "google/t5gemma-b-b-ul2",
                            "max_length": 256,
                            "padding_mode": "learned",
                            "repo_id": "stabilityai/stable-audio-3-medium",
                            "subfolder": T5_SUBFOLDER,
                        },
                    },
                    {
                        "id": "seconds_total",
                        "type": "number",
                        "config": {"min_val": DURATION["min_val"], "max_val": DURATION["max_val"],
                                   "fourier_features_type": "expo"},
                    },
                ],
                "cond_dim": TEXT_HIDDEN,
            },
            "diffusion": {
                "type": "dit",
                "diffusion_objective": "rf_denoiser" if distilled else "rectified_flow",
                "cross_attention_cond_ids": ["prompt", "seconds_total"],
                "global_cond_ids": ["seconds_total"],
                "local_add_cond_ids": ["inpaint_mask", "inpaint_masked_input"],
                "config": {
                    "io_channels": DIT["io_channels"],
                    "patch_size": DIT["patch_size"],
                    "embed_dim": DIT["embed_dim"],
                    "depth": DIT["depth"],
                    "num_heads": DIT["num_heads"],
                    "cond_token_dim": DIT["cond_token_dim"],
                    "global_cond_dim": DIT["global_cond_dim"],
                    "project_cond_tokens": True,
                    "transformer_type": "continuous_transformer",
                    "global_cond_type": "adaLN",
                    "timestep_features_type": "expo",
                    "timestep_features_dim": DIT["timestep_features_dim"],
                    "num_memory_tokens": DIT["num_memory_tokens"],
                    "local_add_cond_dim": DIT["local_add_cond_dim"],
                    "norm_type": "rms_norm",
                    "norm_kwargs": {"eps": 1e-6, "force_fp32": True},
                    "attn_kwargs": {"qk_norm": "rms", "differential": True},
                    "ff_kwargs": {"mult": DIT["ff_mult"]},
                },
            },
            "io_channels": DIT["io_channels"],
        },
    }


def write_official(pipe, t5_full: T5GemmaForConditionalGeneration, tokenizer: GemmaTokenizer) -> dict:
    OFFICIAL_DIR.mkdir(parents=True)
    sd, names = to_official_state_dict(pipe)
    # one metadata key only: several come out in hash-map order (not reproducible)
    save_file(sd, str(OFFICIAL_DIR / "model.safetensors"), metadata={"format": "pt"})
    write_json(OFFICIAL_DIR / "model_config.json", official_model_config(distilled=True))
    t5_dir = OFFICIAL_DIR / T5_SUBFOLDER
    with quiet():
        t5_full.save_pretrained(str(t5_dir), safe_serialization=True)
        tokenizer.save_pretrained(str(t5_dir))
    return sd, names


def find_convert_script(arg: str | None) -> tuple[str, str]:
    """Return (source, provenance) of diffusers' scripts/convert_stable_audio_3_to_diffusers.py."""
    candidates = [arg] if arg else [os.environ.get("DIFFUSERS_REPO")] + DEFAULT_DIFFUSERS_REPOS
    for c in candidates:
        if not c:
            continue
        path = Path(c)
        if (path / CONVERT_SCRIPT).is_file():
            src = (path / CONVERT_SCRIPT).read_text()
            r = subprocess.run(["git", "-C", str(path), "log", "-1", "--format=%H", "--", CONVERT_SCRIPT],
                               capture_output=True, text=True)
            commit = r.stdout.strip() if r.returncode == 0 and r.stdout.strip() else "unknown commit"
            return src, f"diffusers checkout {CONVERT_SCRIPT} (last changed in {commit})"
        if path.is_dir():
            r = subprocess.run(["git", f"--git-dir={path}", "show", f"HEAD:{CONVERT_SCRIPT}"],
                               capture_output=True, text=True)
            if r.returncode == 0:
                commit = subprocess.run(["git", f"--git-dir={path}", "log", "-1", "--format=%H", "--", CONVERT_SCRIPT],
                                        capture_output=True, text=True).stdout.strip()
                return r.stdout, f"diffusers git HEAD:{CONVERT_SCRIPT} (last changed in {commit})"
    raise SystemExit(
        f"cannot find {CONVERT_SCRIPT}: pass --diffusers-repo (a diffusers checkout or git dir) or "
        "--skip-conversion-check"
    )


def verify_conversion(script_src: str, provenance: str, tiny_pipe, base_pipe, official_names) -> dict:
    """Run the real conversion script on the official fixture; every tensor must equal the diffusers layout."""
    conv = types.ModuleType("convert_stable_audio_3_to_diffusers")
    conv.__file__ = CONVERT_SCRIPT
    with quiet():
        exec(compile(script_src, CONVERT_SCRIPT, "exec"), conv.__dict__)
    model_config = json.loads((OFFICIAL_DIR / "model_config.json").read_text())
    ref = load_file(str(OFFICIAL_DIR / "model.safetensors"))
    report: dict = {"script": provenance, "script_sha256": hashlib.sha256(script_src.encode()).hexdigest()}

    # 1. The mapping functions alone.
    with quiet():
        vae_sd = conv.convert_vae(ref, differential=True)
        dit_sd = conv.convert_dit(ref, differential=True)
        dur_sd = conv.convert_duration_embedder(ref)
        te_sd = conv.extract_text_encoder(ref)
        vae_cfg = conv._infer_vae_config(ref, model_config)
        dit_cfg = conv._infer_dit_config(ref)
        dur_cfg = conv._infer_duration_embedder_config(ref)
    rope_keys = {k for k in vae_sd if k.endswith(".rope.inv_freq")}
    state_dicts_equal(vae_sd, tiny_pipe.vae.state_dict(), "convert_vae", ignore_extra_a=rope_keys)
    for k in rope_keys:  # what the script carries along (and load_state_dict(strict=False) ignores) is the same table
        blk = k.replace(".rope.inv_freq", ".attn.rope.inv_freq")
        if not torch.equal(vae_sd[k], tiny_pipe.vae.get_buffer(blk)):
            raise RuntimeError(f"{k} differs from diffusers' {blk}")
    state_dicts_equal(dit_sd, tiny_pipe.transformer.state_dict(), "convert_dit")
    state_dicts_equal(dur_sd, tiny_pipe.duration_embedder.state_dict(), "convert_duration_embedder")
    if te_sd:
        raise RuntimeError("the official model.safetensors must not contain text-encoder weights")
    for name, inferred, ours in [("vae", vae_cfg, tiny_pipe.vae.config), ("transformer", dit_cfg, tiny_pipe.transformer.config),
                                 ("duration_embedder", dur_cfg, tiny_pipe.duration_embedder.config)]:
        for key, value in inferred.items():
            have = ours[key]
            norm = (lambda x: list(x) if isinstance(x, (list, tuple)) else x)
            if norm(value) != norm(have):
                raise RuntimeError(f"inferred {name} config {key}={value!r}, fixture has {have!r}")
    dropped = sorted(k for k, src in official_names.items() if src == "(ignored)")
    report["mapping_functions"] = {
        "vae_keys": len(vae_sd) - len(rope_keys),
        "vae_extra_keys_ignored_by_load_state_dict": sorted(rope_keys),
        "transformer_keys": len(dit_sd),
        "duration_embedder_keys": len(dur_sd),
        "official_keys_without_diffusers_counterpart": dropped,
        "inferred_configs_match": True,
    }

    # 2. The script's full convert() (what a user runs), for the distilled and the base objective.
    with tempfile.TemporaryDirectory() as tmp:
        for variant, objective, expected in [("distilled", "rf_denoiser", tiny_pipe), ("base", "rectified_flow", base_pipe)]:
            cfg_path = Path(tmp) / f"model_config_{variant}.json"
            cfg = copy.deepcopy(model_config)
            cfg["model"]["diffusion"]["diffusion_objective"] = objective
            cfg_path.write_text(json.dumps(cfg))
            out_dir = Path(tmp) / f"converted_{variant}"
            args = argparse.Namespace(
                checkpoint_path=str(OFFICIAL_DIR / "model.safetensors"),
                model_config_path=str(cfg_path),
                output_dir=str(out_dir),
                text_encoder_repo=str(OFFICIAL_DIR / T5_SUBFOLDER),
                dtype="float32",
                skip_sanity_check=False,
            )
            with quiet() as buf:
                conv.convert(args)
            if "sanity check failed" in buf.getvalue() or "missing keys" in buf.getvalue():
                raise RuntimeError(f"convert() reported a problem:\n{buf.getvalue()}")
            converted = load_pipeline(StableAudio3Pipeline, out_dir)
            for comp in ("vae", "text_encoder", "duration_embedder", "transformer"):
                state_dicts_equal(getattr(converted, comp).state_dict(), getattr(expected, comp).state_dict(),
                                  f"convert() {variant} {comp}")
            for key in ("num_train_timesteps", "shift", "stochastic_sampling"):
                if converted.scheduler.config[key] != expected.scheduler.config[key]:
                    raise RuntimeError(f"convert() {variant}: scheduler {key} differs")
            for p in TOKENIZER_PROMPTS:
                a, b = tokenize(converted.tokenizer, [p]), tokenize(expected.tokenizer, [p])
                if not (torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])):
                    raise RuntimeError(f"convert() {variant}: tokenizer differs on {p!r}")
            mi = json.loads((out_dir / "model_index.json").read_text())
            report[f"convert_{variant}"] = {
                "diffusion_objective": objective,
                "scheduler": {k: converted.scheduler.config[k] for k in ("num_train_timesteps", "shift", "stochastic_sampling")},
                "model_index": {k: v for k, v in mi.items() if not k.startswith("_")},
                "all_tensors_bit_identical": True,
            }
    return report


def official_source(path: Path, tmp: Path) -> tuple[Path, str]:
    """A Stability-AI/stable-audio-3 checkout, or a (bare) git dir that is exported to `tmp`; returns (dir, commit)."""
    if (path / "stable_audio_3").is_dir():
        r = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True)
        return path, (r.stdout.strip() if r.returncode == 0 else os.environ.get("SA3_OFFICIAL_COMMIT", "unknown"))
    commit = subprocess.run(["git", f"--git-dir={path}", "rev-parse", "HEAD"], capture_output=True, text=True,
                            check=True).stdout.strip()
    archive = subprocess.run(["git", f"--git-dir={path}", "archive", "HEAD", "stable_audio_3"], capture_output=True,
                             check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tmp)], input=archive, check=True)
    return tmp, commit


def verify_with_official_code(src: Path, tiny_pipe) -> dict:
    """Build Stability's model from model_config.json, load model.safetensors strictly, compare numerics."""
    with tempfile.TemporaryDirectory() as tmp:
        src, commit = official_source(src, Path(tmp))
        res = _verify_with_official_code(src, tiny_pipe)
    return {"stable_audio_3_commit": commit, **res}


def _verify_with_official_code(src: Path, tiny_pipe) -> dict:
    sys.path.insert(0, str(src))
    for extra in os.environ.get("SA3_OFFICIAL_PYTHONPATH", "").split(os.pathsep):
        if extra:
            sys.path.insert(0, extra)
    with quiet():
        import stable_audio_3.models.conditioners as sa3_cond
        import stable_audio_3.models.transformer as sa3_transformer
        from stable_audio_3.factory import create_diffusion_cond_from_config
    # No flash-attn on CPU: skip the torch.compile'd flex_attention tier of its sliding-window fallback and use the
    # (exact) chunked-halo SDPA tier.
    sa3_transformer.flex_attention_available = False
    # T5GemmaConditioner hard-codes the T5Gemma-B width (768) for its output projection; the tiny encoder is 32 wide.
    sa3_cond.T5GemmaConditioner.T5GEMMA_MODEL_DIMS = {"google/t5gemma-b-b-ul2": TEXT_HIDDEN}
    cfg = json.loads((OFFICIAL_DIR / "model_config.json").read_text())
    t5cfg = cfg["model"]["conditioning"]["configs"][0]["config"]
    t5cfg.pop("repo_id"), t5cfg.pop("subfolder")
    t5cfg["model_path"] = str(OFFICIAL_DIR / T5_SUBFOLDER)  # what users do to run offline
    torch.manual_seed(0)
    with quiet():
        model = create_diffusion_cond_from_config(cfg).eval()
    sd = load_file(str(OFFICIAL_DIR / "model.safetensors"))
    model.load_state_dict(sd, strict=True)
    res: dict = {"strict_load": True, "keys": len(sd)}
    dit = model.model.model
    with torch.no_grad():
        # DiT: the reference replaces padded prompt positions in its conditioner and drops the cross-attention mask.
        x, t, ctx, glob, mask, local = dit_inputs()
        pad = tiny_pipe.transformer.prompt_padding_embedding
        ctx_ref = torch.where(mask.bool().unsqueeze(-1), ctx, pad.view(1, 1, -1))
        for tag, lc in [("dit", None), ("dit_inpaint", local)]:
            ours = tiny_pipe.transformer(x, t, ctx, glob, encoder_attention_mask=mask, local_add_cond=lc).sample
            theirs = dit(x, t, cross_attn_cond=ctx_ref, cross_attn_cond_mask=mask, global_embed=glob,
                         local_add_cond=lc, cfg_scale=1.0)
            res[f"{tag}_rel_l2"] = rel_l2(theirs, ours)
        # SAME
        ae = model.pretransform.model
        audio = seeded_randn(501, 1, 2, 16537, std=0.3)
        ours_lat = tiny_pipe.vae.encode(audio).latents
        theirs_lat = ae.encode(audio)
        res["vae_encode_rel_l2"] = rel_l2(theirs_lat, ours_lat)
        lat = seeded_randn(502, 1, VAE["latent_dim"], 65)
        res["vae_decode_rel_l2"] = rel_l2(ae.decode(lat), tiny_pipe.vae.decode(lat).sample)
        # Conditioners (tokenizer + T5Gemma from the t5gemma-b-b-ul2/ subfolder, learned padding, duration)
        prompt, dur = TEXT_ENCODER_PROMPTS[0], 0.375
        conds = model.conditioner([{"prompt": prompt, "seconds_total": dur}], "cpu")
        ids, am = tokenize(tiny_pipe.tokenizer, [prompt])
        hid = tiny_pipe.text_encoder(ids, attention_mask=am)[0]
        ours_prompt = torch.where(am.bool().unsqueeze(-1), hid, pad.view(1, 1, -1))
        res["prompt_conditioner_rel_l2"] = rel_l2(conds["prompt"][0], ours_prompt)
        res["prompt_mask_equal"] = bool(torch.equal(conds["prompt"][1].long(), am))
        ours_dur = tiny_pipe.duration_embedder(torch.tensor([dur]))
        res["seconds_total_rel_l2"] = rel_l2(conds["seconds_total"][0][:, 0], ours_dur)
    worst = max(v for k, v in res.items() if k.endswith("rel_l2"))
    if worst > 1e-5 or not res["prompt_mask_equal"]:
        raise RuntimeError(f"official code disagrees with diffusers: {res}")
    return res


# ------------------------------------------------------------------------------------------------
# References
# ------------------------------------------------------------------------------------------------


def dit_inputs():
    b, c, n = 2, DIT["io_channels"], 65
    x = seeded_randn(301, b, c, n)
    t = torch.tensor([0.9, 0.3])
    ctx = seeded_randn(302, b, 257, TEXT_HIDDEN)
    glob = seeded_randn(303, b, TEXT_HIDDEN)
    mask = torch.ones(b, 257, dtype=torch.int64)
    mask[0, :200] = 0  # left padding as the pipeline makes it (text 256 + duration token)
    mask[1, torch.randperm(256, generator=gen(304))[:37]] = 0  # arbitrary holes
    keep = torch.ones(b, 1, n)
    keep[0, :, 17:51] = 0
    keep[1, :, 5:12] = 0
    keep[1, :, 30:60] = 0
    local = torch.cat([keep, seeded_randn(305, b, VAE["latent_dim"], n) * keep], dim=1)
    return x, t, ctx, glob, mask, local


def ref_tokenizer(pipe) -> tuple[dict, dict]:
    ids, mask = tokenize(pipe.tokenizer, TOKENIZER_PROMPTS)
    tensors, info = {}, []
    tj = TINY_DIR / "tokenizer" / "tokenizer.json"
    for i, p in enumerate(TOKENIZER_PROMPTS):
        tensors[f"input_ids.{i}"] = ids[i : i + 1]
        tensors[f"attention_mask.{i}"] = mask[i : i + 1]
        raw_ids, raw_mask = raw_tokenize(tj, p)
        if raw_ids != ids[i].tolist() or raw_mask != mask[i].tolist():
            raise RuntimeError(f"tokenizer.json alone does not reproduce the tokenizer on {p!r}")
        full = pipe.tokenizer(p).input_ids
        info.append({"index": i, "prompt": p, "tokens": int(mask[i].sum()), "untruncated_tokens": len(full),
                     "truncated": len(full) > 256,
                     "byte_fallback_tokens": int(((ids[i] >= 5) & (ids[i] <= 260)).sum())})
    if ids[1].tolist() != [0] * 255 + [2]:
        raise RuntimeError("empty prompt must be 255 pads + BOS")
    return tensors, {"prompts": info}


def ref_text_encoder(pipe) -> dict:
    ids, mask = tokenize(pipe.tokenizer, TEXT_ENCODER_PROMPTS)
    with torch.no_grad():
        hidden = pipe.text_encoder(ids, attention_mask=mask)[0]
    assert_finite("text_encoder", hidden)
    return {"input_ids": ids, "attention_mask": mask, "last_hidden_state": hidden}


def ref_duration(pipe) -> dict:
    d = torch.tensor(DURATIONS, dtype=torch.float32)
    with torch.no_grad():
        out = pipe.duration_embedder(d)
    return {"seconds": d, "freqs": pipe.duration_embedder.freqs, "out": out}


def ref_dit(pipe) -> dict:
    x, t, ctx, glob, mask, local = dit_inputs()
    captured = {}
    h = pipe.transformer.transformer_blocks[0].register_forward_hook(lambda m, a, o: captured.setdefault("b0", o))
    with torch.no_grad():
        out = pipe.transformer(x, t, ctx, glob, encoder_attention_mask=mask).sample
        h.remove()
        out_inpaint = pipe.transformer(x, t, ctx, glob, encoder_attention_mask=mask, local_add_cond=local).sample
    assert_finite("dit", out)
    assert_finite("dit_inpaint", out_inpaint)
    return {"hidden_states": x, "timestep": t, "encoder_hidden_states": ctx, "global_hidden_states": glob,
            "encoder_attention_mask": mask, "out": out, "block0_out": captured["b0"],
            "local_add_cond": local, "out_inpaint": out_inpaint}


def ref_vae(pipe) -> dict:
    vae = pipe.vae
    tensors = {}
    with torch.no_grad():
        for name, a in [("a", seeded_randn(401, 1, 2, 16537, std=0.3)), ("b", seeded_randn(402, 2, 2, 10001, std=0.3))]:
            patched = vae.patch_embed.encode(a)
            trb = vae.encoder.blocks[0](patched)
            pre = vae.encoder.proj(trb.transpose(1, 2)).transpose(1, 2)
            lat = vae.bottleneck.encode(pre)
            if not torch.equal(lat, vae.encode(a).latents):
                raise RuntimeError("manual VAE encode differs from vae.encode")
            tensors.update({f"encode.{name}.audio": a, f"encode.{name}.trb_out": trb,
                            f"encode.{name}.pre_bottleneck": pre, f"encode.{name}.latents": lat})
        lat = seeded_randn(403, 1, VAE["latent_dim"], 65)
        unscaled = vae.bottleneck.decode(lat)
        trb_in = vae.decoder.proj(unscaled.transpose(1, 2)).transpose(1, 2)
        audio = vae.decode(lat).sample
        tensors.update({"decode.latents": lat, "decode.bottleneck_decoded": unscaled, "decode.trb_in": trb_in,
                        "decode.audio": audio})
    for k, v in tensors.items():
        assert_finite(k, v)
    return tensors


SCHED_STEPS = [1, 4, 5, 6, 8, 20]


def ref_scheduler() -> tuple[dict, dict]:
    tensors, info = {}, {"schedules": []}
    for n, smax in [(n, 1.0) for n in SCHED_STEPS] + [(5, 0.6)]:
        s = FlowMatchEulerDiscreteScheduler(**SCHED_DISTILLED)
        raw = logsnr_sigma_schedule(n, -6.2, 2.0, sigma_max=smax)
        timesteps, _ = retrieve_timesteps(s, sigmas=raw, device="cpu")
        key = f"n{n}.smax{smax}"
        tensors[f"{key}.sigmas"] = s.sigmas
        tensors[f"{key}.timesteps"] = timesteps
        info["schedules"].append({"key": key, "steps": n, "sigma_max": smax, "logsnr_min": -6.2, "logsnr_max": 2.0,
                                  "logsnr_sigma_schedule": raw, "sigmas": s.sigmas.tolist()})
    # One step of each kind at step index 0 and 2 of the N=6 schedule, with explicit inputs.
    shape_ = (1, 8, 65)
    sample = seeded_randn(601, *shape_)
    model_output = seeded_randn(602, *shape_)
    tensors["step.sample"] = sample
    tensors["step.model_output"] = model_output
    info["steps"] = []
    for kind, cfg in [("stochastic", SCHED_DISTILLED), ("deterministic", SCHED_BASE)]:
        for index in (0, 2):
            s = FlowMatchEulerDiscreteScheduler(**cfg)
            retrieve_timesteps(s, sigmas=logsnr_sigma_schedule(6, -6.2, 2.0), device="cpu")
            s.set_begin_index(index)
            g = gen(700 + index)
            prev = s.step(model_output, s.timesteps[index], sample, generator=g).prev_sample
            name = f"step.{kind}.i{index}"
            tensors[f"{name}.prev_sample"] = prev
            entry = {"name": name, "scheduler": cfg, "schedule_steps": 6, "step_index": index,
                     "sigma": float(s.sigmas[index]), "sigma_next": float(s.sigmas[index + 1]),
                     "timestep": float(s.timesteps[index])}
            if kind == "stochastic":
                noise = torch.randn(shape_, generator=gen(700 + index))
                tensors[f"{name}.noise"] = noise
                x0 = sample - s.sigmas[index] * model_output
                check = (1.0 - s.sigmas[index + 1]) * x0 + s.sigmas[index + 1] * noise
                entry["generator_seed"] = 700 + index
                entry["formula"] = "x0 = sample - sigma*v; prev = (1 - sigma_next)*x0 + sigma_next*noise"
            else:
                check = sample + (s.sigmas[index + 1] - s.sigmas[index]) * model_output
                entry["formula"] = "prev = sample + (sigma_next - sigma)*v"
            if not torch.equal(check, prev):
                raise RuntimeError(f"{name}: formula does not reproduce scheduler.step bit for bit")
            info["steps"].append(entry)
    return tensors, info


def make_input_audio() -> torch.Tensor:
    """Deterministic stereo test signal at 44.1 kHz, written as a float32 WAV; returns what the WAV holds."""
    n = np.arange(INPUT_SAMPLES, dtype=np.float64)
    t = n / SR
    rng = np.random.default_rng(1234)
    env = np.minimum(1.0, n / 441.0) * np.minimum(1.0, (INPUT_SAMPLES - n) / 441.0)
    left = 0.45 * np.sin(2 * np.pi * 440.0 * t) + 0.2 * np.sin(2 * np.pi * 1320.0 * t + 0.3)
    right = 0.35 * np.sin(2 * np.pi * 660.0 * t + 1.0) + 0.25 * np.sin(2 * np.pi * 97.0 * t)
    data = np.stack([left, right], axis=1) * env[:, None] + 0.05 * rng.standard_normal((INPUT_SAMPLES, 2))
    data = data.astype(np.float32)
    path = REF_DIR / "input.wav"
    scipy.io.wavfile.write(str(path), SR, data)
    rate, back = scipy.io.wavfile.read(str(path))
    if rate != SR or back.dtype != np.float32 or back.shape != (INPUT_SAMPLES, 2) or not np.array_equal(back, data):
        raise RuntimeError("input.wav does not read back bit for bit")
    return torch.from_numpy(back.T.copy()).unsqueeze(0)  # (1, 2, N)


E2E_CASES = [
    dict(name="t2a_distilled", pipeline="StableAudio3Pipeline", fixture="sa3-tiny",
         kwargs=dict(prompt="glass shattering on concrete", num_inference_steps=6, guidance_scale=1.0,
                     duration=0.375, num_waveforms_per_prompt=1), seed=0),
    dict(name="t2a_distilled_cfg", pipeline="StableAudio3Pipeline", fixture="sa3-tiny",
         kwargs=dict(prompt="a dog barking in the distance", negative_prompt="low quality, noise",
                     num_inference_steps=8, guidance_scale=3.0, duration=0.375, num_waveforms_per_prompt=1), seed=1),
    dict(name="t2a_base_cfg", pipeline="StableAudio3Pipeline", fixture="sa3-tiny-base",
         kwargs=dict(prompt="glass shattering on concrete", negative_prompt="muffled, distorted",
                     num_inference_steps=5, guidance_scale=4.0, duration=0.5, num_waveforms_per_prompt=1), seed=2),
    dict(name="t2a_base_two_waveforms", pipeline="StableAudio3Pipeline", fixture="sa3-tiny-base",
         kwargs=dict(prompt="rain on a metal roof", num_inference_steps=4, guidance_scale=1.0,
                     duration=0.375, num_waveforms_per_prompt=2), seed=3),
    dict(name="a2a_distilled", pipeline="StableAudio3AudioToAudioPipeline", fixture="sa3-tiny",
         kwargs=dict(prompt="glass shattering on concrete", init_noise_level=0.6, num_inference_steps=5,
                     duration="input", num_waveforms_per_prompt=1), seed=4),
    dict(name="a2a_base_crop", pipeline="StableAudio3AudioToAudioPipeline", fixture="sa3-tiny-base",
         kwargs=dict(prompt="a dog barking in the distance", init_noise_level=0.9, num_inference_steps=4,
                     duration=0.375, num_waveforms_per_prompt=1), seed=5),
    dict(name="inpaint_distilled", pipeline="StableAudio3InpaintPipeline", fixture="sa3-tiny",
         kwargs=dict(prompt="glass shattering on concrete", mask_start_seconds=0.1, mask_end_seconds=0.3,
                     num_inference_steps=6, duration="input", num_waveforms_per_prompt=1), seed=6),
    dict(name="inpaint_base_two_regions_pad", pipeline="StableAudio3InpaintPipeline", fixture="sa3-tiny-base",
         kwargs=dict(prompt="rain on a metal roof", mask_start_seconds=[0.05, 0.2], mask_end_seconds=[0.12, 0.3],
                     num_inference_steps=5, duration=0.45, num_waveforms_per_prompt=1), seed=7),
]
PIPELINE_CLASSES = {c.__name__: c for c in (StableAudio3Pipeline, StableAudio3AudioToAudioPipeline,
                                            StableAudio3InpaintPipeline)}


def count_draws(seed: int, final_state: torch.Tensor, draw_shape: tuple, limit: int = 64) -> int | None:
    g = gen(seed)
    for k in range(limit + 1):
        if torch.equal(g.get_state(), final_state):
            return k
        torch.randn(draw_shape, generator=g)
    return None


def run_e2e(pipes: dict, audio_in: torch.Tensor) -> tuple[dict, list]:
    tensors, cases = {}, []
    input_duration = INPUT_SAMPLES / SR
    for case in E2E_CASES:
        pipe = pipes[(case["pipeline"], case["fixture"])]
        kwargs = dict(case["kwargs"])
        if kwargs.get("duration") == "input":
            kwargs["duration"] = input_duration
        call = dict(kwargs)
        if case["pipeline"] != "StableAudio3Pipeline":
            call["audio"] = audio_in
        captured: dict = {"transformer_calls": 0, "encode": []}
        orig_prepare = pipe.prepare_latents

        def prepare(*a, **k):
            out = orig_prepare(*a, **k)
            captured["prepared"] = out.clone()
            return out

        def pre_hook(module, args, kw):
            if captured["transformer_calls"] == 0:
                captured["x_first"] = (args[0] if args else kw["hidden_states"]).clone()
                captured["first_call"] = {
                    "batch": int((args[0] if args else kw["hidden_states"]).shape[0]),
                    "context_shape": shape(kw["encoder_hidden_states"]),
                    "local_add_cond": kw.get("local_add_cond") is not None,
                }
                if kw.get("local_add_cond") is not None:
                    captured["local_add_cond"] = kw["local_add_cond"].clone()
            captured["transformer_calls"] += 1

        def post_hook(module, args, kw, out):
            if captured["transformer_calls"] == 1:
                captured["velocity_first"] = out[0].clone()

        orig_encode = pipe.vae.encode

        def encode(*a, **k):
            out = orig_encode(*a, **k)
            captured["encode"].append(out.latents.clone())
            return out

        step_latents = []

        def callback(p, i, t, kw):
            step_latents.append(kw["latents"].clone())
            return {}

        pipe.prepare_latents = prepare
        pipe.vae.encode = encode
        h1 = pipe.transformer.register_forward_pre_hook(pre_hook, with_kwargs=True)
        h2 = pipe.transformer.register_forward_hook(post_hook, with_kwargs=True)
        g = gen(case["seed"])
        t0 = time.time()
        try:
            with torch.no_grad():
                audios = pipe(**call, generator=g, callback_on_step_end=callback).audios
        finally:
            pipe.prepare_latents = orig_prepare
            pipe.vae.encode = orig_encode
            h1.remove()
            h2.remove()
        elapsed = time.time() - t0
        assert_finite(case["name"], audios)
        name = case["name"]
        ratio = pipe.vae.downsampling_ratio
        duration = kwargs["duration"]
        latent_length = int(math.ceil(duration * SR / ratio))
        waveform_length = int(duration * SR)
        steps = kwargs["num_inference_steps"]
        draw_shape = tuple(captured["prepared"].shape)
        draws = count_draws(case["seed"], g.get_state(), draw_shape)
        sigma_max = kwargs.get("init_noise_level", 1.0)
        sched = pipe.scheduler
        tensors[f"{name}.audios"] = audios
        tensors[f"{name}.initial_latents"] = captured["prepared"]  # RNG draw #1 (pure noise for every task)
        tensors[f"{name}.x_start"] = captured["x_first"]  # the first DiT input (a2a: the noised reference)
        tensors[f"{name}.velocity.0"] = captured["velocity_first"]  # the first (CFG-batched) DiT output
        for i, lat in enumerate(step_latents):
            tensors[f"{name}.latents.{i}"] = lat  # after step i
        tensors[f"{name}.timesteps"] = sched.timesteps
        tensors[f"{name}.sigmas"] = sched.sigmas
        entry = {
            "name": name,
            "pipeline": case["pipeline"],
            "fixture": f"tests/fixtures/{case['fixture']}",
            "scheduler": {k: sched.config[k] for k in ("num_train_timesteps", "shift", "stochastic_sampling")},
            "call": {**{k: v for k, v in kwargs.items()}, "generator": f'torch.Generator("cpu").manual_seed({case["seed"]})',
                     **({"audio": "input.wav as (1, 2, N) float32"} if "audio" in call else {})},
            "seed": case["seed"],
            "defaults_used": {"logsnr_min": -6.2, "logsnr_max": 2.0, "silence_padding_duration": 0.0,
                              "output_type": "pt"},
            "latent_length": latent_length,
            "waveform_length": waveform_length,
            "duration_times_sr": duration * SR,
            "output_shape": shape(audios),
            "latent_shape": list(draw_shape),
            "sigma_max": sigma_max,
            "timesteps": sched.timesteps.tolist(),
            "sigmas": sched.sigmas.tolist(),
            "transformer_calls": captured["transformer_calls"],
            "transformer_batch": captured["first_call"]["batch"],
            "context_shape": captured["first_call"]["context_shape"],
            "rng_draws": draws,
            "rng_draw_shape": list(draw_shape),
            "tensors": sorted(k for k in tensors if k.startswith(name + ".")),
        }
        if captured["encode"]:
            ref_lat = captured["encode"][0]
            tensors[f"{name}.reference_latents"] = ref_lat  # vae.encode of the whole input (before pad/crop)
            entry["reference_latent_length"] = ref_lat.shape[-1]
            entry["reference_pad_or_crop"] = ("pad" if ref_lat.shape[-1] < latent_length else
                                              "crop" if ref_lat.shape[-1] > latent_length else "none")
            entry["tensors"].append(f"{name}.reference_latents")
        if "local_add_cond" in captured:
            tensors[f"{name}.local_add_cond"] = captured["local_add_cond"]
            keep = captured["local_add_cond"][0, 0]
            entry["regenerated_frames"] = [int(i) for i in torch.nonzero(keep == 0).flatten()]
            starts = kwargs["mask_start_seconds"]
            ends = kwargs["mask_end_seconds"]
            starts = starts if isinstance(starts, list) else [starts]
            ends = ends if isinstance(ends, list) else [ends]
            entry["mask_frames"] = [[int(s * SR / ratio), min(int(e * SR / ratio), latent_length)]
                                    for s, e in zip(starts, ends)]
            entry["tensors"].append(f"{name}.local_add_cond")
        if "init_noise_level" in kwargs:
            n = kwargs["init_noise_level"]
            ref_fit = captured["encode"][0]
            if ref_fit.shape[-1] < latent_length:
                ref_fit = torch.cat([ref_fit, ref_fit.new_zeros(*ref_fit.shape[:2], latent_length - ref_fit.shape[-1])], -1)
            ref_fit = ref_fit[:, :, :latent_length]
            mix = (1.0 - n) * ref_fit + n * captured["prepared"]
            if not torch.equal(mix, captured["x_first"]):
                raise RuntimeError(f"{name}: x_start is not (1-n)*ref + n*noise")
        entry["tensors"].sort()
        cases.append(entry)
        log(f"  e2e {name}: {shape(audios)} in {elapsed:.2f}s, {draws} draws of {list(draw_shape)}")
    return tensors, cases


# ------------------------------------------------------------------------------------------------
# LAYOUT.md
# ------------------------------------------------------------------------------------------------


def layout_md(official_sd: dict, official_names: dict, tiny_pipe, conversion: dict | None,
              official_check: dict | None) -> str:
    lines = []
    lines.append("# Stable Audio 3: Stability's checkpoint layout and its mapping to diffusers\n")
    lines.append(f"Generated by `{GENERATOR}` (diffusers {diffusers.__version__}, transformers "
                 f"{transformers.__version__}). This folder holds the **same weights** as `../sa3-tiny/` "
                 "(diffusers layout) written the way `stabilityai/stable-audio-3-medium` ships them. "
                 "The mapping is the inverse of diffusers' `scripts/convert_stable_audio_3_to_diffusers.py` "
                 "(commit 360bef8 \"Feat -- Stable Audio 3 (#14119)\"); the builder runs that script on this folder "
                 "and checks that every converted tensor equals `../sa3-tiny/` bit for bit.\n")
    lines.append("## Files\n")
    lines.append("""What a Stability SA3 repository (`stabilityai/stable-audio-3-medium`, `-medium-base`, `-small-sfx`,
`-small-music` and their `-base` variants) contains:

| file | content | here |
|---|---|---|
| `model_config.json` | stable-audio-tools model config (architecture hyper-parameters, conditioner ids, `diffusion_objective`) | yes (tiny values) |
| `model.safetensors` | DiT + SAME autoencoder + duration conditioner + learned prompt-padding embedding, **no text encoder** | yes |
| `t5gemma-b-b-ul2/config.json` | `T5GemmaConfig` (`model_type: t5gemma`, `architectures: [T5GemmaForConditionalGeneration]`, encoder **and** decoder sub-configs) | yes |
| `t5gemma-b-b-ul2/model.safetensors` | the full T5Gemma encoder-decoder (`model.encoder.*`, `model.decoder.*`; `lm_head` tied, not stored) | yes (1-layer decoder) |
| `t5gemma-b-b-ul2/tokenizer.json` | Gemma BPE tokenizer (byte fallback, `Replace(" ", "▁")`, BOS post-processor) | yes |
| `t5gemma-b-b-ul2/tokenizer_config.json` | `GemmaTokenizer`, `model_max_length` 1e30 (no padding side: the class default `left` applies) | yes |
| `t5gemma-b-b-ul2/generation_config.json` | written by transformers for the encoder-decoder; unused | yes |
| `t5gemma-b-b-ul2/tokenizer.model`, `special_tokens_map.json` | SentencePiece model / special tokens (redundant with tokenizer.json) | no |
| `LICENSE.md`, `LICENSE_GEMMA.md`, `NOTICE` | licences | no |

Evidence: Stability's own loader (github.com/Stability-AI/stable-audio-3, `stable_audio_3/model_configs.py`) downloads
`model_config.json` + `model.safetensors` per repo; its `T5GemmaConditioner` stores the T5Gemma model outside the module
tree (`self.__dict__["model"] = model` unless `enable_grad`), so the text encoder is never in `model.safetensors`, and it
loads tokenizer + encoder with `AutoTokenizer/AutoConfig/T5GemmaEncoderModel.from_pretrained(model_path or repo_id or
model_name, subfolder=...)`. Third-party code that checks real snapshots lists the files above and a prompt-conditioner
config `{"max_length": 256, "padding_mode": "learned", "repo_id": "stabilityai/stable-audio-3-medium", "subfolder":
"t5gemma-b-b-ul2"}`.

**Text encoder and tokenizer are not in `model.safetensors`.** Stability's code reads them from the `t5gemma-b-b-ul2/`
subfolder of the same repo (`repo_id` + `subfolder` in the prompt conditioner config). diffusers' conversion script
instead takes them from `--text_encoder_repo` (default `google/t5gemma-b-b-ul2`, same architecture) with
`AutoTokenizer.from_pretrained` and `T5GemmaEncoderModel.from_pretrained(repo, config)` after setting
`config.is_encoder_decoder = False`; only if `model.safetensors` has `conditioner.conditioners.prompt.model.*` keys (a
checkpoint trained with `enable_grad`) are those loaded on top (prefix stripped). The T5GemmaEncoderModel reads the
encoder-decoder checkpoint's `model.encoder.*` keys as `encoder.*` (transformers strips the `model.` base prefix;
`model.decoder.*` is ignored). Run here with `--text_encoder_repo sa3-tiny-official/t5gemma-b-b-ul2`, the result
equals `../sa3-tiny/text_encoder` bit for bit.
""")
    lines.append("## model_config.json fields the port needs\n")
    lines.append("""The conversion script reads only these (everything else comes from tensor shapes):

| field | diffusers config |
|---|---|
| `model.pretransform.config.encoder.config.strides` | vae `encoder_strides` (not recoverable from weights: `variable_stride` shares one new token) |
| `...encoder.config.transformer_depths` | vae `encoder_transformer_depths` |
| `...encoder.config.c_mults`, `...encoder.config.channels` | vae `encoder_c_mults`, `encoder_channels` |
| `...encoder.config.latent_dim`, `...encoder.config.dim_heads` | vae `latent_dim`, `dim_heads` |
| `...encoder.config.sliding_window` (a per-side list `[w, w]`) | vae `sliding_window` = `w` (first entry) |
| `...encoder.config.sinusoidal_blocks`, `...decoder.config.sinusoidal_blocks` | vae `encoder_/decoder_sinusoidal_blocks` |
| `model.pretransform.config.io_channels` | vae `audio_channels` |
| `model.pretransform.config.downsampling_ratio` | vae `patch_size = downsampling_ratio / prod(strides)` |
| `model.diffusion.diffusion_objective` | scheduler: `rf_denoiser` -> `stochastic_sampling: true` (distilled, 8 steps); anything else (`rectified_flow`) -> `false` (base, 100 steps) |

Fixed by the script (not read): vae `use_differential_attention: true`, `ff_mult: 3`, `sampling_rate: 44100`; duration
embedder `min_val 0`, `max_val 384`, `min_freq 0.5`, `max_freq 10000` (the config's `seconds_total` `min_val/max_val` are
**not** read); DiT `patch_size 1`. Without `model_config.json` the script assumes strides 16, sliding window 1, no
sinusoidal blocks (wrong for SAME-L, whose decoder has `sinusoidal_blocks` 8), and the base scheduler.

Shape-inferred (the port can do the same): DiT `embed_dim`/`timestep_features_dim` = `to_timestep_embed.0.weight`
(embed, tf); `depth` = number of `transformer.layers.{i}.pre_norm.gamma`; `dim_heads` = `layers.0.self_attn.q_norm.gamma`
length, `num_heads = embed_dim / dim_heads`; `cond_token_dim` = `to_cond_embed.0.weight` cols; `global_cond_dim` =
`to_global_embed.0.weight` cols; `io_channels` = `preprocess_conv.weight` rows; `ff_mult` = rows of
`layers.0.ff.ff.0.proj.weight` / (2 embed) (integer division); `local_add_cond_dim` = `layers.0.to_local_embed.0.weight`
cols; `num_memory_tokens` = `transformer.memory_tokens` rows; differential iff `self_attn.to_qkv.weight` has 5 embed rows.
Duration embedder: `output_dim, fourier_dim` = `embedding.1.weight` shape (Stability's `NumberConditioner` always uses 256
Fourier features). Text: `cond_dim` = T5Gemma hidden size (768).
""")
    lines.append("## This folder's model_config.json\n")
    lines.append("""Written in the schema of Stability's `stable_audio_3/factory.py` so that its
`create_diffusion_cond_from_config` builds exactly this tiny model (checked below when the builder ran with
`--official-src`). Choices a port should know about:

* SAME: `variable_stride: true` (one new token per TRB, shape (1, 1, C), which is what diffusers and the conversion
  script assume; without it Stability's decoder would have (1, stride, C) new tokens), `dyt: true`, `differential:
  true`, `sliding_window: [1, 1]`, no encoder `sinusoidal_blocks` (Stability's `SAMEEncoder` would pass the list on to
  every block), decoder `sinusoidal_blocks: [2]`: layer i of a level is sin-gated iff `depth - i < sinusoidal_blocks`,
  so with depth 2 only layer 1 is (the same off-by-one in Stability's code and diffusers; SAME-L's 8 of 12 gates 7).
* DiT: `norm_type: rms_norm`, `norm_kwargs: {eps: 1e-6, force_fp32: true}`, `attn_kwargs: {qk_norm: rms,
  differential: true}` (qk eps 1e-6 by default) = what diffusers hard-codes (Stability's `RMSNorm` defaults to eps
  1e-5 when a config has no `norm_kwargs`; diffusers ignores the config and always uses 1e-6); `global_cond_type: adaLN`,
  `timestep_features_type: expo`, `project_cond_tokens: true`, `local_add_cond_dim` = 1 + latent_dim.
* `dim_heads` = 64: Stability's `ContinuousTransformer` builds its RoPE table over max(dim_heads/2, 32) channels,
  diffusers over dim_heads/2, so a smaller head width has no official checkpoint that diffusers can load.
* `seconds_total` uses `fourier_features_type: expo`; its `NumberEmbedder` always has 256 Fourier features.
* The prompt conditioner names `google/t5gemma-b-b-ul2` (Stability's code only accepts that name and hard-codes its
  width 768 for the projection; the check patches `T5GEMMA_MODEL_DIMS` to the tiny width 32) with `repo_id` +
  `subfolder` like the real repos. `max_length: 256`, `padding_mode: learned`.
* Guesses that nothing here reads: `model_type: diffusion_cond_inpaint`, `sample_size: 16777216`,
  `local_add_cond_ids: [inpaint_mask, inpaint_masked_input]`.
""")
    lines.append("## Key mapping (official -> diffusers)\n")
    lines.append("""Prefixes: `model.model.` = DiT (`ConditionedDiffusionModelWrapper.model` = `DiTWrapper`, `.model` =
`DiffusionTransformer`); `pretransform.model.` = SAME (`AutoencoderPretransform.model` = `AudioAutoencoder`);
`conditioner.conditioners.<id>.` = conditioners. `{i}`/`{j}` are decimal layer indices; S = number of SAME levels
(`len(strides)`, 1 for SAME-S/L); D = the fused width of the attention (DiT `embed_dim`, SAME transformer width).

**Tensor transform** `reorder_qkv` (self-attention `to_qkv.weight` only, DiT and SAME, shape (5D, D)): split the rows
into 5 blocks of D, official order `[q | k | v | q2 | k2]` -> diffusers `[q1 | q2 | k1 | k2 | v]`, i.e.
`cat([B0, B3, B1, B4, B2])`. Cross-attention `to_q` (2D rows `[q1|q2]`) and `to_kv` (3D rows `[k1|k2|v]`) are **not**
reordered. Every other tensor is copied unchanged (same dtype, same shape; weight norm stays split as `weight_g` /
`weight_v`).

### DiT (`transformer/`)

| official key | diffusers key | transform |
|---|---|---|
| `model.model.to_timestep_embed.{0,2}.{weight,bias}` | `to_timestep_embed.{0,2}.{weight,bias}` | |
| `model.model.to_cond_embed.{0,2}.weight` | `to_cond_embed.{0,2}.weight` | |
| `model.model.to_global_embed.{0,2}.weight` | `to_global_embed.{0,2}.weight` | |
| `model.model.preprocess_conv.weight` | `preprocess_conv.weight` | |
| `model.model.postprocess_conv.weight` | `postprocess_conv.weight` | |
| `model.model.transformer.project_in.weight` | `proj_in.weight` | |
| `model.model.transformer.project_out.weight` | `proj_out.weight` | |
| `model.model.transformer.memory_tokens` | `memory_tokens` | |
| `model.model.transformer.rotary_pos_emb.inv_freq` | `rotary_pos_emb.inv_freq` | (buffer; `1/10000^(arange(0,r,2)/r)`, r = max(dim_heads/2, 32) in Stability's code, dim_heads/2 in diffusers: equal only for dim_heads >= 64) |
| `model.model.transformer.global_cond_embedder.{0,2}.{weight,bias}` | `global_cond_embedder.{0,2}.{weight,bias}` | |
| `model.model.transformer.layers.{i}.to_scale_shift_gate` | `transformer_blocks.{i}.to_scale_shift_gate` | |
| `model.model.transformer.layers.{i}.pre_norm.gamma` | `transformer_blocks.{i}.pre_norm.gamma` | |
| `model.model.transformer.layers.{i}.self_attn.to_qkv.weight` | `transformer_blocks.{i}.self_attn.to_qkv.weight` | **reorder_qkv** |
| `model.model.transformer.layers.{i}.self_attn.to_out.weight` | `transformer_blocks.{i}.self_attn.to_out.weight` | |
| `model.model.transformer.layers.{i}.self_attn.{q,k}_norm.gamma` | `transformer_blocks.{i}.self_attn.{q,k}_norm.gamma` | |
| `model.model.transformer.layers.{i}.cross_attend_norm.gamma` | `transformer_blocks.{i}.cross_attend_norm.gamma` | |
| `model.model.transformer.layers.{i}.cross_attn.to_q.weight` | `transformer_blocks.{i}.cross_attn.to_q.weight` | |
| `model.model.transformer.layers.{i}.cross_attn.to_kv.weight` | `transformer_blocks.{i}.cross_attn.to_kv.weight` | |
| `model.model.transformer.layers.{i}.cross_attn.to_out.weight` | `transformer_blocks.{i}.cross_attn.to_out.weight` | |
| `model.model.transformer.layers.{i}.cross_attn.{q,k}_norm.gamma` | `transformer_blocks.{i}.cross_attn.{q,k}_norm.gamma` | |
| `model.model.transformer.layers.{i}.ff_norm.gamma` | `transformer_blocks.{i}.ff_norm.gamma` | |
| `model.model.transformer.layers.{i}.ff.ff.0.proj.{weight,bias}` | `transformer_blocks.{i}.ff.proj_in.{weight,bias}` | |
| `model.model.transformer.layers.{i}.ff.ff.2.{weight,bias}` | `transformer_blocks.{i}.ff.proj_out.{weight,bias}` | |
| `model.model.transformer.layers.{i}.to_local_embed.{0,2}.{weight,bias}` | `transformer_blocks.{i}.to_local_embed.{0,2}.{weight,bias}` | |
| `conditioner.conditioners.prompt.padding_embedding` | `prompt_padding_embedding` | (moves from the prompt conditioner into the DiT) |

### Duration embedder (`duration_embedder/`)

| official key | diffusers key | transform |
|---|---|---|
| `conditioner.conditioners.seconds_total.embedder.embedding.1.weight` | `linear.weight` | |
| `conditioner.conditioners.seconds_total.embedder.embedding.1.bias` | `linear.bias` | |
| (none: `embedding.0` is the parameter-free ExpoFourierFeatures) | `freqs` | computed: `exp(linspace(0,1,F/2)*(ln 1e4 - ln 0.5) + ln 0.5)`, F = `linear.weight` cols |

### SAME autoencoder (`vae/`)

Stability's encoder is `layers = [TRB_0 .. TRB_{S-1}, Transpose, Linear, Transpose]`, its decoder
`layers = [Transpose, Linear, Transpose, TRB_0 .. TRB_{S-1}]` (decoder TRBs already in the reversed level order, like
diffusers' `decoder.blocks`). `L` below is `encoder.layers.{i}` -> `encoder.blocks.{i}` for `i < S`, and
`decoder.layers.{3+i}` -> `decoder.blocks.{i}`.

| official key | diffusers key | transform |
|---|---|---|
| `pretransform.model.encoder.layers.{i}.new_tokens` | `encoder.blocks.{i}.new_tokens` | |
| `pretransform.model.encoder.layers.{i}.mapping.{weight_g,weight_v,bias}` | `encoder.blocks.{i}.mapping.{weight_g,weight_v,bias}` | (absent when in == out channels) |
| `pretransform.model.encoder.layers.{i}.transformers.{j}.pre_norm.{alpha,gamma,beta}` | `encoder.blocks.{i}.transformers.{j}.norm_attn.{alpha,gamma,beta}` | |
| `pretransform.model.encoder.layers.{i}.transformers.{j}.self_attn.to_qkv.weight` | `encoder.blocks.{i}.transformers.{j}.attn.to_qkv.weight` | **reorder_qkv** |
| `pretransform.model.encoder.layers.{i}.transformers.{j}.self_attn.to_out.weight` | `encoder.blocks.{i}.transformers.{j}.attn.to_out.weight` | |
| `pretransform.model.encoder.layers.{i}.transformers.{j}.self_attn.{q,k}_norm.{alpha,gamma,beta}` | `encoder.blocks.{i}.transformers.{j}.attn.{q,k}_norm.{alpha,gamma,beta}` | |
| `pretransform.model.encoder.layers.{i}.transformers.{j}.ff_norm.{alpha,gamma,beta}` | `encoder.blocks.{i}.transformers.{j}.norm_ff.{alpha,gamma,beta}` | |
| `pretransform.model.encoder.layers.{i}.transformers.{j}.ff.ff.0.proj.{weight,bias}` | `encoder.blocks.{i}.transformers.{j}.ff.proj_in.{weight,bias}` | |
| `pretransform.model.encoder.layers.{i}.transformers.{j}.ff.ff.2.{weight,bias}` | `encoder.blocks.{i}.transformers.{j}.ff.proj_out.{weight,bias}` | |
| `pretransform.model.encoder.layers.{S+1}.{weight,bias}` | `encoder.proj.{weight,bias}` | |
| `pretransform.model.decoder.layers.1.{weight,bias}` | `decoder.proj.{weight,bias}` | |
| `pretransform.model.decoder.layers.{3+i}.*` | `decoder.blocks.{i}.*` | same inner renames as the encoder rows |
| `pretransform.model.bottleneck.scaling_factor` | `bottleneck.scale` | |
| `pretransform.model.bottleneck.bias` | `bottleneck.bias` | |
| `pretransform.model.bottleneck.running_std` | `bottleneck.running_std` | (a Parameter in Stability's code, a buffer in diffusers) |

### Official keys with no diffusers counterpart (must be ignored)

| official key | why |
|---|---|
| `pretransform.model.{encoder,decoder}.layers.{L}.transformers.{j}.rope.inv_freq` | per-layer RoPE table (`dim_heads/2` channels), persistent in Stability's code; diffusers recomputes it (non-persistent `attn.rope.inv_freq`). The script copies it to `...transformers.{j}.rope.inv_freq`, which `load_state_dict(strict=False)` drops; the values are equal. |
| `pretransform.model.bottleneck.noise_scaling_factor` | shape (1, 0, 1) (empty; `noise_augment_dim` 0); skipped by the script |
| `conditioner.conditioners.prompt.model.*` | only in a checkpoint trained with `enable_grad`: T5Gemma encoder weights (prefix stripped) applied over the `t5gemma` weights; absent in the released checkpoints and here |
| `conditioner.conditioners.prompt.proj_out.*` | only if `cond_dim` != T5Gemma width (not in SA3: 768 = 768); the script ignores it |
| any `pretransform.model.pretransform.*` | a `PatchedPretransform` post-filter (not used by SA3; diffusers has no equivalent) |

### Text encoder (`text_encoder/`, from `t5gemma-b-b-ul2/model.safetensors`)

| `t5gemma-b-b-ul2/model.safetensors` key | diffusers `text_encoder/` key |
|---|---|
| `model.encoder.embed_tokens.weight` | `encoder.embed_tokens.weight` |
| `model.encoder.layers.{i}.{pre,post}_self_attn_layernorm.weight` | `encoder.layers.{i}.{pre,post}_self_attn_layernorm.weight` |
| `model.encoder.layers.{i}.{pre,post}_feedforward_layernorm.weight` | `encoder.layers.{i}.{pre,post}_feedforward_layernorm.weight` |
| `model.encoder.layers.{i}.self_attn.{q,k,v,o}_proj.weight` | `encoder.layers.{i}.self_attn.{q,k,v,o}_proj.weight` |
| `model.encoder.layers.{i}.mlp.{gate,up,down}_proj.weight` | `encoder.layers.{i}.mlp.{gate,up,down}_proj.weight` |
| `model.encoder.norm.weight` | `encoder.norm.weight` |
| `model.decoder.*` | (not used) |

The encoder hyper-parameters are `config.json`'s `encoder` sub-config (diffusers' `text_encoder/config.json` has the
same `encoder` sub-config, `is_encoder_decoder: false`, `architectures: [T5GemmaEncoderModel]`). The tokenizer is
`t5gemma-b-b-ul2/tokenizer.json` unchanged (diffusers `tokenizer/tokenizer.json`).
""")
    lines.append("## model_index.json written by the conversion script\n")
    if conversion:
        mi = conversion["convert_distilled"]["model_index"]
        lines.append("The script writes its own `model_index.json`:\n\n```json\n" + json.dumps(mi, indent=2) + "\n```\n")
        lines.append("Note `duration_embedder: [\"diffusers\", \"StableAudio3DurationEmbedder\"]`, while "
                     "`DiffusionPipeline.save_pretrained` (the `../sa3-tiny/` fixture) writes `[\"stable_audio_3\", "
                     "\"StableAudio3DurationEmbedder\"]`: a loader must accept both.\n")
    lines.append("## Verification\n")
    if conversion:
        mf = conversion["mapping_functions"]
        lines.append(f"* Conversion script: `{conversion['script']}` (sha256 `{conversion['script_sha256'][:16]}…`).")
        lines.append(f"* `convert_vae` / `convert_dit` / `convert_duration_embedder` on `model.safetensors`: "
                     f"{mf['vae_keys']} + {mf['transformer_keys']} + {mf['duration_embedder_keys']} tensors, key sets "
                     "equal to diffusers' state dicts and every tensor bit-identical; the configs inferred by "
                     "`_infer_vae_config(model_config)`, `_infer_dit_config`, `_infer_duration_embedder_config` equal "
                     "the fixture's.")
        lines.append("* The full `convert()` (checkpoint `model.safetensors`, `--model_config_path model_config.json`, "
                     f"`--text_encoder_repo {T5_SUBFOLDER}/`) reproduces `../sa3-tiny/` (vae, text_encoder, "
                     "duration_embedder, transformer bit for bit; tokenizer ids equal; distilled scheduler), and with "
                     "`diffusion_objective: rectified_flow` the base scheduler of `../sa3-tiny-base/`.")
    else:
        lines.append("* The conversion check was skipped in this build (`--skip-conversion-check`).")
    if official_check:
        lines.append(f"* Stability's own code (github.com/Stability-AI/stable-audio-3 at "
                     f"{official_check['stable_audio_3_commit'][:12]}, `stable_audio_3.factory."
                     "create_diffusion_cond_from_config(model_config.json)`, with `T5GemmaConditioner."
                     f"T5GEMMA_MODEL_DIMS` patched to the tiny width {TEXT_HIDDEN}) loads `model.safetensors` with "
                     f"`strict=True` ({official_check['keys']} tensors) and agrees with diffusers (relative L2): "
                     + ", ".join(f"{k[:-7]} {v:.1e}" for k, v in official_check.items() if k.endswith("_rel_l2")) + ".")
    lines.append("\n## Tiny key list (official key, shape -> diffusers key)\n")
    lines.append("| official key | shape | diffusers |\n|---|---|---|")
    for k in sorted(official_sd):
        src = official_names[k]
        lines.append(f"| `{k}` | {list(official_sd[k].shape)} | {src if src.startswith('(') else '`' + src + '`'} |")
    lines.append("")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# Main
# ------------------------------------------------------------------------------------------------


def own_outputs() -> list[Path]:
    return [TINY_DIR, BASE_DIR, OFFICIAL_DIR, REF_DIR]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--diffusers-repo", help="diffusers checkout or git dir holding " + CONVERT_SCRIPT)
    ap.add_argument("--skip-conversion-check", action="store_true")
    ap.add_argument("--official-src", default=os.environ.get("SA3_OFFICIAL_SRC"),
                    help="checkout of Stability-AI/stable-audio-3 for the optional strict-load/numerics check")
    args = ap.parse_args()

    torch.set_num_threads(1)  # fixed reduction order for reproducible float results
    diffusers.utils.logging.set_verbosity_error()
    transformers.utils.logging.set_verbosity_error()

    script = None if args.skip_conversion_check else find_convert_script(args.diffusers_repo)

    for path in own_outputs():
        if path.exists():
            shutil.rmtree(path)
    REF_DIR.mkdir(parents=True)

    log("training the Gemma-style tokenizer")
    corpus = build_corpus()
    tokenizer = train_gemma_tokenizer(corpus)

    log("building the tiny pipeline")
    components, t5_full = build_components(tokenizer)
    pipe = StableAudio3Pipeline(**components)
    with quiet():
        pipe.save_pretrained(str(TINY_DIR), safe_serialization=True)
    # The base variant differs only in its scheduler: its other folders are symlinks to the
    # distilled one's (the same weights, stored once).
    BASE_DIR.mkdir(parents=True)
    shutil.copy2(TINY_DIR / "model_index.json", BASE_DIR / "model_index.json")
    for component in ("duration_embedder", "text_encoder", "tokenizer", "transformer", "vae"):
        (BASE_DIR / component).symlink_to(Path("..") / TINY_DIR.name / component, target_is_directory=True)
    FlowMatchEulerDiscreteScheduler(**SCHED_BASE).save_pretrained(str(BASE_DIR / "scheduler"))

    tiny = load_pipeline(StableAudio3Pipeline, TINY_DIR)
    base = load_pipeline(StableAudio3Pipeline, BASE_DIR)
    for comp in ("vae", "text_encoder", "duration_embedder", "transformer"):
        state_dicts_equal(getattr(tiny, comp).state_dict(), getattr(pipe, comp).state_dict(), f"reloaded {comp}")
        state_dicts_equal(getattr(base, comp).state_dict(), getattr(pipe, comp).state_dict(), f"base {comp}")
    if type(tiny.tokenizer).__name__ != "GemmaTokenizer" or tiny.tokenizer.padding_side != "left":
        raise RuntimeError(f"tokenizer: {type(tiny.tokenizer).__name__}, padding side {tiny.tokenizer.padding_side}")

    log("writing the official layout")
    official_sd, official_names = write_official(tiny, t5_full, tokenizer)

    conversion = None
    if script is not None:
        log("running diffusers' conversion script on the official layout")
        conversion = verify_conversion(script[0], script[1], tiny, base, official_names)
    official_check = None
    if args.official_src:
        log("checking with Stability's own code")
        official_check = verify_with_official_code(Path(args.official_src), tiny)
        log(f"  {official_check}")
    (OFFICIAL_DIR / "LAYOUT.md").write_text(layout_md(official_sd, official_names, tiny, conversion, official_check))

    log("module references")
    with torch.no_grad():
        tok_t, tok_info = ref_tokenizer(tiny)
        save_tensors(REF_DIR / "tokenizer.safetensors", tok_t)
        save_tensors(REF_DIR / "text_encoder.safetensors", ref_text_encoder(tiny))
        save_tensors(REF_DIR / "duration.safetensors", ref_duration(tiny))
        save_tensors(REF_DIR / "dit.safetensors", ref_dit(tiny))
        save_tensors(REF_DIR / "vae.safetensors", ref_vae(tiny))
    sch_t, sch_info = ref_scheduler()
    save_tensors(REF_DIR / "scheduler.safetensors", sch_t)

    log("end-to-end references")
    audio_in = make_input_audio()
    pipes = {}
    for case in E2E_CASES:
        key = (case["pipeline"], case["fixture"])
        if key not in pipes:
            pipes[key] = load_pipeline(PIPELINE_CLASSES[case["pipeline"]], FIXTURES / case["fixture"])
    e2e_t, e2e_cases = run_e2e(pipes, audio_in)
    save_tensors(REF_DIR / "e2e.safetensors", e2e_t)

    ids, mask = tokenize(tiny.tokenizer, TEXT_ENCODER_PROMPTS)
    cases = {
        "generator": GENERATOR,
        "versions": {"torch": torch.__version__, "diffusers": diffusers.__version__,
                     "transformers": transformers.__version__, "tokenizers": __import__("tokenizers").__version__,
                     "numpy": np.__version__, "scipy": scipy.__version__},
        "notes": [
            "All float tensors float32, integer tensors and masks int64. CPU, float32, torch.set_num_threads(1).",
            "Pipelines are loaded from the saved fixture directories with from_pretrained; `sa3-tiny` has the "
            "distilled scheduler (stochastic_sampling=true), `sa3-tiny-base` the base one (false).",
            "Tokenizer: GemmaTokenizer, padding_side 'left' (class default; tokenizer_config.json does not override "
            "it), padding='max_length', max_length=min(model_max_length, 256)=256, truncation=True (right side: "
            "BOS + the first 255 content tokens). BOS (id 2) comes from tokenizer.json's post_processor; no EOS.",
            "Text encoder: T5GemmaEncoderModel (eager attention). Layer 0 is 'sliding_attention' with "
            "sliding_window 128 (|i-j| <= 128, on top of the padding mask), layer 1 'full_attention'. Rows of "
            "last_hidden_state at padded positions are well defined but irrelevant (the DiT replaces them); in "
            "layer 0 a padded query more than 128 positions from every real token has no allowed key, and "
            "transformers' eager path then gives it uniform attention over all 256 keys (finfo.min additive mask), "
            "so compare padded rows only if the port reproduces that; the real model (window 4096) never hits it.",
            "a2a/inpaint `duration` defaults to 10.0 s (not the input length); every case passes it explicitly. "
            "`duration: input` cases use N/44100 with N = the WAV length; waveform_length = int(duration*44100) "
            "(f64 product, truncation).",
            "a2a_base_crop uses duration 0.375 s with the 0.403 s input (reference latents cropped 70 -> 65); "
            "inpaint_base_two_regions_pad uses 0.45 s (padded 70 -> 78).",
            "RNG: one torch CPU generator; draw #1 = initial_latents (shape latent_shape), then one draw of the same "
            "shape per scheduler step when stochastic_sampling (the last one multiplied by sigma=0); rng_draws is "
            "the count found by replaying the generator.",
            "e2e tensors: audios (output), initial_latents (draw #1), x_start (first DiT input: noise for t2a and "
            "inpaint, (1-n)*ref + n*noise for a2a), velocity.0 (first DiT output; CFG batch [neg, pos]), "
            "latents.{i} (after step i), timesteps, sigmas (with the appended 0), reference_latents "
            "(vae.encode of the whole input, a2a/inpaint), local_add_cond (inpaint, [mask, ref*mask]).",
        ],
        "configs": {"tokenizer_vocab": TOKENIZER_VOCAB, "t5gemma_encoder": T5_ENCODER, "duration_embedder": DURATION,
                    "transformer": DIT, "vae": VAE, "scheduler_distilled": SCHED_DISTILLED,
                    "scheduler_base": SCHED_BASE},
        "tokenizer": {"file": "tokenizer.safetensors", "tensors": "input_ids.{i}, attention_mask.{i} (1, 256)",
                      "padding_side": tiny.tokenizer.padding_side, "model_max_length": tiny.tokenizer.model_max_length,
                      "special_ids": {t: tiny.tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS},
                      **tok_info},
        "text_encoder": {"file": "text_encoder.safetensors", "prompts": TEXT_ENCODER_PROMPTS,
                         "tensors": {"input_ids": shape(ids), "attention_mask": shape(mask),
                                     "last_hidden_state": [2, 256, TEXT_HIDDEN]},
                         "real_tokens": mask.sum(1).tolist()},
        "duration": {"file": "duration.safetensors", "seconds": DURATIONS,
                     "tensors": {"seconds": [4], "freqs": [DURATION["fourier_dim"] // 2], "out": [4, TEXT_HIDDEN]},
                     "note": "t = (clamp(d, 0, 384) - 0) / 384; out = linear([cos(2 pi t f), sin(2 pi t f)])"},
        "dit": {"file": "dit.safetensors",
                "call": "transformer(hidden_states, timestep, encoder_hidden_states, global_hidden_states, "
                        "encoder_attention_mask=..., [local_add_cond=...])",
                "tensors": {"hidden_states": [2, 8, 65], "timestep": [2], "encoder_hidden_states": [2, 257, TEXT_HIDDEN],
                            "global_hidden_states": [2, TEXT_HIDDEN], "encoder_attention_mask": [2, 257],
                            "out": [2, 8, 65], "block0_out": [2, 4 + 65, DIT["embed_dim"]],
                            "local_add_cond": [2, 9, 65], "out_inpaint": [2, 8, 65]}},
        "vae": {"file": "vae.safetensors",
                "encode": {"a": {"audio": [1, 2, 16537], "trb_out": [1, 32, 65], "pre_bottleneck": [1, 8, 65],
                                 "latents": [1, 8, 65]},
                           "b": {"audio": [2, 2, 10001], "trb_out": [2, 32, 40], "pre_bottleneck": [2, 8, 40],
                                 "latents": [2, 8, 40]}},
                "decode": {"latents": [1, 8, 65], "bottleneck_decoded": [1, 8, 65], "trb_in": [1, 32, 65],
                           "audio": [1, 2, 65 * 256]},
                "note": "tensor names encode.{a,b}.{audio,trb_out,pre_bottleneck,latents}, decode.{latents,"
                        "bottleneck_decoded,trb_in,audio}; trb_out = encoder.blocks[0] output, pre_bottleneck = "
                        "encoder.proj output, trb_in = decoder.proj output"},
        "scheduler": {"file": "scheduler.safetensors", **sch_info,
                      "tensors": "{key}.sigmas (N+1), {key}.timesteps (N) for key n{N}.smax{s}; step.sample, "
                                 "step.model_output, step.{stochastic,deterministic}.i{0,2}.prev_sample, "
                                 "step.stochastic.i{k}.noise"},
        "input_audio": {"file": "input.wav", "format": "RIFF WAVE, IEEE float32 (format tag 3), 2 channels, "
                                                       "44100 Hz, interleaved, written by scipy.io.wavfile",
                        "samples": INPUT_SAMPLES, "duration_s": INPUT_SAMPLES / SR,
                        "pipeline_input": "(1, 2, N) float32, exactly the WAV's values (channel-major)"},
        "e2e": {"file": "e2e.safetensors", "cases": e2e_cases},
    }
    if conversion:
        cases["conversion_check"] = conversion
    if official_check:
        cases["official_code_check"] = official_check
    write_json(REF_DIR / "cases.json", cases)

    log(f"done in {time.time() - PROCESS_START:.1f}s (imports included)")
    for root in own_outputs():
        total = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
        log(f"  {root.relative_to(REPO)}: {total / 1e6:.2f} MB")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Build Foley's test fixtures: two tiny AudioLDM2 pipelines plus reference tensors.

Run from the repository root:

    tools/reference/.venv/bin/python tools/reference/build_fixtures.py

Everything under ``tests/fixtures/`` that this script owns is deleted and rebuilt (and nothing else:
other scripts write other folders of ``tests/fixtures/reference/``):

* ``tests/fixtures/audioldm2-tiny/``       the diffusers fast-test configuration (random weights)
* ``tests/fixtures/audioldm2-tiny-deep/``  a deeper variant laid out like the real cvssp/audioldm2 repo
* ``tests/fixtures/reference/<variant>/``  per-module and end-to-end reference tensors (safetensors + json)
* ``tests/fixtures/reference/randn.*``     torch CPU ``randn`` streams for the Rust port of the generator

The Hugging Face Hub is unreachable from the build machines, so the two tokenizers are trained here
on a small, programmatically generated corpus, and the CLAP feature extractor is built from its defaults.
The script is deterministic: weights come from fixed ``torch.manual_seed`` calls, random inputs from
dedicated seeded ``torch.Generator`` objects, and tokenizer training runs single-threaded.
See ``tools/reference/README.md``.
"""

from __future__ import annotations

import os

# Must be set before `tokenizers` is imported: single-threaded training is reproducible bit for bit.
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import json
import math
import random
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

import diffusers.utils.logging  # noqa: E402
import transformers.utils.logging  # noqa: E402

# shims.py (diffusers 0.42 / transformers 5 glue) lives next to this file.
sys.path.insert(0, str(Path(__file__).resolve().parent))
import shims  # noqa: E402

from diffusers import (  # noqa: E402
    AudioLDM2Pipeline,
    AudioLDM2ProjectionModel,
    AudioLDM2UNet2DConditionModel,
    AutoencoderKL,
    DDIMScheduler,
    DPMSolverMultistepScheduler,
)
from transformers import (  # noqa: E402
    ClapConfig,
    ClapFeatureExtractor,
    ClapModel,
    GPT2Config,
    GPT2LMHeadModel,
    GPT2Model,
    RobertaTokenizerFast,
    SpeechT5HifiGan,
    SpeechT5HifiGanConfig,
    T5Config,
    T5EncoderModel,
    T5TokenizerFast,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
FIXTURES = REPO_ROOT / "tests" / "fixtures"
REFERENCE = FIXTURES / "reference"

MODEL_MAX_LENGTH = 77  # both tokenizers, as in the diffusers fast tests

# --------------------------------------------------------------------------------------------------
# Prompts used by the reference dumps
# --------------------------------------------------------------------------------------------------

# A prompt long enough to overflow 77 tokens of both tokenizers (checked at run time).
LONG_PROMPT = (
    "A long and detailed recording of a busy harbour at dawn where heavy chains rattle against rusty metal "
    "hulls, seagulls scream above the water, a distant foghorn moans twice, wooden crates are dropped onto "
    "the concrete pier one after another, a forklift beeps while reversing slowly, waves slap gently against "
    "the stone wall, a fisherman whistles an old tune, ropes creak under tension, an engine coughs and then "
    "starts with a deep rumble, footsteps hurry across the wet planks, a radio crackles with static and faint "
    "voices, and finally a church bell rings seven times somewhere far behind the warehouses"
)

TEXT_PROMPTS = [
    "A hammer hitting a wooden surface",
    "",
    "  glass shattering on concrete, close mic  ",
    LONG_PROMPT,
    "Low quality, average quality.",
]

ENCODE_PROMPT_CASES = [
    {"prompt": "A hammer hitting a wooden surface", "negative_prompt": None},
    {
        "prompt": "A hammer hitting a wooden surface",
        # Longer than the prompt in T5 tokens: truncated to the positive length.
        "negative_prompt": "egg cracking and low quality noise with a lot of extra words",
    },
    {
        "prompt": "glass shattering on concrete, close mic in a large hall",
        # Shorter than the prompt in T5 tokens: padded to the positive length (mask zeros).
        "negative_prompt": "noise",
    },
]

E2E_PROMPT = "A hammer hitting a wooden surface"
E2E_SEED = 42
E2E_STEPS = 4
E2E_GUIDANCE = 3.5

# --------------------------------------------------------------------------------------------------
# Small utilities
# --------------------------------------------------------------------------------------------------


def seeded_randn(seed: int, *shape: int) -> torch.Tensor:
    """Random float32 input tensor from its own CPU generator (independent of the global RNG)."""
    return torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed), dtype=torch.float32)


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], keep_f64: bool = False) -> None:
    """Save a flat dict as safetensors: integers as int64, floats as float32, all contiguous CPU copies."""
    out = {}
    for name, t in tensors.items():
        t = t.detach().cpu()
        if t.dtype in (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8, torch.bool):
            t = t.to(torch.int64)
        elif t.dtype == torch.float64 and keep_f64:
            pass
        else:
            t = t.to(torch.float32)
        out[name] = t.contiguous().clone()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(out, str(path), metadata={"generator": "tools/reference/build_fixtures.py"})


def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2) + "\n")


def assert_finite(name: str, t: torch.Tensor) -> None:
    if not torch.isfinite(t).all():
        raise RuntimeError(f"{name}: non-finite values")


# --------------------------------------------------------------------------------------------------
# Tokenizers (trained locally: the hub tokenizers used by the diffusers tests are unreachable)
# --------------------------------------------------------------------------------------------------

_SOURCES = [
    "a hammer", "a dog", "a small dog", "an old cat", "a crowd", "a violin", "an engine", "a train",
    "heavy rain", "a bell", "a helicopter", "a baby", "a woman", "a man", "children", "a drum kit",
    "a piano", "an electric guitar", "a saxophone", "a car horn", "a motorcycle", "a door", "a kettle",
    "a clock", "thunder", "wind", "a river", "ocean waves", "birds", "a rooster", "a cow", "a horse",
    "a typewriter", "a keyboard", "a vacuum cleaner", "a chainsaw", "a siren", "a fire alarm",
    "footsteps", "glass", "a wooden plank", "a metal pipe", "a frog", "crickets", "an owl",
    "a crowd of fans", "a choir", "a trumpet", "a flute", "a cello", "a synthesizer", "a bass guitar",
]
_ACTIONS = [
    "hitting", "barking at", "meowing near", "cheering for", "playing over", "humming under",
    "rumbling past", "falling on", "ringing above", "flying over", "crying next to", "speaking into",
    "laughing behind", "rolling across", "tapping on", "honking at", "revving near", "slamming against",
    "whistling beside", "ticking inside", "crashing into", "blowing through", "flowing under",
    "crashing onto", "chirping in", "crowing at", "mooing in", "galloping across", "clicking on",
    "buzzing around", "cutting through", "wailing down", "beeping in", "walking on", "shattering on",
    "creaking under", "clanging against", "croaking by", "singing in", "echoing through",
]
_SURFACES = [
    "a wooden surface", "the concrete floor", "a metal roof", "a glass window", "the wet street",
    "a tiled kitchen", "an empty hall", "a quiet forest", "a crowded market", "a stone bridge",
    "the sandy beach", "a small room", "a large cathedral", "a parking garage", "a snowy field",
    "a busy office", "an old barn", "a train station", "a subway tunnel", "a garden",
]
_MODIFIERS = [
    "", "", "", "in the distance", "close to the microphone", "with a lot of reverb", "at night",
    "during a storm", "while people talk quietly", "with low quality noise", "recorded outdoors",
    "in high fidelity", "with a slow tempo", "with an upbeat rhythm", "followed by silence",
    "repeatedly", "very loudly", "softly", "in stereo", "with background music",
]
_ADJECTIVES = [
    "", "", "", "loud", "quiet", "distant", "nearby", "heavy", "light", "old", "broken", "tiny", "huge",
    "angry", "happy", "sleepy", "rusty", "shiny", "muffled", "crisp", "deep", "high pitched", "low pitched",
    "rhythmic", "chaotic", "gentle", "harsh", "metallic", "hollow", "wet", "dry", "electric", "acoustic",
]
# Extra vocabulary for "tags" lines: gives the Unigram trainer enough distinct words to keep ~1000 pieces.
_TAG_WORDS = """
ambience atmosphere applause airplane alarm anvil arcade avalanche axe backpack badminton balloon bamboo banjo
barrel basketball bathtub battery beach bee beetle bicycle blender blizzard boat bonfire bottle bowling branch
breath brick bubble bucket bulldozer buzzer cabinet camera candle cannon canoe canyon cardboard carpet cart
cash register castanets cavern ceramic chalk chime chisel cicada cinema clapping clarinet cliff coin compressor
conveyor cough cymbal dishwasher doorbell dragonfly drill drip elevator escalator explosion fan faucet fence
fireworks fishing flag foghorn fountain freezer gargle gavel generator gong gravel grill growl hail hairdryer
hammock harmonica harp heartbeat hiccup hinge hoof ice jackhammer jet jingle kayak keys kick lawnmower leaves
lighter locomotive machine marble marimba match microwave mixer mosquito mud oar orchestra organ paddle paper
pencil pendulum percussion pigeon pinball plastic pot printer propeller pump puddle radiator rattle ratchet
refrigerator rocket rubber sail sandpaper saw scissors scooter sewing shovel shower sizzle skateboard sled
slide snare sneeze snore spoon spray squeak stapler steam stove submarine suitcase swing sword tambourine tap
telephone tent timpani toaster toilet tractor trolley truck tuba turbine ukulele umbrella vinyl wagon washing
waterfall whip whisper whistle windmill xylophone yacht zipper
""".split()
_MUSIC = [
    "Techno music with a strong, upbeat tempo and high melodic riffs.",
    "Calm piano melody with soft strings, 90 bpm.",
    "Jazz trio: upright bass, brushed drums & warm electric piano!",
    "Lo-fi hip hop beat; vinyl crackle, mellow chords (loop).",
    "Average quality, low quality, noisy recording?",
    "An orchestra tuning up before the concert - 3 minutes.",
    "Egg cracking into a hot frying pan, sizzling oil.",
    "Hello world! It's 10:45 and the 2nd alarm is ringing...",
]


def build_corpus(n_sentences: int = 3000) -> list[str]:
    """Varied sound descriptions built from word lists with a fixed RNG (deterministic)."""
    rng = random.Random(20240601)
    lines = list(_MUSIC)
    for _ in range(n_sentences):
        adjective = rng.choice(_ADJECTIVES)
        source = rng.choice(_SOURCES)
        if adjective:
            article, noun = source.split(" ", 1) if source.startswith(("a ", "an ")) else ("", source)
            article = ("an" if adjective[0] in "aeiou" else "a") if article else ""
            source = " ".join(w for w in (article, adjective, noun) if w)
        text = f"{source} {rng.choice(_ACTIONS)} {rng.choice(_SURFACES)}"
        modifier = rng.choice(_MODIFIERS)
        if modifier:
            text += f" {modifier}"
        style = rng.randrange(5)
        if style == 0:
            text = text[0].upper() + text[1:] + "."
        elif style == 1:
            text = "The sound of " + text
        elif style == 2:
            text = f"{text}, then {rng.choice(_SOURCES)} {rng.choice(_ACTIONS)} {rng.choice(_SURFACES)}"
        elif style == 3:
            text = text.capitalize() + "!"
        lines.append(text)
    for _ in range(n_sentences // 3):
        tags = rng.sample(_TAG_WORDS, rng.randrange(3, 7))
        lines.append(rng.choice(["Tags: ", "Keywords: ", "", "Sound effects of "]) + ", ".join(tags))
    # Every reference prompt is in the corpus too, so their words are not all split into bytes.
    lines.extend(TEXT_PROMPTS)
    lines.extend(c["prompt"] for c in ENCODE_PROMPT_CASES)
    lines.extend(c["negative_prompt"] for c in ENCODE_PROMPT_CASES if c["negative_prompt"])
    return [line for line in lines if line.strip()]


def train_clap_tokenizer(corpus: list[str]) -> RobertaTokenizerFast:
    """RoBERTa-style byte-level BPE: <s>=0 <pad>=1 </s>=2 <unk>=3, ..., <mask> last (id 999)."""
    tok = Tokenizer(models.BPE(continuing_subword_prefix="", end_of_word_suffix="", fuse_unk=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=999,  # + <mask> = 1000 = ClapTextConfig.vocab_size
        min_frequency=1,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    tok.add_special_tokens(["<mask>"])
    tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0), trim_offsets=True, add_prefix_space=False)
    assert [tok.token_to_id(t) for t in ["<s>", "<pad>", "</s>", "<unk>"]] == [0, 1, 2, 3]
    assert tok.token_to_id("<mask>") == tok.get_vocab_size() - 1
    return RobertaTokenizerFast(tokenizer_object=tok, model_max_length=MODEL_MAX_LENGTH)


def canonical_unigram_vocab(vocab: list[list]) -> list[tuple[str, float]]:
    """Make the Unigram trainer's output reproducible across processes.

    The trainer is not bit-reproducible: its EM sums in hash-map order (scores differ in the last
    ulps) and it appends "required" characters missing from the pieces (here rare capitals) with
    scores min_score - k * 1e-4 in hash-set order. The piece set itself is stable. So: round scores
    to 1e-6, hand the tail characters' score values out in sorted-name order, and order the vocab by
    (-score, piece) after the three special tokens.
    """
    specials, pieces = vocab[:3], [(p, round(s, 6)) for p, s in vocab[3:]]
    floor = min(s for p, s in pieces if len(p) > 1) + 0.01
    tail = [(p, s) for p, s in pieces if len(p) == 1 and s <= floor]
    rest = [(p, s) for p, s in pieces if not (len(p) == 1 and s <= floor)]
    tail = list(zip(sorted(p for p, _ in tail), sorted((s for _, s in tail), reverse=True)))
    ordered = sorted(rest + tail, key=lambda ps: (-ps[1], ps[0]))
    return [(p, float(s)) for p, s in specials] + ordered


def train_t5_tokenizer(corpus: list[str]) -> T5TokenizerFast:
    """T5-style Unigram: <pad>=0 </s>=1 <unk>=2, Metaspace pre-tokenizer, `</s>` appended."""
    tok = Tokenizer(models.Unigram())
    # Same pre-tokenizer/decoder as transformers 5 builds for T5 (whitespace split, then "▁" prefix).
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)]
    )
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    trainer = trainers.UnigramTrainer(
        vocab_size=1000,
        special_tokens=["<pad>", "</s>", "<unk>"],
        unk_token="<unk>",
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    tok.model = models.Unigram(canonical_unigram_vocab(json.loads(tok.to_str())["model"]["vocab"]), 2, False)
    tok.post_processor = processors.TemplateProcessing(
        single=["$A", "</s>"], pair=["$A", "</s>", "$B", "</s>"], special_tokens=[("</s>", 1)]
    )
    assert [tok.token_to_id(t) for t in ["<pad>", "</s>", "<unk>"]] == [0, 1, 2]
    # extra_ids=0: no <extra_id_N> sentinels (the real Flan-T5 vocab has 100; they never occur in prompts).
    return T5TokenizerFast(tokenizer_object=tok, model_max_length=MODEL_MAX_LENGTH, extra_ids=0)


# --------------------------------------------------------------------------------------------------
# Pipeline components
# --------------------------------------------------------------------------------------------------

# CLAP audio branch: only used by `score_waveforms` (never by Foley's text-to-audio path).
# The diffusers test's branch (2.6 MB of Swin weights at hidden size 192):
CLAP_AUDIO_BRANCH = {
    "spec_size": 8, "window_size": 4, "num_mel_bins": 8, "intermediate_size": 37, "layer_norm_eps": 1e-05,
    "depths": [1, 1], "num_attention_heads": [1, 1], "num_hidden_layers": 1, "hidden_size": 192,
    "projection_dim": 8, "patch_size": 2, "patch_stride": 2, "patch_embed_input_channels": 4,
}
# The deep variant uses a small branch with the real HTSAT geometry (64 mel bins, spec_size 256,
# window 8, patch 4, one input channel), so that diffusers' score_waveforms works on it and
# build_ldm1_fixtures.py can record an AudioLDM 2 ranking reference (the test branch above fails).
CLAP_AUDIO_BRANCH_DEEP = {
    "spec_size": 256, "window_size": 8, "num_mel_bins": 64, "intermediate_size": 37, "layer_norm_eps": 1e-05,
    "depths": [1, 1], "num_attention_heads": [2, 2], "num_hidden_layers": 2, "patch_embeds_hidden_size": 8,
    "hidden_size": 16, "patch_size": 4, "patch_stride": 4, "patch_embed_input_channels": 1, "enable_fusion": False,
}


def tiny_components(tokenizer, tokenizer_2) -> dict:
    """Exactly the diffusers fast-test configuration (components.md §6.1), same manual_seed calls."""
    torch.manual_seed(0)
    unet = AudioLDM2UNet2DConditionModel(
        block_out_channels=(8, 16),
        layers_per_block=1,
        norm_num_groups=8,
        sample_size=32,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=(8, 16),
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False
    )
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
    text_branch = {
        "bos_token_id": 0, "eos_token_id": 2, "hidden_size": 8, "intermediate_size": 37, "layer_norm_eps": 1e-05,
        "num_attention_heads": 1, "num_hidden_layers": 1, "pad_token_id": 1, "vocab_size": 1000, "projection_dim": 8,
    }
    text_encoder = ClapModel(ClapConfig(text_config=text_branch, audio_config=CLAP_AUDIO_BRANCH, projection_dim=16))
    feature_extractor = ClapFeatureExtractor(hop_length=7900)
    torch.manual_seed(0)
    text_encoder_2 = T5EncoderModel(T5Config(vocab_size=32100, d_model=32, d_ff=37, d_kv=8, num_heads=1, num_layers=1))
    torch.manual_seed(0)
    language_model = GPT2LMHeadModel(
        GPT2Config(n_embd=16, n_head=1, n_layer=1, vocab_size=1000, n_ctx=99, n_positions=99)
    )
    language_model.config.max_new_tokens = 8
    torch.manual_seed(0)
    projection_model = AudioLDM2ProjectionModel(text_encoder_dim=16, text_encoder_1_dim=32, langauge_model_dim=16)
    # As in the diffusers test: no manual_seed before the vocoder (it continues the global stream).
    vocoder = SpeechT5HifiGan(
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
    return dict(
        vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2, projection_model=projection_model,
        language_model=language_model, tokenizer=tokenizer, tokenizer_2=tokenizer_2,
        feature_extractor=feature_extractor, unet=unet, scheduler=scheduler, vocoder=vocoder,
    )


# The real cvssp/audioldm2 scheduler_config.json (components.md §4.1).
REAL_DDIM_CONFIG = dict(
    num_train_timesteps=1000,
    beta_start=0.0015,
    beta_end=0.0195,
    beta_schedule="scaled_linear",
    prediction_type="epsilon",
    clip_sample=False,
    set_alpha_to_one=False,
    steps_offset=1,
    timestep_spacing="leading",
    thresholding=False,
    rescale_betas_zero_snr=False,
)


def deep_components(tokenizer, tokenizer_2) -> dict:
    """A deeper variant exercising what the real checkpoint does (3 transformers per layer, routing,
    T5 mask, gated-gelu T5, multi-head attention everywhere, the real scheduler config)."""
    torch.manual_seed(1)
    unet = AudioLDM2UNet2DConditionModel(
        block_out_channels=(16, 32),
        layers_per_block=2,
        norm_num_groups=8,
        attention_head_dim=2,  # legacy meaning: number of heads
        transformer_layers_per_block=2,
        sample_size=32,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        # per block the real layout [None, gpt2_dim, t5_dim]
        cross_attention_dim=([None, 16, 32], [None, 16, 32]),
    )
    scheduler = DDIMScheduler(**REAL_DDIM_CONFIG)
    torch.manual_seed(2)
    vae = AutoencoderKL(
        block_out_channels=[8, 16],
        in_channels=1,
        out_channels=1,
        norm_num_groups=8,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
        latent_channels=4,
        scaling_factor=0.4110932946205139,  # the real audioldm2 VAE value (the tiny one keeps 0.18215)
    )
    torch.manual_seed(3)
    text_branch = {
        "bos_token_id": 0, "eos_token_id": 2, "hidden_size": 16, "intermediate_size": 37, "layer_norm_eps": 1e-05,
        "num_attention_heads": 2, "num_hidden_layers": 2, "pad_token_id": 1, "vocab_size": 1000,
        "projection_dim": 24,
    }
    # projection_dim 24 differs from every other width (GPT-2 16, T5 32), like 512/768/1024 in the real model.
    text_encoder = ClapModel(
        ClapConfig(text_config=text_branch, audio_config=CLAP_AUDIO_BRANCH_DEEP, projection_dim=24)
    )
    # The real audioldm2 extractor settings (rand_trunc, frequency_min 50), hop shortened for tiny clips.
    feature_extractor = ClapFeatureExtractor(
        feature_size=64, sampling_rate=48000, hop_length=7900, max_length_s=10, fft_window_size=1024,
        padding="repeatpad", truncation="rand_trunc", frequency_min=50, frequency_max=14000,
    )
    torch.manual_seed(4)
    text_encoder_2 = T5EncoderModel(
        T5Config(
            vocab_size=1024,  # > tokenizer size, like Flan-T5's 32128 model rows for 32100 tokenizer ids
            d_model=32,
            d_ff=37,
            d_kv=16,
            num_heads=2,
            num_layers=2,
            feed_forward_proj="gated-gelu",
            tie_word_embeddings=False,
        )
    )
    torch.manual_seed(5)
    language_model = GPT2LMHeadModel(
        GPT2Config(
            n_embd=16, n_head=2, n_layer=2, vocab_size=1000, n_ctx=128, n_positions=128,
            bos_token_id=999, eos_token_id=999,  # last id, as 50256 is in the real 50257-token vocab
        )
    )
    language_model.config.max_new_tokens = 8
    torch.manual_seed(6)
    projection_model = AudioLDM2ProjectionModel(text_encoder_dim=24, text_encoder_1_dim=32, langauge_model_dim=16)
    torch.manual_seed(7)
    vocoder = SpeechT5HifiGan(
        SpeechT5HifiGanConfig(
            model_in_dim=16,
            sampling_rate=16000,
            upsample_initial_channel=16,
            upsample_rates=[2, 2],
            # kernel 5 with stride 2 gives an output one sample longer than 2x (like the real 5L+1 stage),
            # so the pipeline's final trim to audio_length_in_s is exercised.
            upsample_kernel_sizes=[5, 4],
            resblock_kernel_sizes=[3, 7, 11],
            resblock_dilation_sizes=[[1, 3, 5], [1, 3, 5], [1, 3, 5]],
            normalize_before=False,
        )
    )
    return dict(
        vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2, projection_model=projection_model,
        language_model=language_model, tokenizer=tokenizer, tokenizer_2=tokenizer_2,
        feature_extractor=feature_extractor, unet=unet, scheduler=scheduler, vocoder=vocoder,
    )


MODULE_NAMES = ["vae", "text_encoder", "text_encoder_2", "projection_model", "language_model", "unet", "vocoder"]


@torch.no_grad()
def make_weights_informative(components: dict, seed: int) -> None:
    """Post-initialisation tweaks so that the reference tensors can catch porting bugs.

    * HiFi-GAN: transformers 5 initialises every conv with N(0, 0.01), which makes the tiny vocoder's
      output ~1e-6 (numerically "zero" for any tolerance). Its conv weights are redrawn with
      std 1/sqrt(fan_in) so waveforms are O(0.1).
    * Parameters that the libraries initialise to a constant (LayerNorm/GroupNorm weights = 1, biases
      = 0, AudioLDM2 sos/eos embeddings = 1) get N(0, 0.1) noise added; otherwise a port that swaps or
      forgets a norm weight or a bias would still match the reference.

    Uses its own generator; configs and the test's manual_seed sequence are untouched.
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


def build_pipeline(variant: str, tokenizer, tokenizer_2) -> AudioLDM2Pipeline:
    builder = {"audioldm2-tiny": tiny_components, "audioldm2-tiny-deep": deep_components}[variant]
    components = builder(tokenizer, tokenizer_2)
    make_weights_informative(components, seed={"audioldm2-tiny": 100, "audioldm2-tiny-deep": 200}[variant])
    for name in MODULE_NAMES:
        components[name].eval()  # freshly built transformers modules are in train mode (dropout!)
    return AudioLDM2Pipeline(**components)


# --------------------------------------------------------------------------------------------------
# Reference dumps
# --------------------------------------------------------------------------------------------------


def dims(pipe: AudioLDM2Pipeline) -> dict:
    return {
        "clap_proj": pipe.text_encoder.config.projection_dim,
        "t5": pipe.text_encoder_2.config.d_model,
        "gpt2": pipe.language_model.config.n_embd,
        "latent_channels": pipe.unet.config.in_channels,
        "mel_bins": pipe.vocoder.config.model_in_dim,
    }


@torch.no_grad()
def dump_text(pipe: AudioLDM2Pipeline, out_dir: Path, fixture_dir: Path) -> None:
    tok, tok2 = pipe.tokenizer, pipe.tokenizer_2
    # The Rust side reads tokenizer.json with the `tokenizers` crate: cross-check against the raw files.
    raw = Tokenizer.from_file(str(fixture_dir / "tokenizer" / "tokenizer.json"))
    raw.enable_truncation(tok.model_max_length)
    raw.enable_padding(pad_id=tok.pad_token_id, pad_token=tok.pad_token, length=tok.model_max_length)
    raw2 = Tokenizer.from_file(str(fixture_dir / "tokenizer_2" / "tokenizer.json"))
    raw2.enable_truncation(tok2.model_max_length)
    tensors = {}
    for i, prompt in enumerate(TEXT_PROMPTS):
        clap = tok(prompt, padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt")
        t5 = tok2(prompt, padding=True, max_length=tok2.model_max_length, truncation=True, return_tensors="pt")
        enc, enc2 = raw.encode(prompt), raw2.encode(prompt)
        assert enc.ids == clap.input_ids[0].tolist() and enc.attention_mask == clap.attention_mask[0].tolist()
        assert enc2.ids == t5.input_ids[0].tolist() and enc2.attention_mask == t5.attention_mask[0].tolist()
        tensors[f"clap_ids.{i}"] = clap.input_ids
        tensors[f"clap_mask.{i}"] = clap.attention_mask
        tensors[f"clap_features.{i}"] = shims.clap_text_features(pipe.text_encoder, clap.input_ids, clap.attention_mask)
        tensors[f"t5_ids.{i}"] = t5.input_ids
        tensors[f"t5_mask.{i}"] = t5.attention_mask
        tensors[f"t5_hidden.{i}"] = pipe.text_encoder_2(t5.input_ids, attention_mask=t5.attention_mask)[0]
    # The long prompt must overflow both tokenizers (so truncation is exercised).
    long_index = TEXT_PROMPTS.index(LONG_PROMPT)
    assert len(tok(LONG_PROMPT).input_ids) > tok.model_max_length
    assert len(tok2(LONG_PROMPT).input_ids) > tok2.model_max_length
    assert tensors[f"t5_ids.{long_index}"].shape[1] == tok2.model_max_length
    save_tensors(out_dir / "text.safetensors", tensors)
    write_json(
        out_dir / "text.json",
        {
            "prompts": TEXT_PROMPTS,
            "clap": {"padding": "max_length", "max_length": tok.model_max_length, "truncation": True},
            "t5": {"padding": "longest", "max_length": tok2.model_max_length, "truncation": True},
            "untruncated_lengths": {
                "clap": [len(tok(p).input_ids) for p in TEXT_PROMPTS],
                "t5": [len(tok2(p).input_ids) for p in TEXT_PROMPTS],
            },
        },
    )


@torch.no_grad()
def dump_projection(pipe: AudioLDM2Pipeline, out_dir: Path) -> None:
    d = dims(pipe)
    hidden_states = seeded_randn(1001, 2, 1, d["clap_proj"])
    hidden_states_1 = seeded_randn(1002, 2, 6, d["t5"])
    attention_mask = torch.ones(2, 1, dtype=torch.int64)  # what the pipeline passes for the CLAP vector
    attention_mask_1 = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]], dtype=torch.int64)
    out = pipe.projection_model(
        hidden_states=hidden_states,
        hidden_states_1=hidden_states_1,
        attention_mask=attention_mask,
        attention_mask_1=attention_mask_1,
    )
    save_tensors(
        out_dir / "projection.safetensors",
        {
            "hidden_states": hidden_states,
            "hidden_states_1": hidden_states_1,
            "attention_mask": attention_mask,
            "attention_mask_1": attention_mask_1,
            "out": out.hidden_states,
            "out_mask": out.attention_mask,
        },
    )


@torch.no_grad()
def dump_gpt2(pipe: AudioLDM2Pipeline, out_dir: Path) -> None:
    d = dims(pipe)
    inputs_embeds = seeded_randn(1101, 2, 9, d["gpt2"])
    # Row 1 looks like a padded negative prompt: [clap sos/vec/eos, t5 sos, tokens, pads, t5 eos].
    attention_mask = torch.tensor([[1, 1, 1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 0, 0, 0, 1]], dtype=torch.int64)
    lm_out = pipe.language_model(inputs_embeds=inputs_embeds, attention_mask=attention_mask, output_hidden_states=True)
    generated = pipe.generate_language_model(inputs_embeds, attention_mask=attention_mask, max_new_tokens=8)
    assert generated.shape == (2, 8, d["gpt2"])
    save_tensors(
        out_dir / "gpt2.safetensors",
        {
            "inputs_embeds": inputs_embeds,
            "attention_mask": attention_mask,
            "hidden_last": lm_out.hidden_states[-1],
            "generated": generated,
        },
    )


@torch.no_grad()
def dump_encode_prompt(pipe: AudioLDM2Pipeline, out_dir: Path) -> None:
    tensors, cases = {}, []
    for c, case in enumerate(ENCODE_PROMPT_CASES):
        prompt_embeds, attention_mask, generated = pipe.encode_prompt(
            case["prompt"],
            device="cpu",
            num_waveforms_per_prompt=1,
            do_classifier_free_guidance=True,
            negative_prompt=case["negative_prompt"],
        )
        tensors[f"prompt_embeds.{c}"] = prompt_embeds
        tensors[f"attention_mask.{c}"] = attention_mask
        tensors[f"generated_prompt_embeds.{c}"] = generated
        neg = case["negative_prompt"] if case["negative_prompt"] is not None else ""
        cases.append(
            {
                "index": c,
                **case,
                "t5_len_prompt": len(pipe.tokenizer_2(case["prompt"]).input_ids),
                "t5_len_negative_untruncated": len(pipe.tokenizer_2(neg).input_ids),
                "prompt_embeds_shape": list(prompt_embeds.shape),
                "generated_prompt_embeds_shape": list(generated.shape),
                "batch_order": ["negative", "positive"],
            }
        )
    # Case 1 truncates the negative T5 sequence, case 2 pads it (zeros in the mask of row 0).
    assert cases[1]["t5_len_negative_untruncated"] > cases[1]["t5_len_prompt"]
    assert cases[2]["t5_len_negative_untruncated"] < cases[2]["t5_len_prompt"]
    assert int(tensors["attention_mask.2"][0].sum()) < tensors["attention_mask.2"].shape[1]
    save_tensors(out_dir / "encode_prompt.safetensors", tensors)
    write_json(out_dir / "encode_prompt.json", {"cases": cases})


@torch.no_grad()
def dump_unet(pipe: AudioLDM2Pipeline, out_dir: Path) -> None:
    d = dims(pipe)
    width = d["mel_bins"] // pipe.vae_scale_factor
    heights = [pipe.unet.config.sample_size, 25]  # default (even) and an odd latent height
    tensors = {}
    for k, height in enumerate(heights):
        sample = seeded_randn(1200 + 10 * k, 2, d["latent_channels"], height, width)
        timestep = torch.tensor([501], dtype=torch.int64)
        ehs = seeded_randn(1201 + 10 * k, 2, 8, d["gpt2"])
        ehs1 = seeded_randn(1202 + 10 * k, 2, 7, d["t5"])
        mask1 = torch.tensor([[1, 1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1, 1]], dtype=torch.int64)
        out = pipe.unet(
            sample, timestep, encoder_hidden_states=ehs, encoder_hidden_states_1=ehs1, encoder_attention_mask_1=mask1
        ).sample
        assert out.shape == sample.shape
        tensors.update(
            {
                f"sample.{k}": sample,
                f"timestep.{k}": timestep,
                f"encoder_hidden_states.{k}": ehs,
                f"encoder_hidden_states_1.{k}": ehs1,
                f"encoder_attention_mask_1.{k}": mask1,
                f"out.{k}": out,
            }
        )
    save_tensors(out_dir / "unet.safetensors", tensors)


@torch.no_grad()
def dump_vae(pipe: AudioLDM2Pipeline, out_dir: Path) -> None:
    d = dims(pipe)
    latents = seeded_randn(1300, 1, d["latent_channels"], 25, d["mel_bins"] // pipe.vae_scale_factor)
    mel = pipe.vae.decode(latents).sample
    save_tensors(out_dir / "vae.safetensors", {"latents": latents, "mel": mel})


@torch.no_grad()
def dump_vocoder(pipe: AudioLDM2Pipeline, out_dir: Path) -> None:
    mel = seeded_randn(1400, 1, 37, pipe.vocoder.config.model_in_dim)
    waveform = pipe.vocoder(mel)
    save_tensors(out_dir / "vocoder.safetensors", {"mel": mel, "waveform": waveform})


SCHEDULER_STEPS = [1, 2, 3, 4, 10, 25, 200]
SCHEDULER_LOOP_STEPS = [4, 10]


def make_scheduler(kind: str, ddim_config):
    if kind == "ddim":
        return DDIMScheduler.from_config(ddim_config)
    if kind == "dpmpp2m":
        return DPMSolverMultistepScheduler.from_config(ddim_config)
    raise ValueError(kind)


@torch.no_grad()
def dump_scheduler(pipe: AudioLDM2Pipeline, out_dir: Path) -> dict:
    d = dims(pipe)
    ddim_config = pipe.scheduler.config
    tensors, summary = {}, {}
    for s_index, prefix in enumerate(["ddim", "dpmpp2m"]):
        sched = make_scheduler(prefix, ddim_config)
        tensors[f"{prefix}.init_noise_sigma"] = torch.tensor([float(sched.init_noise_sigma)])
        # (skip private keys such as `_use_default_values`, a list in set order)
        config = {k: v for k, v in sorted(sched.config.items()) if not k.startswith("_")}
        summary[prefix] = {"class": type(sched).__name__, "config": config}
        for n in SCHEDULER_STEPS:
            sched = make_scheduler(prefix, ddim_config)
            sched.set_timesteps(n)
            tensors[f"{prefix}.{n}.timesteps"] = sched.timesteps.clone()
        for n in SCHEDULER_LOOP_STEPS:
            sched = make_scheduler(prefix, ddim_config)
            sched.set_timesteps(n)
            gen = torch.Generator("cpu").manual_seed(1500 + 100 * s_index + n)
            shape = (1, d["latent_channels"], 5, d["mel_bins"] // pipe.vae_scale_factor)
            sample = torch.randn(shape, generator=gen)
            for i, t in enumerate(sched.timesteps):
                model_output = torch.randn(shape, generator=gen)
                prev = sched.step(model_output, t, sample).prev_sample
                assert_finite(f"{prefix}.{n}.prev_sample.{i}", prev)
                tensors[f"{prefix}.{n}.sample.{i}"] = sample
                tensors[f"{prefix}.{n}.model_output.{i}"] = model_output
                tensors[f"{prefix}.{n}.prev_sample.{i}"] = prev
                sample = prev
    save_tensors(out_dir / "scheduler.safetensors", tensors)
    return summary


def pipeline_geometry(pipe: AudioLDM2Pipeline, audio_length_in_s: float | None) -> dict:
    """The pipeline's seconds -> latent arithmetic (mirrors AudioLDM2Pipeline.__call__ step 0)."""
    factor = np.prod(pipe.vocoder.config.upsample_rates) / pipe.vocoder.config.sampling_rate
    if audio_length_in_s is None:
        audio_length_in_s = pipe.unet.config.sample_size * pipe.vae_scale_factor * factor
    height = int(audio_length_in_s / factor)
    if height % pipe.vae_scale_factor != 0:
        height = int(np.ceil(height / pipe.vae_scale_factor)) * pipe.vae_scale_factor
    latent_shape = [
        1,
        pipe.unet.config.in_channels,
        height // pipe.vae_scale_factor,
        pipe.vocoder.config.model_in_dim // pipe.vae_scale_factor,
    ]
    return {
        "audio_length_in_s": float(audio_length_in_s),
        "mel_frames": height,
        "original_waveform_length": int(audio_length_in_s * pipe.vocoder.config.sampling_rate),
        "latent_shape": latent_shape,
    }


ODD_AUDIO_LENGTH_S = 0.0125  # 50 mel frames at 4 samples/frame, 16 kHz -> 25 latent rows


@torch.no_grad()
def dump_e2e(pipe: AudioLDM2Pipeline, out_dir: Path) -> list[dict]:
    ddim_config = pipe.scheduler.config
    tensors, cases = {}, []
    for sched_name in ["ddim", "dpmpp2m"]:
        for neg_index, negative_prompt in enumerate([None, "egg cracking"]):
            for len_index, audio_length_in_s in enumerate([None, ODD_AUDIO_LENGTH_S]):
                name = f"{sched_name}.neg{neg_index}.len{len_index}"
                geometry = pipeline_geometry(pipe, audio_length_in_s)
                if len_index == 1:
                    assert geometry["latent_shape"][2] % 2 == 1, geometry
                pipe.scheduler = make_scheduler(sched_name, ddim_config)
                steps = []

                def callback(step: int, t, latents: torch.Tensor) -> None:
                    steps.append((step, int(t), latents.detach().clone()))

                waveform = pipe(
                    E2E_PROMPT,
                    negative_prompt=negative_prompt,
                    audio_length_in_s=audio_length_in_s,
                    num_inference_steps=E2E_STEPS,
                    guidance_scale=E2E_GUIDANCE,
                    generator=torch.Generator("cpu").manual_seed(E2E_SEED),
                    callback=callback,
                    callback_steps=1,
                    output_type="pt",
                ).audios
                initial_noise = torch.randn(
                    geometry["latent_shape"], generator=torch.Generator("cpu").manual_seed(E2E_SEED)
                )
                # The pipeline draws nothing else from the generator: feeding the noise back must reproduce it.
                pipe.scheduler = make_scheduler(sched_name, ddim_config)
                again = pipe(
                    E2E_PROMPT,
                    negative_prompt=negative_prompt,
                    audio_length_in_s=audio_length_in_s,
                    num_inference_steps=E2E_STEPS,
                    guidance_scale=E2E_GUIDANCE,
                    latents=initial_noise.clone(),
                    output_type="pt",
                ).audios
                assert torch.equal(waveform, again), name
                assert [s[0] for s in steps] == list(range(E2E_STEPS)), name
                assert list(steps[0][2].shape) == geometry["latent_shape"], name
                assert_finite(name, waveform)
                assert float(waveform.abs().max()) > 1e-3, f"{name}: waveform is (numerically) silent"
                tensors[f"{name}.waveform"] = waveform
                tensors[f"{name}.initial_noise"] = initial_noise
                for step, _, latents in steps:
                    tensors[f"{name}.latents.{step}"] = latents
                cases.append(
                    {
                        "name": name,
                        "prompt": E2E_PROMPT,
                        "negative_prompt": negative_prompt,
                        "seed": E2E_SEED,
                        "steps": E2E_STEPS,
                        "guidance": E2E_GUIDANCE,
                        "audio_length_in_s": geometry["audio_length_in_s"],
                        "audio_length_in_s_argument": audio_length_in_s,
                        "scheduler": sched_name,
                        "scheduler_class": type(pipe.scheduler).__name__,
                        "timesteps": [s[1] for s in steps],
                        "latent_shape": geometry["latent_shape"],
                        "mel_frames": geometry["mel_frames"],
                        "waveform_length": int(waveform.shape[-1]),
                        "waveform_abs_max": float(waveform.abs().max()),
                    }
                )
    save_tensors(out_dir / "e2e.safetensors", tensors)
    write_json(out_dir / "e2e.json", {"cases": cases})
    return cases


# --------------------------------------------------------------------------------------------------
# Re-saving the deep variant's language model like the real checkpoint (GPT2Model)
# --------------------------------------------------------------------------------------------------


def resave_language_model_as_gpt2model(fixture_dir: Path, lm_head_model: GPT2LMHeadModel) -> None:
    lm_dir = fixture_dir / "language_model"
    base = GPT2Model(lm_head_model.config)
    missing, unexpected = base.load_state_dict(lm_head_model.transformer.state_dict(), strict=True)
    assert not missing and not unexpected
    base.config.architectures = ["GPT2Model"]
    base.eval()
    shutil.rmtree(lm_dir)
    base.save_pretrained(lm_dir, safe_serialization=True)
    index_path = fixture_dir / "model_index.json"
    index = json.loads(index_path.read_text())
    index["language_model"] = ["transformers", "GPT2Model"]
    index_path.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")


# --------------------------------------------------------------------------------------------------
# torch.randn reference streams (shared by all variants)
# --------------------------------------------------------------------------------------------------

RANDN_SEEDS = [0, 42, 2**32 + 5]
RANDN_SHAPES = [(1,), (7,), (15,), (16,), (17,), (100,), (1, 4, 25, 4), (2, 8, 64, 16)]


def dump_randn(out_dir: Path) -> None:
    tensors = {}
    for seed in RANDN_SEEDS:
        for j, shape in enumerate(RANDN_SHAPES):
            gen = torch.Generator("cpu").manual_seed(seed)
            tensors[f"seed{seed}.shape{j}.first"] = torch.randn(shape, generator=gen, dtype=torch.float32)
            tensors[f"seed{seed}.shape{j}.second"] = torch.randn(shape, generator=gen, dtype=torch.float32)
    gen = torch.Generator("cpu").manual_seed(42)
    tensors["seed42.f64"] = torch.randn((7,), generator=gen, dtype=torch.float64)
    tensors["seed42.f64.then_f32"] = torch.randn((1,), generator=gen, dtype=torch.float32)
    save_tensors(out_dir / "randn.safetensors", tensors, keep_f64=True)
    write_json(
        out_dir / "randn.json",
        {
            "seeds": RANDN_SEEDS,
            "shapes": {str(j): list(shape) for j, shape in enumerate(RANDN_SHAPES)},
            "keys": "seed{S}.shape{j}.first / .second: two consecutive float32 randn calls on one generator",
            "f64": "seed42.f64 = randn((7,), float64), then seed42.f64.then_f32 = randn((1,), float32), same generator",
        },
    )


# --------------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------------

VARIANTS = ["audioldm2-tiny", "audioldm2-tiny-deep"]


# Files in reference/<variant>/ that another script writes (build_ldm1_fixtures.py: the CLAP ranking
# reference); kept when this script clears its own outputs there.
FOREIGN_REFERENCE_FILES = {"ranking.safetensors", "ranking.json"}


def clear_own_outputs(fixture_dir: Path, out_dir: Path) -> None:
    if fixture_dir.exists():
        shutil.rmtree(fixture_dir)
    if out_dir.exists():
        for path in out_dir.iterdir():
            if path.name in FOREIGN_REFERENCE_FILES:
                continue
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()


def own_output_files() -> list[Path]:
    """Every file this script writes (used to make them world-readable)."""
    files = [REFERENCE / "summary.json", REFERENCE / "randn.safetensors", REFERENCE / "randn.json"]
    for variant in VARIANTS:
        files += [p for p in (FIXTURES / variant).rglob("*") if p.is_file()]
        files += [p for p in (REFERENCE / variant).rglob("*") if p.is_file() and p.name not in FOREIGN_REFERENCE_FILES]
    return files


def build_variant(variant: str, tokenizer, tokenizer_2) -> dict:
    fixture_dir = FIXTURES / variant
    out_dir = REFERENCE / variant
    clear_own_outputs(fixture_dir, out_dir)
    built = build_pipeline(variant, tokenizer, tokenizer_2)
    built.save_pretrained(fixture_dir, safe_serialization=True)
    # All references come from the pipeline as reloaded from disk, i.e. exactly what the fixture holds.
    pipe = AudioLDM2Pipeline.from_pretrained(fixture_dir)
    pipe.set_progress_bar_config(disable=True)
    pipe.to("cpu")

    dump_text(pipe, out_dir, fixture_dir)
    dump_projection(pipe, out_dir)
    dump_gpt2(pipe, out_dir)
    dump_encode_prompt(pipe, out_dir)
    dump_unet(pipe, out_dir)
    dump_vae(pipe, out_dir)
    dump_vocoder(pipe, out_dir)
    scheduler_summary = dump_scheduler(pipe, out_dir)
    cases = dump_e2e(pipe, out_dir)

    if variant == "audioldm2-tiny-deep":
        resave_language_model_as_gpt2model(fixture_dir, pipe.language_model)
    return {
        "variant": variant,
        "default_audio_length_in_s": pipeline_geometry(pipe, None)["audio_length_in_s"],
        "vae_scale_factor": pipe.vae_scale_factor,
        "vae_scaling_factor": pipe.vae.config.scaling_factor,
        "schedulers": scheduler_summary,
        "e2e": [{k: c[k] for k in ("name", "latent_shape", "waveform_length", "audio_length_in_s")} for c in cases],
    }


@torch.no_grad()
def verify_variant(variant: str) -> None:
    """Reload the saved fixture as Foley would see it and check it reproduces the references."""
    fixture_dir = FIXTURES / variant
    out_dir = REFERENCE / variant
    pipe = shims.load_audioldm2_pipeline(fixture_dir)
    pipe.set_progress_bar_config(disable=True)
    gpt2 = load_file(str(out_dir / "gpt2.safetensors"))
    if variant == "audioldm2-tiny-deep":
        lm_keys = load_file(str(fixture_dir / "language_model" / "model.safetensors")).keys()
        assert not any(k.startswith("transformer.") or k.startswith("lm_head") for k in lm_keys)
        base = GPT2Model.from_pretrained(fixture_dir / "language_model").eval()
        hidden = base(
            inputs_embeds=gpt2["inputs_embeds"], attention_mask=gpt2["attention_mask"], output_hidden_states=True
        ).hidden_states[-1]
        assert torch.equal(hidden, gpt2["hidden_last"]), "GPT2Model re-save changed the hidden states"
    generated = pipe.generate_language_model(gpt2["inputs_embeds"], attention_mask=gpt2["attention_mask"], max_new_tokens=8)
    assert torch.equal(generated, gpt2["generated"])
    e2e = load_file(str(out_dir / "e2e.safetensors"))
    pipe.scheduler = make_scheduler("ddim", pipe.scheduler.config)
    waveform = pipe(
        E2E_PROMPT,
        num_inference_steps=E2E_STEPS,
        guidance_scale=E2E_GUIDANCE,
        generator=torch.Generator("cpu").manual_seed(E2E_SEED),
        output_type="pt",
    ).audios
    assert torch.equal(waveform, e2e["ddim.neg0.len0.waveform"]), "fixture does not reproduce e2e reference"


def main() -> None:
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
    torch.set_num_threads(1)  # fixed reduction order for reproducible float results
    torch.use_deterministic_algorithms(True)

    corpus = build_corpus()
    tokenizer = train_clap_tokenizer(corpus)
    tokenizer_2 = train_t5_tokenizer(corpus)

    REFERENCE.mkdir(parents=True, exist_ok=True)
    summaries = [build_variant(variant, tokenizer, tokenizer_2) for variant in VARIANTS]
    for variant in VARIANTS:
        verify_variant(variant)
    dump_randn(REFERENCE)
    write_json(
        REFERENCE / "summary.json",
        {
            "versions": {
                "torch": torch.__version__,
                "diffusers": sys.modules["diffusers"].__version__,
                "transformers": sys.modules["transformers"].__version__,
                "tokenizers": sys.modules["tokenizers"].__version__,
            },
            "tokenizers": {
                "clap": {"vocab_size": len(tokenizer), "model_max_length": tokenizer.model_max_length},
                "t5": {"vocab_size": len(tokenizer_2), "model_max_length": tokenizer_2.model_max_length},
                "corpus_lines": len(corpus),
            },
            "variants": summaries,
        },
    )
    # safetensors/diffusers write 0600 files; make the tree readable for any test user.
    for path in own_output_files():
        path.chmod(0o644)
    for s in summaries:
        print(f"{s['variant']}: default audio_length_in_s = {s['default_audio_length_in_s']}")
        for c in s["e2e"]:
            print(f"  {c['name']}: latent {c['latent_shape']}, waveform length {c['waveform_length']}")


if __name__ == "__main__":
    main()

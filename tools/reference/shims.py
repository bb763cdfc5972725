"""Compatibility shims between diffusers 0.42.1 and transformers 5.23.0 for the fixture builder.

Nothing here patches library code globally; each helper is called explicitly by build_fixtures.py or
build_ldm1_fixtures.py.

1. `clap_text_features`: in transformers 5, `ClapModel.get_text_features` returns a
   `BaseModelOutputWithPooling` whose `pooler_output` holds the projected, L2-normalised text
   embedding; transformers 4 returned that tensor directly. The AudioLDM2 pipeline already handles
   both (it checks for `pooler_output`), but the reference dumps call `get_text_features` directly.

2. `load_audioldm2_pipeline`: the real cvssp/audioldm2 repository stores its language model as a plain
   `GPT2Model` (keys without the `transformer.` prefix, model_index entry ["transformers", "GPT2Model"]).
   diffusers 0.42's `AudioLDM2Pipeline.generate_language_model` calls
   `language_model._update_model_kwargs_for_generation`, a `GenerationMixin` method that transformers 5
   only gives to `*LMHeadModel` classes, so a pipeline loaded from such a repository fails with
   `AttributeError: 'GPT2Model' object has no attribute '_update_model_kwargs_for_generation'`.
   This loader rebuilds a `GPT2LMHeadModel` around the stored `GPT2Model` weights (the LM head is
   tied to `wte` and never used: the pipeline only reads hidden states), which is numerically
   identical. It is used to check that the re-saved `audioldm2-tiny-deep` fixture reproduces the
   references computed before the re-save.

3. `clap_audio_features`: the audio counterpart of (1) (`ClapModel.get_audio_features` returns a
   `BaseModelOutputWithPooling` in transformers 5); used by build_ldm1_fixtures.py's ranking dumps.

4. `load_musicldm_pipeline` / `tensor_clap_features`: diffusers 0.42's deprecated `MusicLDMPipeline._encode_prompt`
   uses the result of `text_encoder.get_text_features(...)` as a tensor (`.to(dtype=...)`, `.shape`), which
   fails with transformers 5 (`AttributeError: 'BaseModelOutputWithPooling' object has no attribute ...`).
   `tensor_clap_features` rebinds `get_text_features` / `get_audio_features` on one `ClapModel` *instance*
   so they return `pooler_output` (the projected, L2-normalised embedding, i.e. what transformers 4
   returned). The weights and the model's `forward` (used by `score_waveforms`) are untouched.
   `AudioLDMPipeline` needs no shim: it reads `ClapTextModelWithProjection(...).text_embeds`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch


def clap_text_features(text_encoder, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The L2-normalised CLAP text embedding [batch, projection_dim] for transformers 4 and 5."""
    out = text_encoder.get_text_features(input_ids, attention_mask=attention_mask)
    if hasattr(out, "pooler_output"):  # transformers >= 5
        out = out.pooler_output
    return out


def load_audioldm2_pipeline(path: str | Path):
    """`AudioLDM2Pipeline.from_pretrained(path)` that also accepts a `GPT2Model` language model."""
    from diffusers import AudioLDM2Pipeline
    from transformers import GPT2LMHeadModel, GPT2Model

    path = Path(path)
    index = json.loads((path / "model_index.json").read_text())
    kwargs = {}
    if index.get("language_model", [None, None])[1] == "GPT2Model":
        base = GPT2Model.from_pretrained(path / "language_model")
        lm = GPT2LMHeadModel(base.config)
        lm.transformer = base
        lm.tie_weights()
        lm.eval()
        kwargs["language_model"] = lm
    return AudioLDM2Pipeline.from_pretrained(path, **kwargs)


def clap_audio_features(clap_model, input_features: torch.Tensor) -> torch.Tensor:
    """The L2-normalised CLAP audio embedding [batch, projection_dim] for transformers 4 and 5."""
    out = clap_model.get_audio_features(input_features)
    if hasattr(out, "pooler_output"):  # transformers >= 5
        out = out.pooler_output
    return out


def tensor_clap_features(clap_model):
    """Make this ClapModel's get_text_features/get_audio_features return tensors (transformers 4 behaviour)."""
    if getattr(clap_model, "_foley_tensor_features", False):
        return clap_model
    cls = type(clap_model)

    def get_text_features(*args, **kwargs):
        out = cls.get_text_features(clap_model, *args, **kwargs)
        return out.pooler_output if hasattr(out, "pooler_output") else out

    def get_audio_features(*args, **kwargs):
        out = cls.get_audio_features(clap_model, *args, **kwargs)
        return out.pooler_output if hasattr(out, "pooler_output") else out

    clap_model.get_text_features = get_text_features
    clap_model.get_audio_features = get_audio_features
    clap_model._foley_tensor_features = True
    return clap_model


def load_musicldm_pipeline(path: str | Path, **kwargs):
    """`MusicLDMPipeline.from_pretrained(path)` whose ClapModel returns tensors from get_*_features."""
    from diffusers import MusicLDMPipeline

    pipe = MusicLDMPipeline.from_pretrained(path, **kwargs)
    tensor_clap_features(pipe.text_encoder)
    return pipe

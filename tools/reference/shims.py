"""Compatibility shims between diffusers 0.42.1 and transformers 5.23.0 for the fixture builder.

Nothing here patches library code globally; each helper is called explicitly by build_fixtures.py.

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

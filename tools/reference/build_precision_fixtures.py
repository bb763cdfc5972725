#!/usr/bin/env python3
"""How far diffusers' own half-precision runs drift from its f32 run, per pipeline family.

Run from the repository root, after ``build_fixtures.py`` and ``build_ldm1_fixtures.py``:

    tools/reference/.venv/bin/python tools/reference/build_precision_fixtures.py

Output: ``tests/fixtures/reference/precision.json``. For every recorded end-to-end case at the model's own length of each
family's tiny fixture (``audioldm-tiny``, ``musicldm-tiny``, ``audioldm2-tiny``; the f32 waveforms are already in
``reference/<variant>/e2e.safetensors``) it runs the same request

* in f32 (checked against the recorded waveform: ≤ 1e-5 relative L2, thread counts differ),
* with the whole pipeline cast to ``torch.float16`` and to ``torch.bfloat16`` (``pipe.to(dtype)``), and
* in f32 under ``torch.autocast("cpu", dtype=torch.bfloat16)``,

and records the relative L2 of each waveform, and of its log spectrum (``ln |STFT|`` with 64-sample
periodic-Hann frames, hop 16, floored 60 dB below the f32 run's peak), from the f32 one. The starting noise is the f32 ``torch.randn`` of the seed, cast to the run's
dtype and passed as ``latents=``, so every run starts from the same numbers and the drift is arithmetic
only. Foley's ``tests/device_parity.rs`` bounds its own f16/bf16 drift by these numbers.
"""

from __future__ import annotations

import os

os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import contextlib
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
import build_editing_fixtures as bef  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "tests" / "fixtures" / "reference"
VARIANTS = ["audioldm-tiny", "musicldm-tiny", "audioldm2-tiny"]

def relative_l2(actual: torch.Tensor, expected: torch.Tensor) -> float:
    actual, expected = actual.double().flatten(), expected.double().flatten()
    return float((actual - expected).norm() / expected.norm())


def log_spectrum(waveform: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """ln |STFT|, floored 60 dB below the f32 run's peak: the drift that can be heard, not the
    rounding noise of near-silent bins (whose logs differ wildly and mean nothing)."""
    window = torch.hann_window(64, periodic=True, dtype=torch.float64)

    def magnitude(x: torch.Tensor) -> torch.Tensor:
        return torch.stft(x.double().flatten(), 64, hop_length=16, window=window, center=True,
                          return_complex=True).abs()

    floor = magnitude(reference).max() * 1e-3
    return magnitude(waveform).clamp_min(floor).log()


def run(pipe, case: dict, dtype: torch.dtype, autocast: bool) -> torch.Tensor:
    pipe.scheduler = bef.make_scheduler(case["scheduler"].replace("dpmpp2m", "dpm++2m"), bef.checkpoint_config(pipe))
    noise = torch.randn(case["latent_shape"], generator=torch.Generator("cpu").manual_seed(case["seed"]))
    context = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
    with torch.no_grad(), context:
        audio = pipe(
            case["prompt"],
            negative_prompt=case["negative_prompt"],
            audio_length_in_s=case["audio_length_in_s_argument"],
            num_inference_steps=case["steps"],
            guidance_scale=case["guidance"],
            latents=noise.to(dtype),
            output_type="pt",
        ).audios
    audio = audio.float()
    assert torch.isfinite(audio).all(), f"{case['name']} {dtype} autocast={autocast}: non-finite waveform"
    return audio


def main() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    result = {"versions": bef.versions(), "families": {}}
    for variant in VARIANTS:
        cases = json.loads((REFERENCE / variant / "e2e.json").read_text())["cases"]
        recorded = load_file(REFERENCE / variant / "e2e.safetensors")
        # Casting a pipeline to half and back rounds its weights: each dtype gets a fresh load.
        pipe = bef.load_pipeline(variant)
        # The model's own length, deterministic schedulers: a stochastic one draws its step noise
        # in the run's dtype, which would measure different random numbers, not arithmetic.
        own_length = [c for c in cases if c["audio_length_in_s_argument"] is None and c["scheduler"] != "euler-a"]
        runs = {case["name"]: {} for case in own_length}
        for case in own_length:
            f32 = run(pipe, case, torch.float32, autocast=False)
            error = relative_l2(f32, recorded[f"{case['name']}.waveform"])
            assert error < 1e-5, f"{variant} {case['name']}: f32 run differs from the recorded waveform ({error:.2e})"
            runs[case["name"]]["f32"] = f32
            runs[case["name"]]["bf16_autocast"] = run(pipe, case, torch.float32, autocast=True)
        for name, dtype in [("f16", torch.float16), ("bf16", torch.bfloat16)]:
            pipe = bef.load_pipeline(variant).to(dtype)
            for case in own_length:
                runs[case["name"]][name] = run(pipe, case, dtype, autocast=False)
        family = {}
        for case_name, audios in runs.items():
            f32 = audios.pop("f32")
            family[case_name] = {
                name: {
                    "waveform": relative_l2(audio, f32),
                    "log_spectrum": relative_l2(log_spectrum(audio, f32), log_spectrum(f32, f32)),
                }
                for name, audio in audios.items()
            }
            print(variant, case_name, json.dumps(family[case_name]))
        result["families"][variant] = family
    (REFERENCE / "precision.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

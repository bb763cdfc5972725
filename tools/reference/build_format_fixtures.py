"""Writes the tiny AudioLDM 2 vocoder in the other weight formats users meet on the hub:
a PyTorch pickle (`pytorch_model.bin`), an fp16 variant (`model.fp16.safetensors`) and
float64-stored tensors (the cvssp/audioldm2 CLAP config says `torch_dtype: float64`).
Foley's tests load each and compare with the float32 reference vocoder output.

Run from the repository root: tools/reference/.venv/bin/python tools/reference/build_format_fixtures.py
"""

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "tests/fixtures/audioldm2-tiny/vocoder"
TARGET = ROOT / "tests/fixtures/formats"


def main() -> None:
    shutil.rmtree(TARGET, ignore_errors=True)
    state = load_file(SOURCE / "model.safetensors")
    config = json.loads((SOURCE / "config.json").read_text())
    variants = {
        "vocoder-bin": lambda d: torch.save(state, d / "pytorch_model.bin"),
        "vocoder-fp16": lambda d: save_file(
            {k: v.half() if v.is_floating_point() else v for k, v in state.items()}, d / "model.fp16.safetensors"
        ),
        "vocoder-f64": lambda d: save_file(
            {k: v.double() if v.is_floating_point() else v for k, v in state.items()}, d / "model.safetensors"
        ),
    }
    for name, write in variants.items():
        folder = TARGET / name
        folder.mkdir(parents=True)
        (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        write(folder)
    print("wrote", sorted(p.relative_to(ROOT).as_posix() for p in TARGET.rglob("*") if p.is_file()))


if __name__ == "__main__":
    main()

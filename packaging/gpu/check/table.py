#!/usr/bin/env python3
"""The GPU check's speed table: Foley (f32, f16) against diffusers, from the JSON lines run.sh logged.

    python3 packaging/gpu/check/table.py OUT_DIR   # prints Markdown
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

STAGES = ["load", "text_encoding", "denoising", "per_step", "vae_decode", "vocoder", "total"]


def report(path: Path) -> dict | None:
    """The last JSON object line of a log, if it ran."""
    if not path.exists():
        return None
    for line in reversed(path.read_text().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            return json.loads(line)
    return None


def main() -> None:
    out = Path(sys.argv[1])
    runs = {}
    for name in ["foley-f32", "foley-f16", "diffusers-f16", "diffusers-f32"]:
        found = report(out / f"{name}.log")
        if found:
            runs[name] = found
    baseline = runs.get("diffusers-f16") or runs.get("diffusers-f32")
    names = list(runs)
    print()
    print("| stage (s) | " + " | ".join(names) + " |")
    print("|---|" + "---:|" * len(names))
    for stage in STAGES:
        cells = []
        for name in names:
            value = runs[name]["seconds"].get(stage)
            cell = "" if value is None else f"{value:.4f}"
            if value and baseline and baseline["seconds"].get(stage) and not name.startswith("diffusers"):
                cell += f" ({value / baseline['seconds'][stage]:.2f}x)"
            cells.append(cell)
        print(f"| {stage} | " + " | ".join(cells) + " |")
    sampled, allocated = [], []
    for name in names:
        mem = out / f"{name}.mem"
        text = mem.read_text().strip() if mem.exists() else ""
        sampled.append(f"{int(text) / 1024:.2f} GiB" if text.isdigit() else "")
        bytes_ = runs[name].get("peak_gpu_memory_bytes")
        allocated.append("" if bytes_ is None else f"{bytes_ / 2**30:.2f} GiB")
    print("| peak GPU memory (nvidia-smi, context included) | " + " | ".join(sampled) + " |")
    print("| peak allocated by torch | " + " | ".join(allocated) + " |")
    print()
    print("(ratios: against diffusers; GPU memory sampled every 50 ms while each process ran)")


if __name__ == "__main__":
    main()

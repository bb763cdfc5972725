#!/usr/bin/env python3
"""Rewrites the diffusers wheel without the pipelines the GPU check never runs.

The working tree and the check bundle travel to the GPU machine together within 64 MiB; the
image, video and 3D pipelines are more than half of diffusers' wheel. Kept: every module outside
`diffusers/pipelines/`, the files directly in it (the lazy `__init__`, pipeline and loading
utilities) and the audio pipelines. diffusers imports pipeline subpackages lazily, by name, so
the ones removed are never looked for.

    python3 slim_wheel.py diffusers-0.42.1-py3-none-any.whl
"""

import sys
import zipfile
from pathlib import Path

# `deprecated` is imported by the pipelines package itself.
KEEP = {"audioldm", "audioldm2", "deprecated", "musicldm", "stable_audio", "stable_audio_3"}


def wanted(name: str) -> bool:
    parts = name.split("/")
    if len(parts) < 3 or parts[:2] != ["diffusers", "pipelines"]:
        return True
    return len(parts) == 3 or parts[2] in KEEP


def main(path: str) -> None:
    wheel = Path(path)
    slim = wheel.with_suffix(".slim")
    with zipfile.ZipFile(wheel) as source, zipfile.ZipFile(slim, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as out:
        for item in source.infolist():
            if not wanted(item.filename):
                continue
            data = source.read(item)
            if item.filename.endswith(".dist-info/RECORD"):
                # pip rewrites RECORD on install; list only what is still there.
                lines = [line for line in data.decode().splitlines() if wanted(line.split(",")[0])]
                data = ("\n".join(lines) + "\n").encode()
            out.writestr(item, data)
    before, after = wheel.stat().st_size, slim.stat().st_size
    slim.replace(wheel)
    print(f"{wheel.name}: {before} -> {after} bytes")


if __name__ == "__main__":
    main(sys.argv[1])

#!/usr/bin/env python3
"""Time one diffusers text-to-audio run (CPU by default, or ``--device cuda``), stage by stage, and print ONE JSON line.

The diffusers twin of

    foley generate --model DIR --prompt P --negative-prompt N --seed 0 --steps 20 --scheduler dpm++2m \
        --duration 10.24 --out /tmp/x.wav --quiet --json

Run from the repository root, e.g. on a pipeline built by bench_models.py:

    tools/reference/.venv/bin/python tools/reference/bench_diffusers.py --model ~/.cache/foley-bench/audioldm2

Stages are timed by wrapping instance methods of the loaded pipeline (nothing in diffusers is edited):

* text_encoding: ``pipe.encode_prompt`` (AudioLDM 2: CLAP + T5 + projection + GPT-2 generation, both
  prompts) or ``pipe._encode_prompt`` (AudioLDM, MusicLDM: CLAP, both prompts);
* every ``pipe.unet.forward``: ``unet_total``, ``unet_calls``, ``per_step`` (mean seconds per UNet call; with
  guidance one call per step on a batch of 2);
* denoising: from the end of text encoding to the start of the VAE decode (set_timesteps, initial latents,
  the loop with UNet, guidance and scheduler steps), which is what Foley's ``denoising`` covers;
* vae_decode: ``pipe.vae.decode``; vocoder: ``pipe.vocoder.forward``;
* load: ``from_pretrained`` (with the shims of shims.py); call: the whole ``pipe(...)``;
  total: load + call (Foley's ``total`` is load + generation + WAV writing).

On a GPU every stage boundary synchronizes first, ``--warmup N`` runs N untimed 2-step calls before the timed
one, and peak_gpu_memory_bytes is ``torch.cuda.max_memory_allocated`` of the timed call.

peak_memory_bytes is the process's peak RSS (``getrusage(RUSAGE_SELF).ru_maxrss``), imports included.
"""

from __future__ import annotations

import argparse
import os
import sys


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="diffusers pipeline directory (bench_models.py output)")
    parser.add_argument("--prompt", default="The sound of Brazilian samba drums with waves gently crashing in the background")
    parser.add_argument("--negative-prompt", default="Low quality, average quality.")
    parser.add_argument("--duration", type=float, default=10.24, help="seconds of audio")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--scheduler", default="dpm++2m", choices=["dpm++2m", "ddim"])
    parser.add_argument("--guidance", type=float, default=None,
                        help="default: the family's (AudioLDM 2 3.5, AudioLDM 2.5, MusicLDM 2.0)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--out", default=None, help="also write the waveform as a float32 WAV")
    parser.add_argument("--device", default="cpu", help="torch device: cpu or cuda")
    parser.add_argument("--dtype", default="f32", choices=["f32", "f16", "bf16"], help="pipeline dtype (pipe.to)")
    parser.add_argument("--warmup", type=int, default=0,
                        help="untimed 2-step calls before the timed one (GPU: kernel selection, caches)")
    return parser.parse_args(argv)


ARGS = parse_args() if __name__ == "__main__" else None
if ARGS is not None and ARGS.threads:
    # Before torch is imported, so that OpenMP/MKL pools start with this size too.
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(ARGS.threads)
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import functools  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections import defaultdict  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import shims  # noqa: E402

import diffusers  # noqa: E402
import transformers  # noqa: E402
from diffusers import AudioLDMPipeline, DDIMScheduler, DPMSolverMultistepScheduler  # noqa: E402

FAMILIES = {
    # model_index _class_name: (family, default guidance, text-encoding method)
    "AudioLDM2Pipeline": ("audioldm2", 3.5, "encode_prompt"),
    "AudioLDMPipeline": ("audioldm", 2.5, "_encode_prompt"),
    "MusicLDMPipeline": ("musicldm", 2.0, "_encode_prompt"),
}
SCHEDULERS = {"dpm++2m": DPMSolverMultistepScheduler, "ddim": DDIMScheduler}


class Timers:
    """(start, end) perf_counter spans per stage, recorded by wrapped instance methods."""

    def __init__(self):
        self.spans = defaultdict(list)

    def wrap(self, obj, attr: str, key: str) -> None:
        original = getattr(obj, attr)  # bound method

        @functools.wraps(original)
        def timed(*args, **kwargs):
            synchronize()
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                synchronize()
                self.spans[key].append((start, time.perf_counter()))

        setattr(obj, attr, timed)  # instance attribute: shadows the class method for this object only

    def total(self, key: str) -> float:
        return sum(end - start for start, end in self.spans[key])


def synchronize() -> None:
    """Stage boundaries are host times: wait for queued GPU work first (a no-op on the CPU)."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def load_pipeline(path: Path, device: str = "cpu", dtype: torch.dtype = torch.float32):
    index = json.loads((path / "model_index.json").read_text())
    class_name = index["_class_name"]
    if class_name not in FAMILIES:
        raise SystemExit(f"{path}: unsupported pipeline class {class_name}")
    if class_name == "AudioLDM2Pipeline":
        pipe = shims.load_audioldm2_pipeline(path)  # also accepts a plain GPT2Model language model
    elif class_name == "MusicLDMPipeline":
        pipe = shims.load_musicldm_pipeline(path)  # get_text_features -> tensor (transformers 5)
    else:
        pipe = AudioLDMPipeline.from_pretrained(path)
    pipe = pipe.to(device, dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe, class_name


def main(args) -> None:
    process_start = time.perf_counter()
    torch.set_num_threads(args.threads)
    model = Path(args.model).expanduser()
    warnings.filterwarnings("ignore")
    diffusers.utils.logging.disable_progress_bar()

    dtype = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}[args.dtype]
    started = time.perf_counter()
    pipe, class_name = load_pipeline(model, args.device, dtype)
    synchronize()
    load_seconds = time.perf_counter() - started
    family, default_guidance, encode_method = FAMILIES[class_name]
    guidance = default_guidance if args.guidance is None else args.guidance
    pipe.scheduler = SCHEDULERS[args.scheduler].from_config(pipe.scheduler.config)

    for _ in range(args.warmup):
        with torch.inference_mode():
            pipe(args.prompt, negative_prompt=args.negative_prompt, audio_length_in_s=args.duration,
                 num_inference_steps=2, guidance_scale=guidance)
    if args.device != "cpu":
        torch.cuda.reset_peak_memory_stats()

    timers = Timers()
    timers.wrap(pipe, encode_method, "text_encoding")
    timers.wrap(pipe.unet, "forward", "unet")
    timers.wrap(pipe.vae, "decode", "vae_decode")
    timers.wrap(pipe.vocoder, "forward", "vocoder")

    generator = torch.Generator("cpu").manual_seed(args.seed)
    started = time.perf_counter()
    with torch.inference_mode():
        audio = pipe(
            args.prompt,
            negative_prompt=args.negative_prompt,
            audio_length_in_s=args.duration,
            num_inference_steps=args.steps,
            guidance_scale=guidance,
            num_waveforms_per_prompt=1,
            generator=generator,
        ).audios
    synchronize()
    call_seconds = time.perf_counter() - started
    audio = np.asarray(audio, dtype=np.float32)

    text_end = timers.spans["text_encoding"][-1][1]
    vae_start = timers.spans["vae_decode"][0][0]
    unet_calls = len(timers.spans["unet"])
    unet_total = timers.total("unet")

    if args.out:
        from scipy.io import wavfile

        wavfile.write(args.out, pipe.vocoder.config.sampling_rate, audio[0])

    report = {
        "seconds": {
            "load": load_seconds,
            "text_encoding": timers.total("text_encoding"),
            "denoising": vae_start - text_end,
            "per_step": unet_total / unet_calls if unet_calls else None,
            "vae_decode": timers.total("vae_decode"),
            "vocoder": timers.total("vocoder"),
            "total": load_seconds + call_seconds,
            "call": call_seconds,
            "unet_total": unet_total,
            "unet_calls": unet_calls,
            "unet_each": [end - start for start, end in timers.spans["unet"]],
            "process_until_report": time.perf_counter() - process_start,
        },
        "peak_memory_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "peak_gpu_memory_bytes": torch.cuda.max_memory_allocated() if args.device != "cpu" else None,
        "settings": {
            "model": str(model),
            "family": family,
            "pipeline": class_name,
            "prompt": args.prompt,
            "negative_prompt": args.negative_prompt,
            "steps": args.steps,
            "guidance": guidance,
            "duration": args.duration,
            "scheduler": args.scheduler,
            "scheduler_class": type(pipe.scheduler).__name__,
            "seed": args.seed,
            "waveforms": 1,
            "device": args.device,
            "dtype": args.dtype,
            "threads": torch.get_num_threads(),
            "sample_rate": pipe.vocoder.config.sampling_rate,
        },
        "audio": {
            "samples": int(audio.shape[-1]),
            "finite": bool(np.isfinite(audio).all()),
            "rms": float(np.sqrt(np.mean(np.square(audio, dtype=np.float64)))),
            "peak": float(np.abs(audio).max()),
        },
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "diffusers": diffusers.__version__,
            "transformers": transformers.__version__,
            "numpy": np.__version__,
            "mkldnn": torch.backends.mkldnn.is_available(),
            "mkl": torch.backends.mkl.is_available(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        },
    }
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main(ARGS)

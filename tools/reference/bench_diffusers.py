#!/usr/bin/env python3
"""Time one diffusers text-to-audio run (CPU by default, or ``--device cuda``), stage by stage, and print ONE JSON line.

The diffusers twin of

    foley generate --model DIR --prompt P --negative-prompt N --seed 0 --steps 20 --scheduler dpm++2m \
        --duration 10.24 --out /tmp/x.wav --quiet --json

or, for Stable Audio 3 (no scheduler choice, no negative prompt unless guidance > 1),

    foley generate --model DIR --prompt P --seed 0 --steps 8 --guidance 1 --duration 10 --out /tmp/x.wav --quiet --json

Run from the repository root, e.g. on a pipeline built by bench_models.py:

    tools/reference/.venv/bin/python tools/reference/bench_diffusers.py --model ~/.cache/foley-bench/audioldm2
    tools/reference/.venv/bin/python tools/reference/bench_diffusers.py --model ~/.cache/foley-bench/sa3-medium

The family is read from model_index.json's ``_class_name``. Defaults per family: AudioLDM 2 / AudioLDM /
MusicLDM: 20 steps of dpm++2m (DPMSolverMultistepScheduler.from_config), 10.24 s, guidance 3.5 / 2.5 / 2.0,
negative prompt "Low quality, average quality."; Stable Audio 3 (StableAudio3Pipeline, loaded with
``from_pretrained(torch_dtype=torch.float32)``): the checkpoint's own FlowMatchEulerDiscreteScheduler and step
default (8 when ``stochastic_sampling``, else 100), 10.0 s, guidance 1.0 (no CFG, so no negative prompt is
encoded; with guidance > 1 the negative prompt defaults to the pipeline's "").

Stages are timed by wrapping instance methods of the loaded pipeline (nothing in diffusers is edited):

* text_encoding: ``pipe.encode_prompt`` (AudioLDM 2: CLAP + T5 + projection + GPT-2 generation, both
  prompts) or ``pipe._encode_prompt`` (AudioLDM, MusicLDM: CLAP, both prompts); Stable Audio 3:
  ``pipe.encode_prompt`` (tokenizer + T5Gemma, per prompt) + ``pipe.encode_duration`` (duration embedder),
  which is what Foley's SA3 ``text_encoding`` covers;
* every denoiser call, ``pipe.unet.forward`` or (SA3) ``pipe.transformer.forward``: ``unet_total``,
  ``unet_calls``, ``unet_each``, ``per_step`` (mean seconds per call; with guidance one call per step on a
  batch of 2; the keys keep the name "unet" for every family, ``settings.denoiser`` says which);
  ``scheduler_step_total``: every ``pipe.scheduler.step``;
* denoising: from the end of text encoding to the start of the VAE decode (set_timesteps, initial latents,
  the loop with UNet, guidance and scheduler steps), which is what Foley's ``denoising`` covers;
* vae_decode: ``pipe.vae.decode``; vocoder: ``pipe.vocoder.forward`` (0 for SA3, which has none);
* load: ``from_pretrained`` (with the shims of shims.py); call: the whole ``pipe(...)``;
  total: load + call (Foley's ``total`` is load + generation + WAV writing).

On a GPU every stage boundary synchronizes first, ``--warmup N`` runs N untimed 2-step calls before the timed
one, and peak_gpu_memory_bytes is ``torch.cuda.max_memory_allocated`` of the timed call.

peak_memory_bytes is the process's peak RSS (``getrusage(RUSAGE_SELF).ru_maxrss``), imports included.
``--autocast`` runs the calls under ``torch.autocast("cpu", dtype=torch.bfloat16)`` on f32 weights: PyTorch's
bf16 fast path, which Foley's ``--dtype bf16`` on the CPU is measured against (``bench_compare.py --bf16``).
``--out`` writes the first waveform as a float32 WAV at the model's rate (mono for the LDM families, stereo for
SA3).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys

LDM_NEGATIVE_PROMPT = "Low quality, average quality."
LDM_DURATION = 10.24
LDM_STEPS = 20
LDM_SCHEDULER = "dpm++2m"
SA3_DURATION = 10.0


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="diffusers pipeline directory (bench_models.py output)")
    parser.add_argument("--prompt", default="The sound of Brazilian samba drums with waves gently crashing in the background")
    parser.add_argument("--negative-prompt", default=None,
                        help=f"default: {LDM_NEGATIVE_PROMPT!r} for the LDM families; none for SA3 (pipeline: \"\")")
    parser.add_argument("--duration", type=float, default=None, help="seconds of audio [default: 10.24; SA3 10.0]")
    parser.add_argument("--steps", type=int, default=None,
                        help="default: 20; SA3: the pipeline's (8 with stochastic_sampling, else 100)")
    parser.add_argument("--scheduler", default=None, choices=["dpm++2m", "ddim"],
                        help="default dpm++2m (LDM families only; SA3 keeps the checkpoint's scheduler)")
    parser.add_argument("--guidance", type=float, default=None,
                        help="default: the family's (AudioLDM 2 3.5, AudioLDM 2.5, MusicLDM 2.0, SA3 1.0)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--out", default=None, help="also write the waveform as a float32 WAV")
    parser.add_argument("--device", default="cpu", help="torch device: cpu or cuda")
    parser.add_argument("--dtype", default="f32", choices=["f32", "f16", "bf16"], help="pipeline dtype (pipe.to)")
    parser.add_argument("--autocast", action="store_true",
                        help='run the pipeline call under torch.autocast("cpu", dtype=torch.bfloat16) (f32 weights)')
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
    # model_index _class_name: (family, default guidance, text-encoding methods)
    "AudioLDM2Pipeline": ("audioldm2", 3.5, ("encode_prompt",)),
    "AudioLDMPipeline": ("audioldm", 2.5, ("_encode_prompt",)),
    "MusicLDMPipeline": ("musicldm", 2.0, ("_encode_prompt",)),
    "StableAudio3Pipeline": ("sa3", 1.0, ("encode_prompt", "encode_duration")),
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
    elif class_name == "StableAudio3Pipeline":
        from diffusers import StableAudio3Pipeline  # diffusers >= 0.42

        # bench_models.py stores sa3-medium in bfloat16; this upcasts every tensor to float32 on load.
        pipe = StableAudio3Pipeline.from_pretrained(path, torch_dtype=torch.float32)
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
    family, default_guidance, encode_methods = FAMILIES[class_name]
    guidance = default_guidance if args.guidance is None else args.guidance
    sa3 = family == "sa3"
    if sa3:
        if args.scheduler is not None:
            raise SystemExit("--scheduler does not apply to Stable Audio 3 (the checkpoint's scheduler is used)")
        scheduler_name = None
        duration = SA3_DURATION if args.duration is None else args.duration
        steps = args.steps
        if steps is None:  # the pipeline's own default (pipeline_stable_audio_3.py, "5. Set timesteps")
            steps = 8 if pipe.scheduler.config.stochastic_sampling else 100
        negative_prompt = args.negative_prompt  # None: the pipeline's "" (only encoded when guidance > 1)
        denoiser, sample_rate = pipe.transformer, pipe.vae.config.sampling_rate

        def run(num_steps: int, generator=None):
            return pipe(args.prompt, duration=duration, num_inference_steps=num_steps, guidance_scale=guidance,
                        negative_prompt=negative_prompt, num_waveforms_per_prompt=1, generator=generator,
                        output_type="pt").audios
    else:
        scheduler_name = args.scheduler or LDM_SCHEDULER
        pipe.scheduler = SCHEDULERS[scheduler_name].from_config(pipe.scheduler.config)
        duration = LDM_DURATION if args.duration is None else args.duration
        steps = LDM_STEPS if args.steps is None else args.steps
        negative_prompt = LDM_NEGATIVE_PROMPT if args.negative_prompt is None else args.negative_prompt
        denoiser, sample_rate = pipe.unet, pipe.vocoder.config.sampling_rate

        def run(num_steps: int, generator=None):
            return pipe(args.prompt, negative_prompt=negative_prompt, audio_length_in_s=duration,
                        num_inference_steps=num_steps, guidance_scale=guidance, num_waveforms_per_prompt=1,
                        generator=generator).audios

    def precision():
        return torch.autocast("cpu", dtype=torch.bfloat16) if args.autocast else contextlib.nullcontext()

    for _ in range(args.warmup):
        with torch.inference_mode(), precision():
            run(2)
    if args.device != "cpu":
        torch.cuda.reset_peak_memory_stats()

    timers = Timers()
    for method in encode_methods:
        timers.wrap(pipe, method, "text_encoding")
    timers.wrap(denoiser, "forward", "unet")
    timers.wrap(pipe.scheduler, "step", "scheduler_step")
    timers.wrap(pipe.vae, "decode", "vae_decode")
    if not sa3:
        timers.wrap(pipe.vocoder, "forward", "vocoder")

    generator = torch.Generator("cpu").manual_seed(args.seed)
    started = time.perf_counter()
    with torch.inference_mode(), precision():
        audio = run(steps, generator)
    synchronize()
    call_seconds = time.perf_counter() - started
    if isinstance(audio, torch.Tensor):
        audio = audio.float().cpu().numpy()
    audio = np.asarray(audio, dtype=np.float32)

    text_end = max(end for _, end in timers.spans["text_encoding"])
    vae_start = timers.spans["vae_decode"][0][0]
    unet_calls = len(timers.spans["unet"])
    unet_total = timers.total("unet")

    if args.out:
        from scipy.io import wavfile

        # LDM families: (samples,) mono; SA3: (channels, samples) -> (samples, channels), float32 WAV.
        first = audio[0]
        wavfile.write(args.out, sample_rate, np.ascontiguousarray(first.T if first.ndim == 2 else first))

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
            "scheduler_step_total": timers.total("scheduler_step"),
            "scheduler_step_calls": len(timers.spans["scheduler_step"]),
            "process_until_report": time.perf_counter() - process_start,
        },
        "peak_memory_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "peak_gpu_memory_bytes": torch.cuda.max_memory_allocated() if args.device != "cpu" else None,
        "settings": {
            "model": str(model),
            "family": family,
            "pipeline": class_name,
            "prompt": args.prompt,
            "negative_prompt": negative_prompt,
            "steps": steps,
            "guidance": guidance,
            "duration": duration,
            "scheduler": scheduler_name,
            "scheduler_class": type(pipe.scheduler).__name__,
            "seed": args.seed,
            "waveforms": 1,
            "device": args.device,
            "dtype": args.dtype,
            "autocast": args.autocast,
            "threads": torch.get_num_threads(),
            "sample_rate": sample_rate,
            "denoiser": type(denoiser).__name__,
        },
        "audio": {
            "samples": int(audio.shape[-1]),
            "channels": int(audio.shape[1]) if audio.ndim == 3 else 1,
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

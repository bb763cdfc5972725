#!/usr/bin/env python3
"""CPU benchmark: Foley against diffusers on the same random-weight, real-size checkpoints.

Run from the repository root (after `cargo build --release`):

    tools/reference/.venv/bin/python tools/reference/bench_compare.py \
        --models audioldm2,audioldm-s-full-v2,musicldm --json-out /tmp/bench.json
    tools/reference/.venv/bin/python tools/reference/bench_compare.py --models sa3-medium --threads 2

For each model: builds it with bench_models.py if its directory is missing (in a subprocess), reads its files
once so that both runs start from a warm page cache, runs bench_diffusers.py in a subprocess and then
`foley generate ... --quiet --json` in a subprocess (one after the other, never together), times each whole
process itself (perf_counter around start to exit) and takes each one's peak RSS from `wait4`, then prints a
Markdown table per model. Both runs get the same prompt, negative prompt, seed, steps, scheduler, duration and
the family's default guidance, and the same thread count (torch: set_num_threads + OMP/MKL_NUM_THREADS;
Foley/candle: RAYON_NUM_THREADS).

Stable Audio 3 (``sa3-medium``; the family is read from model_index.json): defaults 8 steps, 10.0 s, guidance 1
(the distilled checkpoint: no CFG), the checkpoint's own scheduler and no negative prompt (neither --scheduler
nor --negative-prompt is passed to either program unless --negative-prompt is given explicitly), i.e.
``foley generate --model DIR --prompt P --seed S --steps 8 --guidance 1 --duration 10 --out X.wav --quiet --json``.
``--steps``/``--duration``/``--guidance`` given on the command line apply to every model.

With ``--bf16`` each model also runs diffusers under ``torch.autocast("cpu", dtype=torch.bfloat16)`` and
``foley generate --dtype bf16`` (bf16 products on AMX / AVX512-BF16; elsewhere f32 with a notice), and a second
table gives each program's whole-process speed-up over its own f32 run and the drift of its waveform (relative
L2) and log spectrum from that run.

Rows: stage seconds as each program reports them (see bench_diffusers.py for the diffusers definitions; they
are chosen to cover what Foley's timers cover), "per step" = denoising / steps for both, "UNet forward" =
the mean UNet call (diffusers; Foley only if its JSON has seconds.per_step), "generation" = total - load,
"whole process" = measured wall time of the subprocess (imports, load, run, exit), "peak RSS" = wait4's
ru_maxrss of the subprocess. Ratio = foley / diffusers (below 1: Foley is faster or smaller).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
DEFAULT_NAMES = ["audioldm2", "audioldm-s-full-v2", "musicldm"]
NAMES = DEFAULT_NAMES + ["sa3-medium"]
PROMPT = "The sound of Brazilian samba drums with waves gently crashing in the background"
NEGATIVE_PROMPT = "Low quality, average quality."
# Per-family defaults: steps, duration (s), scheduler (None: the checkpoint's, not passed), guidance (None: each
# program's family default, not passed).
FAMILY_DEFAULTS = {
    "ldm": dict(steps=20, duration=10.24, scheduler="dpm++2m", guidance=None),
    "sa3": dict(steps=8, duration=10.0, scheduler=None, guidance=1.0),
}


def family_of(model_dir: Path) -> str:
    class_name = json.loads((model_dir / "model_index.json").read_text()).get("_class_name", "")
    return "sa3" if class_name.startswith("StableAudio3") else "ldm"


def bench_dir() -> Path:
    return Path(os.environ.get("FOLEY_BENCH_DIR", "~/.cache/foley-bench")).expanduser()


def default_foley() -> Path:
    target = os.environ.get("CARGO_TARGET_DIR")
    return (Path(target) if target else REPO_ROOT / "target") / "release" / "foley"


def machine() -> dict:
    model, logical, flags = "unknown", 0, set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "model name" and model == "unknown":
                model = value.strip()
            elif key == "processor":
                logical += 1
            elif key == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    mem = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) * 1024
    except OSError:
        pass
    simd = [f for f in ("avx512f", "avx512_bf16", "avx512_vnni", "avx2", "fma") if f in flags]
    return {"cpu": model, "cpuinfo_processors": logical, "nproc": usable, "mem_bytes": mem, "simd": simd,
            "kernel": platform.release()}


def prewarm(path: Path) -> None:
    """Read every file once so neither run pays for disk reads the other does not."""
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        with open(file, "rb") as handle:
            while handle.read(1 << 24):
                pass


def run_measured(cmd: list[str], env: dict) -> dict:
    """Run to completion; wall seconds, peak RSS (wait4), return code, stdout, stderr."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, cwd=REPO_ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode(errors="replace")
        stderr = err.read().decode(errors="replace")
    report = None
    for line in reversed(stdout.strip().splitlines()):
        try:
            report = json.loads(line)
            break
        except json.JSONDecodeError:
            continue
    return {
        "cmd": cmd,
        "returncode": proc.returncode,
        "wall_seconds": wall,
        "max_rss_bytes": usage.ru_maxrss * 1024,  # Linux: KiB
        "user_seconds": usage.ru_utime,
        "system_seconds": usage.ru_stime,
        "report": report,
        "stderr_tail": stderr[-4000:],
    }


def thread_env(threads: int) -> dict:
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "RAYON_NUM_THREADS"):
        env[var] = str(threads)
    env["TOKENIZERS_PARALLELISM"] = "false"
    return env


def seconds(run: dict | None, key: str):
    if not run or run["returncode"] != 0 or not run["report"]:
        return None
    value = run["report"].get("seconds", {}).get(key)
    return float(value) if isinstance(value, (int, float)) else None


def rows(diffusers: dict, foley: dict | None, steps: int) -> list[tuple[str, float | None, float | None, str]]:
    """(label, diffusers value, foley value, unit) for the table."""

    def both(fn):
        return fn(diffusers), fn(foley)

    def per_step(run):
        d = seconds(run, "denoising")
        return d / steps if d is not None and steps else None

    def generation(run):
        total, load = seconds(run, "total"), seconds(run, "load")
        return total - load if total is not None and load is not None else None

    def wall(run):
        return run["wall_seconds"] if run and run["returncode"] == 0 else None

    def rss(run):
        return run["max_rss_bytes"] / 1e9 if run and run["returncode"] == 0 else None

    return [
        ("load", *both(lambda r: seconds(r, "load")), "s"),
        ("text encoding", *both(lambda r: seconds(r, "text_encoding")), "s"),
        ("per step (denoising / steps)", *both(per_step), "s"),
        ("UNet / DiT forward (mean per call)", *both(lambda r: seconds(r, "per_step")), "s"),
        ("denoising", *both(lambda r: seconds(r, "denoising")), "s"),
        ("VAE decode", *both(lambda r: seconds(r, "vae_decode")), "s"),
        ("vocoder", *both(lambda r: seconds(r, "vocoder")), "s"),
        ("pipeline call (total - load)", *both(generation), "s"),
        ("total (load + call)", *both(lambda r: seconds(r, "total")), "s"),
        ("whole process (measured)", *both(wall), "s"),
        ("peak RSS (GB)", *both(rss), "GB"),
    ]


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "–"
    return f"{value:.2f}" if unit == "GB" or value >= 10 else f"{value:.3f}"


def table(name: str, diffusers: dict, foley: dict | None, steps: int) -> str:
    lines = [f"### {name}", "", "| stage | diffusers s | foley s | ratio (foley/diffusers) |", "|---|---:|---:|---:|"]
    for label, d, f, unit in rows(diffusers, foley, steps):
        ratio = f"{f / d:.2f}" if d and f is not None else "–"
        lines.append(f"| {label} | {fmt(d, unit)} | {fmt(f, unit)} | {ratio} |")
    for tag, run in (("diffusers", diffusers), ("foley", foley)):
        if run and run["returncode"] != 0:
            tail = run["stderr_tail"].strip().splitlines()[-3:]
            lines.append("")
            lines.append(f"{tag} failed (exit {run['returncode']}): " + " / ".join(tail))
    if foley is None:
        lines.append("")
        lines.append("foley not run (binary missing)")
    return "\n".join(lines)


def read_audio(path: str):
    """A WAV as float64 samples (all channels, flattened), or None if it was not written."""
    import numpy as np
    from scipy.io import wavfile

    if not Path(path).is_file():
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", wavfile.WavFileWarning)  # Foley's loudness (bext) chunk
        return np.asarray(wavfile.read(path)[1], dtype=np.float64).reshape(-1)


def drift(actual, exact) -> dict | None:
    """Relative L2 of a waveform from its f32 twin, and of its log spectrum (ln |STFT|, 1024-point Hann, hop
    256, floored 60 dB below the f32 run's peak as build_precision_fixtures.py floors it)."""
    if actual is None or exact is None or len(actual) != len(exact):
        return None
    import numpy as np
    import torch

    def magnitude(x):
        window = torch.hann_window(1024, periodic=True, dtype=torch.float64)
        return torch.stft(torch.from_numpy(x), 1024, hop_length=256, window=window, center=True,
                          return_complex=True).abs()

    floor = magnitude(exact).max() * 1e-3
    ours, theirs = magnitude(actual).clamp_min(floor).log(), magnitude(exact).clamp_min(floor).log()
    return {"waveform": float(np.linalg.norm(actual - exact) / np.linalg.norm(exact)),
            "log_spectrum": float((ours - theirs).norm() / theirs.norm())}


def bf16_summary(wav: dict, diffusers: dict, autocast: dict, foley: dict | None, foley_bf16: dict | None) -> dict:
    audio = {run: read_audio(path) for run, path in wav.items()}

    def speedup(f32: dict | None, bf16: dict | None):
        ok = f32 and bf16 and f32["returncode"] == 0 and bf16["returncode"] == 0
        return f32["wall_seconds"] / bf16["wall_seconds"] if ok else None

    notice = None
    if foley_bf16:
        notice = next((line for line in foley_bf16["stderr_tail"].splitlines() if line.startswith("note:")), None)
    return {
        "diffusers_speedup": speedup(diffusers, autocast),
        "foley_speedup": speedup(foley, foley_bf16),
        "diffusers_drift": drift(audio["autocast"], audio["diffusers"]),
        "foley_drift": drift(audio["foley_bf16"], audio["foley"]),
        "foley_notice": notice,
    }


def bf16_table(name: str, summary: dict) -> str:
    def number(value, digits):
        return "–" if value is None else f"{value:.{digits}}"

    lines = [f"### {name}: bf16 against each program's own f32", "",
             "| program | whole-process speed-up over f32 | waveform drift | log-spectrum drift |",
             "|---|---:|---:|---:|"]
    for program, key in (("diffusers (bf16 autocast)", "diffusers"), ("Foley (--dtype bf16)", "foley")):
        found = summary[f"{key}_drift"] or {}
        lines.append(f"| {program} | {number(summary[f'{key}_speedup'], '2f')}× | "
                     f"{number(found.get('waveform'), '2e')} | {number(found.get('log_spectrum'), '2e')} |")
    if summary["foley_notice"]:
        lines += ["", f"Foley: {summary['foley_notice']}"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(DEFAULT_NAMES),
                        help=f"comma-separated bench_models.py names, of {', '.join(NAMES)}")
    parser.add_argument("--foley", default=None, help="Foley binary [default: $CARGO_TARGET_DIR or target/ + release/foley]")
    parser.add_argument("--steps", type=int, default=None, help="default: 20 (LDM families), 8 (SA3)")
    parser.add_argument("--duration", type=float, default=None, help="default: 10.24 (LDM families), 10.0 (SA3)")
    parser.add_argument("--scheduler", default=None, choices=["dpm++2m", "ddim"],
                        help="LDM families only [default: dpm++2m]; SA3 keeps its checkpoint's scheduler")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--guidance", type=float, default=None,
                        help="default: each family's (same in both; SA3 1, passed explicitly)")
    parser.add_argument("--prompt", default=PROMPT)
    parser.add_argument("--negative-prompt", default=None,
                        help=f"default: {NEGATIVE_PROMPT!r} for the LDM families, none for SA3")
    parser.add_argument("--json-out", default=None, help="write both runs' raw JSON (and measurements) here")
    parser.add_argument("--no-prewarm", action="store_true", help="do not read the model files before the runs")
    parser.add_argument("--bf16", action="store_true",
                        help="also run Foley --dtype bf16 and diffusers under bf16 autocast; print their speed-ups "
                             "over their own f32 runs and their drift from them")
    args = parser.parse_args()

    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = [n for n in names if n not in NAMES]
    if unknown:
        raise SystemExit(f"unknown model(s) {unknown}; known: {NAMES}")
    foley_bin = Path(args.foley).expanduser() if args.foley else default_foley()
    has_foley = foley_bin.is_file() and os.access(foley_bin, os.X_OK)
    env = thread_env(args.threads)
    info = machine()
    settings = {
        "steps": args.steps, "duration": args.duration, "scheduler": args.scheduler, "threads": args.threads,
        "seed": args.seed, "guidance": args.guidance, "prompt": args.prompt, "negative_prompt": args.negative_prompt,
        "foley": str(foley_bin) if has_foley else None, "models": {},
    }

    print(f"Machine: {info['cpu']}, {info['cpuinfo_processors']} logical CPUs in /proc/cpuinfo, nproc {info['nproc']}, "
          f"{(info['mem_bytes'] or 0) / 2**30:.1f} GiB RAM, SIMD {'/'.join(info['simd']) or '?'}")
    print(f"Settings: seed {args.seed}, {args.threads} threads, f32 CPU (per-model steps/duration/guidance below)")
    if not has_foley:
        print(f"Foley binary not found at {foley_bin}: diffusers only", file=sys.stderr)
    print(flush=True)

    results = {}
    for name in names:
        model_dir = bench_dir() / name
        if not (model_dir / "model_index.json").is_file():
            print(f"building {name} ...", file=sys.stderr, flush=True)
            subprocess.run([sys.executable, str(HERE / "bench_models.py"), "--only", name], check=True, cwd=REPO_ROOT)
        if not args.no_prewarm:
            prewarm(model_dir)

        family = family_of(model_dir)
        defaults = FAMILY_DEFAULTS[family]
        steps = defaults["steps"] if args.steps is None else args.steps
        duration = defaults["duration"] if args.duration is None else args.duration
        guidance = defaults["guidance"] if args.guidance is None else args.guidance
        if family == "sa3":
            if args.scheduler is not None:
                print(f"{name}: --scheduler ignored (Stable Audio 3 uses its checkpoint's scheduler)", file=sys.stderr)
            scheduler = None
            negative_prompt = args.negative_prompt  # None: not passed (guidance 1 encodes no negative)
        else:
            scheduler = args.scheduler or defaults["scheduler"]
            negative_prompt = NEGATIVE_PROMPT if args.negative_prompt is None else args.negative_prompt
        common = ["--model", str(model_dir), "--seed", str(args.seed), "--steps", str(steps),
                  "--duration", repr(duration)]
        if scheduler is not None:
            common += ["--scheduler", scheduler]
        if guidance is not None:
            common += ["--guidance", repr(guidance)]
        prompts = ["--prompt", args.prompt]
        if negative_prompt is not None:
            prompts += ["--negative-prompt", negative_prompt]
        settings["models"][name] = {"family": family, "steps": steps, "duration": duration, "scheduler": scheduler,
                                    "guidance": guidance, "negative_prompt": negative_prompt}
        print(f"{name}: {steps} steps {scheduler or 'checkpoint scheduler'}, {duration} s, guidance "
              f"{'family default' if guidance is None else guidance}, negative prompt "
              f"{'none' if negative_prompt is None else repr(negative_prompt)}", flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            wav = {run: str(Path(tmp) / f"{run}.wav") for run in ("diffusers", "autocast", "foley", "foley_bf16")}
            diffusers_cmd = [sys.executable, str(HERE / "bench_diffusers.py"), *common, "--threads",
                             str(args.threads), *prompts, "--out", wav["diffusers"]]
            print(f"{name}: diffusers ...", file=sys.stderr, flush=True)
            diffusers = run_measured(diffusers_cmd, env)

            foley = None
            foley_cmd = [str(foley_bin), "generate", *common, *prompts, "--quiet", "--json"]
            if has_foley:
                print(f"{name}: foley ...", file=sys.stderr, flush=True)
                foley = run_measured([*foley_cmd, "--out", wav["foley"]], env)

            results[name] = {"diffusers": diffusers, "foley": foley}
            print(table(name, diffusers, foley, steps), flush=True)
            print(flush=True)
            if args.bf16:
                print(f"{name}: diffusers bf16 autocast ...", file=sys.stderr, flush=True)
                autocast = run_measured([*diffusers_cmd[:-1], wav["autocast"], "--autocast"], env)
                foley_bf16 = None
                if has_foley:
                    print(f"{name}: foley --dtype bf16 ...", file=sys.stderr, flush=True)
                    foley_bf16 = run_measured([*foley_cmd, "--dtype", "bf16", "--out", wav["foley_bf16"]], env)
                results[name]["diffusers_bf16_autocast"] = autocast
                results[name]["foley_bf16"] = foley_bf16
                results[name]["bf16"] = bf16_summary(wav, diffusers, autocast, foley, foley_bf16)
                print(bf16_table(name, results[name]["bf16"]), flush=True)
                print(flush=True)

    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"machine": info, "settings": settings, "results": results}, indent=1))
        print(f"raw results: {args.json_out}", file=sys.stderr)


if __name__ == "__main__":
    main()

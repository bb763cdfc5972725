#!/usr/bin/env python3
"""Reference data for Foley's ports of the diffusers schedulers (no models involved).

Run from the repository root:

    tools/reference/.venv/bin/python tools/reference/build_scheduler_fixtures.py

It deletes and rewrites ``tests/fixtures/reference/schedulers/`` (and nothing else):

* ``<cli-name>.safetensors`` for each scheduler Foley exposes (``ddim``, ``dpm++2m``, ...), holding, for
  both base configs (``real`` = cvssp/audioldm2's DDIM config, ``tiny`` = the diffusers test config) and
  10 / 25 inference steps, the timestep/sigma schedule and a full denoising loop driven by random
  "model outputs";
* ``schedulers.json``: class, extra kwargs, resolved configs, step() signature facts, orders, schedule
  lengths, noise-draw counts and notes for every scheduler.

The users' way to pick a scheduler is ``X.from_config(pipe.scheduler.config)`` on a checkpoint that ships
a ``DDIMScheduler`` config, so every scheduler here is built exactly like that (components.md §4.2).
The loop mirrors the AudioLDM/AudioLDM2/MusicLDM pipelines (components.md §2.1):
``set_timesteps`` -> latents * ``init_noise_sigma`` -> per timestep ``scale_model_input`` then ``step``
with ``generator``/``eta`` passed only when ``step`` accepts them (``prepare_extra_step_kwargs``).

Unlike the pipelines, the initial latents and the model outputs come from a *separate* generator
(``DATA_SEED``); the generator handed to ``step`` (``STEP_SEED``) only feeds the schedulers' own noise,
so ``next_randn`` (16 values drawn from it after the loop) shows whether a port consumed exactly the same
random draws. Per-step draw counts are recovered by replaying the generator state (see ``count_draws``).

The script is deterministic (single thread; two runs give byte-identical files). See
``tools/reference/README.md``.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")

import inspect
import json
import math
import shutil
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

import diffusers
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DEISMultistepScheduler,
    DPMSolverMultistepScheduler,
    DPMSolverSDEScheduler,
    DPMSolverSinglestepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
    KDPM2AncestralDiscreteScheduler,
    KDPM2DiscreteScheduler,
    LMSDiscreteScheduler,
    PNDMScheduler,
    UniPCMultistepScheduler,
)

# numpy 2 deprecation noise raised when diffusers hands torch tensors to np.interp & co.; values unaffected.
warnings.filterwarnings("ignore", message=r".*__array__ implementation doesn't accept a copy keyword.*")
warnings.filterwarnings("ignore", message=r".*__array_wrap__ must accept context and return_scalar.*")

REPO_ROOT = Path(__file__).resolve().parents[2]
OUT_DIR = REPO_ROOT / "tests" / "fixtures" / "reference" / "schedulers"

# --------------------------------------------------------------------------------------------------
# What is recorded
# --------------------------------------------------------------------------------------------------

# The two DDIM configs the fixtures start from (components.md §4.1 and §6.1).
BASE_CONFIGS: dict[str, dict] = {
    # cvssp/audioldm2 scheduler/scheduler_config.json (same for audioldm, musicldm, audioldm2-large/-music).
    "real": dict(
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
    ),
    # diffusers' AudioLDM2 fast-test config (steps_offset keeps its default 0).
    "tiny": dict(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
    ),
}

# CLI name -> (class, extra kwargs for from_config). Order = order of the JSON listing.
SCHEDULERS: list[tuple[str, type, dict]] = [
    ("ddim", DDIMScheduler, {}),
    ("ddpm", DDPMScheduler, {}),
    ("pndm", PNDMScheduler, {}),
    ("lms", LMSDiscreteScheduler, {}),
    ("euler", EulerDiscreteScheduler, {}),
    ("euler-a", EulerAncestralDiscreteScheduler, {}),
    ("heun", HeunDiscreteScheduler, {}),
    ("kdpm2", KDPM2DiscreteScheduler, {}),
    ("kdpm2-a", KDPM2AncestralDiscreteScheduler, {}),
    ("dpm++2m", DPMSolverMultistepScheduler, {}),
    ("dpm++2m-karras", DPMSolverMultistepScheduler, {"use_karras_sigmas": True}),
    ("dpm++-single", DPMSolverSinglestepScheduler, {}),
    ("deis", DEISMultistepScheduler, {}),
    ("unipc", UniPCMultistepScheduler, {}),
]

# Schedule tensors (besides `sigmas`) set by set_timesteps that a port needs; saved when present.
EXTRA_SCHEDULE_ATTRS = ["sigmas_interpol", "sigmas_up", "sigmas_down", "order_list"]

STEPS = [10, 25]
LATENT_SHAPE = (1, 4, 9, 4)  # 144 elements >= 16: torch's vectorised ("large path") randn, torch_randn.md §4
STEP_SEED = 7  # the generator passed to step()
DATA_SEED = 123  # initial latents + model outputs
NEXT_RANDN = 16  # values drawn from the step generator after the loop
MAX_DRAWS_PER_STEP = 4  # count_draws gives up beyond this (no scheduler draws more than 1)

# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------


def to_json_value(v):
    """Config values as plain JSON (tuples -> lists, numpy scalars/arrays -> Python)."""
    if isinstance(v, (list, tuple)):
        return [to_json_value(x) for x in v]
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return repr(v)  # "inf"/"-inf" (e.g. lambda_min_clipped) -- JSON has no infinities
    return v


def dumps_json(obj, indent: int = 0) -> str:
    """Indented JSON, with lists of scalars kept on one line (timestep lists stay readable)."""
    pad, inner = " " * indent, " " * (indent + 2)
    if isinstance(obj, dict) and obj:
        items = [f"{inner}{json.dumps(k)}: {dumps_json(v, indent + 2)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + f"\n{pad}}}"
    if isinstance(obj, list) and any(isinstance(x, (dict, list)) for x in obj):
        return "[\n" + ",\n".join(f"{inner}{dumps_json(x, indent + 2)}" for x in obj) + f"\n{pad}]"
    return json.dumps(obj)


def public_config(config) -> dict:
    """A scheduler's resolved config without private keys (`_class_name`, `_use_default_values`, ...)."""
    return {k: to_json_value(v) for k, v in sorted(config.items()) if not k.startswith("_")}


def base_ddim(base_name: str, as_loaded: bool = True) -> DDIMScheduler:
    """The base DDIM scheduler.

    as_loaded=True (what the fixtures use): the config goes through its JSON form, i.e. the scheduler is the one
    `AudioLDM2Pipeline.from_pretrained` would hold for a repo whose scheduler_config.json was written from
    `DDIMScheduler(**BASE_CONFIGS[base_name])`. as_loaded=False: the freshly constructed object.

    The two differ in diffusers' private `_use_default_values` (the __init__ arguments the caller left out;
    `save_config` drops it): `X.from_config(config)` does NOT forward those keys, so X's own defaults win.
    For the `tiny` config (5 explicit kwargs) that means an in-memory `EulerDiscreteScheduler.from_config`
    gets Euler's default timestep_spacing "linspace", while the same call on the loaded pipeline gets
    DDIM's explicit "leading". The Rust port only sees the JSON, so the fixtures follow the loaded form;
    the in-memory differences are listed in schedulers.json (`in_memory_construction_differs`).
    """
    ddim = DDIMScheduler(**BASE_CONFIGS[base_name])
    if as_loaded:
        ddim = DDIMScheduler.from_config(json.loads(ddim.to_json_string()))
    return ddim


def init_keys(cls: type) -> set[str]:
    """The config keys `cls.__init__` actually takes."""
    return set(inspect.signature(cls.__init__).parameters) - {"self", "kwargs"}


def make_scheduler(cls: type, extra: dict, base_name: str, as_loaded: bool = True):
    """`Class.from_config(ddim.config, **extra)` -- what a user swapping schedulers does."""
    return cls.from_config(base_ddim(base_name, as_loaded).config, **extra)


def schedule_of(scheduler, steps: int) -> dict:
    """set_timesteps(steps) and the resulting schedule, JSON-ready (for comparing construction routes)."""
    scheduler.set_timesteps(steps)
    out = {"timesteps": scheduler.timesteps.tolist(), "init_noise_sigma": float(scheduler.init_noise_sigma)}
    if getattr(scheduler, "sigmas", None) is not None:
        out["sigmas"] = scheduler.sigmas.tolist()
    return out


def in_memory_differences(cls: type, extra: dict) -> dict:
    """Where building from the freshly constructed DDIM (not its JSON form) would change the result."""
    diffs = {}
    for base_name in BASE_CONFIGS:
        loaded = public_config(make_scheduler(cls, extra, base_name).config)
        memory = public_config(make_scheduler(cls, extra, base_name, as_loaded=False).config)
        # Only __init__ parameters matter; other keys are inert pass-throughs from the DDIM config.
        config_diff = {
            k: {"loaded": loaded.get(k), "in_memory": memory.get(k)}
            for k in sorted(init_keys(cls))
            if loaded.get(k) != memory.get(k)
        }
        if not config_diff:
            continue
        entry = {"config": config_diff}
        for steps in STEPS:
            a = schedule_of(make_scheduler(cls, extra, base_name), steps)
            b = schedule_of(make_scheduler(cls, extra, base_name, as_loaded=False), steps)
            if a != b:
                entry[f"{steps}.in_memory_timesteps"] = b["timesteps"]
                entry[f"{steps}.in_memory_init_noise_sigma"] = b["init_noise_sigma"]
        diffs[base_name] = entry
    return diffs


def step_kwargs(scheduler, generator: torch.Generator) -> dict:
    """The pipelines' `prepare_extra_step_kwargs(generator, eta=0.0)`."""
    params = set(inspect.signature(scheduler.step).parameters)
    kwargs = {}
    if "eta" in params:
        kwargs["eta"] = 0.0
    if "generator" in params:
        kwargs["generator"] = generator
    return kwargs


def count_draws(state_before: torch.Tensor, state_after: torch.Tensor, like: torch.Tensor) -> int:
    """How many `randn(like.shape, dtype=like.dtype)` calls take the generator from one state to the other.

    diffusers' schedulers draw their noise with `randn_tensor(model_output.shape, dtype=model_output.dtype,
    generator=generator)`, i.e. one full-size torch.randn on the CPU generator (torch_randn.md §6), so
    replaying such calls from `state_before` must land exactly on `state_after`.
    """
    replay = torch.Generator("cpu")
    replay.set_state(state_before)
    for k in range(MAX_DRAWS_PER_STEP + 1):
        if torch.equal(replay.get_state(), state_after):
            return k
        torch.randn(like.shape, generator=replay, dtype=like.dtype)
    raise RuntimeError("generator advanced by something other than full-size randn draws")


def as_fixture_tensor(t: torch.Tensor) -> torch.Tensor:
    """Integers as int64, everything else float32; contiguous CPU copies (safetensors needs them)."""
    t = t.detach().cpu()
    t = t.to(torch.int64) if not t.is_floating_point() else t.to(torch.float32)
    return t.contiguous().clone()


def scalar_tensor(x, dtype) -> torch.Tensor:
    """A [1] tensor from a Python number or a 0-d tensor (init_noise_sigma is either)."""
    return torch.tensor([float(x) if dtype.is_floating_point else int(x)], dtype=dtype)


def is_integral(t: torch.Tensor) -> bool:
    return (not t.is_floating_point()) or bool(torch.equal(t, t.round()))


# --------------------------------------------------------------------------------------------------
# The recorded loop
# --------------------------------------------------------------------------------------------------


@torch.no_grad()
def record_run(cls: type, extra: dict, base_name: str, steps: int, tensors: dict) -> dict:
    """Schedule + denoising loop for one (scheduler, base config, step count); returns its JSON facts."""
    prefix = f"{base_name}.{steps}"
    scheduler = make_scheduler(cls, extra, base_name)
    config_before = public_config(scheduler.config)
    scheduler.set_timesteps(steps)
    config_after = public_config(scheduler.config)

    # ---- schedule ----
    timesteps = scheduler.timesteps
    tensors[f"{prefix}.timesteps"] = as_fixture_tensor(timesteps)
    info = {
        "num_timesteps": len(timesteps),
        "timesteps_dtype": str(timesteps.dtype).removeprefix("torch."),
        "timesteps_integral_valued": is_integral(timesteps),
        "timesteps": timesteps.tolist(),
    }
    if getattr(scheduler, "sigmas", None) is not None:
        sigmas = scheduler.sigmas
        tensors[f"{prefix}.sigmas"] = as_fixture_tensor(sigmas)
        info["num_sigmas"] = len(sigmas)
        info["sigmas_dtype"] = str(sigmas.dtype).removeprefix("torch.")
    for attr in EXTRA_SCHEDULE_ATTRS:
        value = getattr(scheduler, attr, None)
        if value is not None:
            tensors[f"{prefix}.{attr}"] = as_fixture_tensor(torch.as_tensor(value))
    # diffusers leaves NaN in a few schedule entries that step() never reads (log(0) in KDPM2's roll/lerp,
    # 0/0 in KDPM2-ancestral's sigmas_up); they are kept as stored (bits 0xffc00000) and listed here.
    nan_entries = {
        name.removeprefix(prefix + "."): torch.isnan(t).nonzero().flatten().tolist()
        for name, t in tensors.items()
        if name.startswith(prefix + ".") and t.is_floating_point() and torch.isnan(t).any()
    }
    if nan_entries:
        info["nan_entries_never_read"] = nan_entries
    if isinstance(scheduler, PNDMScheduler):
        info["prk_timesteps"] = len(scheduler.prk_timesteps)
        info["plms_timesteps"] = len(scheduler.plms_timesteps)
    # Read after set_timesteps, as the pipelines do (for the sigma-space schedulers it depends on it).
    init_noise_sigma = scheduler.init_noise_sigma
    tensors[f"{prefix}.init_noise_sigma"] = scalar_tensor(init_noise_sigma, torch.float32)
    tensors[f"{prefix}.order"] = scalar_tensor(scheduler.order, torch.int64)
    info["init_noise_sigma"] = float(init_noise_sigma)
    info["init_noise_sigma_is_tensor"] = torch.is_tensor(init_noise_sigma)
    changed = {k: v for k, v in config_after.items() if config_before.get(k) != v}
    if changed:
        info["config_changed_by_set_timesteps"] = changed

    # ---- loop ----
    generator = torch.Generator("cpu").manual_seed(STEP_SEED)
    g_data = torch.Generator("cpu").manual_seed(DATA_SEED)
    kwargs = step_kwargs(scheduler, generator)
    sample = torch.randn(LATENT_SHAPE, generator=g_data) * init_noise_sigma
    draws = []
    for i, t in enumerate(scheduler.timesteps):
        scaled = scheduler.scale_model_input(sample, t)
        model_output = torch.randn(sample.shape, generator=g_data)
        state_before = generator.get_state()
        prev_sample = scheduler.step(model_output, t, sample, **kwargs).prev_sample
        draws.append(count_draws(state_before, generator.get_state(), model_output))
        if not torch.isfinite(prev_sample).all():
            raise RuntimeError(f"{cls.__name__} {prefix} step {i}: non-finite prev_sample")
        tensors[f"{prefix}.sample.{i}"] = as_fixture_tensor(sample)
        tensors[f"{prefix}.scaled.{i}"] = as_fixture_tensor(scaled)
        tensors[f"{prefix}.model_output.{i}"] = as_fixture_tensor(model_output)
        tensors[f"{prefix}.prev_sample.{i}"] = as_fixture_tensor(prev_sample)
        sample = prev_sample
    tensors[f"{prefix}.noise_draws"] = torch.tensor(draws, dtype=torch.int64)
    tensors[f"{prefix}.next_randn"] = torch.randn((NEXT_RANDN,), generator=generator)
    info["noise_draws_total"] = sum(draws)
    info["noise_draws_per_step"] = draws
    return info


def scheduler_entry(cls: type, extra: dict, runs: dict) -> dict:
    """The schedulers.json entry of one CLI name (`runs`: "{config}.{steps}" -> record_run facts)."""
    probe = make_scheduler(cls, extra, "real")
    params = set(inspect.signature(probe.step).parameters)
    return {
        "class": cls.__name__,
        "extra_kwargs": extra,
        "order": probe.order,
        "step_takes_generator": "generator" in params,
        "step_takes_eta": "eta" in params,
        "stochastic": any(r["noise_draws_total"] > 0 for r in runs.values()),
        "has_sigmas": any("num_sigmas" in r for r in runs.values()),
        "timesteps_dtype": "/".join(sorted({r["timesteps_dtype"] for r in runs.values()})),
        "timesteps_integral_valued": all(r["timesteps_integral_valued"] for r in runs.values()),
        "num_timesteps": {k: r["num_timesteps"] for k, r in runs.items()},
        "config": {base: public_config(make_scheduler(cls, extra, base).config) for base in BASE_CONFIGS},
        # Keys of `config` that the class's __init__ does not take: carried over from the DDIM config by
        # from_config (and saved with it) but without effect.
        "inert_config_keys": sorted(set(public_config(probe.config)) - init_keys(cls)),
        # Keys the DDIM config did not provide, so the class default applies (diffusers' `_use_default_values`).
        "defaulted_keys": {
            base: sorted(make_scheduler(cls, extra, base).config.get("_use_default_values", []))
            for base in BASE_CONFIGS
        },
        "runs": runs,
        "in_memory_construction_differs": in_memory_differences(cls, extra),
    }


# Observations checked by `check_notes` (so a diffusers upgrade that changes them fails loudly).
NOTES = {
    "ddim": "eta=0.0 (what the pipelines pass): step() never draws noise although it takes a generator.",
    "ddpm": "Draws one full-size randn per step while t > 0: real (last t=1) draws on every step -- the last "
    "draw is scaled by sqrt(clamp(0, min=1e-20)) = 1e-10 (prev alpha_cumprod = 1 at prev_t < 0) but still "
    "consumed; tiny (last t=0) draws on all but the last step.",
    "pndm": "from_config keeps PNDM's default skip_prk_steps=False: set_timesteps(N) yields 12 Runge-Kutta "
    "(PRK) warm-up entries (3 extra model evaluations per real step over the last 4 leading timesteps, "
    "including half-step timesteps t + (1000//N)//2) followed by N-3 PLMS entries: len(timesteps) = N+9.",
    "lms": "init_noise_sigma (leading spacing) = sqrt(max(sigmas)^2 + 1) in float32, where max(sigmas) is the "
    "sigma of the FIRST timestep (901 for real/10), not sigma(999); same for euler, euler-a, heun, kdpm2, "
    "kdpm2-a. Timesteps are float32 (whole-valued here).",
    "euler": "s_churn=0: step() never draws noise although it takes a generator.",
    "euler-a": "Draws one full-size randn on every step (including the last).",
    "heun": "Second order: 2N-1 interleaved timesteps (each but the first repeated), float32 but whole-valued; "
    "sigmas have 2N entries.",
    "kdpm2": "Second order: 2N-1 interleaved timesteps; the interleaved ones come from log-mid sigmas "
    "(sigmas_interpol) mapped back through _sigma_to_t, so they are NOT whole numbers; sigmas have 2N+2 entries. "
    "sigmas_interpol[0] is NaN (log(0) from roll(1)), never read.",
    "kdpm2-a": "Like kdpm2 but sigmas_interpol is the log-midpoint of sigma and sigma_down = sigma_next^2/sigma, "
    "i.e. sigma_next up to rounding, so the interleaved timesteps are the next grid timestep within float error "
    "(e.g. 101.00000762939453, 0.9999993443489075 for real/10). Draws one randn on each second-order step "
    "(odd i): N-1 draws. NaN in sigmas_up[-3:] (0/0), never read.",
    "dpm++2m": "Own 'leading' rule: step_ratio = 1000 // (N+1), arange(N+1)*ratio reversed minus the last, "
    "+ steps_offset -> [901, 811, ..., 91] for real/10 (DDIM gives [901, ..., 1]). algorithm_type "
    "'dpmsolver++' never draws noise. The last step is first order (final_sigmas_type 'zero'; for N >= 15 that "
    "is the only reason, lower_order_final only acts when N < 15).",
    "dpm++2m-karras": "use_karras_sigmas ignores timestep_spacing and steps_offset: Karras sigmas span the full "
    "training range (sigma(999) .. sigma(0)) and timesteps are round(_sigma_to_t(sigma)).",
    "dpm++-single": "Has no timestep_spacing / steps_offset parameters (inert keys here): timesteps are always "
    "linspace(0, 999, N+1).round() reversed minus the last ([999, 899, ..., 100] for 10). set_timesteps flips "
    "lower_order_final to True in the config (final_sigmas_type 'zero' requires it) and logs a warning.",
    "deis": "Leading rule 1000 // (N+1) like dpm++2m; no final_sigmas_type option: the last sigma is "
    "sigma_min = sigma(t=0), not 0.",
    "unipc": "Leading rule 1000 // (N+1) like dpm++2m; final_sigmas_type 'zero'.",
}

# Applies to every scheduler: how the base DDIM config is turned into the one they are built from.
CONSTRUCTION_NOTE = (
    "All schedulers are built from the base DDIM config as written to and read back from "
    "scheduler_config.json (base_ddim). Building from a freshly constructed DDIMScheduler(**kwargs) differs "
    "where kwargs omit a key: diffusers' private _use_default_values makes from_config skip it, so the target "
    "class's own default applies. For `tiny` that turns timestep_spacing into 'linspace' for every class whose "
    "default is linspace (all but ddim/ddpm/pndm); see in_memory_construction_differs. `real` is unaffected."
)

EXCLUDED = {
    "DPMSolverSDEScheduler": "needs torchsde (Brownian-tree noise); not installed here, and its noise is not "
    "a plain randn stream, so it cannot be reproduced bit-wise without porting torchsde",
    "EDMEulerScheduler": "EDM formulation, _compatibles = [] (not meaningful for these VP/epsilon models)",
}


def check_notes(entries: dict) -> None:
    """Assert the facts that NOTES and the README state."""

    def run(cli: str, base: str, steps: int) -> dict:
        return entries[cli]["runs"][f"{base}.{steps}"]

    for steps in STEPS:
        # Schedules (real config: steps_offset 1, leading).
        assert run("ddim", "real", steps)["timesteps"] == [i * (1000 // steps) + 1 for i in range(steps - 1, -1, -1)]
        assert run("pndm", "real", steps)["num_timesteps"] == steps + 9
        assert run("pndm", "real", steps)["prk_timesteps"] == 12
        for cli in ("heun", "kdpm2", "kdpm2-a"):
            assert run(cli, "real", steps)["num_timesteps"] == 2 * steps - 1, cli
        assert run("heun", "real", steps)["num_sigmas"] == 2 * steps
        assert run("kdpm2", "real", steps)["num_sigmas"] == 2 * steps + 2
        assert not run("kdpm2", "real", steps)["timesteps_integral_valued"]
        ratio = 1000 // (steps + 1)
        for cli in ("dpm++2m", "deis", "unipc"):
            assert run(cli, "real", steps)["timesteps"] == [i * ratio + 1 for i in range(steps, 0, -1)], cli
        single = np.linspace(0, 999, steps + 1).round()[::-1][:-1].astype(np.int64).tolist()
        assert run("dpm++-single", "real", steps)["timesteps"] == single
        assert run("dpm++-single", "real", steps)["config_changed_by_set_timesteps"] == {"lower_order_final": True}
        assert run("dpm++2m-karras", "real", steps)["timesteps"][0] == 999
        # Noise draws from the step generator.
        assert run("ddpm", "real", steps)["noise_draws_total"] == steps
        assert run("ddpm", "tiny", steps)["noise_draws_total"] == steps - 1
        assert run("euler-a", "tiny", steps)["noise_draws_total"] == steps
        assert run("kdpm2-a", "tiny", steps)["noise_draws_total"] == steps - 1
    for cli, e in entries.items():
        assert e["stochastic"] == (cli in ("ddpm", "euler-a", "kdpm2-a")), cli
    assert {"timestep_spacing", "steps_offset"} <= set(entries["dpm++-single"]["inert_config_keys"])


def main() -> None:
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    if OUT_DIR.exists():
        shutil.rmtree(OUT_DIR)
    OUT_DIR.mkdir(parents=True)

    # DPMSolverSDE is a dummy object without torchsde: record the failure instead of a fixture.
    try:
        DPMSolverSDEScheduler.from_config(DDIMScheduler(**BASE_CONFIGS["real"]).config)
        sde_status = "constructible (torchsde present) -- still excluded, see reason"
    except ImportError as e:
        sde_status = f"ImportError: {str(e).strip().splitlines()[0]}"

    entries = {}
    for cli, cls, extra in SCHEDULERS:
        tensors: dict[str, torch.Tensor] = {}
        runs = {}
        for base_name in BASE_CONFIGS:
            tensors[f"{base_name}.alphas_cumprod"] = as_fixture_tensor(
                make_scheduler(cls, extra, base_name).alphas_cumprod
            )
            for steps in STEPS:
                runs[f"{base_name}.{steps}"] = record_run(cls, extra, base_name, steps, tensors)
        save_file(
            tensors,
            str(OUT_DIR / f"{cli}.safetensors"),
            # One key only: safetensors writes metadata from a hash map, so several keys come out in random order.
            metadata={"generator": "tools/reference/build_scheduler_fixtures.py"},
        )
        entries[cli] = scheduler_entry(cls, extra, runs)
        if cli in NOTES:
            entries[cli]["note"] = NOTES[cli]
    check_notes(entries)

    summary = {
        "versions": {"torch": torch.__version__, "diffusers": diffusers.__version__, "numpy": np.__version__},
        # constructor_kwargs: DDIMScheduler(**...); ddim_config: its resolved config as written to / read from
        # scheduler_config.json, the config every scheduler here is built from (see base_ddim).
        "base_configs": {
            name: {"constructor_kwargs": kwargs, "ddim_config": public_config(base_ddim(name).config)}
            for name, kwargs in BASE_CONFIGS.items()
        },
        "steps": STEPS,
        "latent_shape": list(LATENT_SHAPE),
        "step_generator_seed": STEP_SEED,
        "data_generator_seed": DATA_SEED,
        "next_randn_len": NEXT_RANDN,
        "loop": "g=Generator('cpu').manual_seed(step_generator_seed); d=Generator('cpu').manual_seed("
        "data_generator_seed); set_timesteps(steps); sample=randn(latent_shape, d)*init_noise_sigma; for i,t: "
        "scaled=scale_model_input(sample,t); model_output=randn(latent_shape, d); prev=step(model_output,t,sample,"
        "[eta=0.0 if accepted], [generator=g if accepted]).prev_sample; sample=prev. next_randn=randn(16, g).",
        "tensor_names": {
            "{config}.alphas_cumprod": "float32 [1000]",
            "{config}.{steps}.timesteps": "int64 when the scheduler's timesteps are integer, else float32 "
            "(see timesteps_dtype)",
            "{config}.{steps}.sigmas": "float32, only for schedulers with .sigmas",
            "{config}.{steps}.sigmas_interpol|sigmas_up|sigmas_down": "float32, KDPM2 / KDPM2-ancestral only",
            "{config}.{steps}.order_list": "int64, DPMSolverSinglestep only (solver order per step)",
            "{config}.{steps}.init_noise_sigma": "float32 [1]",
            "{config}.{steps}.order": "int64 [1]",
            "{config}.{steps}.sample.{i}": "input to step i",
            "{config}.{steps}.scaled.{i}": "scale_model_input(sample.{i}, t_i)",
            "{config}.{steps}.model_output.{i}": "fed to step i",
            "{config}.{steps}.prev_sample.{i}": "step i's prev_sample",
            "{config}.{steps}.noise_draws": "int64 [len(timesteps)]: full-size randn draws step i took from "
            "the step generator",
            "{config}.{steps}.next_randn": "float32 [16]: randn(16) from the step generator after the loop",
        },
        "construction_note": CONSTRUCTION_NOTE,
        "schedulers": entries,
        "excluded": {name: {"reason": reason} for name, reason in EXCLUDED.items()},
    }
    summary["excluded"]["DPMSolverSDEScheduler"]["status_here"] = sde_status
    (OUT_DIR / "schedulers.json").write_text(dumps_json(summary) + "\n")
    for path in OUT_DIR.iterdir():
        path.chmod(0o644)  # safetensors writes 0600

    # Console summary.
    for cli, e in entries.items():
        r = e["runs"]["real.10"]
        print(
            f"{cli:15s} {e['class']:33s} order {e['order']} stochastic {str(e['stochastic']):5s} "
            f"sigmas {str(e['has_sigmas']):5s} init_noise_sigma(real/10) {r['init_noise_sigma']:.6g} "
            f"len {e['num_timesteps']}"
        )


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env bash
# The one-shot GPU check: correctness, precision, speed and a step profile of a CUDA build of Foley,
# on a machine with an NVIDIA GPU, its driver and python3 with PyTorch, and no Rust toolchain.
#
# Here (the build machine):  CUDA_COMPUTE_CAP=90 packaging/gpu/build-cuda-linux.sh --check-bundle
# There, from the repository root (fixtures and tools/reference come with the checkout):
#   packaging/gpu/check/run.sh [--device cpu] [--skip-bench] [--skip-profile]
# Results go to $OUT (or /tmp/foley-gpu-check): summary.md plus one log per step.
# --device cpu runs the same steps on the CPU with the CPU build's binaries (FOLEY_BIN_DIR), which is
# how the script itself is tested without a GPU.
#
# Steps:
#   0  the GPU and driver; `foley --version` names cuda; a 2-step generation on the device
#   a  tests/device_parity.rs on the device: every tiny fixture family end to end and every editing case
#      in f32 against the committed diffusers references (<= 1e-3 relative L2), once with full-f32
#      GEMMs (candle's default) and once with FOLEY_CUDA_TF32=1
#   b  the same binary's f16/bf16 runs: drift from f32 within 1.5x diffusers' own (precision.json)
#   c  the real-size AudioLDM 2 configuration with random weights, built there by bench_models.py
#      (diffusers 0.42.1 from the bundle; the machine's own torch and transformers);
#      10.24 s, DPM-Solver++ 20 steps: Foley f32 and f16 vs diffusers fp16 eager (after a warm-up),
#      per stage and per step, peak GPU memory
#   d  a profile of the generation with Nsight Compute where it can read the counters: kernel count
#      and time per kernel class (ncu serialises kernels, so this is a kernel census, not a timing)
set -uo pipefail
root="$(cd "$(dirname "$0")/../../.." && pwd)"
cd "$root"

device=cuda
bench=1
profile=1
while [ $# -gt 0 ]; do
  case "$1" in
    --device) device="${2:?--device needs cpu or cuda}"; shift ;;
    --skip-bench) bench=0 ;;
    --skip-profile) profile=0 ;;
    *) echo "run.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
  shift
done
out="${OUT:-/tmp/foley-gpu-check}"
mkdir -p "$out"
summary="$out/summary.md"
: >"$summary"
note() { echo "$*" | tee -a "$summary"; }
failures=0
step() { # [limit=SECONDS] step NAME COMMAND...: runs, logs to $out/NAME.log, records pass/fail
  local name="$1"
  shift
  local started=$SECONDS
  # Each step has a deadline, so that one hang cannot spend a GPU lease (10 minutes a command).
  if timeout --kill-after=10 "${limit:-240}" "$@" >"$out/$name.log" 2>&1; then
    note "- $name: passed ($((SECONDS - started)) s)"
  else
    note "- $name: FAILED ($((SECONDS - started)) s), last lines:"
    tail -n 15 "$out/$name.log" | sed 's/^/    /' | tee -a "$summary"
    failures=$((failures + 1))
  fi
}

# step_with_memory NAME COMMAND...: step, sampling the GPU's used memory every 50 ms into NAME.mem
# (the peak in MiB, the CUDA context included: the same measure for Foley and diffusers).
step_with_memory() {
  local name="$1"
  if [ "$device" != cuda ]; then
    step "$@"
    return
  fi
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 50 >"$out/$name.samples" 2>/dev/null &
  local sampler=$!
  step "$@"
  kill "$sampler" 2>/dev/null
  wait "$sampler" 2>/dev/null
  sort -n "$out/$name.samples" | tail -n 1 >"$out/$name.mem"
  rm -f "$out/$name.samples"
}

# Binaries: the bundle's (xz) on a GPU machine, or FOLEY_BIN_DIR's (foley + device_parity).
bin="${FOLEY_BIN_DIR:-}"
if [ -z "$bin" ]; then
  archive="$root/packaging/gpu/check/bundle/binaries.tar.xz"
  [ -f "$archive" ] || { echo "run.sh: $archive missing: build it with build-cuda-linux.sh --check-bundle" >&2; exit 1; }
  bin="$(mktemp -d)"
  xz -dc "$archive" | tar -C "$bin" -x || exit 1
fi
foley="$bin/foley"

note "# Foley GPU check ($(date -u +%Y-%m-%dT%H:%MZ), device $device)"
if [ "$device" = cuda ]; then
  # CUDA 13's cuBLAS, cuRAND and runtime: PyTorch's wheels carry them (nvidia/cu13/lib, or one
  # folder per library in older layouts); every folder holding one goes on the loader path.
  libs="$(python3 packaging/gpu/check/cuda_libs.py 2>/dev/null)"
  [ -n "$libs" ] && export LD_LIBRARY_PATH="$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  note "CUDA libraries from: ${libs:-none found in the nvidia packages of python3, so the system loader path}"
  nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader | sed 's/^/GPU: /' | tee -a "$summary"
fi
note "binary: $("$foley" --version 2>&1)"
if [ "$device" = cuda ] && ! "$foley" --version 2>&1 | grep -q cuda; then
  note "- version: FAILED (the binary was not built with cuda)"
  failures=$((failures + 1))
fi

# 0. A first generation on the device.
limit=180 step smoke "$foley" generate --model tests/fixtures/audioldm2-tiny --prompt "a door slams" --steps 2 \
  --device "$device" --out "$out/smoke.wav" --quiet --json

# a + b. The parity binary (it reads the fixtures from this checkout).
export FOLEY_FIXTURES="$root/tests/fixtures" FOLEY_TEST_DEVICE="$device"
step parity-f32 "$bin/device_parity" --test-threads=1 --nocapture portable_ops
step parity-tf32 env FOLEY_CUDA_TF32=1 "$bin/device_parity" --test-threads=1 --nocapture portable_ops
step half-precision "$bin/device_parity" --test-threads=1 --nocapture half_precision
grep -h "mean drift" "$out/half-precision.log" | sed 's/^/    /' >>"$summary"
grep -h "parity .* waveform" "$out/parity-f32.log" | awk '{print $NF}' | sort -g | tail -n 1 |
  sed 's/^/    largest f32 waveform error: /' >>"$summary"
grep -h "parity .* waveform" "$out/parity-tf32.log" | awk '{print $NF}' | sort -g | tail -n 1 |
  sed 's/^/    largest TF32 waveform error: /' >>"$summary"

# c. Real-size AudioLDM 2, Foley vs diffusers fp16 eager, same GPU, same run.
if [ "$bench" -eq 1 ]; then
  site="$(mktemp -d)"
  if [ -d packaging/gpu/check/bundle/wheels ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" \
      packaging/gpu/check/bundle/wheels/*.whl >"$out/wheels.log" 2>&1
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
  fi
  export FOLEY_BENCH_DIR="${FOLEY_BENCH_DIR:-$(mktemp -d)}"
  step build-model python3 tools/reference/bench_models.py --only audioldm2
  model="$FOLEY_BENCH_DIR/audioldm2"
  dtypes="f32 f16"
  [ "$device" = cpu ] && dtypes=f32
  for dtype in $dtypes; do
    # Twice: the first run also JIT-compiles the PTX for this GPU (cached afterwards).
    step "foley-$dtype-warmup" "$foley" generate --model "$model" --prompt "Brazilian samba drums with waves" \
      --negative-prompt "Low quality." --seed 0 --steps 20 --scheduler dpm++2m --duration 10.24 \
      --device "$device" --dtype "$dtype" --out "$out/foley-$dtype.wav" --quiet --json
    step_with_memory "foley-$dtype" "$foley" generate --model "$model" --prompt "Brazilian samba drums with waves" \
      --negative-prompt "Low quality." --seed 0 --steps 20 --scheduler dpm++2m --duration 10.24 \
      --device "$device" --dtype "$dtype" --out "$out/foley-$dtype.wav" --quiet --json
  done
  diffusers_dtype=f16
  [ "$device" = cpu ] && diffusers_dtype=f32
  step_with_memory "diffusers-$diffusers_dtype" python3 tools/reference/bench_diffusers.py --model "$model" \
    --prompt "Brazilian samba drums with waves" --negative-prompt "Low quality." --seed 0 --steps 20 \
    --scheduler dpm++2m --duration 10.24 --device "$device" --dtype "$diffusers_dtype" --warmup 1 --threads 16
  python3 packaging/gpu/check/table.py "$out" >>"$summary" 2>"$out/table.log" || note "- table: FAILED (see table.log)"
fi

# d. Kernel census of a 2-step generation (Nsight Compute, where the runtime lets it read counters).
if [ "$profile" -eq 1 ] && [ "$device" = cuda ]; then
  ncu_bin="$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -n 1)"
  if [ -n "$ncu_bin" ]; then
    limit=150 step profile "$ncu_bin" --clock-control none --metrics gpu__time_duration.sum --csv --log-file "$out/ncu.csv" \
      "$foley" generate --model "${model:-tests/fixtures/audioldm2-tiny}" --prompt "a door slams" --steps 2 \
      --guidance 3.5 --duration 10.24 --device "$device" --out "$out/profile.wav" --quiet
    python3 packaging/gpu/check/kernels.py "$out/ncu.csv" >>"$summary" 2>>"$out/profile.log" ||
      note "- kernel census: could not read $out/ncu.csv"
  else
    note "- profile: skipped (no ncu)"
  fi
fi

note ""
note "failures: $failures"
[ "$failures" -eq 0 ]

#!/usr/bin/env bash
# CUDA build of Foley for Linux x86_64 without a system CUDA installation, following
# /work/shared/research/cuda_build.md (checked 2026-11-21): the CUDA 13.0 compiler and libraries come
# from PyPI wheels, and a stub libcuda.so.1 satisfies the linker (the real driver library is loaded
# at run time on the GPU machine).
#
#   packaging/gpu/build-cuda-linux.sh                 # cuda, PTX for sm_80, tarball
#   CUDA_COMPUTE_CAP=90 packaging/gpu/build-cuda-linux.sh
#   packaging/gpu/build-cuda-linux.sh --cudnn         # also candle's cudnn feature (cuDNN 9 wheel)
#   CUDA_COMPUTE_CAP=90 packaging/gpu/build-cuda-linux.sh --check-bundle
#                     # also the GPU check's bundle (packaging/gpu/check/run.sh): a headless binary and
#                     # tests/device_parity.rs built for CUDA, stripped and xz-compressed, and the
#                     # diffusers wheel
#
# Environment (all optional):
#   CUDA_VENV         where the wheels go              (default /opt/cuda-venv)
#   CUDA_LINK_DIR     unversioned links + libcuda stub (default /opt/cuda-link)
#   CUDA_COMPUTE_CAP  PTX target: the OLDEST GPU generation to support; PTX JITs forward to newer
#                     GPUs, never backward (default 80 = Ampere; 90 = H100/H200)
#   CARGO_TARGET_DIR  base target dir; the CUDA build goes to its /cuda subfolder
# Output: the tarball path, printed last: $CARGO_TARGET_DIR/cuda/dist/foley-VERSION-x86_64-linux-cuda.tar.gz
#
# Time: candle's 11 PTX kernels take 6-7 minutes on 2 cores, the whole release build much longer;
# cargo caches both. Needs python3 (with venv), gcc, network access to PyPI and crates.io.
#
# Running the result: the binary needs libcuda.so.1 (the NVIDIA driver, 580+ for CUDA 13.0) and
# libcublas.so.13, libcublasLt.so.13, libcurand.so.10, libcudart.so.13 (+ libcudnn.so.9 with --cudnn)
# on the loader path: a CUDA 13 toolkit, or the same wheels, e.g. PyTorch's cu130 environment:
#   export LD_LIBRARY_PATH=$(python3 -c "import nvidia, os; print(os.path.join(nvidia.__path__[0], 'cu13', 'lib'))"):$LD_LIBRARY_PATH
#   foley generate --device cuda ...
# The research note says the first GPU session should run a tiny matmul + conv2d check first.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"

cudnn=0
bundle=0
for arg in "$@"; do
  case "$arg" in
    --cudnn) cudnn=1 ;;
    --check-bundle) bundle=1 ;;
    *) echo "build-cuda-linux.sh: unknown argument '$arg'" >&2; exit 2 ;;
  esac
done
venv="${CUDA_VENV:-/opt/cuda-venv}"
link="${CUDA_LINK_DIR:-/opt/cuda-link}"
compute_cap="${CUDA_COMPUTE_CAP:-80}"

# 1. Toolchain from PyPI, pinned to CUDA 13.0 so the PTX matches the 13.0 driver (a newer nvvm writes
#    PTX .version 9.5, which ptxas 13.0 rejects: pin nvidia-nvvm too).
if [ ! -x "$venv/bin/pip" ]; then
  python3 -m venv "$venv"
fi
wheels=("nvidia-cuda-nvcc==13.0.*" "nvidia-nvvm==13.0.*" "nvidia-cuda-runtime==13.0.*"
  "nvidia-cuda-cccl==13.0.*" "nvidia-cuda-crt==13.0.*" "nvidia-cublas==13.0.*" "nvidia-curand==10.4.0.*"
  "nvidia-cuda-nvrtc==13.0.*")
[ "$cudnn" -eq 1 ] && wheels+=("nvidia-cudnn-cu13==9.*")
"$venv/bin/pip" install --quiet "${wheels[@]}"
cuda="$("$venv/bin/python" -c 'import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], "cu13"))')"
for needed in bin/nvcc include/cuda.h lib; do
  [ -e "$cuda/$needed" ] || { echo "build-cuda-linux.sh: $cuda/$needed missing after pip install" >&2; exit 1; }
done
echo "CUDA from wheels: $cuda ($("$cuda/bin/nvcc" --version | tail -n 1))"

# 2. Link directory: unversioned links to the wheels' versioned libraries, and a stub libcuda.so.1
#    defining every driver entry point named in the preprocessed cuda.h (so the _v2 aliases are right).
mkdir -p "$link"
for lib in cublas cublasLt curand nvrtc cudart; do
  versioned=""
  for candidate in "$cuda"/lib/lib"$lib".so.*; do
    case "$candidate" in *alt* | *builtins*) continue ;; esac
    versioned="$candidate"
    break
  done
  [ -e "$versioned" ] || { echo "build-cuda-linux.sh: no lib$lib.so.* in $cuda/lib" >&2; exit 1; }
  ln -sf "$versioned" "$link/lib$lib.so"
done
if [ "$cudnn" -eq 1 ]; then
  cudnn_lib="$(find "$("$venv/bin/python" -c 'import nvidia; print(list(nvidia.__path__)[0])')" -name 'libcudnn.so.9*' | sed -n 1p)"
  [ -n "$cudnn_lib" ] || { echo "build-cuda-linux.sh: libcudnn.so.9 not found in the cuDNN wheel" >&2; exit 1; }
  ln -sf "$cudnn_lib" "$link/libcudnn.so"
fi
if [ ! -f "$link/libcuda.so.1" ]; then
  echo '#include <cuda.h>' | gcc -E -I"$cuda/include" -x c - | tr ';' '\n' \
    | grep -oE "CUresult +(cu[A-Za-z0-9_]+) *\(" | sed -E 's/CUresult +//; s/ *\(//' | sort -u \
    | awk '{print "void " $1 "(void){}"}' >"$link/libcuda_stub.c"
  gcc -shared -fPIC -o "$link/libcuda.so.1" "$link/libcuda_stub.c" -Wl,-soname,libcuda.so.1
fi
ln -sf libcuda.so.1 "$link/libcuda.so"

# 3. Build, in its own target dir so the CPU build stays.
base="$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
export CARGO_TARGET_DIR="$base/cuda"
features=cuda
[ "$cudnn" -eq 1 ] && features=cuda,cudnn
cuda_cargo() { # cargo with the wheels' nvcc, the PTX target and the link folder
  PATH="$cuda/bin:$PATH" CUDA_ROOT="$cuda" CUDA_PATH="$cuda" CUDA_HOME="$cuda" \
    CUDA_COMPUTE_CAP="$compute_cap" RUSTFLAGS="${RUSTFLAGS:-} -L $link" cargo "$@"
}
cuda_cargo build --release --locked --features "$features"

binary="$CARGO_TARGET_DIR/release/foley"
echo "built $binary; it needs:"
readelf -d "$binary" | grep NEEDED | grep -E 'cuda|cublas|curand|cudart|cudnn|nvrtc' || true
# (running it here fails without the driver; --version needs no GPU but does need the libraries)
LD_LIBRARY_PATH="$cuda/lib:$link${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" "$binary" --version || true

# 4 (with --check-bundle). The GPU check's bundle: what packaging/gpu/check/run.sh runs on a machine without
#    Rust. The travelling working tree is capped at 64 MiB and the fixtures take 44 of them, so the
#    bundle is small: a headless foley (the engine and CLI; the studio is not exercised there) and
#    tests/device_parity.rs, stripped, in one xz archive whose dictionary spans both (they share
#    candle and its PTX), plus the diffusers wheel (the machine has torch and transformers).
if [ "$bundle" -eq 1 ]; then
  out="$root/packaging/gpu/check/bundle"
  rm -rf "$out" && mkdir -p "$out/wheels"
  staging="$(mktemp -d)"
  headless_cargo() {
    cuda_cargo "$@" --release --locked --no-default-features --features "$features" --message-format=json
  }
  executable() { sed -n "s/.*\"executable\":\"\([^\"]*$1[^\"]*\)\".*/\1/p" | tail -n 1; }
  headless="$(headless_cargo build --bin foley | executable foley)"
  test_binary="$(headless_cargo test --test device_parity --no-run | executable device_parity)"
  for built in "$headless" "$test_binary"; do
    [ -x "$built" ] || { echo "build-cuda-linux.sh: a check binary is missing" >&2; exit 1; }
  done
  strip -o "$staging/foley" "$headless"
  strip -o "$staging/device_parity" "$test_binary"
  tar -C "$staging" -c foley device_parity | xz -T1 --lzma2=preset=9e,dict=256MiB >"$out/binaries.tar.xz"
  rm -rf "$staging"
  python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux2014_x86_64 -d "$out/wheels" "diffusers==0.42.1" "importlib_metadata" "zipp"
  # The tree and the bundle travel within 64 MiB: drop the pipelines the check never runs.
  python3 "$(dirname "$0")/check/slim_wheel.py" "$out"/wheels/diffusers-*.whl
  echo "check bundle: $out ($(du -sh "$out" | cut -f1))"
  ls -l "$out" "$out/wheels"
fi

# 5. Package: the Linux tarball, named ...-linux-cuda.tar.gz (same layout and install.sh).
FOLEY_TARBALL_SUFFIX=cuda packaging/linux/build-tarball.sh --no-build | tail -n 1

#!/usr/bin/env bash
# tools/emulate/aarch64.sh - build Foley's engine tests for 64-bit ARM (Linux) and
# run them under qemu's user-mode emulator, so the kernels' portable builds (what
# Apple silicon and ARM servers run; the AVX2, AVX-512 and bf16 kernels are x86-64
# only) are proven against the same references on a host that is x86-64.
#
# Usage: tools/emulate/aarch64.sh [TEST...]
#   TEST: integration test targets to run beside the library's own tests
#         (default: components pipeline device_parity editing)
#
# Needs (Debian): gcc-aarch64-linux-gnu qemu-user, and `rustup target add
# aarch64-unknown-linux-gnu`. Builds without the studio feature: the window and
# audio output need ALSA and X11 for the target, which a cross build lacks.
# Exit status: the first failing test binary's, else 0. Speed under qemu says
# nothing about an ARM CPU's: this checks numbers only.
set -euo pipefail

cd "$(dirname "$0")/../.."
target=aarch64-unknown-linux-gnu
tests=("$@")
[ ${#tests[@]} -eq 0 ] && tests=(components pipeline device_parity editing)

for tool in aarch64-linux-gnu-gcc qemu-aarch64; do
    command -v "$tool" >/dev/null || {
        echo "aarch64.sh: $tool not found (apt-get install gcc-aarch64-linux-gnu qemu-user)" >&2
        exit 2
    }
done

export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export QEMU_LD_PREFIX=/usr/aarch64-linux-gnu

test_args=(--lib)
for test in "${tests[@]}"; do test_args+=(--test "$test"); done

# cargo prints each test executable it built as JSON; run those, in order.
mapfile -t binaries < <(
    cargo test --release --no-default-features --target "$target" "${test_args[@]}" \
        --no-run --message-format=json |
        python3 tools/emulate/test_executables.py
)

for binary in "${binaries[@]}"; do
    echo "== $(basename "$binary")"
    qemu-aarch64 "$binary" --test-threads 2
done

#!/usr/bin/env bash
# tools/emulate/avx2-only.sh - run Foley's engine tests on an emulated x86-64 CPU
# with AVX2 and FMA but no AVX-512 (qemu's user-mode emulator as an AMD Zen 3,
# EPYC-Milan), so that the kernels an AVX2-only CPU picks (Intel's client parts,
# AMD before Zen 4) are proven against the same references on a host whose own
# CPU would pick the AVX-512 ones.
#
# Usage: tools/emulate/avx2-only.sh [TEST...]
#   TEST: integration test targets to run beside the library's own tests
#         (default: components pipeline device_parity editing; device_parity
#         takes ~13 minutes under emulation on 2 cores)
#
# Needs (Debian): qemu-user (qemu 7.2 or later emulates AVX2). Exit status: the
# first failing test binary's, else 0. Speed under qemu says nothing about a
# CPU's: this checks numbers and kernel choices only.
set -euo pipefail

cd "$(dirname "$0")/../.."
tests=("$@")
[ ${#tests[@]} -eq 0 ] && tests=(components pipeline device_parity editing)

command -v qemu-x86_64 >/dev/null || {
    echo "avx2-only.sh: qemu-x86_64 not found (apt-get install qemu-user)" >&2
    exit 2
}

test_args=(--lib)
for test in "${tests[@]}"; do test_args+=(--test "$test"); done

# cargo prints each test executable it built as JSON; run those, in order.
mapfile -t binaries < <(
    cargo test --release "${test_args[@]}" --no-run --message-format=json |
        python3 tools/emulate/test_executables.py
)

for binary in "${binaries[@]}"; do
    echo "== $(basename "$binary")"
    # TCG warns about every CPUID bit of the model it does not emulate; none is one
    # the kernels test for.
    qemu-x86_64 -cpu EPYC-Milan "$binary" --test-threads 2 2> >(grep -v "TCG doesn't support" >&2)
done

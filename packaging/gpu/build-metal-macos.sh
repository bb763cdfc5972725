#!/usr/bin/env bash
# Metal build for macOS: `cargo build --release --features metal`, then Foley.app + .dmg.
#
#   packaging/gpu/build-metal-macos.sh
#
# Builds in its own target dir ($CARGO_TARGET_DIR or target, + /metal) so the CPU build stays, and
# renames the image to Foley_VERSION_ARCH-metal.dmg; prints its path last. Needs macOS with the
# Xcode command-line tools (candle's Metal kernels are compiled at run time by the system's Metal
# framework, so no extra SDK is needed at build time). In the studio or with `--device metal`,
# generation then runs on the GPU. Not run on the Linux machine these scripts were written on.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
[ "$(uname -s)" = Darwin ] || { echo "build-metal-macos.sh: run this on macOS" >&2; exit 1; }

base="$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
export CARGO_TARGET_DIR="$base/metal"
dmg="$(packaging/macos/build-dmg.sh --features metal | tail -n 1)"
"$CARGO_TARGET_DIR/release/foley" --version
metal_dmg="${dmg%.dmg}-metal.dmg"
mv -f "$dmg" "$metal_dmg"
echo "$metal_dmg"

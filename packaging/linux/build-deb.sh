#!/usr/bin/env bash
# Builds the Debian package with cargo-deb and prints its path on the last line.
#
#   packaging/linux/build-deb.sh                 # cargo build --release + package
#   packaging/linux/build-deb.sh --no-build      # package the release binary that is already built
#   packaging/linux/build-deb.sh --dbgsym        # keep debug info, in a separate -dbgsym.ddeb
#
# Any argument is passed to `cargo deb` (see `cargo deb --help`). Needs the [package.metadata.deb]
# table in Cargo.toml, and on Debian/Ubuntu the build packages of
# the README (build-essential pkg-config libasound2-dev). Output: $CARGO_TARGET_DIR/debian/ (or
# target/debian/), e.g. foley_0.1.0-1_amd64.deb. Install: sudo apt install ./foley_*.deb
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"

if ! grep -q '^\[package\.metadata\.deb\]' Cargo.toml; then
  echo "build-deb.sh: Cargo.toml has no [package.metadata.deb]" >&2
  exit 1
fi
packaging/check-versions.sh

if ! command -v cargo-deb >/dev/null 2>&1; then
  echo "build-deb.sh: installing cargo-deb (cargo install cargo-deb --locked)" >&2
  cargo install cargo-deb --locked
fi

# [profile.release] keeps debug info (debug = 1), and cargo-deb only strips by default when it is
# off: strip explicitly unless the caller asked for the symbols to be kept somewhere.
strip=(--strip)
for arg in "$@"; do
  case "$arg" in
    --dbgsym|--separate-debug-symbols|--no-strip) strip=() ;;
  esac
done

target_dir="$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
out="$target_dir/debian"
mkdir -p "$out"
# cargo-deb prints the path of the package it wrote on stdout.
deb="$(cargo deb --locked "${strip[@]}" --output "$out" "$@" | tail -n 1)"
if [ ! -f "$deb" ]; then
  echo "build-deb.sh: cargo deb did not report a package file (got '$deb')" >&2
  exit 1
fi
echo "$deb"

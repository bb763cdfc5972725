#!/usr/bin/env bash
# Builds Foley.app and a .dmg holding it, on macOS, with cargo-packager:
#
#   packaging/macos/build-dmg.sh                     # CPU build
#   packaging/macos/build-dmg.sh --features metal    # Metal build (what packaging/gpu/build-metal-macos.sh runs)
#   packaging/macos/build-dmg.sh --no-build          # package the release binary already built
#
# Other arguments go to `cargo build --release`. Prints the .dmg path last. Output (in the cargo
# release dir, $CARGO_TARGET_DIR/release or target/release):
#   Foley.app                     the bundle: Contents/MacOS/foley, Contents/Resources/foley.icns,
#                                 Contents/Info.plist (cargo-packager's, with packaging/macos/Info.plist
#                                 merged over it)
#   Foley_VERSION_ARCH.dmg        the disk image (Foley.app + a link to /Applications)
#
# Needs: macOS with Xcode command-line tools, Rust, and network access the first time
# (`cargo install cargo-packager`, and cargo-packager downloads the create-dmg script from GitHub).
# Config: [package.metadata.packager] in Cargo.toml. Checked
# against cargo-packager 0.11.8 (docs.rs/cargo-packager/0.11.8: Config, MacOsConfig; and its
# src/package/{app,dmg}): `--formats app,dmg`, binaries from `cargo metadata` target dir + /release
# with `--release`, info-plist-path keys override the generated ones.
#
# Signing: none is configured, so the app is not notarized and Gatekeeper will ask users to
# right-click > Open (or `xattr -dr com.apple.quarantine /Applications/Foley.app`). For a
# distributable build add `signing-identity = "Developer ID Application: NAME (TEAM)"` under
# [package.metadata.packager.macos] and export APPLE_ID, APPLE_PASSWORD, APPLE_TEAM_ID (or
# APPLE_API_KEY, APPLE_API_ISSUER, APPLE_API_KEY_PATH) for notarization; cargo-packager does both.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"

if [ "$(uname -s)" != Darwin ]; then
  echo "build-dmg.sh: run this on macOS (a .dmg needs hdiutil)" >&2
  exit 1
fi
if ! grep -q '^\[package\.metadata\.packager\]' Cargo.toml; then
  echo "build-dmg.sh: Cargo.toml has no [package.metadata.packager]" >&2
  exit 1
fi
packaging/check-versions.sh

build=1
cargo_args=()
for arg in "$@"; do
  if [ "$arg" = "--no-build" ]; then build=0; else cargo_args+=("$arg"); fi
done
if [ "$build" -eq 1 ]; then
  # The deployment target must match LSMinimumSystemVersion (Info.plist, 11.0).
  MACOSX_DEPLOYMENT_TARGET=11.0 cargo build --release --locked "${cargo_args[@]}"
fi

if ! command -v cargo-packager >/dev/null 2>&1; then
  echo "build-dmg.sh: installing cargo-packager (cargo install cargo-packager --locked)" >&2
  cargo install cargo-packager --locked --version 0.11.8
fi

cargo packager --release --formats app,dmg

target_dir="$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
version="$(sed -n '/^version *=/{s/^version *= *"\([^"]*\)".*/\1/p;q;}' Cargo.toml)"
dmg="$(ls -t "$target_dir/release/Foley_${version}_"*.dmg | sed -n 1p)"
[ -f "$dmg" ] || { echo "build-dmg.sh: no .dmg in $target_dir/release" >&2; exit 1; }
# Quick checks of what was packed.
plutil -lint "$target_dir/release/Foley.app/Contents/Info.plist"
"$target_dir/release/Foley.app/Contents/MacOS/foley" --version
hdiutil verify "$dmg" >/dev/null
echo "$dmg"

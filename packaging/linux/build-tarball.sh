#!/usr/bin/env bash
# Builds a relocatable tarball for Linux distributions without dpkg, and prints its path last:
#
#   packaging/linux/build-tarball.sh                      # cargo build --release, then pack
#   packaging/linux/build-tarball.sh --no-build           # pack the release binary already built
#   packaging/linux/build-tarball.sh --features cuda      # other arguments go to cargo build
# FOLEY_TARBALL_SUFFIX=cuda names it foley-VERSION-ARCH-linux-cuda (packaging/gpu/build-cuda-linux.sh).
#
# Output: $CARGO_TARGET_DIR/dist/foley-VERSION-ARCH-linux.tar.gz (target/dist/ without it), holding
#   foley-VERSION-ARCH-linux/
#     bin/foley                               (debug info stripped)
#     share/applications/io.github.foleyaudio.Foley.desktop
#     share/metainfo/io.github.foleyaudio.Foley.metainfo.xml
#     share/icons/hicolor/{16x16..512x512,scalable}/apps/io.github.foleyaudio.Foley.{png,svg}
#     share/doc/foley/README.md (+ LICENSE when the repository has one)
#     install.sh                              (copies the above into ~/.local, or $PREFIX)
#
# The binary needs the same system libraries the .deb declares (libasound2, libgl1/libegl1, X11 or
# Wayland client libraries, libxkbcommon); every desktop distribution has them. An AppImage (which
# would bundle them) needs linuxdeploy/appimagetool, downloaded from GitHub: not available on the
# machine this was written on, so none is produced.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
app_id="io.github.foleyaudio.Foley"

build=1
cargo_args=()
for arg in "$@"; do
  if [ "$arg" = "--no-build" ]; then build=0; else cargo_args+=("$arg"); fi
done
if [ "$build" -eq 1 ]; then
  cargo build --release --locked "${cargo_args[@]}"
fi

metadata="$(cargo metadata --format-version 1 --no-deps)"
target_dir="$(sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p' <<<"$metadata")"
version="$(sed -n '/^version *=/{s/^version *= *"\([^"]*\)".*/\1/p;q;}' Cargo.toml)"
arch="$(uname -m)"
name="foley-$version-$arch-linux${FOLEY_TARBALL_SUFFIX:+-$FOLEY_TARBALL_SUFFIX}"
binary="$target_dir/release/foley"
[ -x "$binary" ] || { echo "build-tarball.sh: $binary not found (build it, or drop --no-build)" >&2; exit 1; }

stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
dir="$stage/$name"
install -d "$dir/bin" "$dir/share/applications" "$dir/share/metainfo" "$dir/share/doc/foley"
# A stripped copy: the release profile keeps debug info (debug = 1), 10x the size.
objcopy --strip-debug "$binary" "$dir/bin/foley"
chmod 755 "$dir/bin/foley"
install -m644 "packaging/linux/$app_id.desktop" "$dir/share/applications/"
install -m644 "packaging/linux/$app_id.metainfo.xml" "$dir/share/metainfo/"
for size in 16 24 32 48 64 128 256 512; do
  install -Dm644 "packaging/icons/png/foley-${size}x${size}.png" \
    "$dir/share/icons/hicolor/${size}x${size}/apps/$app_id.png"
done
install -Dm644 assets/icon.svg "$dir/share/icons/hicolor/scalable/apps/$app_id.svg"
install -m644 README.md "$dir/share/doc/foley/README.md"
install -m644 assets/fonts/DejaVuSans-LICENSE.txt "$dir/share/doc/foley/"
for license in LICENSE LICENSE.txt LICENSE-APACHE LICENSE.md; do
  [ -f "$license" ] && install -m644 "$license" "$dir/share/doc/foley/"
done

cat >"$dir/install.sh" <<'INSTALL'
#!/bin/sh
# Installs Foley for the current user: ./install.sh            (into ~/.local)
#                      or system-wide: sudo PREFIX=/usr/local ./install.sh
# Uninstall with: ./install.sh --uninstall   (same PREFIX)
set -eu
here="$(cd "$(dirname "$0")" && pwd)"
prefix="${PREFIX:-$HOME/.local}"
files="$(cd "$here" && find bin share -type f | sort)"
refresh_caches() {
  command -v update-desktop-database >/dev/null 2>&1 && update-desktop-database -q "$prefix/share/applications" || true
  command -v gtk-update-icon-cache >/dev/null 2>&1 && gtk-update-icon-cache -q -t "$prefix/share/icons/hicolor" 2>/dev/null || true
}
if [ "${1:-}" = "--uninstall" ]; then
  for f in $files; do rm -f "$prefix/$f"; done
  refresh_caches
  echo "removed Foley from $prefix (the clip library in \$XDG_DATA_HOME/foley is kept)"
  exit 0
fi
for f in $files; do
  mode=644
  case "$f" in bin/*) mode=755 ;; esac
  install -D -m "$mode" "$here/$f" "$prefix/$f"
done
# The menu entry runs the binary by its full path: $prefix/bin need not be on the session's PATH.
sed -i "s|^Exec=foley|Exec=$prefix/bin/foley|" "$prefix/share/applications/io.github.foleyaudio.Foley.desktop"
refresh_caches
echo "installed Foley into $prefix"
case ":$PATH:" in
  *":$prefix/bin:"*) ;;
  *) echo "note: $prefix/bin is not on PATH; add it to run 'foley' from a terminal" ;;
esac
INSTALL
chmod 755 "$dir/install.sh"

out="$target_dir/dist"
mkdir -p "$out"
tarball="$out/$name.tar.gz"
tar -C "$stage" --owner=0 --group=0 --numeric-owner -czf "$tarball" "$name"
echo "$tarball"

#!/usr/bin/env bash
# Checks the Linux tarball: packaging/test-tarball.sh [path/to/foley-VERSION-ARCH-linux.tar.gz]
# (builds it with packaging/linux/build-tarball.sh --no-build when no path is given). Unpacks it,
# runs its install.sh into a temporary PREFIX, validates the installed desktop entry, runs
# `foley --version` and a 2-step generation on the tiny fixture, then `install.sh --uninstall`
# must leave nothing behind. Exits non-zero on the first failure.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
fail() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }
ok() { printf '   ok: %s\n' "$*"; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
if [ $# -ge 1 ]; then
  tarball="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
else
  tarball="$(packaging/linux/build-tarball.sh --no-build | tail -n 1)"
fi
[ -f "$tarball" ] || fail "no tarball at $tarball"
version="$(sed -n '/^version *=/{s/^version *= *"\([^"]*\)".*/\1/p;q;}' Cargo.toml)"
name="$(basename "$tarball" .tar.gz)"
[[ "$name" == foley-$version-*-linux ]] || fail "$name does not carry version $version"
ok "$tarball ($(du -h "$tarball" | cut -f1))"

tar -C "$work" -xzf "$tarball"
[ -x "$work/$name/install.sh" ] || fail "no install.sh in the tarball"
prefix="$work/prefix"
PREFIX="$prefix" HOME="$work/home" "$work/$name/install.sh" >"$work/install.log" || { cat "$work/install.log"; fail "install.sh failed"; }
app_id="io.github.foleyaudio.Foley"
for f in bin/foley "share/applications/$app_id.desktop" "share/metainfo/$app_id.metainfo.xml" \
  "share/icons/hicolor/256x256/apps/$app_id.png" "share/icons/hicolor/scalable/apps/$app_id.svg" \
  share/doc/foley/README.md; do
  [ -f "$prefix/$f" ] || fail "install.sh did not install $f"
done
grep -qx "Exec=$prefix/bin/foley" "$prefix/share/applications/$app_id.desktop" || fail "desktop entry Exec not pointed at $prefix/bin/foley"
if command -v desktop-file-validate >/dev/null 2>&1; then
  desktop-file-validate "$prefix/share/applications/$app_id.desktop" || fail "installed desktop entry is invalid"
fi
ok "install.sh installed $(cd "$prefix" && find . -type f ! -name '*.cache' | wc -l) files into PREFIX"

line="$(HOME="$work/home" "$prefix/bin/foley" --version)"
[[ "$line" =~ ^foley\ $version(\ \(.+\))?$ ]] || fail "foley --version printed '$line'"
ok "foley --version: $line"
HOME="$work/home" XDG_DATA_HOME="$work/home/data" HF_HOME="$work/home/hf" HF_HUB_OFFLINE=1 \
  "$prefix/bin/foley" generate --model tests/fixtures/audioldm2-tiny --prompt rain --steps 2 --seed 0 \
  --out "$work/rain.wav" --quiet || fail "foley generate failed"
[ -s "$work/rain.wav" ] || fail "no WAV written"
ok "foley generate on tests/fixtures/audioldm2-tiny"

PREFIX="$prefix" "$work/$name/install.sh" --uninstall >/dev/null
# (the desktop-database and icon-theme caches are shared with other apps and stay)
left="$(find "$prefix" -type f ! -name mimeinfo.cache ! -name icon-theme.cache)"
[ -z "$left" ] || fail "install.sh --uninstall left: $left"
ok "install.sh --uninstall removed every file"
echo "PASS: $(basename "$tarball")"

#!/usr/bin/env bash
# Renders the one source image, assets/icon.svg, into every icon an installer needs:
#   packaging/icons/png/foley-NxN.png   16 24 32 48 64 128 256 512 1024  (Linux hicolor theme, cargo-packager)
#   packaging/icons/foley.ico           16 24 32 48 64 + 256 (PNG-compressed)  (Windows exe/installer/shortcuts)
#   packaging/icons/foley.icns          16 32 48 128 256 512 1024            (macOS .app bundle)
# The outputs are committed; rerun this after editing assets/icon.svg.
#
# Tools (Debian/Ubuntu: apt-get install librsvg2-bin icoutils icnsutils):
#   rsvg-convert (librsvg2-bin)  SVG -> PNG. ImageMagick's `convert` is not used: it needs a delegate
#                                (librsvg or inkscape) to read SVG, and may not be installed at all.
#   icotool      (icoutils)      PNGs -> .ico
#   png2icns     (icnsutils)     PNGs -> .icns (the 256/512/1024 slots are stored JPEG 2000-compressed,
#                                which macOS reads; `iconutil -c icns` on a Mac makes an equivalent file)
# On macOS: brew install librsvg, and use `iconutil` (see the fallback below) instead of png2icns; icotool
# comes from `brew install icoutils`.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
src="$root/assets/icon.svg"
out="$here/png"

need() { command -v "$1" >/dev/null 2>&1 || { echo "make_icons.sh: '$1' not found ($2)" >&2; exit 1; }; }
need rsvg-convert "apt-get install librsvg2-bin / brew install librsvg"
need icotool "apt-get install icoutils / brew install icoutils"

mkdir -p "$out"
for size in 16 24 32 48 64 128 256 512 1024; do
  rsvg-convert --width "$size" --height "$size" --keep-aspect-ratio "$src" -o "$out/foley-${size}x${size}.png"
done

# Windows: small sizes as BMP entries (best compatibility), 256 as an embedded PNG (smaller; Vista+).
icotool --create --output "$here/foley.ico" \
  "$out/foley-16x16.png" "$out/foley-24x24.png" "$out/foley-32x32.png" \
  "$out/foley-48x48.png" "$out/foley-64x64.png" --raw="$out/foley-256x256.png"

# macOS
if command -v png2icns >/dev/null 2>&1; then
  png2icns "$here/foley.icns" \
    "$out/foley-16x16.png" "$out/foley-32x32.png" "$out/foley-48x48.png" "$out/foley-128x128.png" \
    "$out/foley-256x256.png" "$out/foley-512x512.png" "$out/foley-1024x1024.png" >/dev/null
elif command -v iconutil >/dev/null 2>&1; then
  set_dir="$(mktemp -d)/foley.iconset"
  mkdir -p "$set_dir"
  for size in 16 32 128 256 512; do
    cp "$out/foley-${size}x${size}.png" "$set_dir/icon_${size}x${size}.png"
    cp "$out/foley-$((size * 2))x$((size * 2)).png" "$set_dir/icon_${size}x${size}@2x.png"
  done
  iconutil --convert icns --output "$here/foley.icns" "$set_dir"
  rm -rf "$(dirname "$set_dir")"
else
  echo "make_icons.sh: neither png2icns (apt-get install icnsutils) nor iconutil (macOS) found" >&2
  exit 1
fi

echo "icons written to $here:"
(cd "$here" && ls -l foley.ico foley.icns png/)

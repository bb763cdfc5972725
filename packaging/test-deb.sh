#!/usr/bin/env bash
# End-to-end check of the Debian package (issue 6 "done when"):
#
#   packaging/test-deb.sh [path/to/foley_VERSION-1_amd64.deb]
#
# Without an argument the package is built first (packaging/linux/build-deb.sh). Then:
#   1. the control file: name, version = Cargo.toml's, the declared Depends/Recommends;
#   2. the file list: binary, .desktop, metainfo, hicolor icons, README;
#   3. installs it into a fresh root (dpkg --root with its own admin dir and --force-depends; with
#      `dpkg -x` when not run as root) and validates the installed .desktop and metainfo;
#   4. every declared dependency is installed on this host (dpkg-query), and every library the
#      binary links or dlopens resolves;
#   5. runs the installed `foley --version` and `foley generate` on the tiny AudioLDM 2 fixture;
#   6. opens the installed studio under Xvfb (private HOME) like .ci/run's smoke test: alive after
#      8 s, nothing "panicked", the screen is not blank.
# Exits non-zero at the first failure, saying what failed. Needs: dpkg, Xvfb, xwd, python3.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
app_id="io.github.foleyaudio.Foley"

step() { printf '\n== %s\n' "$*"; }
ok() { printf '   ok: %s\n' "$*"; }
fail() { printf '\nFAIL: %s\n' "$*" >&2; exit 1; }

work="$(mktemp -d)"
xvfb_pid=""
app_pid=""
cleanup() {
  [ -n "$app_pid" ] && kill "$app_pid" 2>/dev/null || true
  [ -n "$xvfb_pid" ] && kill "$xvfb_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

for tool in dpkg-deb dpkg dpkg-query Xvfb xwd python3; do
  command -v "$tool" >/dev/null 2>&1 || fail "'$tool' is not installed (apt-get install dpkg xvfb x11-apps python3)"
done

version="$(sed -n '/^version *=/{s/^version *= *"\([^"]*\)".*/\1/p;q;}' Cargo.toml)"

step "package"
if [ $# -ge 1 ]; then
  deb="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
  [ -f "$deb" ] || fail "$1 does not exist"
else
  deb="$(packaging/linux/build-deb.sh | tail -n 1)" || fail "packaging/linux/build-deb.sh failed"
fi
ok "$deb ($(du -h "$deb" | cut -f1))"

step "1. control file"
field() { dpkg-deb --field "$deb" "$1"; }
[ "$(field Package)" = foley ] || fail "Package is '$(field Package)', expected foley"
case "$(field Version)" in
  "$version" | "$version"-*) ok "Version $(field Version) (Cargo.toml $version)" ;;
  *) fail "Version is '$(field Version)', Cargo.toml has $version" ;;
esac
[ "$(field Architecture)" = "$(dpkg --print-architecture)" ] || fail "Architecture is '$(field Architecture)'"
depends="$(field Depends)"
echo "   Depends: $depends"
echo "   Recommends: $(field Recommends)"
for pkg in libasound2 libc6 libegl1 libgl1 libx11-6 libxcursor1 libxi6 libxkbcommon0 libxkbcommon-x11-0 libwayland-client0; do
  grep -Eq "(^|[ ,|])$pkg([ ,(|]|$)" <<<"$depends" || fail "Depends lacks $pkg"
done
ok "Depends declares ALSA, libc, GL/EGL, X11, xkbcommon and Wayland libraries"

step "2. file list"
dpkg-deb --contents "$deb" | awk '{print $6}' | sed 's|^\./|/|' >"$work/files"
for path in /usr/bin/foley \
  "/usr/share/applications/$app_id.desktop" \
  "/usr/share/metainfo/$app_id.metainfo.xml" \
  "/usr/share/icons/hicolor/scalable/apps/$app_id.svg" \
  "/usr/share/icons/hicolor/48x48/apps/$app_id.png" \
  "/usr/share/icons/hicolor/256x256/apps/$app_id.png" \
  /usr/share/doc/foley/README.md /usr/share/doc/foley/copyright; do
  grep -qx "$path" "$work/files" || fail "the package has no $path"
done
ok "$(grep -vc '/$' "$work/files") files, including the binary, desktop entry, metainfo, icons and docs"

step "3. install into a clean root"
inst="$work/root"
if [ "$(id -u)" -eq 0 ]; then
  admin="$inst/var/lib/dpkg"
  mkdir -p "$admin/info" "$admin/updates" "$admin/triggers"
  touch "$admin/status" "$admin/available"
  dpkg --root="$inst" --admindir="$admin" --force-depends --force-script-chrootless \
    --log=/dev/null --install "$deb" >"$work/dpkg.log" 2>&1 || { cat "$work/dpkg.log"; fail "dpkg --install failed"; }
  [ "$(dpkg-query --admindir="$admin" -W -f='${Status}' foley)" = "install ok installed" ] \
    || fail "dpkg does not list foley as installed in $inst"
  ok "dpkg --root=$inst --install (fresh admin dir, --force-depends)"
else
  dpkg-deb -x "$deb" "$inst"
  ok "not root: unpacked with dpkg-deb -x into $inst"
fi
foley="$inst/usr/bin/foley"
[ -x "$foley" ] || fail "$foley is not executable"
if command -v desktop-file-validate >/dev/null 2>&1; then
  desktop-file-validate "$inst/usr/share/applications/$app_id.desktop" || fail "installed .desktop is invalid"
  ok "desktop-file-validate"
else
  echo "   skipped: desktop-file-validate (apt-get install desktop-file-utils)"
fi
if command -v appstreamcli >/dev/null 2>&1; then
  appstreamcli validate --no-net "$inst/usr/share/metainfo/$app_id.metainfo.xml" >"$work/appstream.log" 2>&1 \
    || { cat "$work/appstream.log"; fail "installed metainfo is invalid"; }
  ok "appstreamcli validate --no-net"
else
  echo "   skipped: appstreamcli (apt-get install appstream)"
fi
# (grep -q on a pipe would SIGPIPE the writer and, with pipefail, read as a miss: capture first)
sections="$(readelf -S "$foley" 2>/dev/null || true)"
if grep -q '\.debug_info' <<<"$sections"; then
  echo "   note: the packaged binary still has debug info ($(du -h "$foley" | cut -f1))"
else
  ok "binary is stripped ($(du -h "$foley" | cut -f1))"
fi

step "4. dependencies on this host"
if command -v apt-get >/dev/null 2>&1; then
  # Every Depends name must exist in the configured archive (a typo would make the .deb uninstallable).
  apt-get install --simulate --no-install-recommends "$deb" >"$work/apt.log" 2>&1 \
    || { cat "$work/apt.log"; fail "apt cannot resolve the package's dependencies"; }
  extra="$(awk '/^Inst / && $2 != "foley" {printf "%s ", $2}' "$work/apt.log")"
  ok "apt-get install --simulate resolves them (would add: ${extra:-nothing})"
fi
missing=()
IFS=',' read -ra groups <<<"$depends"
for group in "${groups[@]}"; do
  satisfied=0
  IFS='|' read -ra alternatives <<<"$group"
  for alternative in "${alternatives[@]}"; do
    alternative="$(xargs <<<"$alternative")"
    name="${alternative%% *}"
    constraint=""
    if [[ "$alternative" =~ \(([<>=]+)\ *([^\)]+)\) ]]; then
      constraint="${BASH_REMATCH[1]} ${BASH_REMATCH[2]}"
    fi
    status="$(dpkg-query -W -f='${Status}' "$name" 2>/dev/null || true)"
    [ "$status" = "install ok installed" ] || continue
    if [ -n "$constraint" ]; then
      installed="$(dpkg-query -W -f='${Version}' "$name")"
      # shellcheck disable=SC2086  # "OP VERSION" splits into the two arguments
      dpkg --compare-versions "$installed" $constraint || continue
    fi
    satisfied=1
    echo "   $(printf '%-28s' "$alternative") installed $(dpkg-query -W -f='${Version}' "$name")"
    break
  done
  [ "$satisfied" -eq 1 ] || missing+=("$(xargs <<<"$group")")
done
[ ${#missing[@]} -eq 0 ] || fail "declared dependencies not installed here: ${missing[*]} (sudo apt-get install ${missing[*]%% *})"
ok "every Depends entry is installed"
linked="$(ldd "$foley")"
if grep -q "not found" <<<"$linked"; then
  echo "$linked"; fail "linked libraries missing"
fi
unresolved=()
ldconfig -p >"$work/ldconfig.txt"
for soname in $(strings -a "$foley" | grep -oE 'lib(X11|X11-xcb|xcb|Xcursor|Xi|Xrender|xkbcommon|xkbcommon-x11|wayland-client|wayland-egl|EGL|GL)\.so\.[0-9]+' | sort -u); do
  grep -q "^[[:space:]]*$soname " "$work/ldconfig.txt" || unresolved+=("$soname")
done
[ ${#unresolved[@]} -eq 0 ] || fail "dlopen'ed libraries not found by the loader: ${unresolved[*]}"
ok "linked and dlopen'ed libraries resolve (ldd, ldconfig -p)"

step "5. command line"
home="$work/home"
mkdir -p "$home"
run() { env HOME="$home" XDG_DATA_HOME="$home/data" XDG_CONFIG_HOME="$home/config" HF_HOME="$home/hf" HF_HUB_OFFLINE=1 "$@"; }
version_line="$(run "$foley" --version)" || fail "foley --version failed"
[[ "$version_line" =~ ^foley\ $version(\ \(.+\))?$ ]] || fail "foley --version printed '$version_line'"
ok "foley --version: $version_line"
fixture="$root/tests/fixtures/audioldm2-tiny"
[ -d "$fixture" ] || fail "$fixture is missing"
wav="$work/rain.wav"
(cd "$work" && run "$foley" generate --model "$fixture" --prompt "rain" --steps 2 --seed 0 --out "$wav" --quiet) \
  >"$work/generate.log" 2>&1 || { cat "$work/generate.log"; fail "foley generate failed"; }
[ -s "$wav" ] || fail "foley generate wrote no $wav"
python3 - "$wav" <<'PY' || fail "the generated file is not a usable WAV"
import math, struct, sys
data = open(sys.argv[1], "rb").read()
assert data[:4] == b"RIFF" and data[8:12] == b"WAVE", "no RIFF/WAVE header"
chunks, pos = {}, 12
while pos + 8 <= len(data):
    kind, size = data[pos:pos + 4], struct.unpack("<I", data[pos + 4:pos + 8])[0]
    chunks[kind] = data[pos + 8:pos + 8 + size]
    pos += 8 + size + (size & 1)
fmt, pcm = chunks[b"fmt "], chunks[b"data"]
tag, channels, rate = struct.unpack("<HHI", fmt[:8])
bits = struct.unpack("<H", fmt[14:16])[0]
frames = len(pcm) // (channels * bits // 8)
assert frames > 0, "no samples"
if bits == 32 and tag in (3, 0xFFFE):
    samples = struct.unpack(f"<{len(pcm) // 4}f", pcm)
    assert all(math.isfinite(x) for x in samples), "NaN or infinite samples"
print(f"   ok: {sys.argv[1]}: {frames} frames, {channels} channel(s), {rate} Hz, {bits}-bit")
PY
ok "foley generate --model tests/fixtures/audioldm2-tiny --steps 2 --seed 0"

step "6. studio under Xvfb"
# Xvfb picks a free display and writes its number to fd 3 once it accepts connections.
Xvfb -displayfd 3 -screen 0 1280x800x24 3>"$work/display" >"$work/xvfb.log" 2>&1 &
xvfb_pid=$!
for _ in $(seq 100); do [ -s "$work/display" ] && break; sleep 0.1; done
[ -s "$work/display" ] || { cat "$work/xvfb.log"; fail "Xvfb did not start"; }
display=":$(tr -d '[:space:]' <"$work/display")"
(cd "$work" && DISPLAY="$display" run "$foley" --model "$fixture") >"$work/studio.log" 2>&1 &
app_pid=$!
sleep 8
kill -0 "$app_pid" 2>/dev/null || { cat "$work/studio.log"; fail "the studio exited early"; }
DISPLAY="$display" xwd -root -silent >"$work/screen.xwd"
if command -v xwininfo >/dev/null 2>&1 && command -v xprop >/dev/null 2>&1; then
  window="$(DISPLAY="$display" xwininfo -root -tree | awk '/"Foley"/ {print $1; exit}')"
  if [ -n "$window" ]; then
    echo "   window $window: $(DISPLAY="$display" xprop -id "$window" WM_CLASS)"
  fi
fi
kill "$app_pid"
wait "$app_pid" 2>/dev/null || true
app_pid=""
if grep -q "panicked" "$work/studio.log"; then
  cat "$work/studio.log"; fail "the studio panicked"
fi
python3 tools/screenshot/xwd_to_png.py "$work/screen.xwd" --check || fail "the studio drew nothing"
if [ -n "${FOLEY_TEST_SCREENSHOT:-}" ]; then
  python3 tools/screenshot/xwd_to_png.py "$work/screen.xwd" "$FOLEY_TEST_SCREENSHOT"
  echo "   screenshot: $FOLEY_TEST_SCREENSHOT"
fi
written="$(cd "$home" && find . -mindepth 1 | sed 's|^\./|~/|' | sort | tr '\n' ' ')"
echo "   written under its private HOME: ${written:-nothing}"
ok "the installed studio opened, stayed up 8 s and drew its window"

printf '\nPASS: %s installs, runs from the command line and opens its studio\n' "$(basename "$deb")"

#!/usr/bin/env bash
# tools/emulate/sapphire-rapids.sh - run a Linux x86-64 binary on an
# EMULATED Intel Sapphire Rapids CPU (AVX-512, AVX512-BF16/FP16, AMX-TILE,
# AMX-BF16, AMX-INT8) so kernels using those instructions can be checked on a
# host that lacks them.
#
# Usage:
#   tools/emulate/sapphire-rapids.sh [OPTIONS] BINARY [ARGS...]
#   tools/emulate/sapphire-rapids.sh [OPTIONS] --selftest
#
# Options (must come before BINARY):
#   -t, --timeout SECS  wall-clock limit for boot + run (default 1800, env
#                       FOLEY_EMU_TIMEOUT); on expiry exit status is 124
#   --cpuinfo           print the guest's /proc/cpuinfo "flags" line first
#   -v, --verbose       show the whole serial console (kernel messages) and
#                       the Bochs log tail at the end
#   --keep              keep the per-run work dir (ISO, serial log, bochs log)
#   --with PATH         also put PATH (a file or directory) into the guest at
#                       the same absolute path, e.g. a test binary's fixtures
#   --selftest          compile tools/emulate/amx_selftest.c and run it
#   --setup             only build/fetch the cached pieces, run nothing
#   -h, --help          this text
#
# Exit status: the binary's exit status inside the guest (128+N if it died
# from signal N); 124 on timeout; 125 if the guest never reported a status
# (boot failure, kernel panic, emulator crash); 2 on usage errors.
#
# How it works (each step is cached under $FOLEY_EMU_CACHE, default
# ~/.cache/foley-emu; delete that directory to start over):
#   1. Bochs 3.0 is built from Debian trixie's source tarball (the bookworm
#      package is 2.7, which has no sapphire_rapids model and no AMX; the
#      trixie binary package needs glibc 2.38 + GTK).  A small patch
#      (bochs-3.0-linux-amx.patch, next to this script) adds XFD emulation,
#      without which Linux refuses to enable AMX, and fixes a boot hang.
#   2. The guest pieces come from the host's Debian archive with
#      `apt-get download` (no root needed): the bookworm kernel (6.1, has
#      AMX support), busybox-static (the guest's whole userland), isolinux
#      (bootloader; Bochs has no -kernel option, so we boot a CD image) and
#      vgabios (Bochs's VGA needs a video ROM; the BIOS itself is SeaBIOS,
#      shipped in the Bochs source tarball).
#   3. Per run: BINARY is packed into an initramfs whose /init runs it and
#      prints a marker line with its exit status, then powers off.  The
#      initramfs + kernel go on an ISO, Bochs boots it with the serial port
#      logged to a file, and this script streams that file and exits with
#      the status from the marker.
#
# Host requirements (Debian 12): build-essential curl xz-utils cpio xorriso
# and a working `apt-get download` (deb.debian.org in sources.list, apt lists
# present).  No root is needed once those are installed.
#
# Environment overrides: FOLEY_EMU_CACHE, FOLEY_EMU_TIMEOUT, FOLEY_EMU_MEM_MB
# (guest RAM, default 1024), FOLEY_EMU_IPS (Bochs instructions-per-second
# used for guest time keeping, default 100000000), FOLEY_EMU_MIRROR (Debian
# mirror for the Bochs source, default http://deb.debian.org/debian),
# FOLEY_EMU_KERNEL_PKG (e.g. linux-image-6.1.0-57-amd64; default: whatever
# linux-image-amd64 depends on), FOLEY_EMU_JOBS (make -j, default 2).

set -euo pipefail

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

cache=${FOLEY_EMU_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/foley-emu}
timeout_s=${FOLEY_EMU_TIMEOUT:-1800}
mem_mb=${FOLEY_EMU_MEM_MB:-1024}
ips=${FOLEY_EMU_IPS:-100000000}
mirror=${FOLEY_EMU_MIRROR:-http://deb.debian.org/debian}
jobs=${FOLEY_EMU_JOBS:-2}

# Pinned Bochs source (Debian trixie).  The .orig tarball name only changes
# with a new upstream version, so it stays valid across Debian revisions.
bochs_orig=bochs_3.0+dfsg.orig.tar.xz
bochs_sha256=78f6c73d4a6472d5130a87ab9dc306d02c7c71ed8e25b3a8ef642e2a7acd282b
bochs_patch=$script_dir/bochs-3.0-linux-amx.patch

# Minimal Bochs: no GUI, no debugger, no plugins; x86-64 with AVX/EVEX/AMX
# (what cpu/cpudb/intel/sapphire_rapids.cc needs; it also wants
# MONITOR/MWAIT and uses PKEYS if present), PCI for the i440FX/ACPI
# (poweroff) and all the speed-ups that do not change semantics.  CET is left
# out on purpose: the guest kernel does not need it.  show-ips is disabled
# because its SIGALRM handler writes to the log with stdio and can deadlock
# Bochs when the alarm interrupts another log write (seen in practice).
bochs_configure_flags=(
  --enable-x86-64 --enable-cpu-level=6 --enable-avx --enable-evex
  --enable-amx --enable-monitor-mwait --enable-protection-keys
  --enable-alignment-check --enable-pci
  --enable-all-optimizations --enable-repeat-speedups
  --enable-fast-function-calls --enable-handlers-chaining
  --enable-trace-linking
  --disable-show-ips
  --with-nogui --without-x11 --without-x
  --disable-debugger --disable-docbook --disable-plugins --disable-usb
  --disable-sb16 --disable-gameport --disable-readline --disable-stats
)

log() { printf '[sapphire-rapids] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 125; }
usage() { sed -n '2,/^$/{s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; }

# ---------------------------------------------------------------- options --
show_cpuinfo=0 verbose=0 keep=0 selftest=0 setup_only=0
extra_paths=()
while (($#)); do
  case $1 in
    -t|--timeout) [[ $# -ge 2 ]] || { usage >&2; exit 2; }; timeout_s=$2; shift 2 ;;
    --timeout=*) timeout_s=${1#*=}; shift ;;
    --cpuinfo) show_cpuinfo=1; shift ;;
    -v|--verbose) verbose=1; shift ;;
    --keep) keep=1; shift ;;
    --with) [[ $# -ge 2 ]] || { usage >&2; exit 2; }; extra_paths+=("$(realpath "$2")"); shift 2 ;;
    --selftest) selftest=1; show_cpuinfo=1; shift ;;
    --setup) setup_only=1; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; break ;;
    -*) log "unknown option $1"; usage >&2; exit 2 ;;
    *) break ;;
  esac
done
[[ $timeout_s =~ ^[0-9]+$ ]] || { log "bad timeout '$timeout_s'"; exit 2; }
if ((!selftest && !setup_only && $# == 0)); then usage >&2; exit 2; fi

# Fail early with an actionable message instead of half-way through a build.
missing=()
for tool in gcc g++ make curl xz cpio xorriso apt-get apt-cache dpkg-deb \
            sha256sum patch flock readelf; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if ((${#missing[@]})); then
  die "missing host tools: ${missing[*]}
  install with: sudo apt-get install build-essential curl xz-utils cpio xorriso"
fi

mkdir -p "$cache"
# Serialise cache population between concurrent runs (fd 9 stays open only
# for the setup phase).
exec 9>"$cache/.lock"
flock 9

# ------------------------------------------------------------ 1. Bochs ----
# The build directory name is derived from everything that affects the
# binary, so editing the patch or the flags triggers a rebuild.
bochs_key=$( { echo "$bochs_sha256"; cat "$bochs_patch"; printf '%s\n' "${bochs_configure_flags[@]}"; } \
             | sha256sum | cut -c1-12)
bochs_dir=$cache/bochs-3.0-$bochs_key
if [[ ! -x $bochs_dir/bochs ]]; then
  log "building Bochs 3.0 into $bochs_dir (one-off, a few minutes; log: $cache/bochs-build.log)"
  build=$cache/bochs-build.tmp
  rm -rf "$build"; mkdir -p "$build"
  if [[ ! -f $cache/$bochs_orig ]]; then
    curl -fsSL --retry 3 -o "$cache/$bochs_orig.part" "$mirror/pool/main/b/bochs/$bochs_orig"
    mv "$cache/$bochs_orig.part" "$cache/$bochs_orig"
  fi
  echo "$bochs_sha256  $cache/$bochs_orig" | sha256sum -c --quiet - \
    || { rm -f "$cache/$bochs_orig"; die "checksum mismatch for $bochs_orig"; }
  tar -C "$build" -xJf "$cache/$bochs_orig"
  start=$SECONDS
  (
    cd "$build/bochs-3.0"
    patch -p1 < "$bochs_patch"
    ./configure "${bochs_configure_flags[@]}"
    make -j"$jobs"
  ) > "$cache/bochs-build.log" 2>&1 || die "Bochs build failed, see $cache/bochs-build.log"
  log "Bochs built in $((SECONDS - start)) s"
  mkdir -p "$bochs_dir.tmp"
  # Only the emulator and the SeaBIOS image are needed afterwards.
  cp "$build/bochs-3.0/bochs" "$build/bochs-3.0/bios/bios.bin-1.13.0" "$bochs_dir.tmp/"
  rm -rf "$bochs_dir"; mv "$bochs_dir.tmp" "$bochs_dir"
  rm -rf "$build"
fi

# ----------------------------------------------------- 2. guest pieces ----
kernel_pkg=${FOLEY_EMU_KERNEL_PKG:-}
if [[ -z $kernel_pkg ]]; then
  # linux-image-amd64 is a metapackage; the image is its (only) dependency.
  kernel_pkg=$(apt-cache depends linux-image-amd64 2>/dev/null \
               | awk '/Depends: linux-image-/ {print $2; exit}')
  [[ -n $kernel_pkg ]] || die "cannot resolve linux-image-amd64 (run apt-get update?)"
fi
guest_dir=$cache/guest-$kernel_pkg
if [[ ! -f $guest_dir/.complete ]]; then
  log "fetching guest packages ($kernel_pkg busybox-static isolinux syslinux-common vgabios)"
  dl=$cache/guest-dl.tmp
  rm -rf "$dl" "$guest_dir"; mkdir -p "$dl/root" "$guest_dir"
  # apt-get download writes into the cwd; APT::Sandbox::User=<us> avoids the
  # "_apt cannot access" warning when running as root.
  (cd "$dl" && apt-get download -q -o APT::Sandbox::User="$(id -un)" \
      "$kernel_pkg" busybox-static isolinux syslinux-common vgabios >/dev/null) \
    || die "apt-get download failed"
  for deb in "$dl"/*.deb; do dpkg-deb -x "$deb" "$dl/root"; done
  cp "$dl"/root/boot/vmlinuz-* "$guest_dir/vmlinuz"
  cp "$dl/root/bin/busybox" "$guest_dir/busybox"
  cp "$dl/root/usr/lib/ISOLINUX/isolinux.bin" "$guest_dir/"
  cp "$dl/root/usr/lib/syslinux/modules/bios/ldlinux.c32" "$guest_dir/"
  cp "$dl/root/usr/share/vgabios/vgabios.bin" "$guest_dir/"
  rm -rf "$dl"
  touch "$guest_dir/.complete"
fi
flock -u 9
exec 9>&-

if ((setup_only)); then
  log "cache ready: $bochs_dir, $guest_dir"
  exit 0
fi

# ----------------------------------------------------------- 3. the run ----
work=$(mktemp -d "${TMPDIR:-/tmp}/foley-emu.XXXXXX")
bochs_pid='' tail_pid=''
# shellcheck disable=SC2317  # invoked via trap
cleanup() {
  if [[ -n $tail_pid ]]; then kill "$tail_pid" 2>/dev/null || true; fi
  if [[ -n $bochs_pid ]] && kill -0 "$bochs_pid" 2>/dev/null; then
    kill "$bochs_pid" 2>/dev/null || true
    sleep 1
    kill -9 "$bochs_pid" 2>/dev/null || true
  fi
  if ((keep)); then log "work dir kept: $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if ((selftest)); then
  # AMX/AVX512-BF16 demo kernel; -static because the guest has no libc.
  gcc -O2 -Wall -static -mamx-tile -mamx-bf16 -mavx512bf16 -mavx512f \
      -o "$work/amx_selftest" "$script_dir/amx_selftest.c" -lm
  set -- "$work/amx_selftest"
fi

binary=$1; shift
[[ -f $binary ]] || { log "no such file: $binary"; exit 2; }
# A dynamically linked binary (a `cargo test --no-run` binary, say) takes its loader and
# shared libraries along, at the paths the host's ldd finds them.
libraries=()
if LC_ALL=C readelf -lW "$binary" 2>/dev/null | grep -q 'program interpreter'; then
  mapfile -t libraries < <(ldd "$binary" | grep -o '/[^ ]*' | sort -u)
fi

# Per-run token so the binary's own output can never fake the markers.
token=$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')
begin_marker="FOLEY_BEGIN $token"
# (not anchored at the start: output without a final newline precedes it)
exit_re="^(.*)FOLEY_EXIT=([0-9]+) $token\$"

# Arguments are embedded in /init as single-quoted shell words.
quoted_args=
for arg in "$@"; do
  quoted_args+=" '${arg//\'/\'\\\'\'}'"
done
# The binary lives in /foley/ (so it cannot clash with /init or /bin) under a
# shell-safe name.
bin_name=$(basename "$binary" | tr -c 'A-Za-z0-9._+\n-' '_')

# initramfs: busybox + the binary + /init.  Uncompressed cpio: the guest
# unpacks it without running a decompressor, which matters at emulated speed.
root=$work/initramfs
mkdir -p "$root"/{bin,dev,proc,sys,tmp,run,foley}
cp "$guest_dir/busybox" "$root/bin/busybox"
cp "$binary" "$root/foley/$bin_name"
for library in "${libraries[@]}"; do
  mkdir -p "$root$(dirname "$library")"
  cp -L "$library" "$root$library"
done
for path in "${extra_paths[@]}"; do
  mkdir -p "$root$(dirname "$path")"
  cp -a "$path" "$root$path"
done
chmod 0755 "$root/foley/$bin_name"
cat > "$root/init" <<EOF
#!/bin/busybox sh
# Generated by tools/emulate/sapphire-rapids.sh
/bin/busybox --install -s /bin
export PATH=/bin HOME=/ TERM=dumb
${RAYON_NUM_THREADS:+export RAYON_NUM_THREADS=$RAYON_NUM_THREADS}
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mount -t tmpfs tmpfs /tmp
if [ $show_cpuinfo = 1 ]; then
  grep -m1 '^model name' /proc/cpuinfo
  grep -m1 '^flags' /proc/cpuinfo
fi
echo '$begin_marker'
cd /foley
/foley/$bin_name$quoted_args
rc=\$?
echo "FOLEY_EXIT=\$rc $token"
# Let the UART drain before powering off (tty writes return before the bytes
# are on the wire): wait until the transmit counter stops moving.
prev=
while :; do
  cur=\$(grep -o 'tx:[0-9]*' /proc/tty/driver/serial | head -n 1)
  [ "\$cur" = "\$prev" ] && break
  prev=\$cur
  sleep 0.2
done
# ACPI S5: Bochs exits on it; the host also kills Bochs once the marker is seen.
poweroff -f
sleep 1000
EOF
chmod 0755 "$root/init"
(cd "$root" && find . -print0 | cpio --null -o -H newc -R 0:0 --quiet) > "$work/iso-initrd"

# Bootable CD: isolinux loads the kernel and initramfs (Bochs cannot load a
# Linux kernel directly).  The kernel command line: serial console; quiet
# unless --verbose; no5lvl because Bochs 3.0 panics on RSM (after the SMI
# Linux triggers to enable ACPI) when CR4.LA57=1 - the guest uses 4-level
# paging, user space still sees LA57 in CPUID; nokaslr/mitigations=off skip
# work that only costs emulated cycles; random.trust_cpu=on avoids waiting
# for entropy; 8250.nr_uarts=1 avoids probing absent UARTs.
cmdline="console=ttyS0,115200 no5lvl nokaslr mitigations=off random.trust_cpu=on 8250.nr_uarts=1 panic=0"
((verbose)) || cmdline+=" quiet"
iso=$work/iso
mkdir -p "$iso/isolinux"
cp "$guest_dir/isolinux.bin" "$guest_dir/ldlinux.c32" "$iso/isolinux/"
cp "$guest_dir/vmlinuz" "$iso/vmlinuz"
mv "$work/iso-initrd" "$iso/initrd"
cat > "$iso/isolinux/isolinux.cfg" <<EOF
DEFAULT linux
PROMPT 0
TIMEOUT 0
LABEL linux
  KERNEL /vmlinuz
  INITRD /initrd
  APPEND $cmdline
EOF
xorriso -as mkisofs -quiet -o "$work/boot.iso" -b isolinux/isolinux.bin \
  -c isolinux/boot.cat -no-emul-boot -boot-load-size 4 -boot-info-table "$iso" \
  2>"$work/xorriso.log" || { cat "$work/xorriso.log" >&2; die "xorriso failed"; }

# Bochs configuration.  cpu model sapphire_rapids = Xeon w9-3475X CPUID with
# AVX-512 (+BF16/FP16/VNNI...), AMX-TILE/INT8/BF16.  ips only maps emulated
# instructions to guest time (clock sync=none: no real-time pacing, so the
# emulator runs flat out).  Serial port 1 goes to a file we stream.
serial=$work/serial.log
bochs_log=$work/bochs.log
: > "$serial"
cat > "$work/bochsrc" <<EOF
cpu: model=sapphire_rapids, count=1, ips=$ips, reset_on_triple_fault=0
memory: guest=$mem_mb, host=$mem_mb
romimage: file="$bochs_dir/bios.bin-1.13.0"
vgaromimage: file="$guest_dir/vgabios.bin"
vga: extension=vbe
pci: enabled=1, chipset=i440fx
clock: sync=none, time0=local
display_library: nogui
ata0: enabled=1, ioaddr1=0x1f0, ioaddr2=0x3f0, irq=14
ata0-master: type=cdrom, path="$work/boot.iso", status=inserted
boot: cdrom
com1: enabled=1, mode=file, dev="$serial"
log: "$bochs_log"
panic: action=fatal
error: action=report
info: action=report
debug: action=ignore
EOF

log "booting $bin_name on emulated Sapphire Rapids (timeout ${timeout_s}s)"
start=$SECONDS
"$bochs_dir/bochs" -q -f "$work/bochsrc" </dev/null >"$work/bochs.stdout" 2>&1 &
bochs_pid=$!

# Stream the serial log line by line.  read -t lets us check the timeout and
# whether Bochs is still alive; partial lines are accumulated in $buf.
fifo=$work/serial.fifo
mkfifo "$fifo"
tail -n +1 -F "$serial" 2>/dev/null > "$fifo" &
tail_pid=$!
exec 3<"$fifo"

status='' in_run=0 buf='' bochs_gone=0 reason=''
while :; do
  if IFS= read -r -t 1 line <&3; then
    line=${buf}${line%$'\r'}; buf=
    if [[ $line =~ $exit_re ]]; then
      status=${BASH_REMATCH[2]}
      [[ -z ${BASH_REMATCH[1]} ]] || printf '%s\n' "${BASH_REMATCH[1]}"
      break
    fi
    if [[ $line == *"$begin_marker"* ]]; then
      in_run=1
      continue
    fi
    if ((in_run || verbose)) || [[ $line == "model name"* || $line == "flags"* ]]; then
      printf '%s\n' "$line"
    fi
    if [[ $line == *"Kernel panic - not syncing"* ]]; then
      reason="guest kernel panic"
      break
    fi
  else
    # Timeout of read (>128) keeps any partial line in $line.
    buf+=$line
    if ((bochs_gone)); then reason="Bochs exited"; break; fi
    if ! kill -0 "$bochs_pid" 2>/dev/null; then
      bochs_gone=1          # drain what is left for one more second
    elif ((SECONDS - start >= timeout_s)); then
      reason="timeout after ${timeout_s}s"
      break
    fi
  fi
done
elapsed=$((SECONDS - start))

if [[ -n $status ]]; then
  # Give Bochs a moment to power off by itself (ACPI), cleanup kills it otherwise.
  for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$bochs_pid" 2>/dev/null || break; sleep 0.2; done
  log "guest exit status $status (boot + run ${elapsed}s)"
else
  log "no exit status from the guest: $reason (after ${elapsed}s)"
  if ((!verbose)); then
    log "last serial console lines:"
    tail -n 30 "$serial" | tr -d '\r' >&2 || true
  fi
fi
if ((verbose)) || [[ -z $status ]]; then
  log "Bochs log tail ($bochs_log):"
  # (the APERF/MPERF MSR reads Linux does on every tick are just noise)
  grep -v -e '^\s*$' -e 'Unknown register 0xe[78]$' "$bochs_log" 2>/dev/null | tail -n 25 >&2 || true
  tail -n 5 "$work/bochs.stdout" >&2 2>/dev/null || true
fi

if [[ -n $status ]]; then exit "$status"; fi
if [[ $reason == timeout* ]]; then exit 124; fi
exit 125

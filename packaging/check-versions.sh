#!/usr/bin/env bash
# Checks that the version written into the packaging files matches Cargo.toml's:
#   packaging/macos/Info.plist   CFBundleShortVersionString and CFBundleVersion
#   packaging/linux/*.metainfo.xml  the newest (first) <release version=...>
#   packaging/linux/changelog.Debian  the top entry (foley (VERSION-REVISION))
# Run by the build scripts; on a version bump edit those three files (new entries go on top).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
version="$(sed -n '/^version *=/{s/^version *= *"\([^"]*\)".*/\1/p;q;}' "$root/Cargo.toml")"
[ -n "$version" ] || { echo "check-versions: no version in Cargo.toml" >&2; exit 1; }
status=0

plist="$root/packaging/macos/Info.plist"
for key in CFBundleShortVersionString CFBundleVersion; do
  value="$(grep -A1 "<key>$key</key>" "$plist" | sed -n 's/.*<string>\(.*\)<\/string>.*/\1/p')"
  if [ "$value" != "$version" ]; then
    echo "check-versions: $plist has $key '$value', Cargo.toml has '$version'" >&2
    status=1
  fi
done

metainfo="$(ls "$root"/packaging/linux/*.metainfo.xml)"
release="$(grep -o '<release version="[^"]*"' "$metainfo" | sed -n 1p | sed 's/.*version="\([^"]*\)"/\1/')"
if [ "$release" != "$version" ]; then
  echo "check-versions: newest <release> in $metainfo is '$release', Cargo.toml has '$version'" >&2
  status=1
fi
changelog="$root/packaging/linux/changelog.Debian"
top="$(sed -n '1{s/^foley (\([^)-]*\)[^)]*).*/\1/p;q;}' "$changelog")"
if [ "$top" != "$version" ]; then
  echo "check-versions: top entry of $changelog is '$top', Cargo.toml has '$version'" >&2
  status=1
fi
[ "$status" -eq 0 ] && echo "check-versions: packaging files match version $version"
exit "$status"

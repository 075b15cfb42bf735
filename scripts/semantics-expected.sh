#!/usr/bin/env bash
# Regenerates tests/fixtures/semantics/CASE/expected.txt from BuildKit v0.11.6
# (the differential suite of issue 11; format and override rules in
# tests/fixtures/semantics/README.md). For each case: copy it to a scratch
# directory, run setup.sh in its context, build it with BuildKit on the
# shared base (built here with imgbuild from _base/, exactly as
# tests/it/semantics.rs builds it, and handed to BuildKit as the named
# context `base` from an OCI layout: there is no registry), list the result
# against the base, apply override.txt, write expected.txt.
#
# usage: scripts/semantics-expected.sh [CASE...]   (default: every case)
# Needs root (setup.sh chowns), runc, and BuildKit from
# ${BUILDKIT_PEER:-../shared/peers/buildkit} (started if it is not running;
# stop it with `kill $(cat /tmp/buildkitd.pid)`). Running it twice changes
# nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
FIX=$PWD/tests/fixtures/semantics
PEER=${BUILDKIT_PEER:-../shared/peers/buildkit}
ADDR=unix:///run/buildkit/buildkitd.sock
EPOCH=1700000000 # the base's SOURCE_DATE_EPOCH, as in tests/it/semantics.rs

"$PEER/start.sh" >&2
nice -n 5 cargo build -q --release --bin imgbuild --example fslist
IMGBUILD=$PWD/target/release/imgbuild
FSLIST=$PWD/target/release/examples/fslist
version=$(buildctl --version | awk '{print $3}')

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# prepare SRC DST: a scratch copy of a case (or _base) with setup.sh run in
# its context directory. Modes are first made what git keeps (0644, 0755
# when executable, directories 0755), whatever the checkout's umask.
prepare() {
  cp -a "$1" "$2"
  mkdir -p "$2/context"
  find "$2/context" -type d -exec chmod 0755 {} +
  find "$2/context" -type f -perm -u+x -exec chmod 0755 {} +
  find "$2/context" -type f ! -perm -u+x -exec chmod 0644 {} +
  if [ -f "$2/setup.sh" ]; then
    (cd "$2/context" && sh ../setup.sh)
  fi
}

prepare "$FIX/_base" "$WORK/base"
SOURCE_DATE_EPOCH=$EPOCH IMGBUILD_PULL=never "$IMGBUILD" --store "$WORK/store" build -q \
  -t base:latest -o "$WORK/base.tar" -f "$WORK/base/Dockerfile" "$WORK/base/context" >/dev/null
mkdir "$WORK/layout"
tar -xf "$WORK/base.tar" -C "$WORK/layout"
digest=$(grep -o '"digest":"sha256:[0-9a-f]*"' "$WORK/layout/index.json" | head -1 | cut -d'"' -f4)

if [ $# -gt 0 ]; then
  cases=("$@")
else
  cases=()
  for d in "$FIX"/*/; do
    name=$(basename "$d")
    case $name in _*) continue ;; esac
    [ -f "$d/Dockerfile" ] && cases+=("$name")
  done
fi

for name in "${cases[@]}"; do
  src=$FIX/$name
  c=$WORK/cases/$name
  mkdir -p "$WORK/cases"
  prepare "$src" "$c"
  header="# BuildKit $version"
  if buildctl --addr "$ADDR" build --progress plain --frontend dockerfile.v0 \
    --local context="$c/context" --local dockerfile="$c" --opt filename=Dockerfile \
    --opt context:base="oci-layout://base@$digest" --oci-layout base="$WORK/layout" \
    --output type=oci,dest="$c/out.tar" >"$c/log" 2>&1; then
    "$FSLIST" "$WORK/base.tar" "$c/out.tar" >"$c/listing"
    result=ok
  else
    echo error >"$c/listing"
    header="$header refuses this build"
    result="BuildKit error: $(grep -m1 -i 'error' "$c/log" | cut -c1-160)"
  fi
  if [ -f "$src/override.txt" ]; then
    "$FSLIST" --override "$src/override.txt" "$c/listing" >"$c/final"
    header="$header; override.txt applied ($(head -1 "$src/override.txt" | sed 's/^# *//'))"
    result="$result, overridden"
  else
    cp "$c/listing" "$c/final"
  fi
  { echo "$header"; cat "$c/final"; } >"$src/expected.txt"
  echo "$name: $result"
  rm -rf "$c"
done

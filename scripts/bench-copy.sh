#!/usr/bin/env bash
# Benchmark COPY-only builds of the `many` (50,000 files) and `big` (1 GiB)
# contexts from ../shared/bench: wall time and peak RSS of a cold build (empty
# store) and of a no-op rebuild, beside the physical reference
# `tar -cf - CTX | pigz -p2 -6`, measured in the same run. Ratios, not times,
# are what to compare: the machine is noisy.
#
# usage: scripts/bench-copy.sh [-p "many big"] [-r RUNS] [-s SCALE]
# env:   BENCH_DIR (default ../shared/bench), BENCH_WORK (default /tmp/imgbuild-bench)
# Exit status 1 when peak RSS of a build exceeds 100 MiB.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BENCH_DIR=${BENCH_DIR:-$(cd "$ROOT/../shared/bench" && pwd)}
WORK=${BENCH_WORK:-/tmp/imgbuild-bench}
PROFILES="many big"
RUNS=3
SCALE=1
while getopts "p:r:s:" o; do
  case $o in
    p) PROFILES=$OPTARG ;;
    r) RUNS=$OPTARG ;;
    s) SCALE=$OPTARG ;;
    *) sed -n '2,12p' "$0"; exit 2 ;;
  esac
done
mkdir -p "$WORK/results"
OUT="$WORK/results/imgbuild-copy-$(date +%Y%m%d-%H%M%S).jsonl"

cargo build --release --locked -q
BIN="$ROOT/target/release/imgbuild"
MEASURE="python3 $BENCH_DIR/measure.py --runs $RUNS --out $OUT"

for p in $PROFILES; do
  ctx="$WORK/ctx-$p-$SCALE"
  if [ ! -f "$ctx/.complete" ]; then
    echo "generating $p context (scale $SCALE) in $ctx ..."
    "$BENCH_DIR/gen-context.sh" "$p" "$ctx" "$SCALE"
    touch "$ctx/.complete"
  fi
  bytes=$(du -sb --exclude=.complete "$ctx" | cut -f1)
  spec="$WORK/spec-$p.toml"
  cat > "$spec" <<SPEC
[build]
context = "ctx-$p-$SCALE"
source_date_epoch = 0
exclude = [".complete"]

[image.bench]
from = "scratch"
[[image.bench.step]]
copy = [{ src = ".", dest = "/ctx/" }]
SPEC
  store="$WORK/store-$p"
  out="$WORK/out-$p.oci.tar"
  build="$BIN --store $store build --progress=quiet -o $out $spec"
  $MEASURE --name "tar|pigz -p2 -6 ($p)" --bytes "$bytes" -- "tar -C $ctx -cf - . | pigz -p2 -6 >/dev/null"
  $MEASURE --name "imgbuild cold ($p)" --bytes "$bytes" --prepare "rm -rf $store $out" -- "$build"
  $MEASURE --name "imgbuild no-op rebuild ($p)" --bytes "$bytes" -- "$build"
done

python3 "$BENCH_DIR/summarize.py" "$OUT"
python3 - "$OUT" <<'PY'
import json, sys
bad = [r for r in map(json.loads, open(sys.argv[1])) if r["name"].startswith("imgbuild") and r["peak_rss_kib"] > 100 * 1024]
for r in bad:
    print("FAIL: %s peak RSS %.1f MiB > 100 MiB" % (r["name"], r["peak_rss_kib"] / 1024))
sys.exit(1 if bad else 0)
PY

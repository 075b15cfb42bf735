#!/usr/bin/env bash
# The issue-5 benchmark: RUN steps, imgbuild beside buildah (the peer), on the
# busybox base of ../shared/bench (make_base), interleaved round by round.
#
#   RUN true       per-step overhead (sandbox, diff capture, layer commit):
#                  (build with 10 x RUN true - build with none) / 10, no cache;
#                  imgbuild <= 25 ms, and >= 5 x less than buildah's
#   10k files      c-run-10k-files.Dockerfile (one RUN writing 10,000 files),
#                  cold: buildah / imgbuild >= 3
#   reproducible   the RUN layer of two --no-cache builds with
#                  SOURCE_DATE_EPOCH set is the same blob
#
# usage: scripts/bench-run.sh [-r ROUNDS] [-d vfs|overlay]
# env: BENCH_DIR (default ../shared/bench), BENCH_WORK (default /tmp/imgbuild-bench)
# Exit status 1 when a target is missed.
set -euo pipefail
ROUNDS=5 DRIVER=overlay
while getopts "r:d:" o; do
  case $o in
    r) ROUNDS=$OPTARG ;;
    d) DRIVER=$OPTARG ;;
    *) sed -n '2,16p' "$0"; exit 2 ;;
  esac
done
# shellcheck source=scripts/bench-env.sh
source "$(dirname "$0")/bench-env.sh" run
cd "$ROOT"
W="$BENCH_WORK/imgbuild-run"
rm -rf "$W"
mkdir -p "$W/ctx"
export SOURCE_DATE_EPOCH=1700000000
make_base

printf 'FROM base\nLABEL bench=run\n' > "$W/none.Dockerfile"
{ printf 'FROM base\nLABEL bench=run\n'; for _ in $(seq 10); do echo 'RUN true'; done; } > "$W/ten.Dockerfile"
TENK="$BENCH_DIR/dockerfiles/c-run-10k-files.Dockerfile"

# imgbuild's store holds the base as `base:latest`, as buildah's short name does.
STORE="$W/store"
"$BIN" --store "$STORE" load "$BENCH_WORK/base.tar" >/dev/null
"$BIN" --store "$STORE" tag localhost/base:latest base:latest
ib() { echo "$BIN --store $STORE build --progress=quiet --no-cache -f $1 -o $W/out.tar $W/ctx"; }

CFG="$DRIVER-chroot"
B=$(buildah_cmd "$CFG")
reset_store "$CFG"
$B pull -q "oci-archive:$BENCH_WORK/base.tar" >/dev/null
bud() { echo "$B bud --layers --no-cache $(bud_flags "$CFG") -q -f $1 -t bench-run $W/ctx"; }

measure() { python3 "$MEASURE" --runs 1 --out "$OUT" --name "$1" -- "$2" >/dev/null; }
# One untimed run of each first: snapshots and page cache warm for both.
for df in "$W/none.Dockerfile" "$W/ten.Dockerfile" "$TENK"; do
  bash -c "$(ib "$df")" >/dev/null; bash -c "$(bud "$df")" >/dev/null
done
for r in $(seq "$ROUNDS"); do
  echo "== round $r/$ROUNDS"
  measure "imgbuild no RUN" "$(ib "$W/none.Dockerfile")"
  measure "imgbuild 10 x RUN true" "$(ib "$W/ten.Dockerfile")"
  measure "buildah no RUN" "$(bud "$W/none.Dockerfile")"
  measure "buildah 10 x RUN true" "$(bud "$W/ten.Dockerfile")"
  measure "imgbuild 10k files" "$(ib "$TENK")"
  measure "buildah 10k files" "$(bud "$TENK")"
done

# Reproducibility: the RUN layer of two more no-cache builds.
layer() {
  "$BIN" --store "$STORE" build --progress=quiet --no-cache -f "$TENK" \
    --metadata-file "$W/meta.json" -o "$W/out.tar" "$W/ctx" >/dev/null
  python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["images"][0]["layers"][-1]["digest"])' "$W/meta.json"
}
L1=$(layer) L2=$(layer)
echo "RUN layer, two builds: $L1 $L2"

python3 - "$OUT" "$L1" "$L2" <<'PY'
import json, statistics, sys
from collections import defaultdict
runs, rss = defaultdict(list), defaultdict(int)
for rec in map(json.loads, open(sys.argv[1])):
    runs[rec["name"]].append(rec["median_s"])
    rss[rec["name"]] = max(rss[rec["name"]], rec["peak_rss_kib"])
med = {k: statistics.median(v) for k, v in runs.items()}
print("\n| measurement | median s | runs | peak RSS MiB |\n|---|---:|---:|---:|")
for k in runs:
    print("| %s | %.3f | %d | %.0f |" % (k, med[k], len(runs[k]), rss[k] / 1024))
ours = (med["imgbuild 10 x RUN true"] - med["imgbuild no RUN"]) / 10 * 1000
peer = (med["buildah 10 x RUN true"] - med["buildah no RUN"]) / 10 * 1000
checks = [
    ("imgbuild per RUN step, ms", ours, "<=", 25.0),
    ("buildah / imgbuild per RUN step", peer / ours if ours > 0 else float("inf"), ">=", 5.0),
    ("buildah / imgbuild, 10k files", med["buildah 10k files"] / med["imgbuild 10k files"], ">=", 3.0),
    ("RUN layer identical across builds", 1.0 if sys.argv[2] == sys.argv[3] else 0.0, ">=", 1.0),
]
print("\nbuildah per RUN step: %.1f ms" % peer)
ok = True
print("\n| target | measured | goal | |\n|---|---:|---:|---|")
for name, v, op, goal in checks:
    good = v <= goal if op == "<=" else v >= goal
    ok &= good
    print("| %s | %.2f | %s %.1f | %s |" % (name, v, op, goal, "ok" if good else "MISSED"))
print("\nraw results:", sys.argv[1])
sys.exit(0 if ok else 1)
PY

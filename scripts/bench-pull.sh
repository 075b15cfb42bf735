#!/usr/bin/env bash
# The issue-6 benchmark: pulling a 1 GiB image over loopback, imgbuild beside
# skopeo, interleaved round by round (the machine is noisy: only the ratio
# measured side by side means anything).
#
#   pull   imgbuild pull REF into an empty store
#          <= 1.2 x skopeo copy docker://REF oci:DIR
#
# The image is `FROM scratch` + `COPY . /ctx/` of ../shared/bench's `big`
# context (4 x 256 MiB), built by imgbuild and pushed to a docker-registry
# the script starts on 127.0.0.1 (a free port, storage under $BENCH_WORK)
# and stops at exit.
#
# usage: scripts/bench-pull.sh [-r ROUNDS]
# env: BENCH_DIR (default ../shared/bench), BENCH_WORK (default /tmp/imgbuild-bench)
# Exit status 1 when the target is missed.
set -euo pipefail
ROUNDS=3
while getopts "r:" o; do
  case $o in
    r) ROUNDS=$OPTARG ;;
    *) sed -n '2,16p' "$0"; exit 2 ;;
  esac
done
# shellcheck source=scripts/bench-env.sh
source "$(dirname "$0")/bench-env.sh" pull
cd "$ROOT"
W="$BENCH_WORK/imgbuild-pull"
mkdir -p "$W"
export SOURCE_DATE_EPOCH=0
BIG=$(ensure_ctx big 1)

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
rm -rf "$W/registry"
mkdir -p "$W/registry"
cat > "$W/registry/config.yml" <<EOF
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $W/registry/data
http:
  addr: 127.0.0.1:$PORT
EOF
docker-registry serve "$W/registry/config.yml" >"$W/registry/log" 2>&1 &
REG_PID=$!
trap 'kill $REG_PID 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  curl -sf "http://127.0.0.1:$PORT/v2/" >/dev/null && break
  sleep 0.1
done

REF="127.0.0.1:$PORT/bench/big:1"
"$BIN" --store "$W/store" build --progress=quiet -t "$REF" \
  -f "$BENCH_DIR/dockerfiles/a-scratch-copy.Dockerfile" -o "$W/big.tar" "$BIG" >/dev/null
"$BIN" --store "$W/store" push -q "$REF" >/dev/null
BYTES=$(du -sb "$W/registry/data" | cut -f1)

measure() { python3 "$MEASURE" --runs 1 --out "$OUT" --bytes "$BYTES" "$@" >/dev/null; }
for r in $(seq "$ROUNDS"); do
  echo "== round $r/$ROUNDS"
  measure --name "skopeo copy" --prepare "rm -rf $W/skopeo; sync" \
    -- "skopeo copy -q --src-tls-verify=false docker://$REF oci:$W/skopeo:big"
  measure --name "imgbuild pull" --prepare "rm -rf $W/pulled; sync" \
    -- "$BIN --store $W/pulled pull -q $REF"
done

python3 - "$OUT" <<'PY'
import json, statistics, sys
from collections import defaultdict
runs, rss = defaultdict(list), defaultdict(int)
for rec in map(json.loads, open(sys.argv[1])):
    runs[rec["name"]].append(rec["median_s"])
    rss[rec["name"]] = max(rss[rec["name"]], rec["peak_rss_kib"])
med = {k: statistics.median(v) for k, v in runs.items()}
print("\n| measurement | median s | runs | peak RSS MiB |\n|---|---:|---:|---:|")
for k in runs:
    print("| %s | %.2f | %d | %.0f |" % (k, med[k], len(runs[k]), rss[k] / 1024))
ratio = med["imgbuild pull"] / med["skopeo copy"]
ok = ratio <= 1.2
print("\n| target | measured | goal | |\n|---|---:|---:|---|")
print("| imgbuild pull / skopeo copy | %.2f | <= 1.2 | %s |" % (ratio, "ok" if ok else "MISSED"))
print("\nraw results:", sys.argv[1])
sys.exit(0 if ok else 1)
PY

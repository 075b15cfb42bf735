#!/usr/bin/env bash
# The issue-4 benchmark: imgbuild beside its references, measured in one run,
# interleaved round by round (the machine is noisy, so only ratios measured
# side by side mean anything). Workloads come from ../shared/bench.
#
#   no-op many   imgbuild rebuild of `many` (50,000 files)  <= 2.0 x find -printf '%s %T@\n'
#   cold big     imgbuild COPY build of `big` (1 GiB)       <= 1.3 x tar -cf - | pigz -p2 -6
#   cold many    buildah bud (same Dockerfile) / imgbuild   >= 5.0
#   multistage   b-multistage on `big`: -j1 / -j2            >= 1.7, byte-identical archives
#   memory       peak RSS of every imgbuild run              < 100 MiB
#
# usage: scripts/bench-build.sh [-r ROUNDS] [-s SCALE] [-d vfs|overlay] [-P]
#   -r  rounds (default 3); each round runs every measurement once
#   -s  context scale (gen-context.sh SCALE, default 1)
#   -d  buildah storage driver for the peer (default vfs, as the issue states)
#   -P  skip the buildah peer (its cold `many` build takes ~1 minute per round)
# env: BENCH_DIR (default ../shared/bench), BENCH_WORK (default /tmp/imgbuild-bench)
# Exit status 1 when a target is missed or the -j1/-j2 archives differ.
set -euo pipefail
ROUNDS=3 SCALE=1 DRIVER=vfs PEER=1
while getopts "r:s:d:P" o; do
  case $o in
    r) ROUNDS=$OPTARG ;;
    s) SCALE=$OPTARG ;;
    d) DRIVER=$OPTARG ;;
    P) PEER=0 ;;
    *) sed -n '2,20p' "$0"; exit 2 ;;
  esac
done
# shellcheck source=scripts/bench-env.sh
source "$(dirname "$0")/bench-env.sh" build
cd "$ROOT"
W="$BENCH_WORK/imgbuild"
mkdir -p "$W"
export SOURCE_DATE_EPOCH=0

MANY=$(ensure_ctx many "$SCALE")
BIG=$(ensure_ctx big "$SCALE")
A="$BENCH_DIR/dockerfiles/a-scratch-copy.Dockerfile"
B="$BENCH_DIR/dockerfiles/b-multistage.Dockerfile"
bytes() { du -sb "$1" | cut -f1; }
MANY_BYTES=$(bytes "$MANY") BIG_BYTES=$(bytes "$BIG")

measure() { # NAME BYTES [--prepare CMD] -- CMD
  local name=$1 b=$2; shift 2
  python3 "$MEASURE" --runs 1 --out "$OUT" --name "$name" --bytes "$b" "$@"
}
imgbuild() { # STORE DOCKERFILE OUT CTX [FLAGS] -> the command line
  echo "$BIN --store $W/$1 build --progress=quiet -f $2 -o $W/$3 ${5:-} $4"
}
PEER_CFG="$DRIVER-chroot"
BUD="$(buildah_cmd "$PEER_CFG") bud --layers $(bud_flags "$PEER_CFG") -q -f $A -t bench-many $MANY"

# The no-op builds need a warm store: one untimed build each first.
bash -c "$(imgbuild store-many "$A" many.tar "$MANY")"
bash -c "$(imgbuild store-big "$A" big.tar "$BIG")"

for r in $(seq "$ROUNDS"); do
  echo "== round $r/$ROUNDS"
  measure "find many" 0 -- "find $MANY -printf '%s %T@\n' >/dev/null"
  measure "imgbuild no-op many" 0 -- "$(imgbuild store-many "$A" many.tar "$MANY")"
  measure "tar|pigz -p2 -6 big" "$BIG_BYTES" -- "tar -C $BIG -cf - . | pigz -p2 -6 >/dev/null"
  measure "imgbuild cold big" "$BIG_BYTES" --prepare "rm -rf $W/cold-big; sync" \
    -- "$(imgbuild cold-big "$A" cold-big.tar "$BIG")"
  measure "imgbuild no-op big" 0 -- "$(imgbuild store-big "$A" big.tar "$BIG")"
  measure "imgbuild cold many" "$MANY_BYTES" --prepare "rm -rf $W/cold-many; sync" \
    -- "$(imgbuild cold-many "$A" cold-many.tar "$MANY")"
  if [ "$PEER" = 1 ]; then
    measure "buildah cold many ($DRIVER)" "$MANY_BYTES" \
      --prepare "source $BENCH_DIR/common.sh; reset_store $PEER_CFG; sync" -- "$BUD"
  fi
  measure "imgbuild multistage big -j1" "$BIG_BYTES" --prepare "rm -rf $W/ms1; sync" \
    -- "$(imgbuild ms1 "$B" ms-j1.tar "$BIG" "-j 1")"
  measure "imgbuild multistage big -j2" "$BIG_BYTES" --prepare "rm -rf $W/ms2; sync" \
    -- "$(imgbuild ms2 "$B" ms-j2.tar "$BIG" "-j 2")"
  cmp "$W/ms-j1.tar" "$W/ms-j2.tar" || { echo "FAIL: -j1 and -j2 archives differ"; exit 1; }
done
[ "$PEER" = 1 ] && { source "$BENCH_DIR/common.sh"; reset_store "$PEER_CFG"; }

python3 - "$OUT" "$DRIVER" <<'PY'
import json, statistics, sys
from collections import defaultdict
runs = defaultdict(list)
rss = defaultdict(int)
for rec in map(json.loads, open(sys.argv[1])):
    runs[rec["name"]].append(rec["median_s"])
    rss[rec["name"]] = max(rss[rec["name"]], rec["peak_rss_kib"])
med = {k: statistics.median(v) for k, v in runs.items()}
print("\n| measurement | median s | runs | peak RSS MiB |\n|---|---:|---:|---:|")
for k in runs:
    print("| %s | %.2f | %d | %.0f |" % (k, med[k], len(runs[k]), rss[k] / 1024))
peer = "buildah cold many (%s)" % sys.argv[2]
checks = [
    ("no-op many / find", med["imgbuild no-op many"] / med["find many"], "<=", 2.0),
    ("cold big / tar|pigz", med["imgbuild cold big"] / med["tar|pigz -p2 -6 big"], "<=", 1.3),
    ("multistage -j1 / -j2", med["imgbuild multistage big -j1"] / med["imgbuild multistage big -j2"], ">=", 1.7),
]
if peer in med:
    checks.append(("buildah / imgbuild cold many", med[peer] / med["imgbuild cold many"], ">=", 5.0))
worst = max(v for k, v in rss.items() if k.startswith("imgbuild")) / 1024
checks.append(("peak RSS of imgbuild, MiB", worst, "<", 100.0))
ok = True
print("\n| target | measured | goal | |\n|---|---:|---:|---|")
for name, v, op, goal in checks:
    good = {"<=": v <= goal, ">=": v >= goal, "<": v < goal}[op]
    ok &= good
    print("| %s | %.2f | %s %.1f | %s |" % (name, v, op, goal, "ok" if good else "MISSED"))
print("\nraw results:", sys.argv[1])
sys.exit(0 if ok else 1)
PY

#!/usr/bin/env bash
# The issue-16 benchmark: imgbuild beside the builders users compare it
# with, measured side by side in one run and interleaved round by round
# (the machine is noisy: only ratios from one run mean anything). Every
# tool writes an image archive, as a release pipeline needs one.
#
#   tools   imgbuild; BuildKit v0.11.6 (../shared/peers/buildkit/start.sh);
#           Buildah (overlay, chroot isolation, its fastest setup here);
#           Docker 20.10's classic builder when docker.io is installed
#   cases   cold / no-op / one-file-changed x `many` / `big` (scratch + COPY),
#           the multi-stage build on `big`, the 10,000-file RUN, the seed
#           (../shared/bench/dockerfiles a, b, c, d; c and d on the `small`
#           context); `big` at scale 0.25
#
# It prints each tool's median per case and its ratio to imgbuild's, and
# writes the table to $BENCH_WORK/results/peers-latest.md (docs/benchmarks.md
# keeps a copy).
#
# usage: scripts/bench-peers.sh [-r ROUNDS] [-b BIG_SCALE] [-m MANY_SCALE] [-t TOOLS] [-c CASES]
#   -r  rounds (default 3), medians over them
#   -b  scale of `big` (default 0.25: 4 x 64 MiB)
#   -m  scale of `many` (default 1: 50,000 files)
#   -t  comma-separated tools (default: imgbuild,buildkit,buildah,docker)
#   -c  comma-separated cases (default: all; see CASES below)
# env: BENCH_DIR (default ../shared/bench), BENCH_WORK (default /tmp/imgbuild-bench)
set -euo pipefail
ROUNDS=3 BIG_SCALE=0.25 MANY_SCALE=1 TOOLS=imgbuild,buildkit,buildah,docker
CASES_ALL="cold-many noop-many one-many cold-big noop-big one-big multistage run10k seed"
CASES=$CASES_ALL
while getopts "r:b:m:t:c:" o; do
  case $o in
    r) ROUNDS=$OPTARG ;;
    b) BIG_SCALE=$OPTARG ;;
    m) MANY_SCALE=$OPTARG ;;
    t) TOOLS=$OPTARG ;;
    c) CASES=${OPTARG//,/ } ;;
    *) sed -n '2,24p' "$0"; exit 2 ;;
  esac
done
# shellcheck source=scripts/bench-env.sh
source "$(dirname "$0")/bench-env.sh" peers
W="$BENCH_WORK/peers"
mkdir -p "$W"
export SOURCE_DATE_EPOCH=0
MANY=$(ensure_ctx many "$MANY_SCALE")
BIG=$(ensure_ctx big "$BIG_SCALE")
SMALL=$(ensure_ctx small 1)
make_base
DF="$BENCH_DIR/dockerfiles"
declare -A DOCKERFILE=(
  [many]=a-scratch-copy.Dockerfile [big]=a-scratch-copy.Dockerfile
  [multistage]=b-multistage.Dockerfile [run10k]=c-run-10k-files.Dockerfile
  [seed]=d-seed.Dockerfile
)
declare -A CONTEXT=([many]=$MANY [big]=$BIG [multistage]=$BIG [run10k]=$SMALL [seed]=$SMALL)

# --- which tools can run here -------------------------------------------------
have() { [[ ",$TOOLS," == *",$1,"* ]]; }
USE=(imgbuild)
if have buildkit; then
  if "$ROOT/../shared/peers/buildkit/start.sh" >/dev/null; then USE+=(buildkit)
  else echo "skipping BuildKit: it did not start (see /tmp/buildkitd.log)" >&2; fi
fi
if have buildah; then
  if command -v buildah >/dev/null; then USE+=(buildah)
  else echo "skipping Buildah: not installed (apt-get install buildah)" >&2; fi
fi
DOCKER_ROOT="$BENCH_WORK/docker-root"
start_docker() {
  docker info >/dev/null 2>&1 && return 0
  pgrep -x containerd >/dev/null || { containerd >/tmp/containerd.log 2>&1 & }
  dockerd --data-root "$DOCKER_ROOT" --bridge=none --iptables=false --ip6tables=false \
    >/tmp/dockerd.log 2>&1 &
  echo $! >"$W/dockerd.pid"
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && return 0; sleep 0.5; done
  return 1
}
if have docker; then
  if ! command -v dockerd >/dev/null; then
    echo "skipping Docker: not installed (apt-get install docker.io)" >&2
  elif start_docker; then USE+=(docker)
  else echo "skipping Docker: dockerd did not start (see /tmp/dockerd.log)" >&2; fi
fi
echo "tools: ${USE[*]}; cases: $CASES; rounds: $ROUNDS" >&2

# --- each tool's build: NAME CASE -> a command line writing an archive --------
# The base image (FROM base) comes from $BENCH_WORK/base.tar in every tool.
LAYOUT="$W/base-layout"
if [ ! -d "$LAYOUT" ]; then skopeo copy -q "oci-archive:$BENCH_WORK/base.tar" "oci:$LAYOUT:latest"; fi
BASE_DIGEST=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["manifests"][0]["digest"])' "$LAYOUT/index.json")
ADDR=unix:///run/buildkit/buildkitd.sock
BUILDAH="$(buildah_cmd overlay-chroot 2>/dev/null || true)"
build_cmd() { # TOOL KIND STORE -> command
  local tool=$1 kind=$2 store=$3 f=${DOCKERFILE[$2]} ctx=${CONTEXT[$2]} out="$W/$1-$2.tar"
  case $tool in
    imgbuild) echo "$BIN --store $W/imgbuild-$store build --progress=quiet -f $DF/$f -o $out $ctx" ;;
    buildkit) echo "buildctl --addr $ADDR build --frontend dockerfile.v0 --local context=$ctx \
      --local dockerfile=$DF --opt filename=$f --oci-layout base=$LAYOUT \
      --opt context:base=oci-layout://base@$BASE_DIGEST --output type=oci,dest=$out" ;;
    buildah) echo "$BUILDAH bud --layers $(bud_flags overlay-chroot) -q -f $DF/$f -t bench-$kind $ctx >/dev/null \
      && $BUILDAH push -q bench-$kind oci-archive:$out:localhost/bench-$kind:latest" ;;
    docker) echo "DOCKER_BUILDKIT=0 docker build -q --network=host -f $DF/$f -t bench-$kind $ctx >/dev/null \
      && docker save bench-$kind -o $out" ;;
  esac
}
# An empty cache (the base image stays, as a pulled base would).
cold_cmd() { # TOOL STORE
  case $1 in
    imgbuild) echo "rm -rf $W/imgbuild-$2 && $BIN --store $W/imgbuild-$2 load $BENCH_WORK/base.tar >/dev/null \
      && $BIN --store $W/imgbuild-$2 tag localhost/base:latest base:latest" ;;
    buildkit) echo "buildctl --addr $ADDR prune --all >/dev/null" ;;
    buildah) echo "source $BENCH_DIR/common.sh; reset_store overlay-chroot; \
      $BUILDAH pull -q oci-archive:$BENCH_WORK/base.tar >/dev/null; $BUILDAH tag localhost/base:latest base:latest" ;;
    docker) echo "docker rmi -f \$(docker images -q --filter reference='bench-*') >/dev/null 2>&1; \
      docker builder prune -af >/dev/null; docker image inspect base:latest >/dev/null 2>&1 \
      || skopeo copy -q oci-archive:$BENCH_WORK/base.tar docker-daemon:base:latest" ;;
  esac
}
touch_cmd() { echo "echo \"changed \$RANDOM \$(date +%s%N)\" > ${CONTEXT[$1]}/p0/touch.txt"; }
measure() { # NAME BYTES [--prepare CMD] -- CMD
  local name=$1 b=$2; shift 2
  python3 "$MEASURE" --runs 1 --out "$OUT" --name "$name" --bytes "$b" "$@"
}

# The no-op and one-file cases rebuild over a warm cache: one untimed build
# each first (their own store, apart from the cold cases').
for t in "${USE[@]}"; do
  for kind in many big; do
    case " $CASES " in *" noop-$kind "*|*" one-$kind "*) ;; *) continue ;; esac
    bash -c "$(cold_cmd "$t" warm-$kind)"
    bash -c "$(build_cmd "$t" "$kind" "warm-$kind")"
  done
done

for r in $(seq "$ROUNDS"); do
  echo "== round $r/$ROUNDS" >&2
  for c in $CASES; do
    for t in "${USE[@]}"; do
      case $c in
        cold-many|cold-big) kind=${c#cold-}
          measure "$t $c" 0 --prepare "$(cold_cmd "$t" cold); sync" -- "$(build_cmd "$t" "$kind" cold)" ;;
        noop-many|noop-big) kind=${c#noop-}
          measure "$t $c" 0 -- "$(build_cmd "$t" "$kind" "warm-$kind")" ;;
        one-many|one-big) kind=${c#one-}
          measure "$t $c" 0 --prepare "$(touch_cmd "$kind")" -- "$(build_cmd "$t" "$kind" "warm-$kind")" ;;
        multistage|run10k|seed)
          measure "$t $c" 0 --prepare "$(cold_cmd "$t" cold); sync" -- "$(build_cmd "$t" "$c" cold)" ;;
      esac
    done
  done
done
if [ -f "$W/dockerd.pid" ]; then kill "$(cat "$W/dockerd.pid")" 2>/dev/null || true; rm -f "$W/dockerd.pid"; fi

python3 - "$OUT" "$RESULTS/peers-latest.md" "$CASES" "${USE[*]}" <<'PY'
import json, statistics, sys
from collections import defaultdict
out, md, cases, tools = sys.argv[1], sys.argv[2], sys.argv[3].split(), sys.argv[4].split()
runs, rss = defaultdict(list), defaultdict(int)
for rec in map(json.loads, open(out)):
    runs[rec["name"]].append(rec["median_s"])
    rss[rec["name"]] = max(rss[rec["name"]], rec["peak_rss_kib"])
med = {k: statistics.median(v) for k, v in runs.items()}
head = "| case | " + " | ".join(tools) + " | fastest peer / imgbuild |"
lines = [head, "|---|" + "---:|" * (len(tools) + 1)]
for c in cases:
    base = med.get("imgbuild " + c)
    cells, peers = [], []
    for t in tools:
        v = med.get("%s %s" % (t, c))
        if v is None:
            cells.append("–")
            continue
        cell = "%.2f s" % v
        if t != "imgbuild" and base:
            cell += " (%.1f×)" % (v / base)
            peers.append(v)
        cells.append(cell)
    ratio = "%.1f×" % (min(peers) / base) if peers and base else "–"
    lines.append("| %s | %s | %s |" % (c, " | ".join(cells), ratio))
lines.append("")
lines.append("Medians of %d round(s); (N×) is the tool's time over imgbuild's. Peak RSS of imgbuild: %.0f MiB." % (
    max(len(v) for v in runs.values()),
    max(v for k, v in rss.items() if k.startswith("imgbuild ")) / 1024))
text = "\n".join(lines) + "\n"
open(md, "w").write(text)
print(text)
print("raw results:", out)
PY

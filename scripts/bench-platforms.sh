#!/usr/bin/env bash
# The issue-14 benchmark: multi-platform builds, measured in one run,
# interleaved round by round (the machine is noisy, so only ratios measured
# side by side mean anything).
#
#   two platforms  cold FROM scratch + COPY . /ctx/ of `big` (a-scratch-copy):
#                  --platform linux/amd64,linux/arm64
#                  <= 1.2 x --platform linux/amd64 (the COPY does not depend
#                  on the platform: built once, one layer in both manifests)
#   emulated RUN   FROM scratch + COPY rootfs/ / (busybox) + N x RUN true,
#                  per-step overhead (t(N) - t(0)) / N, --no-cache, for
#                  linux/arm64 (Debian's busybox-static:arm64 under qemu) and
#                  the host (the host's /bin/busybox), imgbuild beside
#                  BuildKit v0.11.6 (../shared/peers/buildkit): reported, not
#                  a target
#
# usage: scripts/bench-platforms.sh [-r ROUNDS] [-s SCALE] [-n STEPS] [-P]
#   -r  rounds (default 3); each round runs every measurement once
#   -s  context scale of `big` (gen-context.sh SCALE, default 1)
#   -n  RUN true steps of the emulated-RUN Dockerfile (default 10)
#   -P  skip the BuildKit peer
# env: BENCH_DIR (default ../shared/bench), BENCH_WORK (default /tmp/imgbuild-bench),
#      PEERS_DIR (default BENCH_DIR/../peers). buildkitd is started with its
#      start.sh when it is not running, and then stopped at exit.
# Exit status 1 when a target is missed, 2 when this machine cannot run
# linux/arm64 binaries (`imgbuild platforms` says what to install).
set -euo pipefail
ROUNDS=3 SCALE=1 STEPS=10 PEER=1
while getopts "r:s:n:P" o; do
  case $o in
    r) ROUNDS=$OPTARG ;;
    s) SCALE=$OPTARG ;;
    n) STEPS=$OPTARG ;;
    P) PEER=0 ;;
    *) sed -n '2,26p' "$0"; exit 2 ;;
  esac
done
# shellcheck source=scripts/bench-env.sh disable=SC1091 # followed with -x
source "$(dirname "$0")/bench-env.sh" platforms
cd "$ROOT"
W="$BENCH_WORK/imgbuild-platforms"
rm -rf "$W"
mkdir -p "$W/df"
export SOURCE_DATE_EPOCH=0

# The emulated platform must be emulated here, the host's run natively.
EMU=linux/arm64
CAN=$("$BIN" platforms)
HOST=$(awk '$2 == "native" { print $1; exit }' <<<"$CAN")
grep -q "^$EMU  *emulated" <<<"$CAN" || {
  echo "$EMU is not emulated on this machine:" >&2
  grep "^$EMU " <<<"$CAN" >&2
  exit 2
}

BIG=$(ensure_ctx big "$SCALE")
BIG_BYTES=$(du -sb "$BIG" | cut -f1)
A="$BENCH_DIR/dockerfiles/a-scratch-copy.Dockerfile"

# Debian's static arm64 busybox, downloaded once into $BENCH_WORK.
BB_ARM64="$BENCH_WORK/busybox-arm64/bin/busybox"
if [ ! -x "$BB_ARM64" ]; then
  rm -rf "$BENCH_WORK/busybox-arm64"
  mkdir -p "$BENCH_WORK/busybox-arm64/deb"
  (cd "$BENCH_WORK/busybox-arm64/deb" && apt-get download -q busybox-static:arm64 >/dev/null 2>&1) || {
    echo "apt-get download busybox-static:arm64 failed: dpkg --add-architecture arm64 && apt-get update" >&2
    exit 2
  }
  dpkg-deb -x "$BENCH_WORK"/busybox-arm64/deb/busybox-static_*_arm64.deb "$BENCH_WORK/busybox-arm64/x"
  mkdir -p "$(dirname "$BB_ARM64")"
  mv "$BENCH_WORK/busybox-arm64/x/bin/busybox" "$BB_ARM64"
  rm -rf "$BENCH_WORK/busybox-arm64/x"
fi
# One context per platform, rootfs/ = busybox and the applets the steps use.
for p in emu host; do
  mkdir -p "$W/ctx-$p/rootfs/bin"
  if [ $p = emu ]; then cp "$BB_ARM64" "$W/ctx-$p/rootfs/bin/"; else cp /bin/busybox "$W/ctx-$p/rootfs/bin/"; fi
  for a in sh true uname; do ln -s busybox "$W/ctx-$p/rootfs/bin/$a"; done
done
printf 'FROM scratch\nCOPY rootfs/ /\n' > "$W/df/none.Dockerfile"
{ cat "$W/df/none.Dockerfile"; for _ in $(seq "$STEPS"); do echo 'RUN true'; done; } > "$W/df/steps.Dockerfile"
# Checked once before timing, by each builder: the RUN steps really run the platform's userland.
# shellcheck disable=SC2016 # $(uname -m) is for the RUN step's shell
printf 'FROM scratch\nCOPY rootfs/ /\nARG WANT\nRUN test "$(uname -m)" = "$WANT"\n' > "$W/df/check.Dockerfile"
declare -A UNAME=([emu]=aarch64 [host]=$(uname -m)) PLATFORM=([emu]=$EMU [host]=$HOST)

ib_cold() { # STORE PLATFORMS OUT [CPUFILE] -> a cold `big` build's command line
  # CPUFILE: user and system seconds appended, a line per build: this machine's
  # wall times swing 2x under load, the CPU time says whether the work doubled.
  echo "${4:+/usr/bin/time -a -o $W/$4 -f '%U %S' }$BIN --store $W/$1 build --progress=quiet --platform $2 -f $A -o $W/$3 $BIG"
}
ib_run() { # emu|host DOCKERFILE [FLAGS]
  echo "$BIN --store $W/store build --progress=quiet --no-cache --platform ${PLATFORM[$1]} ${3:-} -f $W/df/$2.Dockerfile -o $W/out.tar $W/ctx-$1"
}
BK="buildctl --addr unix:///run/buildkit/buildkitd.sock"
bk_run() { # emu|host DOCKERFILE [FLAGS]
  echo "$BK build --no-cache --frontend dockerfile.v0 --opt platform=${PLATFORM[$1]} \
--opt build-arg:SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH ${3:-} --opt filename=$2.Dockerfile \
--local context=$W/ctx-$1 --local dockerfile=$W/df --output type=oci,dest=$W/bk.tar"
}
measure() { # NAME BYTES [--prepare CMD] -- CMD
  local name=$1 b=$2; shift 2
  python3 "$MEASURE" --runs 1 --out "$OUT" --name "$name" --bytes "$b" "$@"
}

if [ "$PEER" = 1 ]; then
  PEERS_DIR=${PEERS_DIR:-$BENCH_DIR/../peers}
  if ! $BK debug workers >/dev/null 2>&1; then
    "$PEERS_DIR/buildkit/start.sh" >/dev/null
    BK_PID=$(cat /tmp/buildkitd.pid)
    stop_buildkitd() { # and wait: the next run must not find a daemon shutting down
      kill "$BK_PID" 2>/dev/null || return 0
      for _ in $(seq 100); do kill -0 "$BK_PID" 2>/dev/null || return 0; sleep 0.1; done
    }
    trap stop_buildkitd EXIT
  fi
  grep -q "^Platforms:.*$EMU" <<<"$($BK debug workers -v)" || { echo "buildkitd cannot run $EMU" >&2; exit 2; }
fi

# Untimed first: the platform check, then one run of each measured build.
untimed() { bash -c "$1" >"$W/untimed.log" 2>&1 || { tail -20 "$W/untimed.log" >&2; exit 1; }; }
for p in emu host; do
  untimed "$(ib_run $p check "--build-arg WANT=${UNAME[$p]}")"
  for df in none steps; do untimed "$(ib_run $p $df)"; done
  if [ "$PEER" = 1 ]; then
    untimed "$(bk_run $p check "--opt build-arg:WANT=${UNAME[$p]}")"
    for df in none steps; do untimed "$(bk_run $p $df)"; done
  fi
done

# And one cold `big` build, so that the first timed one finds the context in the page cache.
untimed "$(ib_cold cold-warm linux/amd64 one.tar)"
rm -rf "$W/cold-warm"

ONE="imgbuild cold big, linux/amd64"
TWO="imgbuild cold big, linux/amd64,linux/arm64"
for r in $(seq "$ROUNDS"); do
  echo "== round $r/$ROUNDS"
  # Which of the two goes first alternates: drift within a round cancels out.
  order="one two"
  [ $((r % 2)) = 0 ] && order="two one"
  for which in $order; do
    if [ "$which" = one ]; then
      measure "$ONE" "$BIG_BYTES" --prepare "rm -rf $W/cold-one $W/one.tar; sync" \
        -- "$(ib_cold cold-one linux/amd64 one.tar cpu-one)"
    else
      measure "$TWO" "$BIG_BYTES" --prepare "rm -rf $W/cold-two $W/two.tar; sync" \
        -- "$(ib_cold cold-two linux/amd64,linux/arm64 two.tar cpu-two)"
    fi
  done
  for p in emu host; do
    measure "imgbuild ${PLATFORM[$p]} no RUN" 0 -- "$(ib_run $p none)"
    measure "imgbuild ${PLATFORM[$p]} $STEPS x RUN true" 0 -- "$(ib_run $p steps)"
    if [ "$PEER" = 1 ]; then
      measure "buildkit ${PLATFORM[$p]} no RUN" 0 -- "$(bk_run $p none)"
      measure "buildkit ${PLATFORM[$p]} $STEPS x RUN true" 0 -- "$(bk_run $p steps)"
    fi
  done
done

python3 - "$OUT" "$W" "$EMU" "$HOST" "$STEPS" "$ONE" "$TWO" <<'PY'
import json, statistics, sys, tarfile
from collections import defaultdict
out, w, emu, host, steps, one, two = sys.argv[1:]
steps = int(steps)
runs, rss = defaultdict(list), defaultdict(int)
for rec in map(json.loads, open(out)):
    runs[rec["name"]].append(rec["median_s"])
    rss[rec["name"]] = max(rss[rec["name"]], rec["peak_rss_kib"])
med = {k: statistics.median(v) for k, v in runs.items()}
print("\n| measurement | median s | runs | peak RSS MiB |\n|---|---:|---:|---:|")
for k in runs:
    print("| %s | %.3f | %d | %.0f |" % (k, med[k], len(runs[k]), rss[k] / 1024))

# The two-platform archive: an index of one manifest per platform, every
# manifest naming the same single COPY layer.
t = tarfile.open(w + "/two.tar")
blob = lambda d: json.load(t.extractfile("blobs/" + d.replace(":", "/")))
top = json.load(t.extractfile("index.json"))["manifests"]
index = blob(top[0]["digest"]) if len(top) == 1 else {"manifests": top}
layers = {m["platform"]["architecture"]: [l["digest"] for l in blob(m["digest"])["layers"]]
          for m in index.get("manifests", [])}
shared = sorted(layers) == ["amd64", "arm64"] and layers["amd64"] == layers["arm64"] and len(layers["amd64"]) == 1
print("\nlayers per platform in the two-platform archive:",
      ", ".join("%s %s" % (a, " ".join(d[:19] for d in ls)) for a, ls in sorted(layers.items())))

def per_step(builder, platform):
    a, b = "%s %s %d x RUN true" % (builder, platform, steps), "%s %s no RUN" % (builder, platform)
    return (med[a] - med[b]) / steps * 1000 if a in med and b in med else None

SHARED = "one COPY layer shared by both manifests"
checks = [
    ("two-platform / single-platform, cold big", med[two] / med[one], "<=", 1.2),
    (SHARED, 1.0 if shared else 0.0, ">=", 1.0),
]
cpu = {k: statistics.median(sum(map(float, l.split())) for l in open("%s/cpu-%s" % (w, k)))
       for k in ("one", "two")}
print("CPU seconds (user + sys), medians: %s %.2f, %s %.2f" % (one, cpu["one"], two, cpu["two"]))
reports = [("two-platform / single-platform, CPU time", cpu["two"] / cpu["one"], "%.2f")]
ours = {p: per_step("imgbuild", p) for p in (emu, host)}
peer = {p: per_step("buildkit", p) for p in (emu, host)}
for p, kind in ((emu, "emulated"), (host, "native")):
    reports.append(("imgbuild per RUN step, %s (%s), ms" % (p, kind), ours[p], "%.1f"))
    if peer[p] is not None:
        reports.append(("BuildKit per RUN step, %s (%s), ms" % (p, kind), peer[p], "%.1f"))
for p, kind in ((emu, "emulated"), (host, "native")):
    if peer[p] is not None:
        reports.append(("BuildKit / imgbuild per RUN step, %s" % kind,
                        peer[p] / ours[p] if ours[p] > 0 else float("inf"), "%.2f"))
ok = True
print("\n| target | measured | goal | |\n|---|---:|---:|---|")
for name, v, op, goal in checks:
    good = v <= goal if op == "<=" else v >= goal
    ok &= good
    shown = ("yes" if v else "no", "yes") if name == SHARED else ("%.2f" % v, "%s %.1f" % (op, goal))
    print("| %s | %s | %s | %s |" % (name, shown[0], shown[1], "ok" if good else "MISSED"))
for name, v, fmt in reports:
    print("| %s | %s | report | not a target |" % (name, fmt % v))
print("\nraw results:", out)
sys.exit(0 if ok else 1)
PY

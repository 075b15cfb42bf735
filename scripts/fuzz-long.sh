#!/usr/bin/env bash
# The long fuzz runs of issue 10 (item 5), in resumable chunks: input I of
# seed S is made from (S, I) alone, so inputs [0, TOTAL) run as chunks of
# CHUNK inputs are exactly one run of TOTAL inputs. Each finished chunk's
# report is kept under docs/fuzz-results/TARGET-seedS/START.txt, which is
# committed: a chunk with a report is not run again, so a run stopped by a
# reboot or the end of a session goes on where it stopped, on any checkout,
# and the reports are the record of what ran (any chunk can be re-run from
# its seed and start to check it). Then (or with -s alone) prints the sum
# of all finished chunks: inputs, share accepted, kinds and error classes
# reached, failures.
#
# usage: scripts/fuzz-long.sh [-s] [-R] [-n SEED] [-t TOTAL] [-c CHUNK] TARGET
#   TARGET  dockerfile, expand, spec or tar
#   -n      seed (default 10)
#   -t      inputs in all (default 10000000)
#   -c      inputs per chunk (default 250000)
#   -s      only print the summary of the chunks finished so far
#   -R      take the chunks last first: a second runner of the same target
#           on another core meets the first in the middle (a chunk both
#           run gives the same report)
# env: FUZZ_RESULTS, where the reports go (default docs/fuzz-results);
#      FUZZ_DIR, the tmpfs for tar extraction (default /tmp/imgbuild-fuzz-tmpfs,
#      mounted here when it is not a mount point yet: needs root)
# Exit status 1 when any finished chunk had a failure.
set -euo pipefail
SEED=10 TOTAL=10000000 CHUNK=250000 SUMMARY_ONLY=0 REVERSE=0
while getopts "sRn:t:c:" o; do
  case $o in
    s) SUMMARY_ONLY=1 ;;
    R) REVERSE=1 ;;
    n) SEED=$OPTARG ;;
    t) TOTAL=$OPTARG ;;
    c) CHUNK=$OPTARG ;;
    *) sed -n '2,26p' "$0"; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
TARGET=${1:?say which target: dockerfile, expand, spec or tar}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
RES="${FUZZ_RESULTS:-docs/fuzz-results}/$TARGET-seed$SEED"

if [ "$SUMMARY_ONLY" = 0 ]; then
  mkdir -p "$RES"
  cargo build --release --example fuzz --quiet
  FUZZ_DIR=${FUZZ_DIR:-/tmp/imgbuild-fuzz-tmpfs}
  mkdir -p "$FUZZ_DIR"
  if [ "$TARGET" = tar ] && ! mountpoint -q "$FUZZ_DIR"; then
    mount -t tmpfs -o size=1g,nodev,nosuid tmpfs "$FUZZ_DIR"
  fi
  starts=$(seq 0 "$CHUNK" $((TOTAL - 1)))
  [ "$REVERSE" = 1 ] && starts=$(printf '%s\n' $starts | sort -rn)
  for start in $starts; do
    [ -s "$RES/$start.txt" ] && continue
    n=$((TOTAL - start < CHUNK ? TOTAL - start : CHUNK))
    # The report is written under another name and renamed when complete,
    # so a chunk killed halfway runs again.
    tmp="$RES/.$start.$$.tmp"
    target/release/examples/fuzz "$TARGET" --seed "$SEED" --start "$start" --count "$n" \
      --dir "$FUZZ_DIR" --crashes "target/fuzz-crashes/$TARGET" >"$tmp" || true
    if grep -q '^failures: ' "$tmp"; then mv "$tmp" "$RES/$start.txt"; else rm -f "$tmp"; fi
  done
fi

python3 - "$RES" "$TARGET" "$SEED" <<'PY'
import os, re, sys
from collections import Counter
res, target, seed = sys.argv[1:]
inputs = mb = secs = ok = 0
kinds, errors, failures, ranges = Counter(), Counter(), [], []
names = os.listdir(res) if os.path.isdir(res) else []
for name in sorted((n for n in names if n.endswith(".txt")), key=lambda n: int(n[:-4])):
    section = None
    for line in open(os.path.join(res, name)):
        line = line.rstrip("\n")
        if m := re.match(r"seed \d+ inputs (\d+)\.\.(\d+)", line):
            ranges.append((int(m[1]), int(m[2])))
        elif m := re.match(r"inputs (\d+) \((\d+) MB\) in (\d+) s", line):
            inputs += int(m[1]); mb += int(m[2]); secs += int(m[3])
        elif m := re.match(r"accepted (\d+)", line):
            ok += int(m[1])
        elif line.startswith("kinds reached"):
            section = kinds
        elif line.startswith("error classes reached"):
            section = errors
        elif line.startswith("failures:"):
            section = None
        elif line.startswith("  ") and section is not None:
            k, _, v = line.strip().rpartition(": ")
            section[k] += int(v)
        elif line.startswith("  "):
            failures.append(line.strip())
ranges.sort()
covered, gaps, at = 0, [], 0
for a, b in ranges:
    if a > at:
        gaps.append((at, a))
    covered += b - a
    at = max(at, b)
print(f"target {target}, seed {seed}: {inputs} inputs in {len(ranges)} chunks "
      f"(contiguous from 0 to {at}{', gaps ' + str(gaps) if gaps else ''})")
if inputs:
    print(f"{mb} MB generated, {secs} s of runs, {inputs / max(secs, 1):.0f} inputs/s")
    print(f"accepted {ok} ({100 * ok / inputs:.1f}%)")
print(f"kinds reached ({len(kinds)}):")
for k, v in sorted(kinds.items()):
    print(f"  {k}: {v}")
print(f"error classes reached ({len(errors)}):")
for k, v in sorted(errors.items(), key=lambda kv: -kv[1]):
    print(f"  {k}: {v}")
print(f"failures: {len(failures)}")
for f in failures:
    print(f"  {f}")
sys.exit(1 if failures else 0)
PY

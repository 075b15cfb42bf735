#!/usr/bin/env bash
# Runs what the README and docs/ tell a reader to run, so they stay true.
#
# Every ```sh / ```bash block of README.md and docs/*.md runs, in file
# order, in a fresh `bash -euo pipefail` in the project root; every
# ```console block is a transcript: each `$ COMMAND` line runs after the
# file's commands (with imgbuild on PATH), and what it prints (stdout and
# stderr) must match the lines under it, where a line `...` stands for any
# number of lines, `...` inside a line for any text, and 12 or 64 hex digits
# for any image ID or digest. Synopsis blocks that are not commands are
# fenced as ```text and left alone.
#
# A block is skipped only under a marker line right above its fence that
# says why:   <!-- readme-check: skip: REASON -->
# The README's two commands (`make image`, `cargo test --locked`) are never
# skipped. Per file, the script prints how many blocks ran and how many were
# skipped, and why; it exits 1 at the first block that fails, 2 when a rule
# above is broken.
#
# usage: scripts/readme-check.sh [FILE.md...]   (default: README.md docs/*.md)
# env: README_CALLER_RUNS, a command line of a block that the caller runs
#      itself right after this script, in this checkout (.ci/run: the
#      README's test command, so it runs once and is seen in .ci/run); the
#      block runs without that line and the summary says so.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
if [ $# -gt 0 ]; then files=("$@"); else files=(README.md docs/*.md); fi
LOG=$(mktemp -d)
trap 'rm -rf "$LOG"' EXIT

# Extracts the blocks of $1 as files LOG/N.KIND (KIND sh, console or
# skip), a skip's reason in LOG/N.reason, the block's first line in LOG/N.line.
extract() {
  rm -f "$LOG"/[0-9]*
  awk -v dir="$LOG" '
    /^<!-- readme-check: skip: .* -->$/ {
      reason = $0; sub(/^<!-- readme-check: skip: /, "", reason); sub(/ -->$/, "", reason)
      pending = reason; next
    }
    !inblock && /^```(sh|bash|console)[ \t]*$/ {
      n++; inblock = 1
      kind = ($0 ~ /console/) ? "console" : "sh"
      if (pending != "") { kind = "skip"; print pending > (dir "/" n ".reason") }
      print NR > (dir "/" n ".line")
      file = dir "/" n "." kind; printf "" > file
      pending = ""; next
    }
    inblock && /^```[ \t]*$/ { inblock = 0; close(file); next }
    inblock { print > file; next }
    /^[ \t]*$/ { next }
    { pending = "" }
  ' "$1"
}

# Image IDs and digests stand for any: both sides get placeholders.
normalize() {
  sed -E 's/[0-9a-f]{64}/<digest>/g; s/(^|[^0-9a-f])[0-9a-f]{12}([^0-9a-f]|$)/\1<id>\2/g' "$1"
}

# Whether the output in $2 matches the transcript lines in $1.
matches() {
  normalize "$1" >"$LOG/want"
  normalize "$2" >"$LOG/got"
  awk -v wantfile="$LOG/want" '
    function glob(line,   re) {
      re = line
      gsub(/[][\\^$.|?*+(){}]/, "\\\\&", re)
      gsub(/\\\.\\\.\\\./, ".*", re)
      return "^" re "$"
    }
    BEGIN { while ((getline l < wantfile) > 0) want[nw++] = l }
    { got[ng++] = $0 }
    END {
      i = 0; j = 0
      while (i < nw) {
        if (want[i] == "...") {
          i++
          if (i == nw) exit 0
          while (j < ng && got[j] !~ glob(want[i])) j++
          if (j == ng) { print "no line like: " want[i] > "/dev/stderr"; exit 1 }
        } else if (j >= ng || got[j] !~ glob(want[i])) {
          print "expected: " want[i] > "/dev/stderr"
          print "     got: " (j < ng ? got[j] : "(end of output)") > "/dev/stderr"
          exit 1
        }
        i++; j++
      }
      if (j < ng) { print "unexpected: " got[j] > "/dev/stderr"; exit 1 }
    }
  ' "$LOG/got"
}

fail() {
  echo "readme-check: $1" >&2
  exit "${2:-1}"
}

run_transcript() {
  local block=$1 where=$2 cmd="" n=0
  : >"$LOG/expect"
  while IFS= read -r line || [ -n "$line" ]; do
    if [[ $line == '$ '* ]]; then
      [ -n "$cmd" ] && check_command "$cmd" "$where"
      cmd=${line#\$ }
      : >"$LOG/expect"
      n=$((n + 1))
    else
      printf '%s\n' "$line" >>"$LOG/expect"
    fi
  done <"$block"
  [ -n "$cmd" ] && check_command "$cmd" "$where"
  [ "$n" -gt 0 ] || fail "$where: a console block with no \`\$ \` command" 2
}

check_command() {
  local out=$LOG/out
  # Each `$` line is a shell of its own, reading nothing; what it prints is
  # checked, not its exit status.
  bash -c "$1" >"$out" 2>&1 </dev/null || true
  if ! matches "$LOG/expect" "$out" 2>"$LOG/why"; then
    echo "readme-check: $2: \`$1\` printed something else:" >&2
    cat "$LOG/why" >&2
    echo "--- it printed:" >&2
    cat "$out" >&2
    exit 1
  fi
}

total_ran=0
for f in "${files[@]}"; do
  extract "$f"
  ran=0 skipped=0 reasons=""
  transcripts=()
  for block in $(ls "$LOG" | grep -E '^[0-9]+\.(sh|console|skip)$' | sort -n); do
    n=${block%%.*}
    kind=${block#*.}
    where="$f:$(cat "$LOG/$n.line")"
    case $kind in
      skip)
        if grep -qxE 'make image|cargo test --locked' "$LOG/$block" && [ "$f" = README.md ]; then
          fail "$where: the README's main commands may not be skipped" 2
        fi
        skipped=$((skipped + 1))
        reasons+="    skipped $where: $(cat "$LOG/$n.reason")"$'\n'
        ;;
      sh)
        echo "readme-check: running $where" >&2
        if [ -n "${README_CALLER_RUNS:-}" ] && grep -qxF "$README_CALLER_RUNS" "$LOG/$block"; then
          grep -vxF "$README_CALLER_RUNS" "$LOG/$block" >"$LOG/$n.rest" || true
          cp "$LOG/$n.rest" "$LOG/$block.run"
          reasons+="    $where: \`$README_CALLER_RUNS\` is run by the caller next"$'\n'
        else
          cp "$LOG/$block" "$LOG/$block.run"
        fi
        if ! bash -euo pipefail "$LOG/$block.run"; then
          fail "$where: the block failed"
        fi
        ran=$((ran + 1))
        ;;
      console)
        cp "$LOG/$block" "$LOG/t$n"
        transcripts+=("$n")
        ;;
    esac
  done
  for n in "${transcripts[@]}"; do
    where="$f:$(cat "$LOG/$n.line")"
    echo "readme-check: checking the transcript at $where" >&2
    run_transcript "$LOG/t$n" "$where"
    ran=$((ran + 1))
  done
  if [ "$f" = README.md ]; then
    for c in "make image" "cargo test --locked"; do
      grep -qxF "$c" <(cat "$LOG"/*.sh 2>/dev/null) || fail "README.md has no block that runs \`$c\`" 2
    done
  fi
  printf '%s: %d block(s) ran, %d skipped\n%s' "$f" "$ran" "$skipped" "$reasons"
  total_ran=$((total_ran + ran))
done
echo "readme-check: ok, $total_ran block(s) ran"

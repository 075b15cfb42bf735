# Shared setup of the bench-*.sh scripts, sourced after their option parsing:
#   source "$(dirname "$0")/bench-env.sh" NAME
# Defines ROOT (the repository), BENCH_DIR (default ../shared/bench, whose
# common.sh it sources: RESULTS, MEASURE, ensure_ctx, make_base, buildah
# helpers), exports BENCH_WORK (default /tmp/imgbuild-bench), and sets OUT
# (this run's results JSONL, named after NAME) and BIN (a fresh release
# build of imgbuild).
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export BENCH_WORK=${BENCH_WORK:-/tmp/imgbuild-bench}
BENCH_DIR=${BENCH_DIR:-$(cd "$ROOT/../shared/bench" && pwd)}
# shellcheck source=/dev/null
source "$BENCH_DIR/common.sh"
OUT="$RESULTS/imgbuild-$1-$(date +%Y%m%d-%H%M%S).jsonl"
(cd "$ROOT" && cargo build --release --locked -q)
BIN="$ROOT/target/release/imgbuild"

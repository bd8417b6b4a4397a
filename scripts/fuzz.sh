#!/usr/bin/env bash
# Fuzzes the parsers of untrusted input with cargo-fuzz (libFuzzer) on the
# machine's nightly toolchain: worker URLs, the inbound Generate parser,
# HTTP body routing fields, gRPC framing, grpc-timeout, and the radix tree
# against a naive model (fuzz/fuzz_targets/).
#
#   bash scripts/fuzz.sh            # every target for 5 s (what the tests run)
#   bash scripts/fuzz.sh 600        # the long run: 10 minutes a target
#   TARGETS="radix_tree" bash scripts/fuzz.sh 60
#   KEEP=1 bash scripts/fuzz.sh 600 # add the inputs found to fuzz/corpus/
#   FUZZ_BUILD=release bash scripts/fuzz.sh 5   # choose the build yourself
#   FUZZ_STEP=build bash scripts/fuzz.sh 5  # build only (scripts/test.sh builds while
#                                           # the Python tests run), FUZZ_STEP=run: run only
#
# Seeds come from fuzz/corpus/TARGET (committed). A crash stops the run
# with the input in fuzz/artifacts/TARGET/; turn it into a regression test.
# Installs cargo-fuzz (cargo install) when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_EACH=${1:-5}
TARGETS=${TARGETS:-worker_url inbound_generate http_input grpc_framing grpc_timeout radix_tree tool_parser reasoning_parser}

rustup toolchain list | grep -q '^nightly' || {
  echo "fuzz.sh: the nightly toolchain is needed (rustup toolchain install nightly)" >&2
  exit 1
}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
# Optimized, with debug assertions and overflow checks (cargo-fuzz's
# default), without AddressSanitizer: the crate forbids unsafe code, so
# what ASan would catch cannot happen in it, and without it the build (and
# each run) is several times faster. Panics, overflows and failed
# assertions are what the targets look for.
#
# Short runs (a minute a target or less, as the tests run them) use an
# unoptimized build: it compiles in a fraction of the time of cargo-fuzz's
# optimized one (one codegen unit, every dependency instrumented) and a few
# seconds from the corpus need no speed. Long runs build optimized.
if [ -z "${FUZZ_BUILD:-}" ]; then
  if [ "$SECONDS_EACH" -le 60 ]; then FUZZ_BUILD=dev; else FUZZ_BUILD=release; fi
fi
case "$FUZZ_BUILD" in
  dev) build=(--dev) ;;
  release) build=(--release) ;;
  *) echo "fuzz.sh: FUZZ_BUILD is dev or release, not '$FUZZ_BUILD'" >&2; exit 2 ;;
esac
STEP=${FUZZ_STEP:-all}
if [ "$STEP" != run ]; then
  for target in $TARGETS; do
    cargo +nightly fuzz build "${build[@]}" -s none "$target"
  done
fi
[ "$STEP" = build ] && exit 0
for target in $TARGETS; do
  mkdir -p "fuzz/corpus/$target"
  if [ "${KEEP:-0}" = 1 ]; then
    corpus=("fuzz/corpus/$target")
  else
    mkdir -p "$WORK/$target"
    corpus=("$WORK/$target" "fuzz/corpus/$target")
  fi
  echo "fuzz.sh: $target for ${SECONDS_EACH}s"
  cargo +nightly fuzz run "${build[@]}" -s none "$target" "${corpus[@]}" -- \
    -max_total_time="$SECONDS_EACH" -rss_limit_mb=2048 -print_final_stats=0 2>"$WORK/$target.log" || {
    tail -40 "$WORK/$target.log" >&2
    echo "fuzz.sh: $target failed; the input is in fuzz/artifacts/$target/" >&2
    exit 1
  }
  grep -E "^#[0-9]+" "$WORK/$target.log" | tail -1 || true
done
echo "fuzz.sh: every target ran ${SECONDS_EACH}s without a failure"

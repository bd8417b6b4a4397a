#!/usr/bin/env bash
# User-space instructions per proxied call, Switchyard vs nginx, counted by
# valgrind's callgrind: unlike CPU time, the count repeats exactly from run
# to run and does not depend on what else the machine is doing. Each proxy
# runs alone under callgrind (Switchyard with one thread, nginx with one
# process, master_process off) in front of a mock worker; the load
# generator warms it up with 300 calls, the counters are zeroed, and
# CALLS calls (sequential unless CONCURRENCY is set) are counted. The third
# proxy is examples/h2_floor.rs, the cheapest relay on Switchyard's HTTP/2
# stack.
#
# Usage: bash bench/instructions.sh     (CALLS=2000, TOKENS="1 256",
#   TARGETS="switchyard nginx h2-floor"; ROUTER_BIN=another router build;
#   ROUTER_ARGS="--registry etcd://127.0.0.1:2379/bench": more router flags;
#   LOADGEN_ARGS="--deadline-ms 60000" to give every call a deadline;
#   ENGINE=sglang or vllm: the worker a mock of that engine, the calls in
#   its protocol; KEEP=DIR keeps each callgrind profile there, for
#   callgrind_annotate)
#   Per streamed chunk: TOKENS=32 TOKEN_DELAY_MS=1 CONCURRENCY=4 CALLS=400
#   (the worker paces its tokens, so each arrives and is relayed alone, as
#   in real time; unpaced, the slowed-down proxy finds many chunks per read)
# Needs valgrind (Debian package valgrind); installs nginx if missing.
set -euo pipefail
cd "$(dirname "$0")/.."

CALLS=${CALLS:-2000}
CONCURRENCY=${CONCURRENCY:-1}
TOKEN_DELAY_MS=${TOKEN_DELAY_MS:-0}
WORKER_PORT=${WORKER_PORT:-17301}
PROXY_PORT=${PROXY_PORT:-17302}
command -v valgrind >/dev/null || { echo "valgrind is needed (apt-get install valgrind)" >&2; exit 1; }
cargo build --release --bins --example loadgen --example h2_floor

# shellcheck source=bench/lib.sh
. bench/lib.sh
NGINX=$(ensure_nginx)

export RUST_LOG=warn
ENGINE=${ENGINE:-switchyard}
target/release/mock-worker --listen "127.0.0.1:$WORKER_PORT" --name bench --tokens 1 --token-delay-ms "$TOKEN_DELAY_MS" --engine "$ENGINE" >"$WORK/worker.log" 2>&1 &
PIDS+=($!)
wait_port "$WORKER_PORT"

# count NAME TOKENS COMMAND...: instructions per call of COMMAND as a proxy.
count() {
  local name=$1 tokens=$2
  shift 2
  local out="$WORK/callgrind-$name-$tokens"
  valgrind --tool=callgrind --callgrind-out-file="$out" "$@" >"$WORK/$name.log" 2>&1 &
  local pid=$!
  for _ in $(seq 1 300); do (exec 3<>"/dev/tcp/127.0.0.1/$PROXY_PORT") 2>/dev/null && break; sleep 0.1; done
  target/release/examples/loadgen --target "127.0.0.1:$PROXY_PORT" --tokens "$tokens" --concurrency "$CONCURRENCY" --protocol "$ENGINE" ${LOADGEN_ARGS:-} --requests 300 --duration-secs 100000 --progress-secs 0 --json >/dev/null
  callgrind_control -z "$pid" >/dev/null 2>&1
  target/release/examples/loadgen --target "127.0.0.1:$PROXY_PORT" --tokens "$tokens" --concurrency "$CONCURRENCY" --protocol "$ENGINE" ${LOADGEN_ARGS:-} --requests "$CALLS" --duration-secs 100000 --progress-secs 0 --json >"$WORK/load.json"
  callgrind_control -d "$pid" >/dev/null 2>&1
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  [ -n "${KEEP:-}" ] && mkdir -p "$KEEP" && cp "$out".1 "$KEEP/callgrind-$name-$tokens"
  local total
  total=$(callgrind_annotate "$out".1 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
  python3 - "$WORK/load.json" "$name" "$tokens" "$total" "$CALLS" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
name, tokens, total, calls = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
assert r["requests_ok"] == calls, f"{name}: {r['requests_ok']} of {calls} calls succeeded: {r['errors']}"
print(f"| {tokens} | {name} | {total / calls:,.0f} |")
PY
}

nginx_conf "$WORK/nginx" "$PROXY_PORT" "$WORKER_PORT" "worker_processes 1; master_process off;"
echo "| tokens | proxy | user-space instructions per call |"
echo "|---|---|---|"
for tokens in ${TOKENS:-1 256}; do
  for target in ${TARGETS:-switchyard nginx h2-floor}; do
    case $target in
      switchyard) count switchyard "$tokens" "${ROUTER_BIN:-target/release/switchyard}" serve --grpc-listen "127.0.0.1:$PROXY_PORT" \
        --worker "grpc://127.0.0.1:$WORKER_PORT" --model bench --engine "$ENGINE" --worker-threads 1 ${ROUTER_ARGS:-} ;;
      nginx) count nginx "$tokens" "$NGINX" -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" ;;
      h2-floor) count h2-floor "$tokens" target/release/examples/h2_floor --listen "127.0.0.1:$PROXY_PORT" \
        --upstream "127.0.0.1:$WORKER_PORT" ;;
    esac
  done
done

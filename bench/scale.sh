#!/usr/bin/env bash
# Scale checks: (1) the router's idle RSS with 1,000 registered workers;
# (2) the cost of a call with 0 vs 10,000 registered workers of other models
# (same load generator run, same single worker of the model under test).
#
# Usage: bash bench/scale.sh      (DURATION=10 seconds per load run)
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10}
WORKER_PORT=${WORKER_PORT:-17201}
ROUTER_PORT=${ROUTER_PORT:-17202}
cargo build --release --bins --example loadgen

# shellcheck source=bench/lib.sh
. bench/lib.sh

# A config with the bench worker plus $1 workers of 100 other models. The
# others point at closed ports on 127.0.0.2: they are health-checked (and
# fail) like any dead worker would be.
config() {
  local file="$WORK/config-$1.toml"
  {
    echo "grpc_listen = \"127.0.0.1:$ROUTER_PORT\""
    if [ -n "${2:-}" ]; then
      # Checks off for the duration (the first round runs at startup), so
      # the load run measures calls, not the probing of 10,000 dead workers.
      printf '[health_check]\ninterval_ms = 600000\ntimeout_ms = 1000\n'
    fi
    echo "[[workers]]"
    echo "url = \"grpc://127.0.0.1:$WORKER_PORT\""
    echo "model_id = \"bench\""
    for i in $(seq 1 "$1"); do
      echo "[[workers]]"
      echo "url = \"grpc://127.0.0.2:$((20000 + i))\""
      echo "model_id = \"other-$((i % 100))\""
    done
  } >"$file"
  echo "$file"
}

start_router() {
  RUST_LOG=warn target/release/switchyard serve --config "$1" >"$WORK/router.log" 2>&1 &
  ROUTER_PID=$!
  PIDS+=("$ROUTER_PID")
  wait_port "$ROUTER_PORT"
}

stop_router() {
  kill "$ROUTER_PID"
  wait "$ROUTER_PID" 2>/dev/null || true
}

RUST_LOG=warn target/release/mock-worker --listen "127.0.0.1:$WORKER_PORT" --name bench --tokens 1 >/dev/null 2>&1 &
PIDS+=($!)
wait_port "$WORKER_PORT"

echo "== idle RSS with 1,000 registered workers (after two health-check rounds)"
start_router "$(config 1000)"
sleep 11
echo "router VmRSS: $(awk '/VmRSS/ {printf "%.1f MiB", $2/1024}' /proc/$ROUTER_PID/status)," \
  "VmHWM: $(awk '/VmHWM/ {printf "%.1f MiB", $2/1024}' /proc/$ROUTER_PID/status)"
stop_router

echo "== call cost with 0 vs 10,000 workers of other models (concurrency 64, 1 token)"
for others in 0 10000; do
  start_router "$(config "$others" quiet)"
  sleep 3
  before=$(awk '{print $14 + $15}' /proc/$ROUTER_PID/stat)
  target/release/examples/loadgen --target "127.0.0.1:$ROUTER_PORT" --model bench --concurrency 64 \
    --duration-secs "$DURATION" --progress-secs 0 --json >"$WORK/load.json"
  after=$(awk '{print $14 + $15}' /proc/$ROUTER_PID/stat)
  python3 - "$WORK/load.json" "$others" "$((after - before))" "$(getconf CLK_TCK)" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
cpu = int(sys.argv[3]) / int(sys.argv[4]) * 1e6 / max(r["requests_ok"], 1)
print(f"other-model workers {int(sys.argv[2]):>6}: {r['throughput_rps']:8.0f} req/s  "
      f"p50 {r['latency_ms']['p50']:.3f} ms  p99 {r['latency_ms']['p99']:.3f} ms  "
      f"router CPU {cpu:.1f} µs/req  errors {r['errors']}")
PY
  stop_router
done

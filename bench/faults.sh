#!/usr/bin/env bash
# Two figures of issue 14, on release binaries and loopback:
#
# 1. The cost of a refused call under overload: the router with
#    limits.max_in_flight = 1 and no queue, its one permit held by a call to
#    a hung worker, then REFUSED calls (concurrency 16) that are all refused
#    with RESOURCE_EXHAUSTED; router CPU (utime+stime from /proc) per call.
# 2. The client-visible error rate when a worker is killed (SIGKILL) under
#    load: two mock-worker processes, concurrency 64, streams of 64 tokens a
#    token every 5 ms, one worker killed after KILL_AFTER seconds of DURATION.
#
# Usage: bash bench/faults.sh   (REFUSED=20000 DURATION=8 KILL_AFTER=3)
set -euo pipefail
cd "$(dirname "$0")/.."
REFUSED=${REFUSED:-20000}
DURATION=${DURATION:-8}
KILL_AFTER=${KILL_AFTER:-3}
cargo build --release --bins --example loadgen
# shellcheck source=bench/lib.sh
. bench/lib.sh
export RUST_LOG=warn
LOADGEN=target/release/examples/loadgen
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# 1. Refusals.
target/release/mock-worker --listen 127.0.0.1:17401 --name hung --hang >"$WORK/hung.log" 2>&1 &
PIDS+=($!)
wait_port 17401
cat >"$WORK/limit.toml" <<TOML
[limits]
max_in_flight = 1
queue_size = 0
TOML
target/release/switchyard serve --config "$WORK/limit.toml" --grpc-listen 127.0.0.1:17402 \
  --worker grpc://127.0.0.1:17401 --model m --engine switchyard --worker-threads 1 >"$WORK/router.log" 2>&1 &
ROUTER=$!
PIDS+=($ROUTER)
wait_port 17402
# The call that holds the permit (its worker never answers).
$LOADGEN --target 127.0.0.1:17402 --requests 1 --duration-secs 100000 --progress-secs 0 --json >/dev/null 2>&1 &
PIDS+=($!)
sleep 1
before=$(cpu_ticks "$ROUTER")
$LOADGEN --target 127.0.0.1:17402 --requests "$REFUSED" --concurrency 16 --duration-secs 100000 \
  --progress-secs 0 --json >"$WORK/refused.json"
after=$(cpu_ticks "$ROUTER")
python3 - "$WORK/refused.json" "$before" "$after" "$REFUSED" "$(getconf CLK_TCK)" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
before, after, n, hz = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
assert r["requests_ok"] == 0, r
print(f"refused calls: {n} ({r['errors']}), router CPU {(after - before) / hz * 1e6 / n:.1f} us per refused call")
PY
kill "$ROUTER" 2>/dev/null || true

[ "${ONLY_REFUSED:-0}" = 1 ] && exit 0

# 2. A worker killed under load.
target/release/mock-worker --listen 127.0.0.1:17411 --name a --tokens 64 --token-delay-ms 5 >"$WORK/a.log" 2>&1 &
DOOMED=$!
PIDS+=($DOOMED)
target/release/mock-worker --listen 127.0.0.1:17412 --name b --tokens 64 --token-delay-ms 5 >"$WORK/b.log" 2>&1 &
PIDS+=($!)
wait_port 17411
wait_port 17412
target/release/switchyard serve --grpc-listen 127.0.0.1:17413 --worker grpc://127.0.0.1:17411 \
  --worker grpc://127.0.0.1:17412 --model m --engine switchyard >"$WORK/router2.log" 2>&1 &
PIDS+=($!)
wait_port 17413
( sleep "$KILL_AFTER"; kill -9 "$DOOMED" ) &
$LOADGEN --target 127.0.0.1:17413 --concurrency 64 --tokens 64 --duration-secs "$DURATION" \
  --progress-secs 0 --json >"$WORK/kill.json"
python3 - "$WORK/kill.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
total = r["requests_ok"] + sum(r["errors"].values()) if isinstance(r["errors"], dict) else r["requests_ok"] + r["errors"]
failed = total - r["requests_ok"]
print(f"worker killed at concurrency 64: {failed} of {total} calls failed ({100 * failed / total:.2f}%): {r['errors']}")
PY

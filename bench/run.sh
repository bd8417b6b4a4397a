#!/usr/bin/env bash
# Side-by-side proxy cost: (a) direct to a mock worker, (b) through Switchyard,
# (c) through nginx with grpc_pass, (d) through examples/h2_floor.rs (the
# cheapest relay on Switchyard's HTTP/2 stack: what the stack alone costs),
# each a separate process, in one run.
# For concurrency 1 and 64, one-token responses and 256-token streams, it
# reports throughput, p50/p99 latency added over direct, the proxy's CPU time
# per request (utime+stime from /proc) and its peak RSS (VmHWM).
#
# Usage: bash bench/run.sh            (DURATION=10 seconds per measurement;
#        ROUTER_ARGS and NGINX_WORKERS: see below; TOKENS="1 256" and
#        CONCURRENCY="1 64" pick the cases; TARGETS="direct switchyard
#        nginx h2-floor" the proxies, direct first; ENGINE=sglang or vllm
#        makes the worker a mock of that engine and the load its protocol;
#        ROUTER_BIN=another router build)
# Installs nginx from Debian's packages if it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10}
WORKER_PORT=${WORKER_PORT:-17101}
ROUTER_PORT=${ROUTER_PORT:-17102}
NGINX_PORT=${NGINX_PORT:-17103}
FLOOR_PORT=${FLOOR_PORT:-17104}
OUT=${OUT:-bench/results}
# Both proxies get one thread by default: on a 2-core machine the load
# generator and the worker need the other core, and a one-thread proxy
# avoids cross-thread wakeups. Set ROUTER_ARGS="" and NGINX_WORKERS=auto to
# compare the multi-threaded defaults instead.
ROUTER_ARGS=${ROUTER_ARGS---worker-threads 1}
NGINX_WORKERS=${NGINX_WORKERS:-1}

cargo build --release --bins --example loadgen --example h2_floor

# shellcheck source=bench/lib.sh
. bench/lib.sh
NGINX=$(ensure_nginx)

ENGINE=${ENGINE:-switchyard}
RUST_LOG=warn target/release/mock-worker --listen "127.0.0.1:$WORKER_PORT" --name bench --tokens 1 --engine "$ENGINE" >"$WORK/worker.log" 2>&1 &
PIDS+=($!)
WORKER_PID=$!
RUST_LOG=warn "${ROUTER_BIN:-target/release/switchyard}" serve --grpc-listen "127.0.0.1:$ROUTER_PORT" \
  --worker "grpc://127.0.0.1:$WORKER_PORT" --model bench --engine "$ENGINE" ${ROUTER_ARGS:-} >"$WORK/router.log" 2>&1 &
PIDS+=($!)
ROUTER_PID=$!

nginx_conf "$WORK/nginx" "$NGINX_PORT" "$WORKER_PORT" "worker_processes $NGINX_WORKERS;"
"$NGINX" -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" &
PIDS+=($!)
NGINX_PID=$!

wait_port "$WORKER_PORT"
target/release/examples/h2_floor --listen "127.0.0.1:$FLOOR_PORT" --upstream "127.0.0.1:$WORKER_PORT" >"$WORK/floor.log" 2>&1 &
PIDS+=($!)
FLOOR_PID=$!
wait_port "$ROUTER_PORT"; wait_port "$NGINX_PORT"; wait_port "$FLOOR_PORT"

# CPU ticks and peak RSS (kB) of a process and its children (nginx workers).
family() { echo "$1"; pgrep -P "$1" || true; }
cpu_ticks() { local t=0; for p in $(family "$1"); do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo "$t"; }
peak_rss_kb() { local t=0; for p in $(family "$1"); do t=$((t + $(awk '/VmHWM/ {print $2}' "/proc/$p/status"))); done; echo "$t"; }

mkdir -p "$OUT"
RESULTS="$OUT/run-$(date -u +%Y%m%dT%H%M%SZ).jsonl"
: >"$RESULTS"
for tokens in ${TOKENS:-1 256}; do
  for conc in ${CONCURRENCY:-1 64}; do
    for target in ${TARGETS:-direct switchyard nginx h2-floor}; do
      case $target in
        direct) port=$WORKER_PORT; pid=$WORKER_PID ;;
        switchyard) port=$ROUTER_PORT; pid=$ROUTER_PID ;;
        nginx) port=$NGINX_PORT; pid=$NGINX_PID ;;
        h2-floor) port=$FLOOR_PORT; pid=$FLOOR_PID ;;
      esac
      before=$(cpu_ticks "$pid")
      target/release/examples/loadgen --target "127.0.0.1:$port" --concurrency "$conc" --tokens "$tokens" --protocol "$ENGINE" \
        --duration-secs "$DURATION" --progress-secs 0 --json >"$WORK/one.json"
      after=$(cpu_ticks "$pid")
      python3 - "$WORK/one.json" "$target" "$((after - before))" "$(getconf CLK_TCK)" "$(peak_rss_kb "$pid")" >>"$RESULTS" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
r["name"], ticks, hz, rss = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
r["proxy_cpu_us_per_request"] = ticks / hz * 1e6 / max(r["requests_ok"], 1)
r["proxy_peak_rss_mib"] = rss / 1024
print(json.dumps(r))
PY
      echo "measured $target: concurrency $conc, $tokens tokens" >&2
    done
  done
done

python3 - "$RESULTS" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print(f"results: {sys.argv[1]}\n")
print("| tokens | conc | target | req/s | tokens/s | p50 ms | p99 ms | added p50 ms | added p99 ms | process CPU µs/req | peak RSS MiB | errors |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
direct = {(r["tokens_per_request"], r["concurrency"]): r for r in rows if r["name"] == "direct"}
for r in rows:
    d = direct[(r["tokens_per_request"], r["concurrency"])]
    lat, dl = r["latency_ms"], d["latency_ms"]
    added = lambda k: "-" if r["name"] == "direct" else f"{lat[k] - dl[k]:.3f}"
    print(f"| {r['tokens_per_request']} | {r['concurrency']} | {r['name']} | {r['throughput_rps']:.0f} | {r['tokens_per_s']:.0f} | "
          f"{lat['p50']:.3f} | {lat['p99']:.3f} | {added('p50')} | {added('p99')} | "
          f"{r['proxy_cpu_us_per_request']:.1f} | {r['proxy_peak_rss_mib']:.1f} | {r['errors'] or ''} |")
PY

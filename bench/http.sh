#!/usr/bin/env bash
# The HTTP hop, side by side in one run: nginx as two HTTP workers (a fixed
# JSON answer to POST /generate), driven by wrk directly, through
# Switchyard's HTTP router, and through nginx as a reverse proxy (proxy_pass
# over keep-alive, one worker process: the reference for what a mature
# proxy costs on this machine). Reports requests/s, p50/p99 latency and
# each proxy's CPU time per request (utime+stime from /proc).
#
# Usage: bash bench/http.sh   (DURATION=10 seconds per run; CONNECTIONS=16;
#        RUNS=3 rounds of direct, switchyard, nginx-proxy; ROUTER_ARGS="--worker-threads 1";
#        ROUTER_BIN=path to measure another build of the router;
#        BASELINE_BIN=path to measure a second build beside it, as "baseline")
# Installs nginx and wrk from Debian's packages if they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-16}
RUNS=${RUNS:-3}
W1=${W1:-17201}
W2=${W2:-17202}
ROUTER_HTTP=${ROUTER_HTTP:-17203}
ROUTER_GRPC=${ROUTER_GRPC:-17204}
PROXY=${PROXY:-17205}
BASE_HTTP=${BASE_HTTP:-17206}
BASE_GRPC=${BASE_GRPC:-17207}
ROUTER_ARGS=${ROUTER_ARGS---worker-threads 1}

cargo build --release --bins

# shellcheck source=bench/lib.sh
. bench/lib.sh
NGINX=$(ensure_nginx)
if ! command -v wrk >/dev/null 2>&1; then
  SUDO=$([ "$(id -u)" -eq 0 ] && echo "" || echo sudo)
  $SUDO apt-get install -y -qq wrk >&2
fi

mkdir -p "$WORK/nginx/logs"
cat >"$WORK/nginx/nginx.conf" <<NGINX
worker_processes 1;
daemon off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $WORK/nginx;
  keepalive_requests 100000000;
  keepalive_timeout 300s;
  server {
    listen 127.0.0.1:$W1;
    listen 127.0.0.1:$W2;
    location = /generate {
      default_type application/json;
      return 200 '{"text":" Paris.","meta_info":{"id":"x","finish_reason":{"type":"length","length":2},"prompt_tokens":6,"completion_tokens":2}}';
    }
    location = /health { return 200 'ok'; }
  }
}
NGINX
"$NGINX" -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" &
PIDS+=($!)
mkdir -p "$WORK/proxy/logs"
cat >"$WORK/proxy/nginx.conf" <<NGINX
worker_processes 1;
daemon off;
pid $WORK/proxy/nginx.pid;
error_log $WORK/proxy/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $WORK/proxy;
  keepalive_requests 100000000;
  keepalive_timeout 300s;
  upstream workers { server 127.0.0.1:$W1; server 127.0.0.1:$W2; keepalive 64; keepalive_requests 100000000; }
  server {
    listen 127.0.0.1:$PROXY;
    location / { proxy_pass http://workers; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_buffering off; }
  }
}
NGINX
"$NGINX" -p "$WORK/proxy" -c "$WORK/proxy/nginx.conf" &
PIDS+=($!)
PROXY_PID=$!
wait_port "$W1"; wait_port "$W2"; wait_port "$PROXY"

cat >"$WORK/router.toml" <<TOML
[[workers]]
url = "http://127.0.0.1:$W1"
model_id = "bench"
[[workers]]
url = "http://127.0.0.1:$W2"
model_id = "bench"
TOML
# shellcheck disable=SC2086
RUST_LOG=warn "${ROUTER_BIN:-target/release/switchyard}" serve --config "$WORK/router.toml" \
  --grpc-listen "127.0.0.1:$ROUTER_GRPC" --http-listen "127.0.0.1:$ROUTER_HTTP" $ROUTER_ARGS \
  >"$WORK/router.log" 2>&1 &
PIDS+=($!)
ROUTER_PID=$!
wait_port "$ROUTER_HTTP"
TARGETS="switchyard nginx-proxy"
if [ -n "${BASELINE_BIN:-}" ]; then
  # shellcheck disable=SC2086
  RUST_LOG=warn "$BASELINE_BIN" serve --config "$WORK/router.toml" \
    --grpc-listen "127.0.0.1:$BASE_GRPC" --http-listen "127.0.0.1:$BASE_HTTP" $ROUTER_ARGS \
    >"$WORK/baseline.log" 2>&1 &
  PIDS+=($!)
  BASE_PID=$!
  wait_port "$BASE_HTTP"
  TARGETS="baseline switchyard nginx-proxy"
fi

cat >"$WORK/post.lua" <<'LUA'
wrk.method = "POST"
wrk.body = '{"model":"bench","text":"The capital of France is","sampling_params":{"max_new_tokens":2}}'
wrk.headers["Content-Type"] = "application/json"
LUA

# CPU ticks of a process and its children (nginx's worker).
cpu_ticks() { local t=0; for p in $1 $(pgrep -P "$1" || true); do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo "$t"; }
# One wrk run against PORT: "req/s p50_ms p99_ms requests".
run() {
  wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" --latency -s "$WORK/post.lua" "http://127.0.0.1:$1/generate" >"$WORK/wrk.txt"
  python3 - "$WORK/wrk.txt" <<'PY'
import re, sys
t = open(sys.argv[1]).read()
def ms(v):
    n, unit = float(re.match(r"[\d.]+", v).group()), re.sub(r"[\d.]+", "", v)
    return n * {"us": 1e-3, "ms": 1, "s": 1e3}[unit]
if "50%" not in t: sys.exit("wrk failed:\n" + t)
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
p50 = ms(re.search(r"^\s+50%\s+(\S+)", t, re.M).group(1))
p99 = ms(re.search(r"^\s+99%\s+(\S+)", t, re.M).group(1))
reqs = int(re.search(r"(\d+) requests in", t).group(1))
errors = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
print(f"{rps:.0f} {p50:.3f} {p99:.3f} {reqs} {errors.group(1) if errors else 0}")
PY
}

echo "| run | target | req/s | p50 ms | p99 ms | proxy CPU µs/req | ratio to direct | added p50 ms | non-2xx |"
echo "|---|---|---|---|---|---|---|---|---|"
for i in $(seq 1 "$RUNS"); do
  read -r d_rps d_p50 d_p99 _ d_err < <(run "$W1")
  echo "| $i | direct | $d_rps | $d_p50 | $d_p99 | - | - | - | $d_err |"
  for target in $TARGETS; do
    case $target in
      baseline) port=$BASE_HTTP; pid=$BASE_PID ;;
      switchyard) port=$ROUTER_HTTP; pid=$ROUTER_PID ;;
      nginx-proxy) port=$PROXY; pid=$PROXY_PID ;;
    esac
    before=$(cpu_ticks "$pid")
    read -r s_rps s_p50 s_p99 s_reqs s_err < <(run "$port")
    after=$(cpu_ticks "$pid")
    python3 - "$i" "$target" "$s_rps" "$s_p50" "$s_p99" "$s_reqs" "$((after - before))" "$(getconf CLK_TCK)" "$d_rps" "$d_p50" "$s_err" <<'PY'
import sys
i, name, rps, p50, p99, reqs, ticks, hz, d_rps, d_p50, err = sys.argv[1:]
cpu = int(ticks) / int(hz) * 1e6 / max(int(reqs), 1)
print(f"| {i} | {name} | {rps} | {p50} | {p99} | {cpu:.1f} | {float(rps) / float(d_rps):.2f} | {float(p50) - float(d_p50):.3f} | {err} |")
PY
  done
done

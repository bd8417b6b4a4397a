#!/usr/bin/env bash
# Routing quality on a simulated fleet: replays a Mooncake-format trace
# (default: the production conversation trace in ../shared/traces) against
# COUNT simulated SGLang engines (mock-worker --sim: Llama-3.1-8B on one
# H100 each, 6,200 blocks of 64 tokens) behind each router and policy in
# turn, a fresh fleet per run, and prints TTFT, hit rate and the router's
# CPU per request; writes each run's JSON and a TTFT CDF of all runs.
#
#   bash bench/kv.sh
#   RUNS="kv_aware smg:cache_aware" LIMIT=1000 bash bench/kv.sh
#
# RUNS: Switchyard policies by name, `smg:POLICY` for the SGLang gateway in
# gRPC mode (SMG=path to its binary, else pip-installed into
# bench/.smg-venv; told the engines' block size), `smgdefault:POLICY` for it
# as shipped, `smgtuned:cache_aware` for it with the settings that serve
# this workload best (see docs/BENCHMARKS.md), and `3x:POLICY` for
# three Switchyard routers sharing the fleet (requests dealt round-robin).
# LOAD multiplies the trace's arrival rate; ENGINE_SPEEDUP divides every
# simulated duration (figures are reported in simulated time); CONFIG is a
# router config file (e.g. [policy.kv_aware] weights) for Switchyard runs.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

TRACE=${TRACE:-../shared/traces/mooncake_conversation.jsonl}
COUNT=${COUNT:-8}
LIMIT=${LIMIT:-3000}
LOAD=${LOAD:-4}
ENGINE_SPEEDUP=${ENGINE_SPEEDUP:-5}
RUNS=${RUNS:-"round_robin power_of_two cache_aware kv_aware smg:round_robin smg:cache_aware smgtuned:cache_aware"}
OUT=${OUT:-bench/results/kv}
BASE_PORT=${BASE_PORT:-7400}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

cargo build --release --bins --example sample_tokenizer
target/release/examples/sample_tokenizer "$WORK/tok" >/dev/null
REPLAY_SPEEDUP=$(python3 -c "print($ENGINE_SPEEDUP * $LOAD)")
FLEET_TOKENS=$((COUNT * 6200 * 64))
WORKERS=()
for i in $(seq 0 $((COUNT - 1))); do WORKERS+=("grpc://127.0.0.1:$((BASE_PORT + i))"); done

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

if [[ " $RUNS " == *" smg"* ]] && [ -z "${SMG:-}" ]; then
  [ -x bench/.smg-venv/bin/smg ] || { python3 -m venv bench/.smg-venv && bench/.smg-venv/bin/pip install --quiet "smg==1.13.0"; }
  SMG=$PWD/bench/.smg-venv/bin/smg
fi

reports=()
for run in $RUNS; do
  label=$run
  target/release/mock-worker --sim --count "$COUNT" --listen "127.0.0.1:$BASE_PORT" \
    --speedup-ratio "$ENGINE_SPEEDUP" --stream-interval 8 --tokenizer "$WORK/tok" \
    --model sim >"$WORK/fleet-$label.log" 2>&1 &
  FLEET=$!
  PIDS+=($FLEET)
  for i in $(seq 0 $((COUNT - 1))); do wait_port $((BASE_PORT + i)); done
  routers=()
  targets=()
  case $run in
    smg:*|smgtuned:*|smgdefault:*)
      policy=${run#*:}
      # The engines' block size: smg's default (16) matches no block of
      # theirs (smgdefault: as shipped, to show it).
      extra=(--block-size 64)
      [[ $run == smgdefault:* ]] && extra=()
      if [[ $run == smgtuned:* ]]; then
        extra+=(--selection-accounting-ttl-ms 30000 --worker-warmup-secs 0
                --worker-warmup-divert-every 0 --disable-worker-overload-protection)
      fi
      (cd "$WORK" && exec "$SMG" launch --host 127.0.0.1 --port 30100 \
        --worker-urls "${WORKERS[@]}" --policy "$policy" "${extra[@]}" >"$OUT/smg-$label.log" 2>&1) &
      routers+=($!)
      PIDS+=($!)
      for _ in $(seq 1 600); do (exec 3<>/dev/tcp/127.0.0.1/30100) 2>/dev/null && break; sleep 0.1; done
      for _ in $(seq 1 100); do
        curl -sf -m 5 127.0.0.1:30100/generate -H 'content-type: application/json' \
          -d '{"model":"sim","input_ids":[1,2,3],"sampling_params":{"max_new_tokens":1}}' >/dev/null && break
        sleep 0.3
      done
      targets=(--target http://127.0.0.1:30100 --model sim)
      ;;
    *)
      policy=${run#3x:}
      n=1; [[ $run == 3x:* ]] && n=3
      for r in $(seq 1 $n); do
        port=$((30100 + r))
        args=()
        for w in "${WORKERS[@]}"; do args+=(--worker "$w"); done
        target/release/switchyard serve ${CONFIG:+--config "$CONFIG"} --grpc-listen "127.0.0.1:$port" \
          --engine sglang "${args[@]}" --policy "$policy" >"$WORK/router-$label-$r.log" 2>&1 &
        routers+=($!)
        PIDS+=($!)
        wait_port "$port"
        targets+=(--target "grpc://127.0.0.1:$port")
      done
      sleep 2 # first health checks; KV streams connect
      ;;
  esac
  before=0
  for pid in "${routers[@]}"; do before=$((before + $(cpu_ticks "$pid"))); done
  fleet_before=$(cpu_ticks $FLEET)
  target/release/switchyard bench replay "$TRACE" "${targets[@]}" --limit "$LIMIT" \
    --speedup "$REPLAY_SPEEDUP" --engine-speedup "$ENGINE_SPEEDUP" \
    --fleet-tokens "$FLEET_TOKENS" --block-size 64 --label "$label" --out "$OUT/$label.json" \
    2> >(tr '\r' '\n' | tail -1 >&2)
  after=0
  for pid in "${routers[@]}"; do after=$((after + $(cpu_ticks "$pid"))); done
  fleet_after=$(cpu_ticks $FLEET)
  hz=$(getconf CLK_TCK)
  python3 -c "print(f'  router CPU: {($after - $before) / $hz:.2f} s, {($after - $before) / $hz / $LIMIT * 1e6:.0f} us per request; simulated fleet CPU: {($fleet_after - $fleet_before) / $hz:.1f} s')"
  for pid in "${routers[@]}" $FLEET; do kill "$pid" 2>/dev/null || true; done
  wait "${routers[@]}" $FLEET 2>/dev/null || true
  reports+=("$OUT/$label.json")
done
target/release/switchyard bench plot "${reports[@]}" --out "$OUT/ttft-cdf.svg"

#!/usr/bin/env bash
# Router CPU per OpenAI chat request to a gRPC engine worker: a mock SGLang
# engine (64 output tokens, the tokens of a reply text; GetModelInfo names
# the tokenizer directory) behind `switchyard serve --tokenizer`, and, side
# by side in the same run, behind the SGLang project's gateway (`smg launch`,
# its gRPC mode, which loads the same tokenizer from the path the worker
# reports). examples/loadgen.rs drives each with streamed
# `POST /v1/chat/completions` of a 1 KiB prompt. Reports each router's CPU
# time per request (utime+stime from /proc, the process and its children)
# and, with PERF=1, where Switchyard's goes.
#
# Usage: bash bench/chat.sh     (DURATION=10, CONCURRENCY=16, TOKENS=64,
#   TARGETS="switchyard smg"; SMG=path to an `smg` binary, else it is
#   pip-installed into bench/.smg-venv; PERF=1 needs Linux perf;
#   SEQUENTIAL=N: instead of the load generator, N requests one after
#   another from bench/chat_cpu.py, each router's CPU net of its idle CPU;
#   TOOLS=1 with SEQUENTIAL: the tokenizer's template renders tools
#   (Hermes/Qwen style), the engine's reply is a tool call, and each router
#   is measured twice: the request without tools (the call is plain text)
#   and with a tool offered (the call parsed into tool_calls; smg with
#   --tool-call-parser qwen));
#   INSTRUCTIONS=1 with SEQUENTIAL (Switchyard only; needs valgrind): the
#   router runs under callgrind and each kind of request is counted in
#   instructions per request (100 of each to warm up, then N counted),
#   which repeat where CPU time varies by a fifth between runs)
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10}
CONCURRENCY=${CONCURRENCY:-16}
TOKENS=${TOKENS:-64}
WORKER_PORT=${WORKER_PORT:-17501}
ROUTER_PORT=${ROUTER_PORT:-17502}
HTTP_PORT=${HTTP_PORT:-17503}
SMG_PORT=${SMG_PORT:-17504}
TARGETS=${TARGETS:-switchyard smg}
cargo build --release --bins --example loadgen --example sample_tokenizer

# shellcheck source=bench/lib.sh
. bench/lib.sh
target/release/examples/sample_tokenizer "$WORK/tok" >/dev/null
export RUST_LOG=warn
REPLY=(--tokens "$TOKENS")
SMG_TOOLS=()
if [ "${TOOLS:-0}" = 1 ]; then
  # A Hermes/Qwen-style template that renders the tools, and a reply that
  # calls one.
  python3 - "$WORK/tok/tokenizer_config.json" <<'PY'
import json, sys
path = sys.argv[1]
config = json.load(open(path))
config["chat_template"] = (
    "{%- if tools %}<|im_start|>system\nYou may call these functions:\n"
    "{%- for tool in tools %}\n{{ tool.function | tojson }}{%- endfor %}\n"
    "Call one as <tool_call>{\"name\": ..., \"arguments\": ...}</tool_call><|im_end|>\n{% endif %}"
    "{%- for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{%- endfor %}"
    "{%- if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
json.dump(config, open(path, "w"))
PY
  REPLY=(--reply "Let me look that up.
<tool_call>
{\"name\": \"get_weather\", \"arguments\": {\"city\": \"San Francisco\", \"unit\": \"celsius\", \"days\": 3}}
</tool_call>")
  SMG_TOOLS=(--tool-call-parser qwen)
fi
target/release/mock-worker --listen "127.0.0.1:$WORKER_PORT" --name bench --engine sglang --model chat \
  --tokenizer "$WORK/tok" "${REPLY[@]}" >"$WORK/worker.log" 2>&1 &
PIDS+=($!)
wait_port "$WORKER_PORT"
UNDER=()
if [ "${INSTRUCTIONS:-0}" = 1 ]; then
  UNDER=(valgrind --tool=callgrind --callgrind-out-file="$WORK/callgrind.out")
  TARGETS=switchyard
fi
"${UNDER[@]}" target/release/switchyard serve --grpc-listen "127.0.0.1:$ROUTER_PORT" --http-listen "127.0.0.1:$HTTP_PORT" \
  --worker "grpc://127.0.0.1:$WORKER_PORT" --tokenizer "chat=$WORK/tok" --worker-threads 1 >"$WORK/router.log" 2>&1 &
PIDS+=($!)
ROUTER_PID=$!
# Under valgrind the router takes a while to start.
for _ in $(seq 1 5); do (exec 3<>"/dev/tcp/127.0.0.1/$HTTP_PORT") 2>/dev/null && break; sleep 10; done
wait_port "$HTTP_PORT"

if [[ " $TARGETS " == *" smg "* ]]; then
  if [ -z "${SMG:-}" ]; then
    [ -x bench/.smg-venv/bin/smg ] || { python3 -m venv bench/.smg-venv && bench/.smg-venv/bin/pip install --quiet smg; }
    SMG=$PWD/bench/.smg-venv/bin/smg
  fi
  (cd "$WORK" && exec "$SMG" launch --host 127.0.0.1 --port "$SMG_PORT" \
    --worker-urls "grpc://127.0.0.1:$WORKER_PORT" --policy round_robin "${SMG_TOOLS[@]}" >"$WORK/smg.log" 2>&1) &
  PIDS+=($!)
  SMG_PID=$!
  for _ in $(seq 1 300); do (exec 3<>"/dev/tcp/127.0.0.1/$SMG_PORT") 2>/dev/null && break; sleep 0.1; done
  # Wait for its tokenizer to load (from the path the worker reports).
  for _ in $(seq 1 100); do
    curl -sf -m 5 "127.0.0.1:$SMG_PORT/v1/chat/completions" -H 'content-type: application/json' \
      -d '{"model":"chat","messages":[{"role":"user","content":"x"}],"max_tokens":1}' >/dev/null && break
    sleep 0.2
  done
fi

family() { echo "$1"; pgrep -P "$1" || true; }
ticks() {
  local t=0 v
  for p in $(family "$1"); do v=$(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || true); t=$((t + ${v:-0})); done
  echo "$t"
}

load() {
  target/release/examples/loadgen --http --chat --target "127.0.0.1:$1" --model chat \
    --concurrency "$CONCURRENCY" --tokens "$TOKENS" --prefix-bytes 960 --suffix-bytes 64 --groups 16 \
    --duration-secs "$2" --progress-secs 0 --json
}

for target in $TARGETS; do
  case $target in
    switchyard) port=$HTTP_PORT; pid=$ROUTER_PID ;;
    smg) port=$SMG_PORT; pid=$SMG_PID ;;
  esac
  if [ "${INSTRUCTIONS:-0}" = 1 ]; then
    kinds=(plain)
    [ "${TOOLS:-0}" = 1 ] && kinds+=(tools)
    for kind in "${kinds[@]}"; do
      python3 bench/chat_cpu.py "$pid" "$port" 100 512 ${kind/plain/} >/dev/null
    done
    for kind in "${kinds[@]}"; do
      callgrind_control -z "$pid" >/dev/null 2>&1
      python3 bench/chat_cpu.py "$pid" "$port" "${SEQUENTIAL:-300}" 512 ${kind/plain/} >/dev/null
      callgrind_control -d "$pid" >/dev/null 2>&1
      dump=$(ls -t "$WORK"/callgrind.out.* | head -1)
      total=$(callgrind_annotate "$dump" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
      echo "switchyard, $kind: $((total / ${SEQUENTIAL:-300})) instructions per request"
    done
    continue
  fi
  if [ -n "${SEQUENTIAL:-}" ]; then
    if [ "${TOOLS:-0}" = 1 ]; then
      echo "$target, no tools: $(python3 bench/chat_cpu.py "$pid" "$port" "$SEQUENTIAL" 512)"
      echo "$target, a tool offered and called: $(python3 bench/chat_cpu.py "$pid" "$port" "$SEQUENTIAL" 512 tools)"
    else
      echo "$target: $(python3 bench/chat_cpu.py "$pid" "$port" "$SEQUENTIAL" "$TOKENS")"
    fi
    continue
  fi
  load "$port" 2 >/dev/null
  before=$(ticks "$pid")
  if [ "${PERF:-0}" = 1 ] && [ "$target" = switchyard ]; then
    perf record -F 999 -p "$ROUTER_PID" -o "$WORK/perf.data" -- sleep "$DURATION" >/dev/null 2>&1 &
    PERF_PID=$!
  fi
  load "$port" "$DURATION" >"$WORK/load.json"
  after=$(ticks "$pid")
  python3 - "$WORK/load.json" "$((after - before))" "$(getconf CLK_TCK)" "$target" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
ticks, hz, name = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
ok = max(r["requests_ok"], 1)
print(f"{name}: requests {r['requests_ok']} ({r['throughput_rps']:.0f}/s), errors {r['errors'] or 'none'}, "
      f"content events/request {r['tokens_per_s'] / max(r['throughput_rps'], 1):.1f}, p50 {r['latency_ms']['p50']:.2f} ms, "
      f"router CPU per chat request {ticks / hz * 1e6 / ok:.0f} µs")
PY
done
if [ "${PERF:-0}" = 1 ]; then
  wait "$PERF_PID" || true
  # Self time by crate: tokenizing and detokenizing (the tokenizers crate,
  # the router's fast path and the regex and aho-corasick crates they use),
  # minijinja (the template), and the rest.
  perf report -i "$WORK/perf.data" --no-children --stdio --sort sym 2>/dev/null | python3 -c '
import re, sys
shares = {}
for line in sys.stdin:
    m = re.match(r"\s+([0-9.]+)%\s+\[\.\]\s+(.*)", line)
    if not m:
        continue
    pct, sym = float(m.group(1)), m.group(2)
    if any(t in sym for t in ("tokenizers::", "switchyard::tokenizer", "regex", "aho_corasick", "onig")):
        key = "tokenize + detokenize (tokenizers crate, fast path, regex)"
    elif "minijinja" in sym:
        key = "minijinja (chat template)"
    elif "serde_json" in sym:
        key = "serde_json (request parse, SSE events)"
    elif "malloc" in sym or "free" in sym or "jemalloc" in sym or "_rjem" in sym:
        key = "allocator"
    else:
        key = "other (HTTP, gRPC, kernel entry, ...)"
    shares[key] = shares.get(key, 0) + pct
for k, v in sorted(shares.items(), key=lambda kv: -kv[1]):
    print(f"{v:6.1f}%  {k}")
'
fi

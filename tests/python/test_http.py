#!/usr/bin/env python3
"""Foreign-client test of the HTTP side: the official `openai` package and
`curl` against the built router, with HTTP mock workers as separate processes.

Run with: python3 tests/python/test_http.py   (after cargo build --bins)
"""

import json
import os
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))

sys.path.insert(0, HERE)
from openai import OpenAI, NotFoundError  # noqa: E402
from procs import MOCK_WORKER, SWITCHYARD, read_after, spawn, stop_all  # noqa: E402

def curl(*args):
    out = subprocess.run(["curl", "-sS", "--max-time", "10", *args], capture_output=True, text=True, check=True)
    return out.stdout


def main():
    assert shutil.which("curl"), "curl is required"
    workers = [spawn([MOCK_WORKER, "--http", "--name", n, "--tokens", "4", "--token-delay-ms", "20"]) for n in ("ha", "hb")]
    urls = [read_after(p, f"mock-worker {n} listening on") for p, n in zip(workers, ("ha", "hb"))]
    router = spawn([SWITCHYARD, "serve", "--grpc-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0",
                    "--health-interval-ms", "100", "--health-timeout-ms", "80"])
    grpc = read_after(router, "switchyard listening on")
    http = read_after(router, "switchyard http listening on")
    base = f"http://{http}"

    # Register the workers with curl, as an operator would.
    for url in urls:
        out = json.loads(curl("-X", "POST", f"{base}/workers", "-H", "content-type: application/json",
                              "-d", json.dumps({"url": url, "model_id": "chat-model"})))
        assert out["url"] == url and out["connection_mode"] == "http", out
    dup = curl("-o", "/dev/null", "-w", "%{http_code}", "-X", "POST", f"{base}/workers",
               "-d", json.dumps({"url": urls[0], "model_id": "chat-model"}))
    assert dup == "409", dup
    print("ok: curl worker management")

    ready = json.loads(curl(f"{base}/readiness"))
    assert ready == {"model": "chat-model", "status": "ready", "healthy_workers": 2, "total_workers": 2}, ready
    assert json.loads(curl(f"{base}/health"))["status"] == "ok"
    print("ok: curl health and readiness")

    # curl streaming /generate: server-sent events, incrementally.
    sse = curl("-N", "-X", "POST", f"{base}/generate", "-d", json.dumps({"text": "hi", "stream": True}))
    events = [line[len("data: "):] for line in sse.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]", events
    texts = [json.loads(e)["text"] for e in events[:-1]]
    assert "".join(texts).count(":") == 4, texts
    print("ok: curl SSE")

    client = OpenAI(base_url=f"{base}/v1", api_key="not-needed")
    assert [m.id for m in client.models.list().data] == ["chat-model"]

    reply = client.chat.completions.create(
        model="chat-model", messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}])
    assert reply.choices[0].message.content.count(":") == 4, reply
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage.completion_tokens == 4

    chunks = client.chat.completions.create(
        model="chat-model", messages=[{"role": "user", "content": "stream please"}], stream=True)
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(pieces) == 4, pieces
    print("ok: openai chat completions, plain and streaming")

    completion = client.completions.create(model="chat-model", prompt="once upon a time", max_tokens=2)
    assert completion.choices[0].text.count(":") == 2, completion
    try:
        client.chat.completions.create(model="missing-model", messages=[{"role": "user", "content": "x"}])
        raise AssertionError("expected a 404")
    except NotFoundError as e:
        assert "missing-model" in str(e), e
    print("ok: openai completions and errors")

    # An answer given before the request's body is in (a 415 on the gRPC
    # listener, a 404 on the HTTP one) reaches curl while it still uploads
    # 1 MB over HTTP/2: the body is read and discarded, not reset.
    body = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"switchyard-big-{os.getpid()}.bin")
    with open(body, "wb") as f:
        f.write(b"x" * (1 << 20))
    try:
        for addr, path, code in ((grpc, "/switchyard.v1.Inference/Generate", "415"), (http, "/nowhere", "404")):
            for _ in range(5):
                got = curl("--http2-prior-knowledge", "-o", "/dev/null", "-w", "%{http_code}",
                           "-H", "content-type: text/plain", "--data-binary", f"@{body}", f"http://{addr}{path}")
                assert got == code, (addr, path, got)
    finally:
        os.remove(body)
    print("ok: curl reads an early 415 / 404 while uploading over HTTP/2")
    print("python HTTP test passed")


if __name__ == "__main__":
    try:
        main()
    finally:
        stop_all()

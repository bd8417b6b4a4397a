#!/usr/bin/env python3
"""The live dashboard in a real browser: headless Chromium (Debian's
`chromium`) loads the admin listener's page after a worker is added
through the API, and the page's DOM shows that worker (URL, model, health)
and the model's row. Then the page's live feed: the server-sent events
stream, read as the page reads it, carries a snapshot naming a worker
added after it was opened, within a couple of seconds.

Run with: python3 tests/python/test_dashboard.py   (after cargo build --bins;
needs `chromium` on PATH)
"""

import os
import shutil
import subprocess
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "clients", "python"))
sys.path.insert(0, HERE)

import grpc  # noqa: E402

import switchyard_client  # noqa: E402
from procs import MOCK_WORKER, SWITCHYARD, read_after, spawn, start, stop_all  # noqa: E402


def dump_dom(url):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "chromium is not installed (scripts/test.sh installs Debian's package)"
    out = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--timeout=5000", "--dump-dom", url],
        capture_output=True, text=True, timeout=90)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def main():
    stubs = switchyard_client.load_stubs()
    w, i = stubs.workers_pb2, stubs.inference_pb2
    alpha = start([MOCK_WORKER, "--name", "alpha", "--tokens", "2"], "mock-worker alpha listening on")
    beta = start([MOCK_WORKER, "--name", "beta", "--tokens", "2"], "mock-worker beta listening on")
    router = spawn([SWITCHYARD, "serve", "--grpc-listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
    grpc_addr = read_after(router, "switchyard listening on")
    admin_addr = read_after(router, "switchyard admin listening on")
    channel = grpc.insecure_channel(grpc_addr)
    workers = stubs.workers_pb2_grpc.WorkerManagementStub(channel)
    added = workers.AddWorker(w.AddWorkerRequest(worker=w.WorkerSpec(
        url=alpha, model_id="dash-model")), timeout=10).worker
    for _ in range(3):
        list(stubs.inference_pb2_grpc.InferenceStub(channel).Generate(
            i.GenerateRequest(model="dash-model", text="hi"), timeout=10))

    dom = dump_dom(f"http://{admin_addr}/")
    table = dom[dom.index('<tbody id="workers">'):]
    table = table[:table.index("</tbody>")]
    assert alpha in table and added.id in table and "dash-model" in table, table
    assert 'class="pill healthy"' in table, table
    models = dom[dom.index('<tbody id="models">'):]
    assert "dash-model" in models[:models.index("</tbody>")], models
    print("ok: Chromium renders the dashboard with the worker added through the API")

    # The live feed, as the page's EventSource reads it.
    events = urllib.request.urlopen(f"http://{admin_addr}/events", timeout=10)
    assert events.headers["content-type"].startswith("text/event-stream"), events.headers
    workers.AddWorker(w.AddWorkerRequest(worker=w.WorkerSpec(
        url=beta, model_id="dash-model")), timeout=10)
    deadline = time.time() + 5
    seen = False
    while time.time() < deadline and not seen:
        line = events.readline().decode()
        seen = line.startswith("data:") and beta in line
    events.close()
    assert seen, "no snapshot named the worker added after the page opened"
    print("ok: the page's event stream shows a worker added after it opened")
    print("python dashboard test passed")


if __name__ == "__main__":
    try:
        main()
    finally:
        stop_all()

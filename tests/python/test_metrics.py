#!/usr/bin/env python3
"""The admin listener scraped by a real Prometheus server (Debian's
`prometheus`, started here on loopback in a temporary directory).

Known traffic through the router (grpcio: 5 calls to a healthy worker, 3
to a worker that fails every call), then Prometheus's own HTTP API is asked
for the series: the target is up, the success and failure counts per worker
are the traffic's, the first-answer histogram counted every served call,
the registry gauges name both workers, and /readyz says ready.

Run with: python3 tests/python/test_metrics.py   (after cargo build --bins;
needs `prometheus` on PATH)
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "clients", "python"))
sys.path.insert(0, HERE)

import grpc  # noqa: E402

import switchyard_client  # noqa: E402
from procs import MOCK_WORKER, SWITCHYARD, read_after, spawn, start, stop_all  # noqa: E402


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.status, r.read().decode()


def query(prom, expr):
    """The value of a PromQL instant query with one result, or None."""
    _, body = get(f"http://{prom}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
    result = json.loads(body)["data"]["result"]
    return float(result[0]["value"][1]) if len(result) == 1 else None


def wait_for(prom, expr, expected, timeout=60):
    deadline = time.time() + timeout
    seen = None
    while time.time() < deadline:
        seen = query(prom, expr)
        if seen == expected:
            return
        time.sleep(0.5)
    raise AssertionError(f"{expr}: expected {expected}, Prometheus says {seen}")


def main():
    prometheus = shutil.which("prometheus")
    assert prometheus, "prometheus is not installed (scripts/test.sh installs Debian's package)"
    stubs = switchyard_client.load_stubs()
    i = stubs.inference_pb2
    good = start([MOCK_WORKER, "--name", "good", "--tokens", "2"], "mock-worker good listening on")
    bad = start([MOCK_WORKER, "--name", "bad", "--tokens", "2", "--fail-rate", "1"], "mock-worker bad listening on")
    router = spawn([SWITCHYARD, "serve", "--grpc-listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
                    "--worker", good, "--worker", bad, "--model", "m", "--policy", "round_robin"])
    grpc_addr = read_after(router, "switchyard listening on")
    admin_addr = read_after(router, "switchyard admin listening on")

    status, body = get(f"http://{admin_addr}/readyz")
    assert status == 200 and "ready" in body, body
    status, body = get(f"http://{admin_addr}/livez")
    assert status == 200, body

    channel = grpc.insecure_channel(grpc_addr)
    inference = stubs.inference_pb2_grpc.InferenceStub(channel)
    served = failed = 0
    # Round robin alternates; the bad worker's refusals are retried on the
    # good one only when nothing reached it, which is not the case here.
    for n in range(8):
        try:
            list(inference.Generate(i.GenerateRequest(model="m", text=f"call {n}"), timeout=10))
            served += 1
        except grpc.RpcError:
            failed += 1
    assert served > 0 and failed > 0, (served, failed)

    work = tempfile.mkdtemp(prefix="switchyard-prometheus-")
    port = free_port()
    with open(os.path.join(work, "prometheus.yml"), "w") as f:
        f.write(
            "global:\n  scrape_interval: 1s\n"
            "scrape_configs:\n"
            "  - job_name: switchyard\n"
            f"    static_configs: [{{targets: ['{admin_addr}']}}]\n"
        )
    prom = subprocess.Popen(
        [prometheus, f"--config.file={work}/prometheus.yml", f"--storage.tsdb.path={work}/data",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        target = f"127.0.0.1:{port}"
        deadline = time.time() + 30
        while True:
            try:
                get(f"http://{target}/-/ready")
                break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.3)
        wait_for(target, 'up{job="switchyard"}', 1)
        print("ok: Prometheus scrapes the admin listener")
        wait_for(target, 'sum(switchyard_worker_calls_total{outcome="success"})', served)
        wait_for(target, 'sum(switchyard_worker_calls_total{outcome="failure"})', failed)
        wait_for(target, 'sum by (model) (switchyard_worker_calls_total{model="m",outcome="success"})', served)
        wait_for(target, 'sum(switchyard_worker_first_answer_seconds_count)', served)
        wait_for(target, 'sum(switchyard_worker_call_duration_seconds_count)', served + failed)
        wait_for(target, 'switchyard_router_overhead_seconds_count{listener="grpc",dispatch="regular"}', served + failed)
        print(f"ok: {served} served and {failed} failed calls counted per worker, with latency histograms")
        wait_for(target, 'switchyard_workers{mode="grpc",role="regular"}', 2)
        wait_for(target, 'count(switchyard_worker_info{model="m"})', 2)
        wait_for(target, 'sum(switchyard_worker_in_flight)', 0)
        wait_for(target, 'switchyard_calls_in_flight', 0)
        print("ok: registry and in-flight gauges")
    finally:
        prom.terminate()
        prom.wait(timeout=10)
        shutil.rmtree(work, ignore_errors=True)
    print("python metrics test passed")


if __name__ == "__main__":
    try:
        main()
    finally:
        stop_all()

#!/usr/bin/env python3
"""Foreign-client contract test: Python grpcio against the built binaries.

Starts two `mock-worker` processes and `switchyard serve` on free loopback
ports, then drives the public contract with stubs generated from proto/ at
test time: AddWorker, Generate (streaming, worker metadata), error codes,
RemoveWorker, grpc.health.v1 and server reflection.

Run with: python3 tests/python/test_contract.py   (after cargo build --bins)
"""

import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "clients", "python"))
sys.path.insert(0, HERE)

import grpc  # noqa: E402
from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: E402
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (  # noqa: E402
    ProtoReflectionDescriptorDatabase,
)

import switchyard_client  # noqa: E402
from procs import MOCK_WORKER, SWITCHYARD, start, stop_all  # noqa: E402

def eventually(check, what, timeout=10.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for: {what}")


def expect_error(code, fn, needle=None):
    try:
        fn()
    except grpc.RpcError as e:
        assert e.code() == code, f"expected {code}, got {e.code()}: {e.details()}"
        if needle:
            assert needle in e.details(), f"{needle!r} not in {e.details()!r}"
        return e
    raise AssertionError(f"expected {code}, call succeeded")


def main():
    stubs = switchyard_client.load_stubs()
    w, i = stubs.workers_pb2, stubs.inference_pb2

    alpha = start([MOCK_WORKER, "--name", "alpha", "--tokens", "5"], "mock-worker alpha listening on")
    beta = start([MOCK_WORKER, "--name", "beta", "--tokens", "5"], "mock-worker beta listening on")
    router = start(
        [SWITCHYARD, "serve", "--grpc-listen", "127.0.0.1:0", "--health-interval-ms", "100", "--health-timeout-ms", "80"],
        "switchyard listening on",
    )
    channel = grpc.insecure_channel(router)
    grpc.channel_ready_future(channel).result(timeout=10)
    workers = stubs.workers_pb2_grpc.WorkerManagementStub(channel)
    inference = stubs.inference_pb2_grpc.InferenceStub(channel)
    health = health_pb2_grpc.HealthStub(channel)

    def status(service):
        return health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status

    SERVING = health_pb2.HealthCheckResponse.SERVING
    NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

    # Health before any worker.
    assert status("") == SERVING
    assert status("switchyard.v1.WorkerManagement") == SERVING
    assert status("switchyard.v1.Inference") == NOT_SERVING
    print("ok: health before workers")

    # Reflection lists the services (what grpcurl relies on).
    db = ProtoReflectionDescriptorDatabase(channel)
    services = set(db.get_services())
    for name in ("switchyard.v1.Inference", "switchyard.v1.WorkerManagement", "grpc.health.v1.Health"):
        assert name in services, services
    print("ok: reflection")

    # Add two workers.
    ids = {}
    for name, url in (("alpha", alpha), ("beta", beta)):
        info = workers.AddWorker(w.AddWorkerRequest(worker=w.WorkerSpec(url=url, model_id="py-model"))).worker
        assert info.id.startswith("w-") and info.spec.url == url, info
        assert info.connection_mode == w.CONNECTION_MODE_GRPC
        ids[info.id] = name
    eventually(lambda: status("switchyard.v1.Inference") == SERVING, "Inference SERVING")
    print("ok: add workers")

    # Generate streams, named by metadata, round-robin over both.
    served_by = []
    for _ in range(4):
        call = inference.Generate(i.GenerateRequest(model="py-model", text="hello from python"), timeout=10)
        metadata = dict(call.initial_metadata())
        worker_id = metadata["x-switchyard-worker-id"]
        assert worker_id in ids, metadata
        assert len(metadata["x-request-id"]) == 32, metadata
        chunks, complete = [], None
        for response in call:
            kind = response.WhichOneof("response")
            if kind == "chunk":
                chunks.append(response.chunk.text)
            elif kind == "complete":
                complete = response.complete
        assert len(chunks) == 5, chunks
        assert all(c.startswith(ids[worker_id] + ":") for c in chunks), (ids[worker_id], chunks)
        assert complete is not None and complete.finish_reason == "length"
        served_by.append(ids[worker_id])
    assert sorted(served_by) == ["alpha", "alpha", "beta", "beta"], served_by
    print("ok: generate")

    # Requests the router refuses itself, each with a code a client can act
    # on; none reaches a worker, and the router keeps serving.
    expect_error(grpc.StatusCode.UNIMPLEMENTED,
                 lambda: list(inference.Generate(i.GenerateRequest(model="py-model", text="x"),
                                                 timeout=5, compression=grpc.Compression.Gzip)),
                 "grpc-encoding")
    expect_error(grpc.StatusCode.RESOURCE_EXHAUSTED,
                 lambda: list(inference.Generate(i.GenerateRequest(model="py-model", text="x" * (5 << 20)),
                                                 timeout=10)),
                 "limit")
    expect_error(grpc.StatusCode.UNIMPLEMENTED,
                 lambda: channel.unary_unary("/switchyard.v1.Inference/NoSuchMethod")(b"", timeout=5))
    assert len([r for r in inference.Generate(i.GenerateRequest(model="py-model", text="x"), timeout=10)]) == 6
    print("ok: refused requests")

    # Error codes.
    expect_error(grpc.StatusCode.ALREADY_EXISTS,
                 lambda: workers.AddWorker(w.AddWorkerRequest(worker=w.WorkerSpec(url=alpha, model_id="py-model"))))
    expect_error(grpc.StatusCode.INVALID_ARGUMENT,
                 lambda: workers.AddWorker(w.AddWorkerRequest(worker=w.WorkerSpec(url="tcp://x:1", model_id="m"))),
                 "unsupported scheme")
    expect_error(grpc.StatusCode.NOT_FOUND, lambda: workers.RemoveWorker(w.RemoveWorkerRequest(id="w-nope")))
    expect_error(grpc.StatusCode.NOT_FOUND,
                 lambda: list(inference.Generate(i.GenerateRequest(model="no-such-model", text="x"), timeout=5)),
                 "no-such-model")
    print("ok: error codes")

    # Remove one worker: every later call goes to the other.
    alpha_id = next(k for k, v in ids.items() if v == "alpha")
    removed = workers.RemoveWorker(w.RemoveWorkerRequest(id=alpha_id)).worker
    assert removed.id == alpha_id
    for _ in range(4):
        call = inference.Generate(i.GenerateRequest(model="py-model", text="x"), timeout=10)
        list(call)
        assert ids[dict(call.initial_metadata())["x-switchyard-worker-id"]] == "beta"
    listed = workers.ListWorkers(w.ListWorkersRequest()).workers
    assert [x.id for x in listed] != [] and all(x.id != alpha_id for x in listed)
    print("ok: remove")

    # Removing the last worker makes Inference NOT_SERVING, and the model
    # nobody serves any more NOT_FOUND.
    workers.RemoveWorker(w.RemoveWorkerRequest(url=beta))
    eventually(lambda: status("switchyard.v1.Inference") == NOT_SERVING, "Inference NOT_SERVING")
    expect_error(grpc.StatusCode.NOT_FOUND,
                 lambda: list(inference.Generate(i.GenerateRequest(model="py-model", text="x"), timeout=5)))
    print("ok: health after removal")

    # A prefill/decode model: the two mocks rendezvous over TCP with the
    # bootstrap host, port and room the router hands both of them.
    line = start([MOCK_WORKER, "--name", "pre", "--role", "prefill", "--bootstrap-port", "0"],
                 "mock-worker pre listening on")
    prefill_url, _, bootstrap_port = line.split()
    decode_url = start([MOCK_WORKER, "--name", "dec", "--role", "decode", "--tokens", "3"],
                       "mock-worker dec listening on")
    pre = workers.AddWorker(w.AddWorkerRequest(worker=w.WorkerSpec(
        url=prefill_url, model_id="py-pd", role=w.WORKER_ROLE_PREFILL, bootstrap_port=int(bootstrap_port)))).worker
    dec = workers.AddWorker(w.AddWorkerRequest(worker=w.WorkerSpec(
        url=decode_url, model_id="py-pd", role=w.WORKER_ROLE_DECODE))).worker
    eventually(lambda: status("switchyard.v1.Inference") == SERVING, "Inference SERVING for the PD model")
    call = inference.Generate(i.GenerateRequest(model="py-pd", text="hello disaggregated"), timeout=10)
    metadata = dict(call.initial_metadata())
    assert metadata["x-switchyard-prefill-worker-id"] == pre.id, metadata
    assert metadata["x-switchyard-decode-worker-id"] == dec.id, metadata
    texts = [r.chunk.text for r in call if r.WhichOneof("response") == "chunk"]
    assert texts == ["dec:0 ", "dec:1 ", "dec:2 "], texts
    # A regular worker cannot join a PD model.
    expect_error(grpc.StatusCode.FAILED_PRECONDITION,
                 lambda: workers.AddWorker(w.AddWorkerRequest(worker=w.WorkerSpec(url=beta, model_id="py-pd"))),
                 "disaggregated")
    print("ok: prefill/decode")
    print("python contract test passed")


if __name__ == "__main__":
    try:
        main()
    finally:
        stop_all()

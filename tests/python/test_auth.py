#!/usr/bin/env python3
"""Foreign-client test of API keys: Python grpcio and the official `openai`
package against a router started with keys in its environment.

- grpcio: AddWorker without a key is UNAUTHENTICATED, with a client key
  PERMISSION_DENIED, with the admin key it works; Generate needs a key.
- openai: the package's own `api_key` (sent as `Authorization: Bearer`)
  is the client key; a wrong one raises AuthenticationError (401).

Run with: python3 tests/python/test_auth.py   (after cargo build --bins)
"""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "clients", "python"))
sys.path.insert(0, HERE)

import grpc  # noqa: E402
from openai import AuthenticationError, OpenAI  # noqa: E402

import switchyard_client  # noqa: E402
from procs import MOCK_WORKER, SWITCHYARD, expect_code, read_after, spawn, start, stop_all  # noqa: E402

ADMIN = "py-admin-key-0123456789"
CLIENT = "py-client-key-0123456789"


def main():
    stubs = switchyard_client.load_stubs()
    w, i = stubs.workers_pb2, stubs.inference_pb2
    grpc_worker = start([MOCK_WORKER, "--name", "g", "--tokens", "3"], "mock-worker g listening on")
    http_worker = start([MOCK_WORKER, "--http", "--name", "h", "--tokens", "3"], "mock-worker h listening on")
    router = spawn([SWITCHYARD, "serve", "--grpc-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"],
                   env={"SWITCHYARD_ADMIN_KEYS": ADMIN, "SWITCHYARD_CLIENT_KEYS": CLIENT})
    grpc_addr = read_after(router, "switchyard listening on")
    http_addr = read_after(router, "switchyard http listening on")

    channel = grpc.insecure_channel(grpc_addr)
    grpc.channel_ready_future(channel).result(timeout=10)
    workers = stubs.workers_pb2_grpc.WorkerManagementStub(channel)
    inference = stubs.inference_pb2_grpc.InferenceStub(channel)

    def add(url, model, key):
        metadata = [("authorization", f"Bearer {key}")] if key else None
        # No engine given: the router contacts the worker, which is then in
        # rotation at once (an uncontacted one waits for its first check).
        spec = w.WorkerSpec(url=url, model_id=model)
        return workers.AddWorker(w.AddWorkerRequest(worker=spec), metadata=metadata, timeout=10)

    details = expect_code(grpc.StatusCode.UNAUTHENTICATED, lambda: add(grpc_worker, "m", None))
    assert "Bearer" in details, details
    details = expect_code(grpc.StatusCode.PERMISSION_DENIED, lambda: add(grpc_worker, "m", CLIENT))
    assert "admin key" in details, details
    add(grpc_worker, "m", ADMIN)
    add(http_worker, "chat", ADMIN)
    print("ok: grpcio worker management needs the admin key")

    request = i.GenerateRequest(model="m", text="hi", stream=True)
    expect_code(grpc.StatusCode.UNAUTHENTICATED, lambda: list(inference.Generate(request, timeout=10)))
    chunks = list(inference.Generate(request, metadata=[("authorization", f"Bearer {CLIENT}")], timeout=10))
    assert any(c.HasField("chunk") for c in chunks), chunks
    print("ok: grpcio Generate with the client key")

    # Auth schemes are case-insensitive (RFC 9110 §11.1).
    for scheme in ("bearer", "BEARER", "Bearer"):
        listed = workers.ListWorkers(w.ListWorkersRequest(), metadata=[("authorization", f"{scheme} {ADMIN}")], timeout=10)
        assert len(listed.workers) == 2, listed
    print("ok: grpcio with the scheme as bearer, BEARER and Bearer")

    # Management requests that do not decode are the client's fault.
    admin = [("authorization", f"Bearer {ADMIN}")]
    for method, body in (("AddWorker", b"\xff\xff\xff"), ("ListWorkers", b"\xff\xff")):
        raw = channel.unary_unary(f"/switchyard.v1.WorkerManagement/{method}",
                                  request_serializer=None, response_deserializer=None)
        details = expect_code(grpc.StatusCode.INVALID_ARGUMENT, lambda: raw(body, metadata=admin, timeout=10))
        assert "not a valid message" in details, details
    bad_model = w.AddWorkerRequest(worker=w.WorkerSpec(url=grpc_worker, model_id="m")).SerializeToString()
    bad_model = bad_model.replace(b"\x12\x01m", b"\x12\x01\xff")
    raw = channel.unary_unary("/switchyard.v1.WorkerManagement/AddWorker",
                              request_serializer=None, response_deserializer=None)
    details = expect_code(grpc.StatusCode.INVALID_ARGUMENT, lambda: raw(bad_model, metadata=admin, timeout=10))
    assert "model_id" in details, details
    assert len(workers.ListWorkers(w.ListWorkersRequest(), metadata=admin, timeout=10).workers) == 2
    print("ok: undecodable and non-UTF-8 management requests are INVALID_ARGUMENT naming the field")

    # Cloud metadata addresses are refused even with the admin key.
    for url in ("grpc://100.100.100.200:80", "grpc://[64:ff9b::a9fe:a9fe]:80"):
        details = expect_code(grpc.StatusCode.PERMISSION_DENIED, lambda: add(url, "m", ADMIN))
        assert "link-local" in details, details
    print("ok: Alibaba's metadata address and 169.254.169.254 through NAT64 refused")

    client = OpenAI(base_url=f"http://{http_addr}/v1", api_key=CLIENT)
    reply = client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hello"}])
    assert reply.choices[0].message.content.count(":") == 3, reply
    try:
        OpenAI(base_url=f"http://{http_addr}/v1", api_key="wrong-key-0123456789").chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "hello"}])
        raise AssertionError("expected a 401")
    except AuthenticationError as e:
        assert "not valid" in str(e), e
    print("ok: openai package with the client key, and a wrong key refused")
    print("python auth test passed")


if __name__ == "__main__":
    try:
        main()
    finally:
        stop_all()

#!/usr/bin/env python3
"""OpenTelemetry traces, received by an OTLP collector written here from
the published `opentelemetry-proto` stubs (a grpcio TraceService).

The built `switchyard serve --otlp-endpoint` routes to grpcio fake SGLang
engines (test_engines.FakeEngine, which record the metadata they receive)
and to a small HTTP worker that records its request headers. Clients send
a W3C `traceparent`; the test checks that

- the router's span of each call is a child of the client's span, in the
  client's trace, named after the method, with the model, policy and worker;
- the worker received a `traceparent` naming the router's span (for PD:
  each side its own child span of the call's), so the trace runs
  client -> router -> worker;
- a worker that could not be reached and was passed over is a `retry`
  event on the call's span;
- an HTTP request is traced the same way, its worker sees the header too.

Run with: python3 tests/python/test_tracing.py   (after cargo build --bins)
"""

import http.server
import json
import os
import secrets
import shutil
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent import futures

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "clients", "python"))
sys.path.insert(0, HERE)

import grpc  # noqa: E402
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc  # noqa: E402
from smg_grpc_proto import sglang_scheduler_pb2 as sgl  # noqa: E402
from smg_grpc_proto import sglang_scheduler_pb2_grpc as sgl_grpc  # noqa: E402

import switchyard_client  # noqa: E402
from procs import SWITCHYARD, read_after, spawn, stop_all  # noqa: E402
from test_engines import FakeEngine  # noqa: E402
from test_openai_engines import make_tokenizer  # noqa: E402
from test_tls import issue, make_ca  # noqa: E402

SERVER, CLIENT = 2, 3  # opentelemetry.proto.trace.v1.Span.SpanKind


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP/gRPC trace receiver that keeps every span it is sent."""

    def __init__(self, tls=None):
        """`tls`: (certificate path, key path) to serve TLS with."""
        self.spans = []
        self.lock = threading.Lock()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(self, self.server)
        if tls:
            with open(tls[0], "rb") as c, open(tls[1], "rb") as k:
                credentials = grpc.ssl_server_credentials([(k.read(), c.read())])
            self.port = self.server.add_secure_port("127.0.0.1:0", credentials)
        else:
            self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def Export(self, request, context):
        with self.lock:
            for resource_spans in request.resource_spans:
                service = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
                assert service.get("service.name") == "switchyard", service
                for scope_spans in resource_spans.scope_spans:
                    self.spans.extend(scope_spans.spans)
        return trace_service_pb2.ExportTraceServiceResponse()

    def in_trace(self, trace_id, count, timeout=20):
        """The spans of `trace_id` (hex), once there are `count` of them."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            with self.lock:
                found = [s for s in self.spans if s.trace_id.hex() == trace_id]
            if len(found) >= count:
                return found
            time.sleep(0.1)
        raise AssertionError(f"trace {trace_id}: {len(found)} spans received, expected {count}")


def attributes(span):
    out = {}
    for a in span.attributes:
        v = a.value
        out[a.key] = v.string_value if v.HasField("string_value") else v.int_value
    return out


def traceparent():
    """A new client span: (trace id, span id, the header value)."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return trace_id, span_id, f"00-{trace_id}-{span_id}-01"


def parent_of(header):
    """The span id a received `traceparent` names, checking its form."""
    version, trace_id, span_id, flags = header.split("-")
    assert version == "00" and len(trace_id) == 32 and len(span_id) == 16 and flags == "01", header
    return trace_id, span_id


def post_generate(http_addr, body, header):
    """POST /generate with `body` and a `traceparent`; it must answer 200."""
    request = urllib.request.Request(
        f"http://{http_addr}/generate",
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json", "traceparent": header},
    )
    with urllib.request.urlopen(request, timeout=10) as r:
        assert r.status == 200
        r.read()


class HttpWorker(http.server.ThreadingHTTPServer):
    """An HTTP worker: /health, and /generate recording its headers."""

    def __init__(self):
        self.headers_seen = []
        worker = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                self.send_response(200 if self.path == "/health" else 404)
                self.send_header("content-length", "0")
                self.end_headers()

            def do_POST(self):
                self.rfile.read(int(self.headers.get("content-length", "0")))
                worker.headers_seen.append({k.lower(): v for k, v in self.headers.items()})
                body = json.dumps({"text": "hi", "meta_info": {"finish_reason": {"type": "length"}}}).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server_address[1]}"


def main():
    collector = Collector()
    stubs = switchyard_client.load_stubs()
    w = stubs.workers_pb2
    # A tokenizer for the HTTP front of the "llama" engine (it detokenizes).
    tokenizer_dir = tempfile.mkdtemp()
    make_tokenizer(tokenizer_dir)
    router = spawn(
        [SWITCHYARD, "serve", "--grpc-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0",
         "--policy", "round_robin", "--otlp-endpoint", f"http://127.0.0.1:{collector.port}",
         "--tokenizer", f"llama={tokenizer_dir}"],
        # Export every 100 ms rather than 5 s: the test waits less.
        env={"OTEL_BSP_SCHEDULE_DELAY": "100"},
    )
    grpc_addr = read_after(router, "switchyard listening on")
    http_addr = read_after(router, "switchyard http listening on")
    channel = grpc.insecure_channel(grpc_addr)
    workers = stubs.workers_pb2_grpc.WorkerManagementStub(channel)
    scheduler = sgl_grpc.SglangSchedulerStub(channel)

    def add(url, role=w.WORKER_ROLE_REGULAR, bootstrap_port=None, model_id=""):
        spec = w.WorkerSpec(url=url, model_id=model_id, role=role)
        if bootstrap_port is not None:
            spec.bootstrap_port = bootstrap_port
        return workers.AddWorker(w.AddWorkerRequest(worker=spec), timeout=10).worker

    def generate(request_id, header, model):
        request = sgl.GenerateRequest(request_id=request_id, tokenized=sgl.TokenizedInput(input_ids=[1, 2, 3]))
        metadata = [("traceparent", header), ("x-switchyard-model", model)]
        return list(scheduler.Generate(request, metadata=metadata, timeout=10))

    fakes = []
    try:
        # --- A regular call: client -> router -> worker in one trace.
        engine = FakeEngine("sglang", "llama", tokens=2)
        fakes.append(engine)
        info = add(engine.url)
        trace_id, client_span, header = traceparent()
        assert generate("traced-1", header, "llama")[-1].complete.finish_reason == "length"
        seen_trace, seen_parent = parent_of(engine.metadata[-1]["traceparent"])
        assert seen_trace == trace_id, "the worker's traceparent continues the client's trace"
        assert seen_parent != client_span, "the worker's parent is the router's span, not the client's"
        [span] = collector.in_trace(trace_id, 1)
        assert span.name == "sglang.grpc.scheduler.SglangScheduler/Generate", span.name
        assert span.kind == SERVER
        assert span.parent_span_id.hex() == client_span, "the router's span is the client span's child"
        assert span.span_id.hex() == seen_parent, "the worker was handed the router's span"
        attrs = attributes(span)
        assert attrs["switchyard.model"] == "llama", attrs
        assert attrs["worker.id"] == info.id and attrs["worker.url"] == engine.url, attrs
        assert attrs["switchyard.policy"] == "round_robin" and attrs["switchyard.route"] == "regular", attrs
        assert attrs["switchyard.request_id"] == "traced-1", attrs
        assert span.end_time_unix_nano >= span.start_time_unix_nano > 0
        print("ok: a call's span is the client span's child and the worker gets the router's span as parent")

        # --- PD: the call's span with a child per side; each side's worker
        # gets its own side's span.
        prefill = FakeEngine("sglang", "pd", tokens=1)
        decode = FakeEngine("sglang", "pd", tokens=2)
        fakes += [prefill, decode]
        add(prefill.url, role=w.WORKER_ROLE_PREFILL, bootstrap_port=8998)
        add(decode.url, role=w.WORKER_ROLE_DECODE)
        trace_id, client_span, header = traceparent()
        generate("traced-pd", header, "pd")
        spans = {s.name: s for s in collector.in_trace(trace_id, 3)}
        call = spans["sglang.grpc.scheduler.SglangScheduler/Generate"]
        assert call.parent_span_id.hex() == client_span
        assert attributes(call)["switchyard.route"] == "pd"
        for side, fake in [("prefill", prefill), ("decode", decode)]:
            span = spans[side]
            assert span.kind == CLIENT and span.parent_span_id.hex() == call.span_id.hex(), side
            seen_trace, seen_parent = parent_of(fake.metadata[-1]["traceparent"])
            assert (seen_trace, seen_parent) == (trace_id, span.span_id.hex()), side
            assert attributes(span)["worker.url"] == fake.url, side
        print("ok: a PD call has a prefill and a decode child span; each side's worker gets its own")

        # --- A worker that cannot be reached is passed over: a retry event.
        dead = FakeEngine("sglang", "flaky", tokens=1)
        live = FakeEngine("sglang", "flaky", tokens=1)
        fakes += [dead, live]
        dead_info = add(dead.url)
        add(live.url)
        dead.stop()
        events = []
        for i in range(2):  # round robin: at least one starts at the dead worker
            trace_id, _, header = traceparent()
            generate(f"retry-{i}", header, "flaky")
            [span] = collector.in_trace(trace_id, 1)
            events += [(e.name, {a.key: a.value.string_value for a in e.attributes}) for e in span.events]
        retries = [attrs for name, attrs in events if name == "retry"]
        assert retries, events
        assert all(r["worker.id"] == dead_info.id and r["error"] for r in retries), retries
        print("ok: a worker passed over as unreachable is a retry event on the call's span")

        # --- A refused call is traced too, failed.
        trace_id, client_span, header = traceparent()
        try:
            next(scheduler.Generate(sgl.GenerateRequest(request_id="x"), metadata=[("traceparent", header), ("x-switchyard-model", "nobody")], timeout=10))
            raise AssertionError("a model nobody serves must be refused")
        except grpc.RpcError as e:
            assert e.code() != grpc.StatusCode.OK, e
        [span] = collector.in_trace(trace_id, 1)
        assert span.status.code == 2 and span.status.message, span.status  # STATUS_CODE_ERROR
        print("ok: a refused call's span is marked failed with the reason")

        # --- HTTP in front of gRPC engines (SGLang's /generate shape, token
        # ids in): the client's trace goes on to the engine.
        trace_id, client_span, header = traceparent()
        post_generate(http_addr, {"model": "llama", "input_ids": [1, 2, 3], "sampling_params": {"max_new_tokens": 2}}, header)
        seen_trace, seen_parent = parent_of(engine.metadata[-1]["traceparent"])
        [span] = collector.in_trace(trace_id, 1)
        assert span.parent_span_id.hex() == client_span, "the HTTP client's span is the parent"
        assert (seen_trace, seen_parent) == (trace_id, span.span_id.hex())
        print("ok: HTTP to a gRPC engine (SGLang's /generate) continues the client's trace to the engine")

        # --- HTTP: the same trace through the HTTP router.
        worker = HttpWorker()
        add(worker.url, model_id="web")
        trace_id, client_span, header = traceparent()
        post_generate(http_addr, {"model": "web", "text": "hello"}, header)
        seen_trace, seen_parent = parent_of(worker.headers_seen[-1]["traceparent"])
        [span] = collector.in_trace(trace_id, 1)
        assert span.name == "/generate" and span.parent_span_id.hex() == client_span, span
        assert (seen_trace, seen_parent) == (trace_id, span.span_id.hex())
        attrs = attributes(span)
        assert attrs["http.response.status_code"] == 200 and attrs["switchyard.model"] == "web", attrs
        print("ok: an HTTP request's span continues the client's trace, and its worker gets the router's span")
        worker.shutdown()

        # --- Without a client traceparent, at the default sampling (1 in
        # 100): the calls are served, and workers of unsampled ones get no
        # traceparent.
        before = len(engine.metadata)
        for i in range(20):
            request = sgl.GenerateRequest(request_id=f"plain-{i}", tokenized=sgl.TokenizedInput(input_ids=[1]))
            list(scheduler.Generate(request, metadata=[("x-switchyard-model", "llama")], timeout=10))
        announced = [m for m in engine.metadata[before:] if "traceparent" in m]
        assert len(engine.metadata) - before == 20 and len(announced) <= 3, announced
        print(f"ok: untraced calls are served; {len(announced)} of 20 sampled at the default ratio")

        # --- A collector that is down costs no call.
        dead_collector = Collector()
        dead_collector.server.stop(0)
        lonely = spawn(
            [SWITCHYARD, "serve", "--grpc-listen", "127.0.0.1:0", "--worker", engine.url,
             "--otlp-endpoint", f"http://127.0.0.1:{dead_collector.port}"],
            env={"OTEL_BSP_SCHEDULE_DELAY": "100"},
        )
        lonely_addr = read_after(lonely, "switchyard listening on")
        with grpc.insecure_channel(lonely_addr) as ch:
            stub = sgl_grpc.SglangSchedulerStub(ch)
            for i in range(5):
                _, _, header = traceparent()
                request = sgl.GenerateRequest(request_id=f"lonely-{i}", tokenized=sgl.TokenizedInput(input_ids=[1]))
                out = list(stub.Generate(request, metadata=[("traceparent", header)], timeout=10))
                assert out[-1].complete.finish_reason == "length"
                time.sleep(0.2)  # exports are attempted and fail meanwhile
        print("ok: with the collector down, calls are served as before")

        # --- A collector behind TLS (https://), its CA among the system's
        # roots (SSL_CERT_FILE, as an operator's trust store would hold it).
        ca = make_ca("collector")
        secure = Collector(tls=issue(ca, "collector"))
        secured = spawn(
            [SWITCHYARD, "serve", "--grpc-listen", "127.0.0.1:0", "--worker", engine.url,
             "--otlp-endpoint", f"https://localhost:{secure.port}"],
            env={"OTEL_BSP_SCHEDULE_DELAY": "100", "SSL_CERT_FILE": ca[2]},
        )
        secured_addr = read_after(secured, "switchyard listening on")
        trace_id, client_span, header = traceparent()
        with grpc.insecure_channel(secured_addr) as ch:
            request = sgl.GenerateRequest(request_id="secure", tokenized=sgl.TokenizedInput(input_ids=[1]))
            list(sgl_grpc.SglangSchedulerStub(ch).Generate(request, metadata=[("traceparent", header)], timeout=10))
        [span] = secure.in_trace(trace_id, 1)
        assert span.parent_span_id.hex() == client_span
        secure.server.stop(0)
        print("ok: spans reach a collector over TLS (https://) trusted through the system's roots")
    finally:
        for fake in fakes:
            fake.stop()
        stop_all()
        collector.server.stop(0)
        shutil.rmtree(tokenizer_dir, ignore_errors=True)
    print("all tracing checks passed")


if __name__ == "__main__":
    main()

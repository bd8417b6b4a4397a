#!/usr/bin/env python3
"""Engine protocols checked by code that is not ours.

The stubs are the published `smg-grpc-proto` package's (the SGLang gateway
project's). Small grpcio fake engines written from those stubs (not the
Rust mock) sit behind the built `switchyard serve`; a grpcio client calls
`SglangScheduler/Generate` and `VllmEngine/Generate` through it. The fakes
receive the raw request bytes and check what arrives: the client's bytes
unchanged but for the PD fields, a room per call, `Abort` on cancel, and
unknown fields kept both ways.

Run with: python3 tests/python/test_engines.py   (after cargo build --bins)
"""

import os
import sys
import threading
import time
from concurrent import futures

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "clients", "python"))
sys.path.insert(0, HERE)

import grpc  # noqa: E402
import smg_grpc_proto  # noqa: E402
from grpc_health.v1 import health, health_pb2, health_pb2_grpc  # noqa: E402
from smg_grpc_proto import sglang_scheduler_pb2 as sgl  # noqa: E402
from smg_grpc_proto import sglang_scheduler_pb2_grpc as sgl_grpc  # noqa: E402
from smg_grpc_proto import vllm_engine_pb2 as vllm  # noqa: E402
from smg_grpc_proto import vllm_engine_pb2_grpc as vllm_grpc  # noqa: E402

import switchyard_client  # noqa: E402
from procs import SWITCHYARD, start, stop_all  # noqa: E402

SGLANG = "sglang.grpc.scheduler.SglangScheduler"
VLLM = "vllm.grpc.engine.VllmEngine"

# A field no version of either proto defines (number 9999, varint 42):
# relayed, it must arrive byte for byte.
UNKNOWN = bytes([0xF8, 0xE0, 0x04, 42])


def eventually(check, what, timeout=10.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if check():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for: {what}")


class FakeEngine:
    """One engine process as the router sees it: grpc.health.v1 naming the
    engine's service, GetModelInfo, Abort, and a Generate that records the
    raw request bytes and streams `tokens` chunks (each response message
    carrying UNKNOWN), pausing `delay` before each."""

    def __init__(self, engine, model, tokens=3, delay=0.0, kv_params=None):
        self.engine, self.model, self.tokens, self.delay = engine, model, tokens, delay
        self.kv_params = kv_params  # vLLM prefill: what its completion returns
        self.received = []  # raw GenerateRequest bytes
        self.metadata = []  # each Generate call's metadata, as a dict
        self.aborted = []
        self.cancelled = threading.Event()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
        service = SGLANG if engine == "sglang" else VLLM
        pb = sgl if engine == "sglang" else vllm

        def unary(fn, request, response):
            return grpc.unary_unary_rpc_method_handler(
                fn, request_deserializer=request.FromString, response_serializer=response.SerializeToString
            )

        handlers = {
            # Bytes in, bytes out: what arrives is checked byte for byte.
            "Generate": grpc.unary_stream_rpc_method_handler(self._generate),
            "Abort": unary(self._abort, pb.AbortRequest, pb.AbortResponse),
            "GetModelInfo": unary(self._model_info, pb.GetModelInfoRequest, pb.GetModelInfoResponse),
        }
        self.server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, handlers),))
        health_servicer = health.HealthServicer()
        health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()
        self.url = f"grpc://127.0.0.1:{self.port}"

    def _generate(self, raw, context):
        self.received.append(raw)
        self.metadata.append(dict(context.invocation_metadata()))
        context.add_callback(self.cancelled.set)
        if self.engine == "sglang":
            request = sgl.GenerateRequest.FromString(raw)
            for i in range(self.tokens):
                time.sleep(self.delay)
                if not context.is_active():
                    return
                chunk = sgl.GenerateResponse(
                    request_id=request.request_id,
                    chunk=sgl.GenerateStreamChunk(token_ids=[100 + i], completion_tokens=i + 1),
                )
                yield chunk.SerializeToString() + UNKNOWN
            done = sgl.GenerateResponse(
                request_id=request.request_id,
                complete=sgl.GenerateComplete(finish_reason="length", completion_tokens=self.tokens),
            )
            yield done.SerializeToString() + UNKNOWN
        else:
            for i in range(self.tokens):
                time.sleep(self.delay)
                if not context.is_active():
                    return
                chunk = vllm.GenerateResponse(chunk=vllm.GenerateStreamChunk(token_ids=[100 + i]))
                yield chunk.SerializeToString() + UNKNOWN
            complete = vllm.GenerateComplete(finish_reason="length", completion_tokens=self.tokens)
            if self.kv_params is not None:
                complete.kv_transfer_params_json = self.kv_params
            yield vllm.GenerateResponse(complete=complete).SerializeToString() + UNKNOWN

    def _abort(self, request, context):
        if self.engine == "sglang":
            self.aborted.append(request.request_id)
            return sgl.AbortResponse(success=True)
        self.aborted.extend(request.request_ids)
        return vllm.AbortResponse()

    def _model_info(self, request, context):
        if self.engine == "sglang":
            return sgl.GetModelInfoResponse(served_model_name=self.model, max_context_length=2048)
        return vllm.GetModelInfoResponse(served_model_name=self.model, max_context_length=1024)

    def stop(self):
        self.server.stop(0)


def raw_stream(channel, service):
    """A Generate callable that sends and receives raw bytes."""
    return channel.unary_stream(
        f"/{service}/Generate",
        request_serializer=lambda b: b,
        response_deserializer=lambda b: b,
    )


def vendored_protos_are_the_published_ones():
    package = os.path.join(os.path.dirname(smg_grpc_proto.__file__), "proto")
    for name in ["common.proto", "sglang_scheduler.proto", "vllm_engine.proto", "trtllm_service.proto", "mlx_engine.proto"]:
        with open(os.path.join(REPO, "proto", "smg", name), "rb") as ours:
            with open(os.path.join(package, name), "rb") as published:
                assert ours.read() == published.read(), f"proto/smg/{name} differs from smg-grpc-proto {smg_grpc_proto.__version__}"
    print(f"ok: proto/smg is smg-grpc-proto {smg_grpc_proto.__version__}")


def main():
    vendored_protos_are_the_published_ones()
    stubs = switchyard_client.load_stubs()
    w = stubs.workers_pb2
    router = start(
        [SWITCHYARD, "serve", "--grpc-listen", "127.0.0.1:0", "--health-interval-ms", "100", "--health-timeout-ms", "80"],
        "switchyard listening on",
    )
    channel = grpc.insecure_channel(router)
    grpc.channel_ready_future(channel).result(timeout=10)
    workers = stubs.workers_pb2_grpc.WorkerManagementStub(channel)

    def add(fake, role=w.WORKER_ROLE_REGULAR, bootstrap_port=None, model_id=""):
        spec = w.WorkerSpec(url=fake.url, model_id=model_id, role=role)
        if bootstrap_port is not None:
            spec.bootstrap_port = bootstrap_port
        return workers.AddWorker(w.AddWorkerRequest(worker=spec), timeout=10).worker

    fakes = []
    try:
        # --- SGLang, regular: detected, relayed byte for byte both ways.
        s1 = FakeEngine("sglang", "llama", tokens=3)
        fakes.append(s1)
        info = add(s1)
        assert info.spec.engine == w.ENGINE_SGLANG, info
        assert info.spec.model_id == "llama" and info.model_info.max_context_length == 2048, info
        print("ok: a grpcio SGLang engine is detected, its model taken from GetModelInfo")

        # The same from the command line: --worker with neither model nor engine.
        second = start(
            [SWITCHYARD, "serve", "--grpc-listen", "127.0.0.1:0", "--worker", s1.url],
            "switchyard listening on",
        )
        with grpc.insecure_channel(second) as ch:
            listed = stubs.workers_pb2_grpc.WorkerManagementStub(ch).ListWorkers(w.ListWorkersRequest(), timeout=5).workers
        assert [(x.spec.engine, x.spec.model_id) for x in listed] == [(w.ENGINE_SGLANG, "llama")], listed
        print("ok: switchyard serve --worker URL identifies the engine and model at startup")

        request = sgl.GenerateRequest(
            request_id="py-1",
            tokenized=sgl.TokenizedInput(input_ids=[1, 2, 3]),
            sampling_params=sgl.SamplingParams(temperature=0.7, top_p=1.0, top_k=-1, max_new_tokens=3),
            stream=True,
        )
        sent = request.SerializeToString() + UNKNOWN
        replies = list(raw_stream(channel, SGLANG)(sent, timeout=10))
        assert s1.received[-1] == sent, "the engine receives the client's bytes unchanged"
        assert len(replies) == 4 and all(r.endswith(UNKNOWN) for r in replies), "unknown fields kept on the way back"
        parsed = [sgl.GenerateResponse.FromString(r) for r in replies]
        assert [p.chunk.token_ids[0] for p in parsed[:3]] == [100, 101, 102]
        assert parsed[3].complete.finish_reason == "length"
        print("ok: SglangScheduler/Generate relayed byte for byte, unknown fields kept both ways")

        # The published stub itself, as a gateway would use it.
        stub = sgl_grpc.SglangSchedulerStub(channel)
        out = list(stub.Generate(sgl.GenerateRequest(request_id="py-2", tokenized=sgl.TokenizedInput(input_ids=[4])), timeout=10))
        assert out[-1].complete.finish_reason == "length" and out[-1].request_id == "py-2"
        health_reply = stub.HealthCheck(sgl.HealthCheckRequest(), timeout=5)
        assert health_reply.healthy, health_reply.message
        model = stub.GetModelInfo(sgl.GetModelInfoRequest(), timeout=5)
        assert model.served_model_name == "llama"
        print("ok: the published SglangScheduler stub works against the router (Generate, HealthCheck, GetModelInfo)")

        # Cancel: the engine is sent Abort for the request.
        s1.delay = 0.2
        s1.tokens = 50
        call = stub.Generate(sgl.GenerateRequest(request_id="py-cancel", tokenized=sgl.TokenizedInput(input_ids=[5])), timeout=30)
        next(call)
        call.cancel()
        eventually(lambda: "py-cancel" in s1.aborted, "the SGLang engine is sent Abort(py-cancel)")
        print("ok: cancelling an SGLang call sends the engine Abort")

        # --- SGLang PD: rooms chosen by the router, the rest unchanged.
        sp = FakeEngine("sglang", "pd-s", tokens=1)
        sd = FakeEngine("sglang", "pd-s", tokens=2)
        fakes += [sp, sd]
        add(sp, role=w.WORKER_ROLE_PREFILL, bootstrap_port=8998)
        add(sd, role=w.WORKER_ROLE_DECODE)
        originals = {}
        lock = threading.Lock()

        def pd_call(i):
            req = sgl.GenerateRequest(
                request_id=f"pd-{i}",
                tokenized=sgl.TokenizedInput(input_ids=[7, 8, 9]),
                disaggregated_params=sgl.DisaggregatedParams(bootstrap_host="client", bootstrap_port=1, bootstrap_room=5),
                stream=True,
            )
            raw = req.SerializeToString() + UNKNOWN
            with lock:
                originals[req.request_id] = raw
            md = (("x-switchyard-model", "pd-s"),)
            return list(raw_stream(channel, SGLANG)(raw, metadata=md, timeout=10))

        with futures.ThreadPoolExecutor(8) as pool:
            results = list(pool.map(pd_call, range(8)))
        assert all(len(r) == 3 for r in results), "the decode side's stream is relayed"
        rooms = set()
        for side in (sp, sd):
            assert len(side.received) == 8
            for raw in side.received:
                parsed = sgl.GenerateRequest.FromString(raw)
                original = originals[parsed.request_id]
                assert raw.startswith(original), "every byte the client sent is kept"
                rest = sgl.GenerateRequest.FromString(raw[len(original):])
                assert rest.ListFields()[0][0].name == "disaggregated_params" and len(rest.ListFields()) == 1, "only the PD fields are added"
                p = parsed.disaggregated_params
                assert p.bootstrap_host == "127.0.0.1" and p.bootstrap_port == 8998, p
                assert 0 < p.bootstrap_room < 2**31 and p.bootstrap_room != 5
                if side is sp:
                    rooms.add(p.bootstrap_room)
        decode_rooms = {sgl.GenerateRequest.FromString(r).disaggregated_params.bootstrap_room for r in sd.received}
        assert len(rooms) == 8 and rooms == decode_rooms, "one room per call, the same on both sides"
        print("ok: SGLang PD: both sides get the prefill's host and port and a unique router-chosen room; nothing else changes")

        # --- vLLM: regular with text, then PD with the KV handoff.
        v1 = FakeEngine("vllm", "qwen", tokens=2)
        fakes.append(v1)
        info = add(v1)
        assert info.spec.engine == w.ENGINE_VLLM and info.spec.model_id == "qwen", info
        vstub = vllm_grpc.VllmEngineStub(channel)
        out = list(vstub.Generate(vllm.GenerateRequest(request_id="v-1", text="hello there", stream=True), timeout=10))
        assert [m.chunk.token_ids[0] for m in out[:2]] == [100, 101] and out[2].complete.finish_reason == "length"
        assert vllm.GenerateRequest.FromString(v1.received[-1]).text == "hello there"
        v1.delay, v1.tokens = 0.2, 50
        call = vstub.Generate(vllm.GenerateRequest(request_id="v-cancel", text="x", stream=True), timeout=30)
        next(call)
        call.cancel()
        eventually(lambda: "v-cancel" in v1.aborted, "the vLLM engine is sent Abort([v-cancel])")
        print("ok: VllmEngine/Generate relayed; cancel sends the engine Abort")

        handoff = '{"remote_engine_id":"e1","remote_block_ids":[1,2],"remote_host":"10.0.0.9","remote_port":5600}'
        vp = FakeEngine("vllm", "pd-v", tokens=1, kv_params=handoff)
        vd = FakeEngine("vllm", "pd-v", tokens=3)
        fakes += [vp, vd]
        add(vp, role=w.WORKER_ROLE_PREFILL, bootstrap_port=5600)
        add(vd, role=w.WORKER_ROLE_DECODE)
        original = vllm.GenerateRequest(
            request_id="v-pd",
            tokenized=vllm.TokenizedInput(input_ids=[1, 2]),
            sampling_params=vllm.SamplingParams(max_tokens=3, temperature=0.5),
            stream=True,
        ).SerializeToString() + UNKNOWN
        replies = list(raw_stream(channel, VLLM)(original, metadata=(("x-switchyard-model", "pd-v"),), timeout=10))
        assert len(replies) == 4 and all(r.endswith(UNKNOWN) for r in replies), "the decode stream, unknown fields kept"
        prefill_raw, decode_raw = vp.received[-1], vd.received[-1]
        assert prefill_raw.startswith(original) and decode_raw.startswith(original), "the client's bytes are kept"
        prefill = vllm.GenerateRequest.FromString(prefill_raw)
        assert "do_remote_decode" in prefill.kv_transfer_params_json and prefill.sampling_params.max_tokens == 1
        assert abs(prefill.sampling_params.temperature - 0.5) < 1e-6, "other sampling parameters kept"
        decode = vllm.GenerateRequest.FromString(decode_raw)
        assert decode.kv_transfer_params_json == handoff, "decode carries what the prefill returned"
        assert decode.sampling_params.max_tokens == 3
        print("ok: vLLM PD: prefill first (one token, do_remote_decode), decode with the prefill's kv_transfer_params_json")
    finally:
        for f in fakes:
            f.stop()
        stop_all()


if __name__ == "__main__":
    main()

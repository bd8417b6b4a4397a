#!/usr/bin/env python3
"""A small Python client for Switchyard, built on grpcio.

Stubs are generated from the repository's proto/ with grpcio-tools the first
time they are needed (into clients/python/.gen), so the client always speaks
the proto that is checked in.

    pip install -r clients/python/requirements.txt
    python3 clients/python/switchyard_client.py --router 127.0.0.1:50051 generate --model demo "Hello"
    python3 clients/python/switchyard_client.py --router 127.0.0.1:50051 add grpc://127.0.0.1:7001 --model demo
    python3 clients/python/switchyard_client.py --router 127.0.0.1:50051 list
    python3 clients/python/switchyard_client.py --router 127.0.0.1:50051 remove w-0123456789abcdef
    python3 clients/python/switchyard_client.py --router 127.0.0.1:50051 health
"""

import argparse
import importlib
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
PROTO_DIR = os.path.join(REPO, "proto")
GEN_DIR = os.path.join(HERE, ".gen")
PROTOS = ["switchyard/v1/workers.proto", "switchyard/v1/inference.proto"]


def load_stubs():
    """Generates (if stale) and imports the switchyard.v1 stubs.

    Returns a namespace with workers_pb2, workers_pb2_grpc, inference_pb2,
    inference_pb2_grpc.
    """
    newest_proto = max(os.path.getmtime(os.path.join(PROTO_DIR, p)) for p in PROTOS)
    marker = os.path.join(GEN_DIR, ".stamp")
    if not os.path.exists(marker) or os.path.getmtime(marker) < newest_proto:
        from grpc_tools import protoc
        import grpc_tools

        os.makedirs(GEN_DIR, exist_ok=True)
        well_known = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
        args = [
            "grpc_tools.protoc",
            f"-I{PROTO_DIR}",
            f"-I{well_known}",
            f"--python_out={GEN_DIR}",
            f"--grpc_python_out={GEN_DIR}",
            *PROTOS,
        ]
        if protoc.main(args) != 0:
            raise RuntimeError("protoc failed to generate the switchyard stubs")
        with open(marker, "w") as f:
            f.write("generated\n")
    if GEN_DIR not in sys.path:
        sys.path.insert(0, GEN_DIR)

    class Stubs:
        workers_pb2 = importlib.import_module("switchyard.v1.workers_pb2")
        workers_pb2_grpc = importlib.import_module("switchyard.v1.workers_pb2_grpc")
        inference_pb2 = importlib.import_module("switchyard.v1.inference_pb2")
        inference_pb2_grpc = importlib.import_module("switchyard.v1.inference_pb2_grpc")

    return Stubs


ROLES = {"regular": 0, "prefill": 1, "decode": 2}


def main(argv=None):
    parser = argparse.ArgumentParser(description="Talk to a Switchyard router.")
    parser.add_argument("--router", default="127.0.0.1:50051", help="router address host:port")
    sub = parser.add_subparsers(dest="command", required=True)

    add = sub.add_parser("add", help="register a worker")
    add.add_argument("url")
    add.add_argument("--model", default="", help="required for switchyard and http workers; SGLang/vLLM: the engine's model by default")
    add.add_argument("--engine", choices=["switchyard", "sglang", "vllm"], help="a grpc:// worker's engine (default: detect)")
    add.add_argument("--role", choices=sorted(ROLES), default="regular")
    add.add_argument("--bootstrap-port", type=int)

    remove = sub.add_parser("remove", help="unregister a worker by id or url")
    remove.add_argument("target")

    sub.add_parser("list", help="list workers")

    gen = sub.add_parser("generate", help="stream a completion")
    gen.add_argument("text")
    gen.add_argument("--model", default="")
    gen.add_argument("--max-new-tokens", type=int, default=0)

    health = sub.add_parser("health", help="grpc.health.v1 status")
    health.add_argument("service", nargs="?", default="switchyard.v1.Inference")

    args = parser.parse_args(argv)

    import grpc

    stubs = load_stubs()
    channel = grpc.insecure_channel(args.router)
    workers = stubs.workers_pb2_grpc.WorkerManagementStub(channel)
    inference = stubs.inference_pb2_grpc.InferenceStub(channel)
    w = stubs.workers_pb2
    try:
        if args.command == "add":
            spec = w.WorkerSpec(url=args.url, model_id=args.model, role=ROLES[args.role])
            if args.engine:
                spec.engine = w.Engine.Value("ENGINE_" + args.engine.upper())
            if args.bootstrap_port is not None:
                spec.bootstrap_port = args.bootstrap_port
            info = workers.AddWorker(w.AddWorkerRequest(worker=spec)).worker
            engine = w.Engine.Name(info.spec.engine).removeprefix("ENGINE_").lower()
            print(f"added {info.id} {info.spec.url} model={info.spec.model_id} engine={engine}")
        elif args.command == "remove":
            target = args.target
            req = w.RemoveWorkerRequest(url=target) if "://" in target else w.RemoveWorkerRequest(id=target)
            info = workers.RemoveWorker(req).worker
            print(f"removed {info.id} {info.spec.url}")
        elif args.command == "list":
            for info in workers.ListWorkers(w.ListWorkersRequest()).workers:
                health = w.HealthStatus.Name(info.health)
                role = w.WorkerRole.Name(info.spec.role)
                engine = w.Engine.Name(info.spec.engine).removeprefix("ENGINE_").lower()
                print(f"{info.id}  {info.spec.url}  model={info.spec.model_id}  engine={engine}  {role}  {health}  in_flight={info.in_flight}  load={info.load}")
        elif args.command == "generate":
            i = stubs.inference_pb2
            req = i.GenerateRequest(model=args.model, text=args.text)
            if args.max_new_tokens:
                req.sampling_params.max_new_tokens = args.max_new_tokens
            call = inference.Generate(req)
            first = True
            for response in call:
                if first:
                    # The router's headers come with the first answer (an
                    # error before any has none).
                    metadata = dict(call.initial_metadata())
                    print(f"[worker {metadata.get('x-switchyard-worker-id')}, request {response.request_id}]")
                    first = False
                kind = response.WhichOneof("response")
                if kind == "chunk":
                    print(response.chunk.text, end="", flush=True)
                elif kind == "complete":
                    c = response.complete
                    print(f"\n[finish_reason={c.finish_reason} completion_tokens={c.completion_tokens}]")
        elif args.command == "health":
            from grpc_health.v1 import health_pb2, health_pb2_grpc

            resp = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=args.service))
            print(f"{args.service or '(server)'}: {health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)}")
            if resp.status != health_pb2.HealthCheckResponse.SERVING:
                return 1
    except grpc.RpcError as e:
        print(f"error: {e.code().name}: {e.details()}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

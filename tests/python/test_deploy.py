#!/usr/bin/env python3
"""The deploy files agree with each other and with the binary.

Statically: the ConfigMap's TOML is a config whose listen ports are the
Deployment's named container ports, the Service's target ports name them,
the Dockerfile exposes them, the probes point at them, and the Helm chart's
values and templates say the same. Then for real: the binary is started
with the Deployment's own arguments and the ConfigMap's config (addresses
moved to loopback, ports chosen by the OS), and answers what the probes
ask: grpc.health.v1 Check for the probes' service on the gRPC port, and
GET /livez on the admin port; /metrics answers too.

Run with: python3 tests/python/test_deploy.py   (after cargo build --bins)
"""

import os
import re
import sys
import tempfile
import tomllib
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

import grpc  # noqa: E402
import yaml  # noqa: E402
from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: E402

from procs import SWITCHYARD, read_after, spawn, stop_all  # noqa: E402

DEPLOY = os.path.join(REPO, "deploy")


def load(path):
    with open(os.path.join(DEPLOY, path)) as f:
        return yaml.safe_load(f)


def port_of(addr):
    return int(addr.rsplit(":", 1)[1])


def main():
    configmap = load("kubernetes/configmap.yaml")
    deployment = load("kubernetes/deployment.yaml")
    service = load("kubernetes/service.yaml")
    config_text = configmap["data"]["switchyard.toml"]
    config = tomllib.loads(config_text)
    listen = {
        "grpc": port_of(config["grpc_listen"]),
        "http": port_of(config["http_listen"]),
        "admin": port_of(config["admin_listen"]),
    }

    container = deployment["spec"]["template"]["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == listen, (ports, listen)
    assert {p["targetPort"] for p in service["spec"]["ports"]} == set(listen), service
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items(), "the Service selects the pods"
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["grpc"]["port"] == listen["grpc"], container[probe]
    startup = container["startupProbe"]["httpGet"]
    assert startup["port"] == listen["admin"] and startup["path"] == "/livez", startup
    mount = container["volumeMounts"][0]["mountPath"]
    assert container["args"][container["args"].index("--config") + 1] == f"{mount}/switchyard.toml"
    env = {e["name"] for e in container["env"]}
    assert "SWITCHYARD_ADMIN_KEYS" in env, "beyond loopback the router needs admin keys"

    with open(os.path.join(DEPLOY, "Dockerfile")) as f:
        dockerfile = f.read()
    exposed = {int(p) for line in dockerfile.splitlines() if line.startswith("EXPOSE") for p in line.split()[1:]}
    assert exposed == set(listen.values()), exposed
    assert '"/usr/local/bin/switchyard"' in dockerfile
    cmd = re.search(r'^CMD (\[.*\])$', dockerfile, re.M).group(1)
    assert f'"{mount}/switchyard.toml"' in cmd, cmd

    chart = load("helm/switchyard/Chart.yaml")
    values = load("helm/switchyard/values.yaml")
    assert chart["name"] == "switchyard"
    assert values["ports"] == listen, values["ports"]
    templates = os.path.join(DEPLOY, "helm/switchyard/templates")
    rendered = {}
    for name in os.listdir(templates):
        with open(os.path.join(templates, name)) as f:
            rendered[name] = f.read()
    for kind in listen:
        assert f".Values.ports.{kind}" in rendered["deployment.yaml"], kind
        assert f".Values.ports.{kind}" in rendered["configmap.yaml"], kind
        assert f".Values.ports.{kind}" in rendered["service.yaml"], kind
    assert 'grpc:\n              port: {{ .Values.ports.grpc }}' in rendered["deployment.yaml"]
    print("ok: the ConfigMap, Deployment, Service, Dockerfile and Helm chart name the same ports and probes")

    # The binary, as the Deployment starts it, on loopback ports of its own.
    work = tempfile.mkdtemp(prefix="switchyard-deploy-")
    local = re.sub(r'"0\.0\.0\.0:\d+"', '"127.0.0.1:0"', config_text)
    config_path = os.path.join(work, "switchyard.toml")
    with open(config_path, "w") as f:
        f.write(local)
    args = [config_path if a == f"{mount}/switchyard.toml" else a for a in container["args"]]
    router = spawn([SWITCHYARD, *args], env={"SWITCHYARD_ADMIN_KEYS": "deploy-test-admin-key-0123456789"})
    grpc_addr = read_after(router, "switchyard listening on")
    read_after(router, "switchyard http listening on")
    admin_addr = read_after(router, "switchyard admin listening on")

    channel = grpc.insecure_channel(grpc_addr)
    grpc.channel_ready_future(channel).result(timeout=10)
    for probe in ("livenessProbe", "readinessProbe"):
        service_name = container[probe]["grpc"].get("service", "")
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service_name), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING, (probe, reply)
    with urllib.request.urlopen(f"http://{admin_addr}{startup['path']}", timeout=5) as r:
        assert r.status == 200
    with urllib.request.urlopen(f"http://{admin_addr}/metrics", timeout=5) as r:
        assert r.status == 200 and b"switchyard_workers" in r.read()
    print("ok: the binary, started with the Deployment's arguments and the ConfigMap's config, answers its probes")
    print("python deploy test passed")


if __name__ == "__main__":
    try:
        main()
    finally:
        stop_all()

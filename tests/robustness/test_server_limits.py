"""Defect 8: what a request claims is checked before anything is allocated; every client error is a 400."""

from __future__ import annotations

import base64
import gzip
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import nibabel as nib
import numpy as np
import pytest

from servers import rsnflow_serve_process


@pytest.fixture(scope="module")
def server(tiny_mlp: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    """``rsnflow serve`` with the default limits (64 MB bodies, 128 maps); yields its URL and PID."""
    log = tmp_path_factory.mktemp("srv") / "serve.log"
    with rsnflow_serve_process(str(tiny_mlp), log) as (url, proc):
        yield url, proc.pid


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def _claiming(shape: tuple[int, ...]) -> bytes:
    """A ~100-byte gzipped NIfTI whose header claims ``shape`` float32 voxels."""
    img = nib.Nifti1Image(np.ones((2, 2, 2), np.float32), np.eye(4))
    img.header.set_data_shape(shape)
    return gzip.compress(img.header.binaryblock + b"\0" * 4 + np.ones(8, np.float32).tobytes())


@pytest.mark.parametrize(
    ("shape", "claim"),
    [((1500, 1500, 1000), "9,000,000,000"), ((2048, 1024, 256), "2,147,483,648"), ((10000,) * 3, "4,000,0")],
)
def test_size_claims_are_refused_without_allocating(server, shape, claim) -> None:
    url, pid = server
    body = _claiming(shape)
    assert len(body) < 200
    before = _rss_mb(pid)
    r = httpx.post(f"{url}/v1/models/rsn-classifier:predict", content=body, timeout=60)
    assert r.status_code == 400, r.text
    assert f"header claims {claim}" in r.json()["error"]
    assert _rss_mb(pid) - before < 200


def test_many_gzip_bombs_in_one_small_body_cost_one_allowance(server) -> None:
    url, pid = server
    img = nib.Nifti1Image(np.ones((245, 245, 245), np.float32), np.eye(4) * 0.8)  # 59 MB each, inflated
    bomb = base64.b64encode(gzip.compress(img.to_bytes(), compresslevel=9)).decode()
    payload = {"inputs": [{"name": "nifti", "datatype": "BYTES", "shape": [64], "data": [bomb] * 64}]}
    body = json.dumps(payload).encode()
    assert len(body) < 8 << 20
    before = _rss_mb(pid)
    t0 = time.perf_counter()
    r = httpx.post(f"{url}/v2/models/rsn-classifier/infer", content=body, timeout=120,
                   headers={"content-type": "application/json"})  # fmt: skip
    seconds = time.perf_counter() - t0
    assert r.status_code == 400, r.text[:300]
    assert "inflate to more than 67,108,864 bytes in total" in r.json()["error"]
    assert seconds < 15  # was 125 s of CPU and a 200
    assert _rss_mb(pid) - before < 400  # one inflated file at a time, never 64 of them


def test_a_v2_body_that_is_not_json_is_a_400_like_the_others(server) -> None:
    url, _ = server
    r = httpx.post(f"{url}/v2/models/rsn-classifier/infer", content=b"{not json",
                   headers={"content-type": "application/json"}, timeout=30)  # fmt: skip
    assert r.status_code == 400
    assert set(r.json()) == {"error"} and "invalid request body" in r.json()["error"]


@pytest.mark.parametrize("length", ["-5", "999999999", "abc"])
def test_a_bad_binary_header_length_is_a_clear_400(server, length) -> None:
    url, _ = server
    r = httpx.post(f"{url}/v2/models/rsn-classifier/infer", content=b'{"inputs": []}',
                   headers={"inference-header-content-length": length,
                            "content-type": "application/octet-stream"}, timeout=30)  # fmt: skip
    assert r.status_code == 400
    assert r.json()["error"].startswith("inference-header-content-length must be the length of the JSON part")

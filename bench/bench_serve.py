"""Latency of ``rsnflow serve`` under a bounded concurrent load on loopback.

For each model directory given (default: an untrained MLP, ResNet-50 2.5D and
r3d_18 written here, since latency does not depend on the weights), the
server is started on 127.0.0.1 and driven for ``--seconds`` per case by
``--concurrency`` client threads, each sending one request after the other:

* one map, V2 binary tensor (the fastest encoding);
* one map, V1 JSON numbers (what a curl user sends);
* a batch of 32 maps, V2 binary;
* a run's 100 component maps as one gzipped 4D NIfTI, one V2 ``BYTES``
  element with the binary extension (what ``rsnflow predict`` and
  ``rsnflow classify --model URL`` send); also reported per map.

Reported per case: requests, errors, p50 / p99 latency (ms), maps/s. The peer
is the same model called in this process (no HTTP), timed the same way, so
the ratio is the serving overhead. Usage::

    python bench/bench_serve.py [--seconds 60] [--concurrency 2] [--cases one,v1,batch,stack] [MODEL_DIR ...]
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import nibabel as nib
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from rsnflow.atlas import load_taxonomy
from rsnflow.models import RSNClassifier, load_classifier, save_classifier
from rsnflow.space import MNI4_AFFINE, MNI4_SHAPE, load_brain_mask
from servers import rsnflow_serve, v2_binary_request


def _models(root: Path, archs: list[str]) -> list[Path]:
    mask = np.asarray(load_brain_mask().dataobj) > 0
    classes = load_taxonomy().labels
    out = []
    for arch in archs:
        torch.manual_seed(0)
        out.append(save_classifier(RSNClassifier(arch, classes, mask), root / arch))
    return out


def _load(url: str, kw: dict[str, Any], seconds: float, concurrency: int) -> dict[str, float]:
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    stop = time.perf_counter() + seconds

    def client() -> None:
        nonlocal errors
        with httpx.Client(timeout=300) as c:
            while time.perf_counter() < stop:
                t0 = time.perf_counter()
                r = c.post(url, **kw)
                dt = time.perf_counter() - t0
                with lock:
                    latencies.append(dt)
                    errors += r.status_code != 200

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    ms = np.array(latencies) * 1000
    return {
        "requests": len(ms),
        "errors": errors,
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "requests_per_s": len(ms) / wall,
    }


def _bytes_request(data: bytes) -> dict[str, Any]:
    """httpx keywords for a V2 request of one BYTES element (a NIfTI file) with the binary extension."""
    element = len(data).to_bytes(4, "little") + data
    head = json.dumps(
        {"inputs": [{"name": "nifti", "datatype": "BYTES", "shape": [1],
                     "parameters": {"binary_data_size": len(element)}}]}
    ).encode()  # fmt: skip
    return {"content": head + element, "headers": {"inference-header-content-length": str(len(head))}}


def _in_process(model_dir: Path, batch: int, repeats: int = 7) -> float:
    model, _ = load_classifier(model_dir)
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((batch, *MNI4_SHAPE), dtype=np.float32))
    times = []
    with torch.inference_mode():
        model(x)
        for _ in range(repeats):
            t0 = time.perf_counter()
            torch.softmax(model(x), dim=1)
            times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="*", type=Path)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--stack", type=int, default=100, help="maps in the 4D NIfTI case")
    ap.add_argument("--archs", default="mlp,resnet2p5d,r3d18", help="models made here (no MODEL_DIR)")
    ap.add_argument("--cases", default="one,v1,batch,stack", help="comma-separated: one, v1, batch, stack")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    models = args.models or _models(tmp, args.archs.split(","))
    rng = np.random.default_rng(0)
    one = rng.standard_normal((1, *MNI4_SHAPE), dtype=np.float32)
    batch = rng.standard_normal((args.batch, *MNI4_SHAPE), dtype=np.float32)
    v1_body = json.dumps({"instances": one.tolist()}).encode()
    stack = rng.standard_normal((*MNI4_SHAPE, args.stack), dtype=np.float32)
    stack_gz = gzip.compress(nib.Nifti1Image(stack, MNI4_AFFINE).to_bytes(), compresslevel=6)
    stack_kw = _bytes_request(stack_gz)
    wanted = set(args.cases.split(","))
    print(
        f"{args.concurrency} clients, {args.seconds:.0f} s per case, torch threads {torch.get_num_threads()}"
    )
    columns = ("req", 6), ("err", 4), ("p50 ms", 9), ("p99 ms", 9), ("maps/s", 8), ("in-proc ms", 10)
    print(f"{'model':12s} {'case':22s} " + " ".join(f"{name:>{width}s}" for name, width in columns))
    for model_dir in models:
        arch = json.loads((model_dir / "model.json").read_text())["arch"]
        cases = {
            "1 map, V2 binary": ("one", "v2", v2_binary_request(one), 1),
            # encoded once: the client's own JSON encoding is not the server's latency
            "1 map, V1 JSON": (
                "v1",
                "v1",
                {"content": v1_body, "headers": {"content-type": "application/json"}},
                1,
            ),
            f"{args.batch} maps, V2 binary": ("batch", "v2", v2_binary_request(batch), args.batch),
            f"{args.stack} maps, 4D NIfTI": ("stack", "v2", stack_kw, args.stack),
        }
        cases = {case: spec[1:] for case, spec in cases.items() if spec[0] in wanted}
        base = {n: _in_process(model_dir, n) for _, _, n in cases.values()}
        log = tmp / f"{arch}.log"
        limit = str(max(args.batch, args.stack, 32))
        with rsnflow_serve(str(model_dir), log, "--max-batch", limit, "--max-request-mb", "256") as url:
            for case, (protocol, kw, n) in cases.items():
                target = (
                    f"{url}/v2/models/rsn-classifier/infer"
                    if protocol == "v2"
                    else f"{url}/v1/models/rsn-classifier:predict"
                )
                r = _load(target, kw, args.seconds, args.concurrency)
                print(
                    f"{arch:12s} {case:22s} {r['requests']:6d} {r['errors']:4d} {r['p50_ms']:9.1f} "
                    f"{r['p99_ms']:9.1f} {r['requests_per_s'] * n:8.1f} {base[n]:10.1f}"
                    + (f"  ({r['p50_ms'] / n:.1f} ms a map at p50)" if n > 1 else ""),
                    flush=True,
                )
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Preprocessing time and peak memory against run size, up to a multiband run.

One simulated run per size, each preprocessed by ``rsnflow.preprocess_subject``
in a fresh process (so its peak resident memory is its own, read from
``wait4``), ``--repeats`` times; the figures are medians. Sizes:

- ``beijing``: 64x64x33x225, 3.125x3.125x3.6 mm, TR 2 s (the paper's cohort);
- ``2x``: the same grid with 450 volumes (twice the run);
- ``multiband``: 104x104x72x1200, 2 mm, TR 0.72 s (an HCP-like run, 29x beijing).

The peer in the same script is the run itself: the memory of holding it once
(nibabel's array in its on-disk dtype, and as float32), so the peak reads as a
multiple of the run's size, and the time as seconds per volume.

    python bench/bench_preprocess_scale.py [--sizes beijing,2x,multiband] [--repeats 3] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SIZES = {"beijing": ("beijing", None), "2x": ("beijing", 450), "multiband": ("multiband", None)}

_CHILD = """
import json, sys, time
from rsnflow.config import load_config
from rsnflow.preprocess.participant import preprocess_subject
bold, deriv = sys.argv[1], sys.argv[2]
t0 = time.perf_counter()
qc = preprocess_subject(bold, deriv, "01", load_config().preprocess, device="cpu")
print(json.dumps({"seconds": time.perf_counter() - t0, "steps": qc["seconds"]}))
"""


def _simulate(work: Path, size: str) -> Path:
    from rsnflow.simulate import simulate_cohort

    profile, volumes = SIZES[size]
    bids = work / size
    bold = bids / "sub-01" / "func" / "sub-01_task-rest_bold.nii.gz"
    if not bold.exists():
        simulate_cohort(bids, profile, seed=2024, n_subjects=1, n_volumes=volumes)
    return bold


def _run_child(bold: Path, deriv: Path) -> dict:
    """Preprocess in a fresh process; its wall time and peak RSS (wait4's ru_maxrss, KiB on Linux)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(bold), str(deriv)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"preprocessing {bold} failed (exit {proc.returncode})")
    result = json.loads(out.strip().splitlines()[-1])
    result["peak_mb"] = usage.ru_maxrss / 1024
    return result


def _run_size(bold: Path) -> dict:
    import nibabel as nib

    img = nib.load(bold)
    n_vox = int(img.shape[0] * img.shape[1] * img.shape[2])
    return {
        "shape": list(img.shape),
        "disk_dtype": str(img.get_data_dtype()),
        "run_mb_disk_dtype": n_vox * img.shape[3] * img.get_data_dtype().itemsize / 2**20,
        "run_mb_float32": n_vox * img.shape[3] * 4 / 2**20,
        "file_mb": bold.stat().st_size / 2**20,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="beijing,2x,multiband")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--work", type=Path, default=None, help="keep the simulated runs here (reused)")
    args = ap.parse_args()
    sizes = [s for s in args.sizes.split(",") if s]
    for s in sizes:
        if s not in SIZES:
            ap.error(f"unknown size {s!r} (valid: {', '.join(SIZES)})")
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        rows = []
        for size in sizes:
            t0 = time.perf_counter()
            bold = _simulate(work, size)
            info = _run_size(bold)
            print(f"{size}: {info['shape']} simulated in {time.perf_counter() - t0:.0f} s", flush=True)
            runs = [_run_child(bold, Path(tmp) / f"deriv-{size}-{i}") for i in range(args.repeats)]
            seconds = statistics.median(r["seconds"] for r in runs)
            peak = statistics.median(r["peak_mb"] for r in runs)
            row = {
                "size": size,
                **info,
                "seconds": [round(r["seconds"], 1) for r in runs],
                "median_seconds": round(seconds, 1),
                "ms_per_volume": round(1000 * seconds / info["shape"][3], 1),
                "median_peak_mb": round(peak),
                "peak_over_float32_run": round(peak / info["run_mb_float32"], 2),
                "steps_last_run": runs[-1]["steps"],
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    print()
    print("| run | shape | file MB | float32 run MB | median s | ms/volume | peak MB | peak / run |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['size']} | {'x'.join(map(str, r['shape']))} | {r['file_mb']:.0f} | "
            f"{r['run_mb_float32']:.0f} | {r['median_seconds']} | {r['ms_per_volume']} | "
            f"{r['median_peak_mb']:,} | {r['peak_over_float32_run']} |"
        )


if __name__ == "__main__":
    main()

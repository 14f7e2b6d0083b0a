"""Simulator speed and memory at the beijing profile (64x64x33x225).

Each measurement runs in a fresh process so peak RSS is that of one cohort
run. Reports the median of several runs of seconds per subject (simulate and
write, ground truth included) and the peak memory, for 1 and 3 subjects, to
show memory does not grow with the cohort. A side-by-side ratio compares the
batched torch resampling with a naive per-volume scipy ``map_coordinates``.

    python bench/bench_simulate.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time

_CHILD = """
import json, resource, sys, time
from rsnflow.simulate.anatomy import load_anatomy
t0 = time.perf_counter(); load_anatomy(); setup = time.perf_counter() - t0
from rsnflow.simulate import simulate_cohort
t0 = time.perf_counter()
simulate_cohort(sys.argv[1], profile="beijing", seed=int(sys.argv[2]), n_subjects=int(sys.argv[3]))
wall = time.perf_counter() - t0
print(json.dumps({"setup_s": setup, "wall_s": wall,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def _cohort_run(n_subjects: int, seed: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run(
            [sys.executable, "-c", _CHILD, f"{tmp}/bids", str(seed), str(n_subjects)],
            capture_output=True,
            text=True,
            check=True,
        )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _resampling_ratio() -> dict[str, float]:
    """Batched torch grid_sample (what the simulator does) vs per-volume scipy, same points."""
    import numpy as np
    import torch
    from scipy import ndimage

    rng = np.random.default_rng(0)
    box = rng.random((87, 104, 85), dtype=np.float32)
    n_vol, shape = 64, (64, 64, 33)
    ijk = np.indices(shape).reshape(3, -1).astype(np.float64)
    pts = [ijk * 1.2 + rng.normal(0, 0.3, (3, 1)) + 5 for _ in range(n_vol)]

    t0 = time.perf_counter()
    for p in pts:
        ndimage.map_coordinates(box, p, order=1)
    naive = time.perf_counter() - t0

    t0 = time.perf_counter()
    size = np.array(box.shape, dtype=np.float64)[:, None]
    grid = np.stack([(2 * p / (size - 1) - 1)[::-1].T for p in pts]).astype(np.float32)
    vol = torch.from_numpy(box)[None, None].expand(n_vol, 1, *box.shape)
    g = torch.from_numpy(grid).reshape(n_vol, *shape, 3)
    torch.nn.functional.grid_sample(vol, g, mode="bilinear", align_corners=True)
    batched = time.perf_counter() - t0
    return {"naive_scipy_s": naive, "batched_torch_s": batched, "speedup": naive / batched}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    one = [_cohort_run(1, seed) for seed in range(args.repeats)]
    three = _cohort_run(3, 100)
    ratios = [_resampling_ratio() for _ in range(args.repeats)]
    result = {
        "seconds_per_subject_median": statistics.median(r["wall_s"] for r in one),
        "seconds_per_subject_runs": [round(r["wall_s"], 2) for r in one],
        "anatomy_setup_s_median": statistics.median(r["setup_s"] for r in one),
        "peak_rss_mb_1_subject": statistics.median(r["peak_rss_mb"] for r in one),
        "peak_rss_mb_3_subjects": three["peak_rss_mb"],
        "seconds_per_subject_3_subjects": three["wall_s"] / 3,
        "resampling_speedup_vs_scipy_median": statistics.median(r["speedup"] for r in ratios),
        "resampling_naive_s_median": statistics.median(r["naive_scipy_s"] for r in ratios),
        "resampling_batched_s_median": statistics.median(r["batched_torch_s"] for r in ratios),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

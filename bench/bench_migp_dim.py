"""MIGP's internal dimension and the subject PCA: time against recovery of the true networks.

Reads the first N preprocessed subjects of DERIV_DIR once (normalised and
centred as the stage does; held in memory, so keep N to what fits), then for
each subject dimension (``none``: MIGP of the volumes) and each internal
dimension runs the subject PCA and MIGP in the stage's subject order (seed 0),
FastICA at the order and the back-projection to z maps, and scores each of the
simulator's true networks by its best absolute spatial correlation with a
component (``network_recovery``). The time of the subject PCAs and of MIGP is
the median of ``--repeats`` runs; FastICA is timed once.

Usage::

    python bench/bench_migp_dim.py DERIV_DIR BIDS_DIR [--subjects 50] [--dims 2000 1000 500 300]
        [--subject-dims 100 none] [--order 100] [--repeats 3]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
from pathlib import Path

import numpy as np
from scipy import stats

from rsnflow.ica import (
    common_mask,
    fastica,
    migp,
    migp_rows,
    preprocessed_runs,
    regress_maps,
    subject_pca,
)
from rsnflow.simulate.truth import network_recovery


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("deriv", type=Path)
    ap.add_argument("bids", type=Path)
    ap.add_argument("--subjects", type=int, help="the first N subjects (default: all)")
    ap.add_argument("--dims", type=int, nargs="+", default=[2000, 1000, 500, 300])
    ap.add_argument(
        "--subject-dims", nargs="+", default=["100", "none"], help="subject PCA dimensions; none: the volumes"
    )
    ap.add_argument("--precisions", nargs="+", default=["float32"], help="MIGP's product precisions")
    ap.add_argument("--order", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    subjects = preprocessed_runs(args.deriv)[: args.subjects]
    mask = common_mask(args.deriv, subjects)
    order = [subjects[i] for i in np.random.default_rng(0).permutation(len(subjects))]
    data = [migp_rows(args.deriv, s, mask) for s in order]
    rows = sum(len(x) for x in data)
    print(f"{len(subjects)} subjects, {rows} volumes, {int(mask.sum())} voxels, order {args.order}")
    print("\n| subject dim | MIGP dim | precision | subject PCA + MIGP s (median) | FastICA s "
          "| median best r | min | >= 0.8 | median max abs z |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for subject_dim, dim, precision in itertools.product(args.subject_dims, args.dims, args.precisions):
        seconds = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            reduced = data if subject_dim == "none" else (subject_pca(x, int(subject_dim)) for x in data)
            pca = migp(iter(reduced), dim, precision=precision)
            seconds.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        ica = fastica(pca.whitened(args.order), seed=0)
        t_ica = time.perf_counter() - t0
        sources = ica.sources.astype(np.float64)
        sources *= np.where(stats.skew(sources, axis=1) < 0, -1.0, 1.0)[:, None]
        _, maps, noise = regress_maps(pca.rows, sources, args.order)
        zmaps = maps / np.maximum(noise, 1e-12)
        best = network_recovery(args.bids, zmaps, mask)["r"].to_numpy()
        print(
            f"| {subject_dim} | {dim} | {precision} | {statistics.median(seconds):.1f} | {t_ica:.1f} | "
            f"{np.median(best):.3f} | {best.min():.3f} | {(best >= 0.8).sum()}/{len(best)} | "
            f"{np.median(np.abs(zmaps).max(1)):.1f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()

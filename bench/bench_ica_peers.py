"""Group ICA side by side: rsnflow, nilearn CanICA, scikit-learn PCA + FastICA.

The same preprocessed subjects (the first N of DERIV_DIR, for every N given),
the same common mask, model order and seed. Each run is a fresh child process,
so its wall time includes reading the subjects and its peak RSS is its own
(the RSS of a child that only imported the libraries is printed for
reference). Recovery: for each of the simulator's true networks, the best
absolute spatial correlation with any component (``network_recovery``).

- ``rsnflow``: ``group_ica`` (MIGP streaming one subject at a time, FastICA
  in torch on the default device).
- ``canica``: ``nilearn.decomposition.CanICA(n_components=ORDER)`` with its
  defaults (standardize, detrend, CCA, 10 FastICA inits, thresholding) except
  ``smoothing_fwhm=None`` (the data are smoothed 7 mm already), the common mask,
  ``random_state`` and ``n_jobs=2`` (this machine's cores).
- ``sklearn``: the textbook temporal concatenation: every subject
  variance-normalised and stacked in memory, ``PCA(ORDER)`` (randomized), then
  spatial ``FastICA`` on the eigenmaps (logcosh, tol 1e-4, 500 iterations).

Usage::

    python bench/bench_ica_peers.py DERIV_DIR BIDS_DIR [--subjects 8 16] [--repeats 3]
        [--methods rsnflow canica sklearn] [--order 100] [--json OUT]
"""

from __future__ import annotations

import argparse
import importlib
import json
import multiprocessing
import resource
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import nibabel as nib
import numpy as np

METHODS = ("rsnflow", "canica", "sklearn")


def _child(method: str, deriv: str, subjects: list[str], order: int, seed: int) -> dict:
    """One run in a fresh process: seconds, peak RSS and the (K, V) maps in the common mask."""
    for module in ("torch", "nilearn.decomposition", "sklearn.decomposition"):
        importlib.import_module(module)  # every child pays the same imports before the clock starts

    from rsnflow.ica import common_mask
    from rsnflow.layout import subject_outputs

    base_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    d = Path(deriv)
    if method == "rsnflow":
        from rsnflow.config import load_config
        from rsnflow.ica import group_ica

        cfg = load_config(overrides={"ica": {"order": order}}).ica
        with tempfile.TemporaryDirectory() as tmp:
            # A view of the first N subjects; group_ica writes its outputs there, not in DERIV_DIR.
            for s in subjects:
                (Path(tmp) / f"sub-{s}").symlink_to((d / f"sub-{s}").resolve())
            maps = group_ica(tmp, cfg, seed=seed, report=False).zmaps
    else:
        mask = common_mask(d, subjects)
        bolds = [str(subject_outputs(d, s).bold) for s in subjects]
        if method == "canica":
            from nilearn.decomposition import CanICA

            mask_img = nib.Nifti1Image(mask.astype(np.uint8), nib.load(bolds[0]).affine)
            canica = CanICA(
                mask=mask_img, n_components=order, smoothing_fwhm=None, random_state=seed, n_jobs=2
            )
            maps = canica.fit(bolds).components_
            # Stop joblib's idle workers now: left alone they hold this child's exit for 300 s.
            from joblib.externals.loky import get_reusable_executor

            get_reusable_executor().shutdown(wait=True)
        else:
            from sklearn.decomposition import PCA, FastICA

            from rsnflow.ica.decomposition import normalise_subject

            x = np.concatenate(
                [normalise_subject(np.asarray(nib.load(b).dataobj, dtype=np.float32)[mask].T) for b in bolds]
            )
            eigenmaps = PCA(order, svd_solver="randomized", random_state=seed).fit(x).components_
            ica = FastICA(order, whiten="unit-variance", max_iter=500, tol=1e-4, random_state=seed)
            maps = ica.fit_transform(eigenmaps.T).T
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"seconds": seconds, "peak_rss_mb": peak, "import_rss_mb": base_mb, "maps": np.asarray(maps)}


def _run(method: str, deriv: Path, subjects: list[str], order: int, seed: int) -> dict:
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_child, method, str(deriv), subjects, order, seed).result()


def main() -> None:
    from rsnflow.ica import common_mask, preprocessed_runs
    from rsnflow.simulate.truth import network_recovery

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("deriv", type=Path)
    ap.add_argument("bids", type=Path)
    ap.add_argument("--subjects", type=int, nargs="+", help="cohort sizes (default: all subjects)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    ap.add_argument("--order", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    everyone = sorted({r.subject for r in preprocessed_runs(args.deriv)})  # one plain run each (simulated)
    sizes = args.subjects or [len(everyone)]
    rows = []
    for n in sizes:
        subjects = everyone[:n]
        mask = common_mask(args.deriv, subjects)
        for method in args.methods:
            runs = [_run(method, args.deriv, subjects, args.order, args.seed) for _ in range(args.repeats)]
            best = network_recovery(args.bids, runs[0]["maps"], mask)["r"].to_numpy()
            row = {
                "subjects": n,
                "method": method,
                "seconds_median": statistics.median(r["seconds"] for r in runs),
                "seconds_runs": [round(r["seconds"], 1) for r in runs],
                "peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in runs),
                "import_rss_mb": runs[0]["import_rss_mb"],
                "recovery_median": float(np.median(best)),
                "recovery_min": float(best.min()),
                "recovered_0.8": int((best >= 0.8).sum()),
                "networks": len(best),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    by = {(r["subjects"], r["method"]): r for r in rows}
    print("\n| subjects | method | wall s (median) | peak RSS MB | median best r | >= 0.8 |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['subjects']} | {r['method']} | {r['seconds_median']:.1f} | {r['peak_rss_mb']:.0f} | "
            f"{r['recovery_median']:.3f} | {r['recovered_0.8']}/{r['networks']} |"
        )
    for n in sizes:
        ours = by.get((n, "rsnflow"))
        for peer in ("canica", "sklearn"):
            if ours and (n, peer) in by:
                ratio = by[(n, peer)]["seconds_median"] / ours["seconds_median"]
                print(f"{n} subjects: rsnflow {ratio:.1f}x faster than {peer}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()

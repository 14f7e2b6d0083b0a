"""How well a finished group ICA recovered the simulator's true networks.

For each true network (the subject-mean true map, smoothed 7 mm like the
data), the best absolute spatial correlation with any group component, and
the ceiling the decomposition allows it: the share of the (centred) true map
that lies in the span of the K maps, which no single component can exceed.
A network far below 0.8 with a low ceiling was not in the retained subspace
(too weak for the model order); one far below its ceiling was mixed across
components by the ICA. ``--pca-orders`` redoes the MIGP reduction (same seed)
and reports, for the weakest networks, their share in the K strongest
eigenmaps for each K: how the ceiling moves with the model order. Usage::

    python bench/bench_ica_recovery.py DERIV_DIR BIDS_DIR [--pca-orders 60 100 150 400] [--seed 0]
"""

from __future__ import annotations

import argparse

import numpy as np
from numpy.typing import NDArray

from rsnflow.config import load_config
from rsnflow.ica import common_mask, group_migp, preprocessed_runs
from rsnflow.labeling import load_group_maps
from rsnflow.simulate.truth import network_recovery, true_network_maps


def _share(truth: NDArray[np.floating], rows: NDArray[np.floating]) -> NDArray[np.float64]:
    """Share of each (centred) truth row inside the span of ``rows``."""
    basis, _ = np.linalg.qr((rows - rows.mean(1, keepdims=True)).T.astype(np.float64))
    t = truth - truth.mean(1, keepdims=True)
    return np.linalg.norm(t @ basis, axis=1) / np.linalg.norm(t, axis=1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("deriv")
    ap.add_argument("bids")
    ap.add_argument("--pca-orders", type=int, nargs="*", default=[])
    ap.add_argument("--seed", type=int, default=0, help="the group ICA's seed (MIGP subject order)")
    args = ap.parse_args()
    zmaps, mask = load_group_maps(args.deriv)
    rec = network_recovery(args.bids, zmaps, mask)
    truth, _ = true_network_maps(args.bids, mask)
    rec["ceiling"] = _share(truth, zmaps)
    best = rec["r"].to_numpy()
    print(f"{len(rec)} true networks, {zmaps.shape[0]} components, {int(mask.sum())} voxels")
    print(
        "best |r| quartiles (min, 25%, median, 75%, max):", np.percentile(best, [0, 25, 50, 75, 100]).round(3)
    )
    print(f"recovered at |r| >= 0.8: {(best >= 0.8).sum()}/{len(rec)}")
    worst = rec.sort_values("r").head(5)
    print(
        "worst (r / ceiling):",
        ", ".join(f"{w.label} {w.r:.3f} / {w.ceiling:.3f}" for w in worst.itertuples()),
    )
    gap = (rec["ceiling"] - rec["r"]).median()
    print(f"median ceiling {rec['ceiling'].median():.3f}, median gap to it {gap:.3f}")
    if args.pca_orders:
        subjects = preprocessed_runs(args.deriv)
        order = [subjects[i] for i in np.random.default_rng(args.seed).permutation(len(subjects))]
        if not np.array_equal(common_mask(args.deriv, subjects), mask):
            raise SystemExit("the group mask differs from the subjects' common mask: rerun group-ica first")
        cfg = load_config().ica
        pca = group_migp(args.deriv, order, mask, cfg.migp_dim, subject_dim=cfg.subject_dim)
        for k in args.pca_orders:
            share = _share(truth[worst.index], pca.whitened(k))
            print(f"K={k}: share in the K strongest eigenmaps:", ", ".join(
                f"{label} {v:.3f}" for label, v in zip(worst["label"], share, strict=True)
            ))  # fmt: skip


if __name__ == "__main__":
    main()

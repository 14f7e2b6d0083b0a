"""How well a finished group ICA recovered the simulator's true networks.

For each true network (the subject-mean true map, smoothed 7 mm like the
data), the best absolute spatial correlation with any group component.
Usage::

    python bench/bench_ica_recovery.py DERIV_DIR BIDS_DIR
"""

from __future__ import annotations

import sys

import numpy as np

from rsnflow.ica import spatial_correlation
from rsnflow.labeling import load_group_maps
from rsnflow.preprocess.smoothing import smooth_in_mask
from rsnflow.simulate.truth import mean_true_maps
from rsnflow.space import MNI4_SHAPE, unmask


def main(deriv: str, bids: str) -> None:
    zmaps, mask = load_group_maps(deriv)
    truth, sources = mean_true_maps(bids, mask)
    networks = np.flatnonzero(sources["kind"].to_numpy() == "network")
    vols = unmask(truth[networks].astype(np.float32), mask)
    ones = np.ones(MNI4_SHAPE, bool)
    smoothed = np.stack(
        [smooth_in_mask(vols[..., k], ones, (4, 4, 4), 7.0)[mask] for k in range(len(networks))]
    )
    best = np.abs(spatial_correlation(smoothed, zmaps)).max(1)
    print(f"{len(networks)} true networks, {zmaps.shape[0]} components, {int(mask.sum())} voxels")
    print(
        "best |r| quartiles (min, 25%, median, 75%, max):", np.percentile(best, [0, 25, 50, 75, 100]).round(3)
    )
    print(f"recovered at |r| >= 0.8: {(best >= 0.8).sum()}/{len(networks)}")
    worst = np.argsort(best)[:5]
    print("worst:", ", ".join(f"{sources['label'].iloc[networks[i]]} {best[i]:.3f}" for i in worst))


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    main(sys.argv[1], sys.argv[2])

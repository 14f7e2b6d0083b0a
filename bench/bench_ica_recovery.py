"""How well a finished group ICA recovered the simulator's true networks.

For each true network (the subject-mean true map, smoothed 7 mm like the
data), the best absolute spatial correlation with any group component.
Usage::

    python bench/bench_ica_recovery.py DERIV_DIR BIDS_DIR
"""

from __future__ import annotations

import sys

import numpy as np

from rsnflow.labeling import load_group_maps
from rsnflow.simulate.truth import network_recovery


def main(deriv: str, bids: str) -> None:
    zmaps, mask = load_group_maps(deriv)
    rec = network_recovery(bids, zmaps, mask)
    best = rec["r"].to_numpy()
    print(f"{len(rec)} true networks, {zmaps.shape[0]} components, {int(mask.sum())} voxels")
    print(
        "best |r| quartiles (min, 25%, median, 75%, max):", np.percentile(best, [0, 25, 50, 75, 100]).round(3)
    )
    print(f"recovered at |r| >= 0.8: {(best >= 0.8).sum()}/{len(rec)}")
    worst = rec.sort_values("r").head(5)
    print("worst:", ", ".join(f"{row.label} {row.r:.3f}" for row in worst.itertuples()))


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    main(sys.argv[1], sys.argv[2])

"""The true label of a recovered component, from a simulated cohort's ground truth.

Used by tests and benchmarks to score labelling and classification against
what the simulator put in, never by the pipeline itself.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from numpy.typing import NDArray

from rsnflow.atlas import NOISE, UNKNOWN
from rsnflow.ica.matching import spatial_correlation

__all__ = ["component_truth", "mean_true_maps"]


def mean_true_maps(bids_dir: str | Path, mask: NDArray[np.bool_]) -> tuple[NDArray[np.float64], pd.DataFrame]:
    """The subject-mean true source maps inside ``mask`` ``(S, V)`` and the source table."""
    gt = Path(bids_dir) / "derivatives" / "groundtruth"
    sources = pd.read_csv(gt / "sources.tsv", sep="\t")
    files = sorted(gt.glob("sub-*/sub-*_desc-sources_components.nii.gz"))
    if not files:
        raise FileNotFoundError(f"{gt}: no ground-truth source maps (not a simulated cohort?)")
    total = np.zeros((len(sources), int(mask.sum())))
    for f in files:
        total += np.moveaxis(np.asarray(nib.load(f).dataobj, dtype=np.float32)[mask], 0, 1)
    return total / len(files), sources


def component_truth(
    bids_dir: str | Path,
    zmaps: NDArray[np.floating],
    mask: NDArray[np.bool_],
    network_r: float = 0.5,
    partial_r: float = 0.3,
) -> pd.DataFrame:
    """True label of every component ``(K, V)`` of a group decomposition.

    A component is the network whose mean true map it matches best when that
    correlation reaches ``network_r``; ``Unknown`` when it reaches only
    ``partial_r`` (a split or mixed network that an expert could not name);
    ``Noise`` otherwise, because every other signal in the simulation
    (structured noise sources, thermal noise) is noise by construction.

    Returns
    -------
    pandas.DataFrame
        ``component, truth, true_r, true_source``.
    """
    maps, sources = mean_true_maps(bids_dir, mask)
    is_net = (sources["kind"] == "network").to_numpy()
    r = spatial_correlation(zmaps, maps[is_net])
    best = r.argmax(1)
    best_r = r[np.arange(len(r)), best]
    labels = sources.loc[is_net, "label"].to_numpy()[best]
    truth = np.where(best_r >= network_r, labels, np.where(best_r >= partial_r, UNKNOWN, NOISE))
    return pd.DataFrame(
        {"component": np.arange(len(r)), "truth": truth, "true_r": best_r, "true_source": labels}
    )

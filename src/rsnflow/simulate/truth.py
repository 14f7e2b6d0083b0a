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
from rsnflow.io import open_nifti
from rsnflow.preprocess.smoothing import smooth_in_mask
from rsnflow.space import MNI4_SHAPE, grid_data, is_on_grid, unmask

__all__ = ["component_truth", "mean_true_maps", "network_recovery", "true_network_maps"]


def mean_true_maps(
    bids_dir: str | Path, mask: NDArray[np.bool_], subject: str | None = None
) -> tuple[NDArray[np.float64], pd.DataFrame]:
    """The subject-mean true source maps inside ``mask`` ``(S, V)`` and the source table.

    Parameters
    ----------
    bids_dir : str or Path
        A cohort written by :func:`rsnflow.simulate.simulate_cohort`.
    mask : ndarray of bool
        ``(45, 54, 45)`` voxels kept, on the MNI 4 mm grid.
    subject : str or None, default=None
        A participant label: that subject's own maps instead of the mean.

    Returns
    -------
    maps : ndarray
        ``(S, V)`` float64 true maps, one row per source.
    sources : pandas.DataFrame
        The source table (``sources.tsv``), in the order of the rows.

    Raises
    ------
    FileNotFoundError
        When no ground-truth source maps are found.
    """
    gt = Path(bids_dir) / "derivatives" / "groundtruth"
    sources = pd.read_csv(gt / "sources.tsv", sep="\t")
    pattern = f"sub-{subject or '*'}/sub-*_desc-sources_components.nii.gz"
    files = sorted(gt.glob(pattern))
    if not files:
        raise FileNotFoundError(f"{gt}: no ground-truth source maps for {pattern} (not a simulated cohort?)")
    total = np.zeros((len(sources), int(mask.sum())))
    # Read by affine, not by array order: another generator's truth may run right-to-left or
    # sit on another grid. Such files are summed on their own grid and brought onto this one
    # once (resampling is linear), not once per subject.
    elsewhere: dict[tuple[bytes, tuple[int, ...]], tuple[NDArray[np.float64], NDArray[np.float64]]] = {}
    for f in files:
        img = open_nifti(f)
        if is_on_grid(img):
            total += np.moveaxis(np.asarray(img.dataobj, dtype=np.float32)[mask], 0, 1)
            continue
        key = (np.round(img.affine, 3).tobytes(), tuple(img.shape))
        affine, acc = elsewhere.setdefault(key, (img.affine, np.zeros(img.shape)))
        acc += np.asarray(img.dataobj, dtype=np.float32)
    for affine, acc in elsewhere.values():
        total += np.moveaxis(grid_data(nib.Nifti1Image(acc.astype(np.float32), affine))[mask], 0, 1)
    return total / len(files), sources


def true_network_maps(
    bids_dir: str | Path, mask: NDArray[np.bool_], fwhm_mm: float = 7.0, subject: str | None = None
) -> tuple[NDArray[np.float32], NDArray[np.str_]]:
    """True network maps ``(N, V)`` inside ``mask``, smoothed by ``fwhm_mm`` like the data; their labels.

    The subject mean, or one ``subject``'s maps. Recovered maps cannot be
    sharper than the preprocessing's smoothing, so this is the truth they are
    scored against.

    Parameters
    ----------
    bids_dir : str or Path
        A cohort written by :func:`rsnflow.simulate.simulate_cohort`.
    mask : ndarray of bool
        ``(45, 54, 45)`` voxels kept, on the MNI 4 mm grid.
    fwhm_mm : float, default=7.0
        Gaussian smoothing FWHM in mm.
    subject : str or None, default=None
        A participant label: that subject's maps instead of the mean.

    Returns
    -------
    maps : ndarray
        ``(N, V)`` float32 smoothed maps of the network sources.
    labels : ndarray of str
        Their taxonomy labels.
    """
    maps, sources = mean_true_maps(bids_dir, mask, subject)
    is_net = (sources["kind"] == "network").to_numpy()
    vols = unmask(maps[is_net].astype(np.float32), mask)
    smoothed = smooth_in_mask(vols, np.ones(MNI4_SHAPE, bool), (4, 4, 4), fwhm_mm)[mask].T
    return smoothed, sources.loc[is_net, "label"].to_numpy()


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

    Parameters
    ----------
    bids_dir : str or Path
        A cohort written by :func:`rsnflow.simulate.simulate_cohort`.
    zmaps : ndarray
        ``(K, V)`` component maps inside ``mask``.
    mask : ndarray of bool
        ``(45, 54, 45)`` mask of the maps, on the MNI 4 mm grid.
    network_r : float, default=0.5
        Spatial correlation from which a component is the network.
    partial_r : float, default=0.3
        Spatial correlation from which a component is ``Unknown``.

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


def network_recovery(
    bids_dir: str | Path, zmaps: NDArray[np.floating], mask: NDArray[np.bool_], fwhm_mm: float = 7.0
) -> pd.DataFrame:
    """How well a decomposition ``(K, V)`` recovered each of the simulator's true networks.

    A network's score is the best absolute spatial correlation of its
    subject-mean true map (``true_network_maps``) with any component (the
    recovery measure of the group-ICA literature; components may repeat).

    Parameters
    ----------
    bids_dir : str or Path
        A cohort written by :func:`rsnflow.simulate.simulate_cohort`.
    zmaps : ndarray
        ``(K, V)`` component maps inside ``mask``.
    mask : ndarray of bool
        ``(45, 54, 45)`` mask of the maps, on the MNI 4 mm grid.
    fwhm_mm : float, default=7.0
        Smoothing of the true maps (:func:`true_network_maps`), in mm.

    Returns
    -------
    pandas.DataFrame
        ``label, component, r`` for every true network, in the sources' order.
    """
    truth, labels = true_network_maps(bids_dir, mask, fwhm_mm)
    r = np.abs(spatial_correlation(truth, zmaps))
    best = r.argmax(1)
    return pd.DataFrame({"label": labels, "component": best, "r": r[np.arange(len(r)), best]})

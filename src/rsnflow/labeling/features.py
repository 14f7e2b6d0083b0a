"""Noise features of group components, in the spirit of ICA-AROMA and FIX.

Spatial features come from the group z map, temporal ones from the subjects'
dual-regression (stage 1) time courses, averaged over subjects:

``edge_fraction``
    Share of the supra-threshold |z| mass in the outer 8 mm of the brain
    (AROMA's edge fraction; motion and susceptibility artefacts live there).
``csf_fraction``, ``wm_fraction``
    Share in voxels whose CSF or white-matter probability exceeds 0.5 (AROMA, FIX).
``spread``
    Fraction of the mask above threshold: networks are focal, thermal and
    physiological noise are diffuse (FIX's cluster-size features).
``hfc``
    Fraction of time-course power above 0.1 Hz (AROMA's high-frequency content).
``motion_r``
    Largest |correlation| of the time course with the six motion parameters
    and their derivatives (AROMA's maximum RP correlation).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from scipy import ndimage

from rsnflow.ica.matching import spatial_correlation
from rsnflow.space import load_tissue_probabilities

__all__ = ["MOTION_COLUMNS", "spatial_features", "temporal_features"]

MOTION_COLUMNS = ("trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z")

#: |z| above which a voxel counts as part of a component (MELODIC's default display threshold).
Z_THRESHOLD = 2.3
#: Edge ring width in 4 mm voxels (8 mm).
EDGE_VOXELS = 2
#: Low edge of the band used for the high-frequency content (drift below it is ignored).
BAND_LOW_HZ = 0.01
HIGH_HZ = 0.1


def spatial_features(zmaps: NDArray[np.floating], mask: NDArray[np.bool_]) -> pd.DataFrame:
    """Edge, CSF and white-matter fractions and spread of ``zmaps`` ``(K, V)`` inside ``mask``.

    Parameters
    ----------
    zmaps : numpy.ndarray
        ``(K, V)`` component z maps, the voxels of ``mask`` in order.
    mask : numpy.ndarray
        ``(45, 54, 45)`` boolean brain mask on the MNI 4 mm grid.

    Returns
    -------
    pandas.DataFrame
        ``edge_fraction, csf_fraction, wm_fraction, spread``, one row per component:
        shares of the |z| mass above :data:`Z_THRESHOLD`, and the fraction of mask voxels above it.
    """
    tissue = load_tissue_probabilities()
    edge = (mask & ~ndimage.binary_erosion(mask, iterations=EDGE_VOXELS))[mask]
    csf = (tissue["csf"] > 0.5)[mask]
    wm = (tissue["wm"] > 0.5)[mask]
    weight = np.abs(np.asarray(zmaps, dtype=np.float64))
    above = weight > Z_THRESHOLD
    weight = np.where(above, weight, 0.0)
    total = np.maximum(weight.sum(1), 1e-12)
    return pd.DataFrame(
        {
            "edge_fraction": weight[:, edge].sum(1) / total,
            "csf_fraction": weight[:, csf].sum(1) / total,
            "wm_fraction": weight[:, wm].sum(1) / total,
            "spread": above.mean(1),
        }
    )


def temporal_features(
    runs: Iterable[tuple[NDArray[np.floating], NDArray[np.floating], float]], n_components: int
) -> pd.DataFrame:
    """High-frequency content and motion correlation, averaged over subjects.

    Parameters
    ----------
    runs
        Per subject ``(timecourses (T, K), motion (T, 6), tr)``; consumed one at a time.
    n_components
        ``K``, so that an empty ``runs`` still gives a table (of NaN).

    Returns
    -------
    pandas.DataFrame
        ``hfc, motion_r``, one row per component: the mean over subjects of the
        fraction of power above 0.1 Hz (of the power above 0.01 Hz) and of the
        largest |correlation| with the motion parameters and their derivatives.
    """
    hfc, motion_r = np.zeros(n_components), np.zeros(n_components)
    n = 0
    for tcs, motion, tr in runs:
        tcs = np.asarray(tcs, dtype=np.float64)
        freqs = np.fft.rfftfreq(len(tcs), d=tr)
        power = np.abs(np.fft.rfft(tcs - tcs.mean(0), axis=0)) ** 2
        band = freqs > BAND_LOW_HZ
        hfc += power[freqs > HIGH_HZ].sum(0) / np.maximum(power[band].sum(0), 1e-12)
        motion = np.asarray(motion, dtype=np.float64)
        regressors = np.c_[motion, np.vstack([np.zeros((1, motion.shape[1])), np.diff(motion, axis=0)])]
        motion_r += np.nan_to_num(np.abs(spatial_correlation(tcs.T, regressors.T))).max(1)
        n += 1
    if n == 0:
        return pd.DataFrame({"hfc": np.full(n_components, np.nan), "motion_r": np.full(n_components, np.nan)})
    return pd.DataFrame({"hfc": hfc / n, "motion_r": motion_r / n})

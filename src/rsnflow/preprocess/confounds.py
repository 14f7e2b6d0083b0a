"""Confounds of a run, named as fMRIPrep names them.

``trans_*``/``rot_*`` (the motion estimates), ``framewise_displacement``
(Power), ``rmsd`` (Jenkinson's relative root-mean-square displacement, as
MCFLIRT's ``_rel.rms``), ``dvars`` and ``std_dvars`` (DVARS standardised by
its expectation under the run's own temporal autocorrelation, Nichols 2013,
as fMRIPrep reports it), ``global_signal``, ``white_matter``, ``csf`` (mean
signal in the brain and in the tissue masks), and one
``non_steady_state_outlier_XX`` column per leading volume that has not yet
reached the steady state (flagged, not dropped, as fMRIPrep does). The first
volume has no temporal difference: ``n/a``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from rsnflow.transforms import MOTION_COLUMNS, framewise_displacement, rigid_matrix

__all__ = ["confounds_table", "dvars", "non_steady_state_volumes", "rmsd", "std_dvars", "tissue_signals"]

#: Radius (mm) of the sphere over which rmsd averages the displacement (MCFLIRT's default, 80 mm).
RMS_RADIUS_MM = 80.0


def dvars(data: NDArray[np.floating], mask: NDArray[np.bool_]) -> NDArray[np.float64]:
    """Power's DVARS: RMS over the mask of the volume-to-volume change; NaN for volume 0.

    Parameters
    ----------
    data : numpy.ndarray
        ``(X, Y, Z, T)`` BOLD series.
    mask : numpy.ndarray
        ``(X, Y, Z)`` boolean brain mask.

    Returns
    -------
    numpy.ndarray
        ``(T,)`` DVARS in the data's intensity units.
    """
    ts = np.asarray(np.asarray(data)[mask], dtype=np.float64)
    d = np.sqrt(np.mean(np.diff(ts, axis=1) ** 2, axis=0))
    return np.concatenate([[np.nan], d])


def std_dvars(data: NDArray[np.floating], mask: NDArray[np.bool_]) -> NDArray[np.float64]:
    """DVARS over its expected value under each voxel's lag-1 autocorrelation (1 for white noise).

    Expected RMS change of voxel v: ``sqrt(2 (1 - ar1_v)) sd_v``, with a robust
    standard deviation (IQR / 1.349); averaged over the mask it is the scale
    that makes DVARS comparable across runs and scanners.

    Parameters
    ----------
    data : numpy.ndarray
        ``(X, Y, Z, T)`` BOLD series.
    mask : numpy.ndarray
        ``(X, Y, Z)`` boolean brain mask; voxels constant over time are left out.

    Returns
    -------
    numpy.ndarray
        ``(T,)`` standardised DVARS, NaN for volume 0; all NaN when the mask holds no
        varying voxel or the run has fewer than 3 volumes.
    """
    ts = np.asarray(np.asarray(data)[mask], dtype=np.float64)
    ts = ts[ts.std(1) > 0]
    if len(ts) == 0 or ts.shape[1] < 3:
        return np.full(np.asarray(data).shape[-1], np.nan)
    q75, q25 = np.percentile(ts, [75, 25], axis=1)
    sd = (q75 - q25) / 1.349
    centred = ts - ts.mean(1, keepdims=True)
    ar1 = (centred[:, 1:] * centred[:, :-1]).sum(1) / np.maximum((centred**2).sum(1), 1e-12)
    expected = float(np.mean(np.sqrt(np.clip(2 * (1 - ar1), 0, None)) * sd))
    raw = np.sqrt(np.mean(np.diff(ts, axis=1) ** 2, axis=0))
    return np.concatenate([[np.nan], raw / max(expected, 1e-12)])


def rmsd(params: NDArray[np.float64], centre: NDArray[np.float64]) -> NDArray[np.float64]:
    """Jenkinson's RMS displacement of each volume relative to the previous one (mm); NaN for volume 0.

    For ``M = T_t T_{t-1}^-1 - I`` with linear part ``A`` and translation ``t``:
    ``rms^2 = R^2 / 5 tr(A^T A) + |t + A c|^2`` over a sphere of radius ``R``
    about ``c`` (the rotation centre).

    Parameters
    ----------
    params : numpy.ndarray
        ``(T, 6)`` rigid parameters (translations mm, rotations rad).
    centre : numpy.ndarray
        ``(3,)`` rotation centre (world mm).

    Returns
    -------
    numpy.ndarray
        ``(T,)`` displacement in mm over a sphere of :data:`RMS_RADIUS_MM`.
    """
    mats = rigid_matrix(params, centre)
    out = np.full(len(mats), np.nan)
    for i in range(1, len(mats)):
        m = mats[i] @ np.linalg.inv(mats[i - 1]) - np.eye(4)
        a, t = m[:3, :3], m[:3, 3]
        shift = t + a @ np.asarray(centre, dtype=np.float64)
        out[i] = np.sqrt(RMS_RADIUS_MM**2 / 5 * np.trace(a.T @ a) + shift @ shift)
    return out


def non_steady_state_volumes(data: NDArray[np.generic], threshold: float = 3.5, window: int = 50) -> int:
    """How many leading volumes have not reached the steady state (fMRIPrep's detector).

    The global signal of the first ``window`` volumes; a volume is an outlier
    when its modified z-score (0.6745 |x - median| / MAD) exceeds
    ``threshold``; the count stops at the first volume that is not.

    Parameters
    ----------
    data : numpy.ndarray
        ``(X, Y, Z, T)`` BOLD series; the global signal is the mean over all voxels.
    threshold : float, default=3.5
        Modified z-score above which a volume is an outlier.
    window : int, default=50
        Number of leading volumes examined.

    Returns
    -------
    int
        Number of leading outlier volumes (0 when the MAD is 0).
    """
    vols = np.asarray(data)[..., :window]
    gs = vols.reshape(-1, vols.shape[-1]).mean(0, dtype=np.float64)
    deviation = np.abs(gs - np.median(gs))
    mad = np.median(deviation)
    if mad == 0:
        return 0
    z = 0.6745 * deviation / mad
    n = 0
    while n < len(z) and z[n] > threshold:
        n += 1
    return n


def tissue_signals(
    data: NDArray[np.floating], mask: NDArray[np.bool_], tissues: dict[str, NDArray[np.floating]]
) -> dict[str, NDArray[np.float64]]:
    """Mean signal per volume in the brain mask (``global_signal``) and in WM and CSF (probability > 0.9).

    Parameters
    ----------
    data : numpy.ndarray
        ``(X, Y, Z, T)`` BOLD series.
    mask : numpy.ndarray
        ``(X, Y, Z)`` boolean brain mask.
    tissues : dict of str to numpy.ndarray
        ``wm`` and ``csf`` probability maps on the grid of ``data``.

    Returns
    -------
    dict of str to numpy.ndarray
        ``global_signal``, ``white_matter`` and ``csf``, each ``(T,)``. A tissue with fewer
        than 10 voxels above 0.9 inside the mask uses probability > 0.5 instead; NaN when none.
    """
    out = {"global_signal": np.asarray(data)[mask].mean(0, dtype=np.float64)}
    for column, tissue in (("white_matter", "wm"), ("csf", "csf")):
        region = mask & (tissues[tissue] > 0.9)
        if region.sum() < 10:  # a field of view that misses the tissue: no estimate
            region = mask & (tissues[tissue] > 0.5)
        out[column] = (
            np.asarray(data)[region].mean(0, dtype=np.float64)
            if region.any()
            else np.full(data.shape[-1], np.nan)
        )
    return out


def confounds_table(
    params: NDArray[np.float64],
    dvars_values: NDArray[np.float64],
    *,
    centre: NDArray[np.float64] | None = None,
    std_dvars_values: NDArray[np.float64] | None = None,
    signals: dict[str, NDArray[np.float64]] | None = None,
    n_non_steady: int = 0,
) -> pd.DataFrame:
    """The confounds table in fMRIPrep's column names (n/a at volume 0 for the differences).

    Parameters
    ----------
    params : numpy.ndarray
        ``(T, 6)`` motion parameters (translations mm, rotations rad).
    dvars_values : numpy.ndarray
        ``(T,)`` DVARS (:func:`dvars`).
    centre : numpy.ndarray, optional
        Rotation centre (world mm); when given, an ``rmsd`` column is added.
    std_dvars_values : numpy.ndarray, optional
        ``(T,)`` standardised DVARS (:func:`std_dvars`); when given, a ``std_dvars`` column.
    signals : dict of str to numpy.ndarray, optional
        Extra ``(T,)`` columns by name, e.g. :func:`tissue_signals`.
    n_non_steady : int, default=0
        Leading non-steady-state volumes; one indicator column
        ``non_steady_state_outlier_XX`` each.

    Returns
    -------
    pandas.DataFrame
        One row per volume: the six motion columns, ``framewise_displacement`` (mm, radius 50 mm),
        then the optional columns.
    """
    table = pd.DataFrame(params, columns=list(MOTION_COLUMNS))
    fd = framewise_displacement(params)
    fd[0] = np.nan
    table["framewise_displacement"] = fd
    if centre is not None:
        table["rmsd"] = rmsd(params, centre)
    table["dvars"] = dvars_values
    if std_dvars_values is not None:
        table["std_dvars"] = std_dvars_values
    for name, values in (signals or {}).items():
        table[name] = values
    for k in range(n_non_steady):
        column = np.zeros(len(table))
        column[k] = 1.0
        table[f"non_steady_state_outlier_{k:02d}"] = column
    return table

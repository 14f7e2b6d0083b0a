"""Dual regression (FSL ``dual_regression``): subject time courses and maps from group maps.

Stage 1 regresses the group maps (spatially demeaned) into each volume of the
subject's data (spatially demeaned): one time course per component. Stage 2
regresses those time courses (demeaned over time and, by default, scaled to
unit variance: FSL's ``des_norm 1``) into every voxel's time series: one
subject map per component, with its t statistic converted to z. Both stages
are a single least-squares solve over all voxels or volumes at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import NDArray
from scipy import special

__all__ = ["DualRegression", "dual_regression", "t_to_z"]


@dataclass(frozen=True)
class DualRegression:
    """Outputs of :func:`dual_regression` for one subject.

    Attributes
    ----------
    timecourses : ndarray
        ``(T, K)`` stage-1 time courses.
    maps : ndarray
        ``(K, V)`` stage-2 betas.
    zmaps : ndarray
        ``(K, V)`` their z statistics.
    """

    timecourses: NDArray[np.float32]
    maps: NDArray[np.float32]
    zmaps: NDArray[np.float32]


def t_to_z(t: NDArray[np.floating], dof: float) -> NDArray[np.float64]:
    """Convert t statistics to z with the same tail probability (accurate in both tails).

    Parameters
    ----------
    t : ndarray
        t statistics, any shape.
    dof : float
        Degrees of freedom of the t distribution.

    Returns
    -------
    ndarray
        float64 z values of the same shape and sign (magnitude capped where the
        tail probability underflows 1e-300).
    """
    t = np.asarray(t, dtype=np.float64)
    lower = special.stdtr(dof, -np.abs(t))  # tail probability, never rounds to 1
    z = -special.ndtri(np.clip(lower, 1e-300, 0.5))
    return np.sign(t) * z


def dual_regression(
    data: NDArray[np.floating],
    group_maps: NDArray[np.floating],
    des_norm: bool = True,
    device: torch.device | str = "cpu",
) -> DualRegression:
    """Dual regression of one subject.

    Parameters
    ----------
    data
        ``(T, V)`` subject time series inside the group mask.
    group_maps
        ``(K, V)`` group component maps inside the same mask.
    des_norm : bool, default=True
        Scale stage-1 time courses to unit variance before stage 2.
    device : torch.device or str, default="cpu"
        Where the regressions are computed.

    Returns
    -------
    DualRegression
        Time courses, maps and z maps; the z maps have ``T - K - 1`` degrees of freedom.

    Raises
    ------
    ValueError
        When ``T <= K + 1``.
    """
    dev = torch.device(device)
    y = torch.from_numpy(np.ascontiguousarray(data, dtype=np.float64)).to(dev)
    g = torch.from_numpy(np.ascontiguousarray(group_maps, dtype=np.float64)).to(dev)
    n_t, _ = y.shape
    k = g.shape[0]
    if n_t <= k + 1:
        raise ValueError(f"dual regression needs more volumes ({n_t}) than components + 1 ({k + 1})")
    # Stage 1: samples are voxels; data and design demeaned across voxels.
    ys = y - y.mean(1, keepdim=True)
    gs = g - g.mean(1, keepdim=True)
    tc = torch.linalg.lstsq(gs.T, ys.T).solution.T  # (T, K)
    # Stage 2: samples are volumes; data and design demeaned over time.
    x = tc - tc.mean(0, keepdim=True)
    if des_norm:
        x = x / x.std(0, keepdim=True).clamp_min(1e-12)
    yt = y - y.mean(0, keepdim=True)
    xtx_inv = torch.linalg.inv(x.T @ x)
    beta = xtx_inv @ x.T @ yt  # (K, V)
    resid = yt - x @ beta
    dof = n_t - k - 1
    sigma2 = (resid * resid).sum(0) / dof
    se = torch.sqrt(torch.diagonal(xtx_inv)[:, None] * sigma2[None, :]).clamp_min(1e-12)
    t = (beta / se).cpu().numpy()
    return DualRegression(
        timecourses=tc.cpu().numpy().astype(np.float32),
        maps=beta.cpu().numpy().astype(np.float32),
        zmaps=t_to_z(t, dof).astype(np.float32),
    )

"""One resampling of a run into the MNI 4 mm grid, and the brain masks that go with it."""

from __future__ import annotations

import numpy as np
import torch
from numpy.typing import NDArray
from scipy import ndimage

from rsnflow.resample import affine_points, grid_points, sample, volumes_first
from rsnflow.space import MNI4_AFFINE, MNI4_SHAPE

__all__ = ["dice", "epi_brain_mask", "mask_to_mni", "resample_run_to_mni"]


def resample_run_to_mni(
    data: NDArray[np.generic],
    affine: NDArray[np.float64],
    motion: NDArray[np.float64],
    mni_to_epi: NDArray[np.float64],
    device: torch.device,
    chunk: int = 32,
) -> tuple[NDArray[np.float32], NDArray[np.bool_]]:
    """Sample every volume straight into the MNI grid through composed transforms.

    MNI voxel -> MNI mm -> EPI reference frame (``mni_to_epi``) -> volume t's
    frame (its motion matrix ``motion[t]``) -> native voxel: one interpolation
    per output value, however many transforms.

    Parameters
    ----------
    data : numpy.ndarray
        ``(X, Y, Z, T)`` native BOLD series.
    affine : numpy.ndarray
        ``(4, 4)`` voxel-to-mm affine of ``data``.
    motion : numpy.ndarray
        ``(T, 4, 4)`` matrices from the reference frame to each volume's frame, in mm
        (:meth:`MotionEstimate.matrices`).
    mni_to_epi : numpy.ndarray
        ``(4, 4)`` map from MNI mm to the EPI reference frame's mm.
    device : torch.device
        Where the trilinear sampling runs.
    chunk : int, default=32
        Volumes sampled per batch (bounds memory).

    Returns
    -------
    data_mni
        ``(45, 54, 45, T)`` float32.
    coverage
        Voxels inside the native field of view in every volume.
    """
    n = data.shape[-1]
    inv = np.linalg.inv(affine)
    grid = grid_points(MNI4_SHAPE)
    size = np.asarray(data.shape[:3], dtype=np.float64) - 1
    out = np.empty((*MNI4_SHAPE, n), dtype=np.float32)
    covered = np.ones(len(grid), dtype=bool)
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        mats = inv @ motion[start:stop] @ mni_to_epi @ MNI4_AFFINE
        pts = affine_points(mats, grid)
        covered &= np.all((pts >= 0) & (pts <= size), axis=-1).all(0)
        vals = sample(
            volumes_first(data, start, stop, device), torch.from_numpy(pts).to(device, torch.float32)
        )
        out[..., start:stop] = vals.T.reshape(*MNI4_SHAPE, stop - start).cpu().numpy()
    return out, covered.reshape(MNI4_SHAPE)


def _otsu(values: NDArray[np.floating], bins: int = 256) -> float:
    hist, edges = np.histogram(values, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres) / np.maximum(w0, 1)
    m1 = (np.sum(hist * centres) - np.cumsum(hist * centres)) / np.maximum(w1, 1)
    return float(centres[np.argmax(w0 * w1 * (m0 - m1) ** 2)])


def epi_brain_mask(mean_epi: NDArray[np.floating]) -> NDArray[np.bool_]:
    """Brain mask of a mean EPI from intensity alone (no FSL BET).

    Otsu threshold, the largest connected component, a closing and hole
    filling per slice and in 3D (ventricles and dark spots stay inside).

    Parameters
    ----------
    mean_epi : numpy.ndarray
        ``(X, Y, Z)`` mean EPI volume.

    Returns
    -------
    numpy.ndarray
        ``(X, Y, Z)`` boolean mask (the Otsu foreground as is when it is empty).
    """
    img = np.asarray(mean_epi, dtype=np.float32)
    fg = img > _otsu(img[img > 0.05 * np.percentile(img, 99)])
    labels, n = ndimage.label(fg)
    if n == 0:
        return fg
    sizes = ndimage.sum_labels(fg, labels, index=np.arange(1, n + 1))
    mask = labels == (1 + int(np.argmax(sizes)))
    mask = ndimage.binary_closing(mask, iterations=2, border_value=0)
    for k in range(mask.shape[2]):
        mask[..., k] = ndimage.binary_fill_holes(mask[..., k])
    return ndimage.binary_fill_holes(mask)


def mask_to_mni(
    mask: NDArray[np.bool_], affine: NDArray[np.float64], mni_to_epi: NDArray[np.float64]
) -> NDArray[np.bool_]:
    """A native mask brought into the MNI grid (partial volume > 0.5).

    Parameters
    ----------
    mask : numpy.ndarray
        ``(X, Y, Z)`` boolean mask in the EPI reference frame.
    affine : numpy.ndarray
        ``(4, 4)`` voxel-to-mm affine of ``mask``.
    mni_to_epi : numpy.ndarray
        ``(4, 4)`` map from MNI mm to the EPI reference frame's mm.

    Returns
    -------
    numpy.ndarray
        ``(45, 54, 45)`` boolean mask: voxels whose trilinearly interpolated mask exceeds 0.5.
    """
    m = np.linalg.inv(affine) @ mni_to_epi @ MNI4_AFFINE
    pts = affine_points(m, grid_points(MNI4_SHAPE))
    frac = ndimage.map_coordinates(mask.astype(np.float32), pts.T, order=1, cval=0.0)
    return frac.reshape(MNI4_SHAPE) > 0.5


def dice(a: NDArray[np.bool_], b: NDArray[np.bool_]) -> float:
    """Dice overlap of two masks.

    Parameters
    ----------
    a, b : numpy.ndarray
        Boolean masks of the same shape.

    Returns
    -------
    float
        ``2 |a & b| / (|a| + |b|)``; 1.0 when both are empty.
    """
    denom = int(a.sum()) + int(b.sum())
    return 2.0 * int((a & b).sum()) / denom if denom else 1.0

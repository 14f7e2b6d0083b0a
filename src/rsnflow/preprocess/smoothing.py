"""Spatial smoothing: separable Gaussian of a given FWHM, normalised within a mask."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import ndimage

__all__ = ["fwhm_to_sigma", "smooth_in_mask"]


def fwhm_to_sigma(fwhm_mm: float) -> float:
    """Gaussian sigma of a full width at half maximum.

    Parameters
    ----------
    fwhm_mm : float
        Full width at half maximum (mm).

    Returns
    -------
    float
        Sigma in the same unit, ``fwhm_mm / sqrt(8 ln 2)``.
    """
    return float(fwhm_mm) / np.sqrt(8.0 * np.log(2.0))


def smooth_in_mask(
    data: NDArray[np.floating], mask: NDArray[np.bool_], voxel_mm: ArrayLike, fwhm_mm: float
) -> NDArray[np.float32]:
    """Smooth a 3D or 4D image with a Gaussian of ``fwhm_mm``, inside ``mask`` only.

    The kernel is separable with a per-axis width in voxels (anisotropic
    voxels are handled). Smoothing the masked data and dividing by the smoothed
    mask keeps values at the brain edge from being pulled towards the zeros
    outside it (the normalisation FSL's SUSAN and nilearn's masked smoothing
    also use); outside the mask the result is 0.

    Parameters
    ----------
    data : numpy.ndarray
        ``(X, Y, Z)`` or ``(X, Y, Z, T)`` image; a 4D image is smoothed in space only.
    mask : numpy.ndarray
        ``(X, Y, Z)`` boolean mask.
    voxel_mm : array-like
        Voxel size along the three spatial axes (mm).
    fwhm_mm : float
        Kernel FWHM (mm); 0 or less only zeroes the voxels outside ``mask``.

    Returns
    -------
    numpy.ndarray
        float32 array of the shape of ``data``.
    """
    if fwhm_mm <= 0:
        return np.where(mask[..., None] if data.ndim == 4 else mask, data, 0).astype(np.float32)
    vox = np.asarray(voxel_mm, dtype=float)
    sigma = [fwhm_to_sigma(fwhm_mm) / v for v in vox] + [0.0] * (data.ndim - 3)
    m = mask.astype(np.float32)
    weights = ndimage.gaussian_filter(m, sigma[:3], mode="constant")
    mm = m[..., None] if data.ndim == 4 else m
    num = ndimage.gaussian_filter((data * mm).astype(np.float32), sigma, mode="constant")
    w = weights[..., None] if data.ndim == 4 else weights
    return np.where(mm > 0, num / np.maximum(w, 1e-6), 0).astype(np.float32)

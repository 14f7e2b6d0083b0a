"""Slice-timing correction: every slice's time series shifted to a common reference time.

Off by default (the paper does none; FSL's FEAT leaves it off too). When the
``preprocess.slice_timing`` setting is on and the run's sidecar has
``SliceTiming`` (seconds from the start of each volume, one per slice along
``SliceEncodingDirection``, default the third axis), each slice is resampled
in time to the middle of the acquisition (fMRIPrep's reference: the mean of
the first and last slice times) by a Fourier phase shift, the interpolation
of AFNI's ``3dTshift -Fourier``; the series is mirrored before the FFT so that
its ends do not wrap into each other.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["check_slice_timing", "shift_slices"]

_AXES = {"i": 0, "j": 1, "k": 2, "i-": 0, "j-": 1, "k-": 2}


def check_slice_timing(
    meta: dict[str, Any], shape: tuple[int, ...], tr: float
) -> tuple[NDArray[np.float64], int]:
    """The slice times and the slice axis from sidecar metadata, validated against the image.

    Parameters
    ----------
    meta : dict
        The BOLD sidecar: ``SliceTiming`` (s) and optionally ``SliceEncodingDirection``
        (``i``, ``j`` or ``k``, with or without ``-``; default ``k``).
    shape : tuple of int
        Shape of the image (at least its three spatial axes).
    tr : float
        Repetition time (s).

    Returns
    -------
    times : numpy.ndarray
        ``(n_slices,)`` slice times in seconds.
    axis : int
        The spatial axis (0, 1 or 2) the slices are taken along.

    Raises
    ------
    ValueError
        Slice times that are not numbers, not one per slice, or outside ``[0, TR)``;
        an unknown ``SliceEncodingDirection``.
    """
    direction = meta.get("SliceEncodingDirection", "k")
    if direction not in _AXES:
        raise ValueError(f"SliceEncodingDirection {direction!r} is not one of i, j, k, i-, j-, k-")
    axis = _AXES[direction]
    try:
        times = np.asarray(meta["SliceTiming"], dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"SliceTiming must be a list of numbers ({exc})") from exc
    if times.ndim != 1 or len(times) != shape[axis]:
        raise ValueError(f"SliceTiming has {times.size} values for {shape[axis]} slices along {direction}")
    if not np.all(np.isfinite(times)) or times.min() < 0 or times.max() >= tr:
        raise ValueError(
            f"SliceTiming values must lie in [0, TR={tr:g} s), got {times.min():g}..{times.max():g}"
        )
    return times, axis


def shift_slices(
    data: NDArray[np.generic], times: NDArray[np.float64], axis: int, tr: float
) -> NDArray[np.float32]:
    """``data`` ``(X, Y, Z, T)`` with every slice resampled to the reference time.

    The reference is the middle of the acquisition; a slice's value at volume
    ``t`` becomes its signal at ``t TR + reference``.

    Parameters
    ----------
    data : numpy.ndarray
        ``(X, Y, Z, T)`` BOLD series.
    times : numpy.ndarray
        Acquisition time (s) of each slice along ``axis`` (:func:`check_slice_timing`).
    axis : int
        The slice axis (0, 1 or 2).
    tr : float
        Repetition time (s).

    Returns
    -------
    numpy.ndarray
        float32 array of the shape of ``data``.
    """
    out = np.empty(data.shape, dtype=np.float32)
    reference = (times.min() + times.max()) / 2
    n = data.shape[-1]
    freqs = np.fft.rfftfreq(2 * n, d=tr)
    for s, t_slice in enumerate(times):
        index = [slice(None)] * 3
        index[axis] = slice(s, s + 1)
        series = np.asarray(data[(*index, slice(None))], dtype=np.float64)
        mirrored = np.concatenate([series, series[..., ::-1]], axis=-1)
        # Sampled at k TR + t_slice; wanted at k TR + reference: y(tau + delta), delta = reference - t_slice.
        phase = np.exp(2j * np.pi * freqs * (reference - t_slice))
        shifted = np.fft.irfft(np.fft.rfft(mirrored, axis=-1) * phase, n=2 * n, axis=-1)[..., :n]
        out[(*index, slice(None))] = shifted
    return out

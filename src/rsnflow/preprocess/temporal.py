"""Temporal high-pass filters: FSL's running-line filter, Butterworth, cosine basis."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from scipy import signal

__all__ = ["fsl_highpass_matrix", "highpass"]


def fsl_highpass_matrix(n: int, sigma: float) -> NDArray[np.float64]:
    """The ``(n, n)`` operator of FSL's Gaussian-weighted running-line low-pass.

    Row ``t`` fits a straight line to the samples around ``t`` with weights
    ``exp(-tau^2 / (2 sigma^2))`` for ``|tau| <= 3 sigma`` (truncated at the
    run's ends) and returns the line's value at ``t``; ``fslmaths -bptf``
    subtracts that trend.

    Parameters
    ----------
    n : int
        Number of time points (volumes).
    sigma : float
        Width of the Gaussian weights, in volumes.

    Returns
    -------
    numpy.ndarray
        ``(n, n)`` matrix ``L``; ``L @ y`` is the trend of a series ``y``.
    """
    half = int(np.ceil(3 * sigma))
    out = np.zeros((n, n))
    for t in range(n):
        lo, hi = max(0, t - half), min(n, t + half + 1)
        tau = np.arange(lo, hi) - t
        w = np.exp(-(tau**2) / (2 * sigma * sigma))
        s0, s1, s2 = w.sum(), (w * tau).sum(), (w * tau * tau).sum()
        det = s0 * s2 - s1 * s1
        # Value at tau=0 of the weighted least-squares line: sum_k c_k y_k.
        out[t, lo:hi] = w * (s2 - s1 * tau) / det if det > 1e-12 else w / s0
    return out


def highpass(
    data: NDArray[np.floating], tr: float, cutoff_s: float = 100.0, method: str = "fsl"
) -> NDArray[np.float32]:
    """High-pass filter along the last axis (time), the mean restored.

    Parameters
    ----------
    data
        ``(..., T)`` time series.
    tr
        Repetition time (s).
    cutoff_s
        Cutoff period in seconds (FSL's default 100 s); for ``fsl`` the
        running-line sigma is ``cutoff_s / (2 tr)`` volumes, as FEAT sets it.
    method
        ``fsl`` (``fslmaths -bptf``), ``butterworth`` (order 2, zero-phase) or
        ``cosine`` (discrete cosine basis up to the cutoff period, as SPM, plus a
        linear term).

    Returns
    -------
    numpy.ndarray
        float32 array of the shape of ``data``: the filtered series with each series' mean added back.

    Raises
    ------
    ValueError
        An unknown ``method``.
    """
    x = np.asarray(data, dtype=np.float64)
    n = x.shape[-1]
    flat = x.reshape(-1, n)
    mean = flat.mean(1, keepdims=True)
    if method == "fsl":
        trend = flat @ fsl_highpass_matrix(n, cutoff_s / (2.0 * tr)).T
        out = flat - trend + mean
    elif method == "butterworth":
        sos = signal.butter(2, 1.0 / cutoff_s, btype="highpass", fs=1.0 / tr, output="sos")
        out = signal.sosfiltfilt(sos, flat - mean, axis=1) + mean
    elif method == "cosine":
        k = int(np.floor(2 * n * tr / cutoff_s))
        t = np.arange(n)
        # A linear term too: a ramp needs many cosines, and scanner drift is mostly a ramp.
        cols = [np.linspace(-1, 1, n)] + [np.cos(np.pi * (2 * t + 1) * j / (2 * n)) for j in range(1, k + 1)]
        basis = np.column_stack(cols)
        beta, *_ = np.linalg.lstsq(basis, (flat - mean).T, rcond=None)
        out = flat - (basis @ beta).T
    else:
        raise ValueError(f"unknown high-pass method {method!r} (fsl, butterworth, cosine)")
    return out.reshape(x.shape).astype(np.float32)

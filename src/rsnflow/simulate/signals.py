"""Time courses of the simulator: band-limited BOLD-like signals and head motion."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from rsnflow.transforms import framewise_displacement

__all__ = ["band_limited", "head_motion"]


def band_limited(
    rng: np.random.Generator, n: int, tr: float, low_hz: float, high_hz: float, count: int = 1
) -> NDArray[np.float64]:
    """``count`` zero-mean, unit-variance signals of ``n`` samples in a frequency band.

    White Gaussian noise filtered with a hard band in the Fourier domain; the
    band is clipped to what the sampling rate can hold; when it holds fewer
    than two frequencies, the two lowest non-zero ones are kept instead.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of the white noise.
    n : int
        Samples (volumes) per signal.
    tr : float
        Sampling interval in seconds.
    low_hz, high_hz : float
        Band edges in Hz, both included.
    count : int, default=1
        Number of independent signals.

    Returns
    -------
    ndarray
        ``(count, n)`` float64 signals.
    """
    white = rng.standard_normal((count, n))
    freqs = np.fft.rfftfreq(n, d=tr)
    nyquist = 0.5 / tr
    keep = (freqs >= low_hz) & (freqs <= min(high_hz, nyquist))
    if keep.sum() < 2:  # a very short run: keep the lowest non-zero frequencies
        keep = np.zeros_like(keep)
        keep[1 : min(3, len(keep))] = True
    spec = np.fft.rfft(white, axis=1) * keep
    out = np.fft.irfft(spec, n=n, axis=1)
    out -= out.mean(1, keepdims=True)
    out /= np.maximum(out.std(1, keepdims=True), 1e-12)
    return out


def head_motion(
    rng: np.random.Generator, n: int, median_fd_mm: float, spike_rate: float = 1 / 60
) -> NDArray[np.float64]:
    """Rigid head motion ``(n, 6)``: slow drift plus occasional spikes.

    Each parameter is a mean-reverting smoothed walk plus jitter; spikes are brief jerks lasting
    one or two volumes. The whole trace is then scaled so that the median
    framewise displacement (Power, 50 mm) equals ``median_fd_mm``; FD is
    homogeneous in the parameters, so the scaling is exact.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of the random walk, jitter and spikes.
    n : int
        Volumes.
    median_fd_mm : float
        Median framewise displacement of the trace, in mm.
    spike_rate : float, default=1/60
        Expected spikes per volume (their count is Poisson).

    Returns
    -------
    ndarray
        ``(n, 6)`` float64 poses relative to the first volume: translations in mm,
        then rotations in radians.
    """
    # Slow drift: a mean-reverting (Ornstein-Uhlenbeck) walk, so the head wanders
    # by a millimetre or so over a run instead of diffusing away.
    steps = ndimage.gaussian_filter1d(rng.standard_normal((n, 6)), sigma=2.0, axis=0)
    drift = np.zeros((n, 6))
    for t in range(1, n):
        drift[t] = 0.97 * drift[t - 1] + steps[t]
    # Frame-to-frame jitter (respiration-like apparent motion) sets most of the FD.
    jitter = 0.4 * rng.standard_normal((n, 6))
    motion = drift + jitter
    motion[:, 3:] /= 50.0  # rotations in rad: the same displacement at 50 mm
    n_spikes = rng.poisson(spike_rate * n)
    for start in rng.integers(1, max(n - 1, 2), size=n_spikes):
        length = int(rng.integers(1, 3))
        jerk = rng.standard_normal(6) * 4.0
        jerk[3:] /= 50.0
        motion[start : start + length] += jerk
    motion -= motion[0]
    median = float(np.median(framewise_displacement(motion)[1:]))
    return motion * (median_fd_mm / max(median, 1e-12))

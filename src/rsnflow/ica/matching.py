"""Match components across decompositions (Hungarian assignment on |spatial correlation|)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import linear_sum_assignment

__all__ = ["ComponentMatch", "match_components", "spatial_correlation"]


def spatial_correlation(a: NDArray[np.floating], b: NDArray[np.floating]) -> NDArray[np.float64]:
    """Pearson correlation of every row of ``a`` ``(Ka, V)`` with every row of ``b`` ``(Kb, V)``.

    Parameters
    ----------
    a, b : ndarray
        Maps, one per row (or per first index: further axes are flattened).

    Returns
    -------
    ndarray
        ``(Ka, Kb)`` float64 correlations.
    """
    x = np.asarray(a, dtype=np.float64).reshape(len(a), -1)
    y = np.asarray(b, dtype=np.float64).reshape(len(b), -1)
    x = x - x.mean(1, keepdims=True)
    y = y - y.mean(1, keepdims=True)
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    y /= np.maximum(np.linalg.norm(y, axis=1, keepdims=True), 1e-12)
    return x @ y.T


@dataclass(frozen=True)
class ComponentMatch:
    """One-to-one pairs ``(rows[i], cols[i])`` with signed correlations ``r[i]``.

    Attributes
    ----------
    rows : ndarray of int64
        Indices into the first set of maps.
    cols : ndarray of int64
        Indices of their partners in the second set.
    r : ndarray of float64
        Spatial correlation of each pair, sign included.
    """

    rows: NDArray[np.int64]
    cols: NDArray[np.int64]
    r: NDArray[np.float64]


def match_components(a: NDArray[np.floating], b: NDArray[np.floating]) -> ComponentMatch:
    """Pair the rows of ``a`` with rows of ``b`` maximising the summed ``|r|``.

    With different counts, every row of the smaller set gets a partner.
    The sign of ``r`` tells whether a map came out flipped.

    Parameters
    ----------
    a, b : ndarray
        ``(Ka, V)`` and ``(Kb, V)`` maps, as for :func:`spatial_correlation`.

    Returns
    -------
    ComponentMatch
        ``min(Ka, Kb)`` pairs, sorted by row of ``a``.
    """
    corr = spatial_correlation(a, b)
    rows, cols = linear_sum_assignment(-np.abs(corr))
    return ComponentMatch(rows.astype(np.int64), cols.astype(np.int64), corr[rows, cols])

"""Calibration of a trained classifier on its validation split: a temperature and an abstention threshold.

Temperature scaling (Guo et al., 2017) divides the logits by one scalar ``T``
fitted to minimise the validation negative log-likelihood: the predicted class
never changes, only how sure the probabilities say it is. The MLP trained with
the paper's dropout (0.66) is right on nearly every validation map with a best
probability near 0.3 (ECE about 0.4); scaled, its probabilities say how often
it is right.

The abstention threshold is read off the same calibrated validation
probabilities: the best probability that ``keep`` of the correctly classified
validation maps reach. A map the classifier is less sure of than nearly every
map it got right in distribution is labelled ``Unknown`` by default when served.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import brentq, minimize_scalar
from scipy.special import log_softmax, softmax

__all__ = ["abstain_threshold", "fit_temperature", "scaled_probabilities"]

#: Temperatures are searched in [1/LIMIT, LIMIT].
LIMIT = 100.0


def fit_temperature(logits: NDArray[np.floating], labels: NDArray[np.integer]) -> float:
    """The temperature that minimises the negative log-likelihood of ``labels``, never surer than the data.

    The mean calibrated confidence is capped at Laplace's estimate of the accuracy,
    ``(k + 1) / (N + 2)`` for ``k`` of ``N`` maps right. Without the cap a validation
    split the classifier gets entirely right has no finite optimum: the likelihood
    keeps rising as ``T`` shrinks, every probability becomes 1, and a threshold read
    from them abstains on everything short of certainty. Where the likelihood's
    optimum is no surer than that (any split with mistakes, in practice) the cap
    changes nothing.

    Parameters
    ----------
    logits : numpy.ndarray
        ``(N, C)`` validation logits.
    labels : numpy.ndarray
        ``(N,)`` true class indices.

    Returns
    -------
    float
        ``T`` in ``[1/100, 100]``; the calibrated probabilities are ``softmax(logits / T)``.

    Raises
    ------
    ValueError
        No maps, or shapes that do not match.
    """
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    if z.ndim != 2 or len(z) == 0 or y.shape != (len(z),):
        raise ValueError(f"need (N, C) logits and (N,) labels with N > 0, got {z.shape} and {y.shape}")

    def nll(log_t: float) -> float:
        return float(-log_softmax(z / np.exp(log_t), axis=1)[np.arange(len(y)), y].mean())

    bounds = (-np.log(LIMIT), np.log(LIMIT))
    log_t = minimize_scalar(nll, bounds=bounds, method="bounded", options={"xatol": 1e-4}).x
    cap = (float((z.argmax(1) == y).sum()) + 1) / (len(y) + 2)

    def excess(lt: float) -> float:  # mean confidence over the cap; falls as T rises
        return float(softmax(z / np.exp(lt), axis=1).max(1).mean()) - cap

    if excess(log_t) > 0 and excess(bounds[1]) < 0:
        log_t = brentq(excess, log_t, bounds[1], xtol=1e-6)
    return float(np.exp(log_t))


def scaled_probabilities(logits: NDArray[np.floating], temperature: float) -> NDArray[np.float64]:
    """``softmax(logits / temperature)`` row by row.

    Parameters
    ----------
    logits : numpy.ndarray
        ``(N, C)`` logits.
    temperature : float
        From :func:`fit_temperature`.

    Returns
    -------
    numpy.ndarray
        ``(N, C)`` probabilities.
    """
    return np.asarray(softmax(np.asarray(logits, dtype=np.float64) / temperature, axis=1))


def abstain_threshold(probs: NDArray[np.floating], labels: NDArray[np.integer], keep: float = 0.99) -> float:
    """The best probability that a fraction ``keep`` of the correctly classified maps reach.

    Parameters
    ----------
    probs : numpy.ndarray
        ``(N, C)`` calibrated validation probabilities.
    labels : numpy.ndarray
        ``(N,)`` true class indices.
    keep : float, default=0.99
        Fraction of the correct validation maps kept (not abstained on) at the threshold.

    Returns
    -------
    float
        The threshold (0 when no map is correct: nothing to base one on).
    """
    p = np.asarray(probs, dtype=np.float64)
    right = p.argmax(1) == np.asarray(labels)
    if not right.any():
        return 0.0
    return float(np.quantile(p.max(1)[right], 1.0 - keep))

"""Classification metrics beyond accuracy: macro-F1, network level, calibration, abstention."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from sklearn.metrics import f1_score, precision_recall_fscore_support

__all__ = [
    "abstain",
    "calibration_error",
    "expected_calibration_error",
    "network_accuracy",
    "per_class_table",
    "summary_metrics",
]


def expected_calibration_error(
    probs: NDArray[np.floating], y: NDArray[np.integer], n_bins: int = 15
) -> float:
    """ECE: the confidence-weighted gap between confidence and accuracy over ``n_bins`` equal bins.

    Parameters
    ----------
    probs : ndarray of shape (n_maps, n_classes)
        Class probabilities; the confidence is the top one.
    y : ndarray of shape (n_maps,)
        True class indices.
    n_bins : int, default=15
        Number of equal-width confidence bins over (0, 1].

    Returns
    -------
    float
        Sum over bins of (fraction of maps in the bin) times abs(accuracy - mean confidence), in [0, 1].
    """
    return calibration_error(probs.max(1), probs.argmax(1) == y, n_bins)


def calibration_error(
    confidence: NDArray[np.floating], correct: NDArray[np.bool_], n_bins: int = 15
) -> float:
    """ECE of answers given with a ``confidence`` each, right or not (as :func:`expected_calibration_error`).

    Parameters
    ----------
    confidence : ndarray of shape (n_maps,)
        The confidence of each answer, in (0, 1].
    correct : ndarray of bool, shape (n_maps,)
        Whether each answer was right.
    n_bins : int, default=15
        Number of equal-width confidence bins over (0, 1].

    Returns
    -------
    float
        Sum over bins of (fraction of answers in the bin) times abs(accuracy - mean confidence).
    """
    conf = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=bool)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    ece = 0.0
    for lo, hi in itertools.pairwise(edges):
        inside = (conf > lo) & (conf <= hi)
        if inside.any():
            ece += inside.mean() * abs(correct[inside].mean() - conf[inside].mean())
    return float(ece)


def abstain(probs: NDArray[np.floating], threshold: float, unknown_index: int) -> NDArray[np.int64]:
    """Predicted classes, with ``unknown_index`` where the top probability is under ``threshold``.

    Parameters
    ----------
    probs : ndarray of shape (n_maps, n_classes)
        Class probabilities.
    threshold : float
        Minimum top probability for a prediction to be kept.
    unknown_index : int
        Class index given to the maps below ``threshold``.

    Returns
    -------
    ndarray of shape (n_maps,), dtype int64
        The argmax class, or ``unknown_index`` where the classifier abstains.
    """
    pred = probs.argmax(1)
    return np.where(probs.max(1) < threshold, unknown_index, pred).astype(np.int64)


def network_accuracy(pred: NDArray[np.integer], y: NDArray[np.integer], parents: list[str]) -> float:
    """Accuracy at the parent-network level (``DMN-PCC-MID`` counts as right for any ``DMN-*``).

    Parameters
    ----------
    pred, y : ndarray of shape (n_maps,)
        Predicted and true class indices.
    parents : list of str
        Parent network of every class, indexed by class index.

    Returns
    -------
    float
        Fraction of maps whose predicted class has the same parent network as the true class.
    """
    p = np.asarray(parents)
    return float((p[pred] == p[y]).mean())


def summary_metrics(
    probs: NDArray[np.floating], y: NDArray[np.integer], parents: list[str]
) -> dict[str, float]:
    """Accuracy, macro-F1 over the classes present in ``y``, network accuracy and ECE.

    Parameters
    ----------
    probs : ndarray of shape (n_maps, n_classes)
        Class probabilities; the prediction is their argmax.
    y : ndarray of shape (n_maps,)
        True class indices.
    parents : list of str
        Parent network of every class, indexed by class index.

    Returns
    -------
    dict of str to float
        ``accuracy``, ``macro_f1``, ``network_accuracy`` and ``ece``.
    """
    pred = probs.argmax(1)
    present = np.unique(y)
    return {
        "accuracy": float((pred == y).mean()),
        "macro_f1": float(f1_score(y, pred, labels=present, average="macro", zero_division=0)),
        "network_accuracy": network_accuracy(pred, y, parents),
        "ece": expected_calibration_error(probs, y),
    }


def per_class_table(pred: NDArray[np.integer], y: NDArray[np.integer], classes: list[str]) -> pd.DataFrame:
    """Precision, recall, F1 and support of every class present in truth or prediction.

    Parameters
    ----------
    pred, y : ndarray of shape (n_maps,)
        Predicted and true class indices.
    classes : list of str
        Class labels, indexed by class index.

    Returns
    -------
    pandas.DataFrame
        One row per class, columns ``label``, ``precision``, ``recall``, ``f1`` and
        ``support`` (number of true maps of the class).
    """
    present = np.union1d(np.unique(y), np.unique(pred))
    p, r, f, s = precision_recall_fscore_support(y, pred, labels=present, zero_division=0)
    return pd.DataFrame(
        {"label": np.asarray(classes)[present], "precision": p, "recall": r, "f1": f, "support": s}
    )

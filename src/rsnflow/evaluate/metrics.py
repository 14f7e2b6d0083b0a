"""Classification metrics beyond accuracy: macro-F1, network level, calibration, abstention."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from sklearn.metrics import f1_score, precision_recall_fscore_support

__all__ = ["abstain", "expected_calibration_error", "network_accuracy", "per_class_table", "summary_metrics"]


def expected_calibration_error(
    probs: NDArray[np.floating], y: NDArray[np.integer], n_bins: int = 15
) -> float:
    """ECE: the confidence-weighted gap between confidence and accuracy over ``n_bins`` equal bins."""
    conf = probs.max(1)
    correct = probs.argmax(1) == y
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    ece = 0.0
    for lo, hi in itertools.pairwise(edges):
        inside = (conf > lo) & (conf <= hi)
        if inside.any():
            ece += inside.mean() * abs(correct[inside].mean() - conf[inside].mean())
    return float(ece)


def abstain(probs: NDArray[np.floating], threshold: float, unknown_index: int) -> NDArray[np.int64]:
    """Predicted classes, with ``unknown_index`` where the top probability is under ``threshold``."""
    pred = probs.argmax(1)
    return np.where(probs.max(1) < threshold, unknown_index, pred).astype(np.int64)


def network_accuracy(pred: NDArray[np.integer], y: NDArray[np.integer], parents: list[str]) -> float:
    """Accuracy at the parent-network level (``DMN-PCC-MID`` counts as right for any ``DMN-*``)."""
    p = np.asarray(parents)
    return float((p[pred] == p[y]).mean())


def summary_metrics(
    probs: NDArray[np.floating], y: NDArray[np.integer], parents: list[str]
) -> dict[str, float]:
    """Accuracy, macro-F1 over the classes present in ``y``, network accuracy and ECE."""
    pred = probs.argmax(1)
    present = np.unique(y)
    return {
        "accuracy": float((pred == y).mean()),
        "macro_f1": float(f1_score(y, pred, labels=present, average="macro", zero_division=0)),
        "network_accuracy": network_accuracy(pred, y, parents),
        "ece": expected_calibration_error(probs, y),
    }


def per_class_table(pred: NDArray[np.integer], y: NDArray[np.integer], classes: list[str]) -> pd.DataFrame:
    """Precision, recall, F1 and support of every class present in truth or prediction."""
    present = np.union1d(np.unique(y), np.unique(pred))
    p, r, f, s = precision_recall_fscore_support(y, pred, labels=present, zero_division=0)
    return pd.DataFrame(
        {"label": np.asarray(classes)[present], "precision": p, "recall": r, "f1": f, "support": s}
    )

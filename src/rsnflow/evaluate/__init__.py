"""Evaluation of trained classifiers: Table 1, per-class metrics, calibration, champion."""

from rsnflow.evaluate.compare import evaluate_models, predict_split
from rsnflow.evaluate.metrics import (
    abstain,
    expected_calibration_error,
    network_accuracy,
    per_class_table,
    summary_metrics,
)

__all__ = [
    "abstain",
    "evaluate_models",
    "expected_calibration_error",
    "network_accuracy",
    "per_class_table",
    "predict_split",
    "summary_metrics",
]

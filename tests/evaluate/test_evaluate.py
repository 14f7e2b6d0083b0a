from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rsnflow.cli import EXIT_OK, main
from rsnflow.evaluate import abstain, expected_calibration_error, network_accuracy, summary_metrics


def test_expected_calibration_error() -> None:
    y = np.array([0, 0, 1, 1])
    confident_right = np.array([[1.0, 0], [1.0, 0], [0, 1.0], [0, 1.0]])
    assert expected_calibration_error(confident_right, y) == pytest.approx(0.0)
    # Always 0.9 sure, right half the time: ECE 0.4.
    half = np.array([[0.9, 0.1]] * 4)
    assert expected_calibration_error(half, y) == pytest.approx(0.4)


def test_network_accuracy_and_abstention() -> None:
    parents = ["DMN", "DMN", "VISUAL"]
    assert network_accuracy(np.array([1, 2]), np.array([0, 2]), parents) == 1.0
    probs = np.array([[0.6, 0.3, 0.1], [0.4, 0.35, 0.25]])
    assert list(abstain(probs, 0.5, unknown_index=2)) == [0, 2]
    m = summary_metrics(probs, np.array([0, 1]), parents)
    assert m["accuracy"] == 0.5 and m["network_accuracy"] == 1.0


def test_evaluate_writes_table1_and_picks_a_champion(
    tiny_dataset: Path, tiny_mlp: Path, tmp_path: Path
) -> None:
    out = tmp_path / "report"
    second = tmp_path / "mlp-short"
    assert (
        main(["train", str(tiny_dataset), str(second), "--arch", "mlp", "--epochs", "1", "--no-tracking"])
        == 0
    )
    argv = [
        "evaluate",
        str(tiny_dataset),
        str(tiny_mlp),
        str(second),
        "--out",
        str(out),
        "--cross-dataset",
        str(tiny_dataset),
        "--no-tracking",
    ]
    assert main(argv) == EXIT_OK
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["champion"] == "mlp"  # 30 epochs beat 1 on validation macro-F1
    r = summary["models"]["mlp"]
    for key in (
        "train_accuracy",
        "val_accuracy",
        "test_accuracy",
        "test_macro_f1",
        "test_network_accuracy",
        "test_ece",
        "inference_ms_per_map",
        "train_seconds",
        "cross_accuracy",
        "test_abstain_coverage",
    ):
        assert key in r, key
    assert r["test_network_accuracy"] >= r["test_accuracy"]
    table = (out / "table1.md").read_text()
    assert "| mlp |" in table and "training time" in table and "cross-cohort acc" in table
    assert (out / "confusion_mlp.png").stat().st_size > 10_000
    assert (out / "per_class_mlp.tsv").exists() and (out / "index.html").exists()
    # both models' history.tsv drawn in one figure, shown on the page
    assert (out / "learning_curves.png").stat().st_size > 10_000
    page = (out / "index.html").read_text()
    assert "Learning curves" in page and "accuracy and loss per epoch" in page


def test_learning_curves_only_from_models_with_a_history(tmp_path: Path) -> None:
    from rsnflow.evaluate.compare import _learning_curves

    (tmp_path / "old").mkdir()  # a model directory from before history.tsv
    assert _learning_curves([tmp_path / "old"], tmp_path) is None
    assert not (tmp_path / "learning_curves.png").exists()
    (tmp_path / "new").mkdir()
    rows = [
        "epoch\ttrain_loss\ttrain_accuracy\tval_loss\tval_accuracy",
        "1\t4\t.1\t4.1\t.05",
        "2\t3\t.5\t3.2\t.4",
    ]
    (tmp_path / "new" / "history.tsv").write_text("\n".join(rows) + "\n")
    png = _learning_curves([tmp_path / "old", tmp_path / "new"], tmp_path)
    assert png == tmp_path / "learning_curves.png" and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

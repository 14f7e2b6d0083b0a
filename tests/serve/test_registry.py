"""Serving ``models:/NAME@champion`` from a real MLflow server (the way the chart deploys it)."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest

from rsnflow.models import load_classifier
from rsnflow.tracking import Tracker
from servers import rsnflow_serve


def test_serves_the_registered_champion(
    mlflow_server: str,
    tiny_mlp: Path,
    maps: np.ndarray,
    expected: np.ndarray,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    model, meta = load_classifier(tiny_mlp)
    tracker = Tracker(mlflow_server, "serve-test", "rsn-serve-test")
    with tracker.run("register"):
        version = tracker.log_model(model, maps[:2])
    tracker.set_champion(version)

    uri = "models:/rsn-serve-test@champion"
    with rsnflow_serve(uri, tmp_path / "serve.log", "--tracking-uri", mlflow_server, "--name", "rsn") as url:
        r = httpx.post(f"{url}/v1/models/rsn:predict", json={"instances": maps[:3].tolist()}, timeout=60)
    assert r.status_code == 200, r.text
    labels = [p["label"] for p in r.json()["predictions"]]
    assert labels == [meta["classes"][i] for i in expected[:3].argmax(1)]
    np.testing.assert_allclose(
        [p["probability"] for p in r.json()["predictions"]], expected[:3].max(1), atol=1e-5
    )


def test_a_missing_model_fails_to_start_with_a_clear_error(mlflow_server: str, tmp_path: Path) -> None:
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "rsnflow.cli", "serve", "models:/no-such-model@champion"]
    cmd += ["--tracking-uri", mlflow_server, "--port", "1"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    assert "models:/no-such-model@champion: cannot load the model through MLflow" in done.stderr
    done = subprocess.run(
        [sys.executable, "-m", "rsnflow.cli", "serve", str(tmp_path / "nowhere")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1 and "no such model directory" in done.stderr

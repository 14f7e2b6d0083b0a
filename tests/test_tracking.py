"""Training and evaluation against a real ``mlflow server`` on 127.0.0.1 (SQLite store)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from rsnflow.cli import EXIT_OK, main
from rsnflow.models import load_classifier
from rsnflow.space import MNI4_SHAPE


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("mlflow")
    port = _free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--backend-store-uri",
        f"sqlite:///{root / 'mlflow.db'}",
        "--artifacts-destination",
        str(root / "art"),
        "--workers",
        "1",
    ]
    log = (root / "server.log").open("w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(
                    f"mlflow server did not start: {(root / 'server.log').read_text()[-2000:]}"
                )
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def test_train_and_evaluate_against_an_mlflow_server(
    mlflow_server: str, tiny_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow
    from mlflow import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("tracking:\n  experiment: test-exp\n  registered_model: rsn-test\n")
    model_dir = tmp_path / "mlp"
    argv = [
        "train",
        str(tiny_dataset),
        str(model_dir),
        "--arch",
        "mlp",
        "--epochs",
        "2",
        "--seed",
        "2",
        "--tracking-uri",
        mlflow_server,
        "--config",
        str(cfg),
    ]
    assert main(argv) == EXIT_OK
    assert (
        main(
            [
                "evaluate",
                str(tiny_dataset),
                str(model_dir),
                "--out",
                str(tmp_path / "rep"),
                "--tracking-uri",
                mlflow_server,
                "--config",
                str(cfg),
            ]
        )
        == EXIT_OK
    )

    client = MlflowClient(mlflow_server)
    exp = client.get_experiment_by_name("test-exp")
    runs = {r.info.run_name: r for r in client.search_runs([exp.experiment_id])}
    assert set(runs) == {"train-mlp", "evaluate"}
    train = runs["train-mlp"]
    assert train.data.params["arch"] == "mlp" and train.data.params["lr"] == "0.001"
    assert train.data.params["dataset_sha256"]
    assert [m.step for m in client.get_metric_history(train.info.run_id, "val_accuracy")] == [1, 2]
    assert "train_seconds" in train.data.metrics
    assert "mlp.test_accuracy" in runs["evaluate"].data.metrics

    version = client.get_model_version_by_alias("rsn-test", "champion")
    assert version.run_id == train.info.run_id
    loaded = mlflow.pytorch.load_model("models:/rsn-test@champion")
    maps = torch.from_numpy(np.random.default_rng(0).standard_normal((3, *MNI4_SHAPE), dtype=np.float32))
    ours, _ = load_classifier(model_dir)
    with torch.no_grad():
        assert torch.allclose(loaded(maps), ours(maps), atol=1e-5)

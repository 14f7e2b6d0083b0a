"""Training and evaluation against a real ``mlflow server`` on 127.0.0.1 (SQLite store)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from rsnflow.cli import EXIT_OK, main
from rsnflow.models import load_classifier
from rsnflow.space import MNI4_SHAPE


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

    # The reference maps travel with the model: logged in the training run, fetched through the registry.
    from rsnflow.reference import REFERENCE_FILES, fetch_reference

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    ref = fetch_reference("models:/rsn-test@champion", tmp_path / "ref")
    for name in REFERENCE_FILES.values():
        assert (ref / name).read_bytes() == (model_dir / "reference" / name).read_bytes()
    # So do the class prototypes of the typicality gate: the served champion has them.
    from rsnflow.models.prototypes import PROTOTYPES_FILE, load_prototypes
    from rsnflow.serve.predictor import load_served_prototypes

    served = load_served_prototypes("models:/rsn-test@champion")
    assert served is not None
    for got, kept in zip(served, load_prototypes(model_dir / PROTOTYPES_FILE), strict=True):
        np.testing.assert_array_equal(got, kept)

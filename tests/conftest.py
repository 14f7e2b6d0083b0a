"""Shared fixtures: a tiny simulated cohort made once per test session."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from servers import free_ports, running

os.environ.setdefault("RSNFLOW_PROGRESS", "0")

#: Fixtures that simulate, preprocess, decompose, train or start a server: a test that uses
#: one is ``slow`` (``make test-fast`` leaves it out; ``make test`` runs everything).
SLOW_FIXTURES = {
    "tiny_cohort", "tiny_group", "tiny_dataset", "tiny_mlp", "mlflow_server", "small_deriv",
    "scanner_bids", "served_mlp", "sessions_cohort", "one_subject", "bids", "deriv", "labelled",
    "dataset_copy", "dataset", "s3", "server", "whitened", "compiled",
}  # fmt: skip


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def tiny_cohort(tmp_path_factory: pytest.TempPathFactory):
    """Three good tiny subjects plus one of each defect, seed 7."""
    from rsnflow.simulate import BAD_KINDS, simulate_cohort

    out = tmp_path_factory.mktemp("cohort") / "bids"
    return simulate_cohort(out, profile="tiny", seed=7, n_subjects=3, bad_subjects=list(BAD_KINDS))


@pytest.fixture(scope="session")
def tiny_group(tmp_path_factory: pytest.TempPathFactory):
    """Eight tiny subjects of 150 volumes, preprocessed, group ICA (order 100), dual regression."""
    from rsnflow.config import load_config
    from rsnflow.ica import dual_regression_cohort, group_ica
    from rsnflow.preprocess import preprocess_cohort
    from rsnflow.simulate import simulate_cohort

    root = tmp_path_factory.mktemp("group")
    cohort = simulate_cohort(root / "bids", profile="tiny", seed=21, n_subjects=8, n_volumes=150)
    config = load_config(overrides={"preprocess": {"n_jobs": 2}, "ica": {"order": 100}})
    deriv = root / "derivatives" / "rsnflow"
    preprocess_cohort(cohort.bids_dir, deriv, config.preprocess, device="cpu")
    ica = group_ica(deriv, config.ica, seed=0, device="cpu", report=True)
    dr = dual_regression_cohort(deriv)
    return {"cohort": cohort, "deriv": deriv, "ica": ica, "dr": dr, "config": config}


@pytest.fixture(scope="session")
def tiny_dataset(tiny_group, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The classification dataset of ``tiny_group`` (automatic labels, seed 3 split)."""
    from rsnflow.cli import EXIT_OK, main
    from rsnflow.config import load_config
    from rsnflow.labeling import label_components

    label_components(tiny_group["deriv"], load_config().labeling, report=False)
    out = tmp_path_factory.mktemp("ds") / "dataset"
    assert main(["dataset", str(tiny_group["deriv"]), str(out), "--seed", "3"]) == EXIT_OK
    return out


@pytest.fixture(scope="session")
def tiny_mlp(tiny_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MLP trained 30 epochs on ``tiny_dataset`` (no tracking)."""
    from rsnflow.cli import EXIT_OK, main

    root = tmp_path_factory.mktemp("models")
    out = root / "mlp"
    # The tiny training split (350 maps) makes 11 steps an epoch: a larger step than
    # the paper's 1e-3 so that a short test can show learning.
    (root / "fast.yaml").write_text("train:\n  lr: 0.003\n")
    argv = [
        "train",
        str(tiny_dataset),
        str(out),
        "--arch",
        "mlp",
        "--epochs",
        "30",
        "--seed",
        "1",
        "--no-tracking",
        "--config",
        str(root / "fast.yaml"),
    ]
    assert main(argv) == EXIT_OK
    return out


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real ``mlflow server`` on 127.0.0.1 with a SQLite store; yields its URL."""
    root = tmp_path_factory.mktemp("mlflow")
    (port,) = free_ports()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port)]
    cmd += [
        "--backend-store-uri",
        f"sqlite:///{root / 'mlflow.db'}",
        "--artifacts-destination",
        str(root / "art"),
    ]
    cmd += ["--workers", "1"]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with running(
        cmd, root / "server.log", lambda: httpx.get(f"{url}/health", timeout=2).status_code == 200, env
    ):
        yield url

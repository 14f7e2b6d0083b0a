"""Shared fixtures: a tiny simulated cohort made once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("RSNFLOW_PROGRESS", "0")


@pytest.fixture(scope="session")
def tiny_cohort(tmp_path_factory: pytest.TempPathFactory):
    """Three good tiny subjects plus one of each defect, seed 7."""
    from rsnflow.simulate import BAD_KINDS, simulate_cohort

    out = tmp_path_factory.mktemp("cohort") / "bids"
    return simulate_cohort(out, profile="tiny", seed=7, n_subjects=3, bad_subjects=list(BAD_KINDS))


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture(scope="session")
def tiny_group(tmp_path_factory: pytest.TempPathFactory):
    """Eight tiny subjects of 100 volumes, preprocessed, group ICA (order 70) and dual regression."""
    from rsnflow.config import load_config
    from rsnflow.ica import dual_regression_cohort, group_ica
    from rsnflow.preprocess import preprocess_cohort
    from rsnflow.simulate import simulate_cohort

    root = tmp_path_factory.mktemp("group")
    cohort = simulate_cohort(root / "bids", profile="tiny", seed=21, n_subjects=8, n_volumes=100)
    config = load_config(overrides={"preprocess": {"n_jobs": 2}, "ica": {"order": 70}})
    deriv = root / "derivatives" / "rsnflow"
    preprocess_cohort(cohort.bids_dir, deriv, config.preprocess, device="cpu")
    ica = group_ica(deriv, config.ica, seed=0, device="cpu", report=True)
    dr = dual_regression_cohort(deriv)
    return {"cohort": cohort, "deriv": deriv, "ica": ica, "dr": dr, "config": config}

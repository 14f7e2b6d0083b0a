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

"""Defect 4: a worker killed by SIGKILL (the OOM killer) fails its subject only."""

from __future__ import annotations

from concurrent.futures.process import BrokenProcessPool

import pytest
from workers import square_or_die

from rsnflow.subjects import KILLED, map_subjects


def test_a_killed_worker_fails_its_subject_and_the_others_finish() -> None:
    jobs = [1, 2, 3, -4, 5, 6]  # -4 kills its worker with SIGKILL
    out = map_subjects(square_or_die, jobs, 2, "probe", on_killed=lambda job, why: f"{job} failed: {why}")
    assert out == [1, 4, 9, f"-4 failed: {KILLED}", 25, 36]
    assert "out of memory" in KILLED


def test_without_a_fallback_the_broken_pool_is_raised() -> None:
    with pytest.raises(BrokenProcessPool):
        map_subjects(square_or_die, [1, -2], 2, "probe")

"""Defect 1: symmetric FastICA at order 100 must converge on any CPU and any thread count.

On the tests' tiny fixture (8 runs of 150 volumes, order 100) the plain
fixed-point update left 2 of 12 seeds cycling forever (seeds 4 and 9 on this
machine; which ones depends on the CPU's float32 rounding, so a fresh machine
failed ``make test``). A stalled start is now replaced by a new random start,
in float64: every seed converges to the same good solution (the structured
components of seed 0), and the maps do not depend on the number of threads.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rsnflow.ica import fastica, group_migp, match_components


@pytest.fixture(scope="module")
def whitened(tiny_group) -> np.ndarray:
    ica = tiny_group["ica"]
    subjects = [ica.subjects[i] for i in np.random.default_rng(0).permutation(len(ica.subjects))]
    cfg = tiny_group["config"].ica
    return group_migp(tiny_group["deriv"], subjects, ica.mask, cfg.migp_dim, "cpu", cfg.subject_dim).whitened(
        100
    )


def _fastica_with_threads(whitened: np.ndarray, seed: int, threads: int):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        return fastica(whitened, seed, max_iter=500, tol=1e-4)
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module")
def seed0(whitened) -> np.ndarray:
    res = _fastica_with_threads(whitened, 0, 2)
    assert res.converged
    return res.sources


@pytest.mark.parametrize("seed", [4, 9])
def test_fastica_converges_from_the_starts_that_used_to_cycle(whitened, seed0, seed) -> None:
    res = fastica(whitened, seed, max_iter=500, tol=1e-4)
    assert res.converged
    # The same basin as a start that converged at once: its structured components come back.
    # Recorded: 63 (seed 4) and 65 (seed 9) of 100 at |r| > 0.99 with seed 0 (62-69 for seeds 1-12);
    # a stalled start damped into convergence instead gave 45 of 56 true networks, not 55.
    r = np.abs(match_components(seed0, res.sources).r)
    assert (r > 0.99).sum() >= 55


def test_fastica_maps_agree_across_thread_counts(whitened, seed0) -> None:
    one = _fastica_with_threads(whitened, 0, 1)
    assert one.converged
    r = np.abs(match_components(one.sources, seed0).r)
    print(f"1 vs 2 threads: min |r| {r.min():.6f} over {len(r)} matched components")
    assert r.min() >= 0.999

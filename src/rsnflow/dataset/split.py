"""Subject-level train / validation / test split."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["SPLITS", "subject_split"]

SPLITS = ("train", "val", "test")


def subject_split(subjects: Sequence[str], fractions: Sequence[float], seed: int) -> dict[str, str]:
    """Assign every subject to one split; a subject never appears in two.

    Every subject carries one map per group component and the labels belong to
    the group components, so every subject holds the same label multiset: a
    split by subject is stratified exactly, whatever subjects it draws. (A
    dataset pooling cohorts splits each source's people on its own, so each
    source's labels are in every split.)

    Parameters
    ----------
    subjects
        Participant labels.
    fractions
        ``(train, val, test)`` summing to 1 (paper: 0.7, 0.1, 0.2).
    seed
        Seed of the shuffle.

    Returns
    -------
    dict
        Subject to ``train``, ``val`` or ``test``. With three subjects or more,
        validation and test get at least one each.

    Raises
    ------
    ValueError
        Fewer than three subjects.
    """
    n = len(subjects)
    if n < 3:
        raise ValueError(f"a train/val/test split by subject needs at least 3 subjects, got {n}")
    n_val = max(1, round(fractions[1] * n))
    n_test = max(1, round(fractions[2] * n))
    n_train = n - n_val - n_test
    if n_train < 1:
        n_val, n_test = 1, 1
        n_train = n - 2
    order = np.random.default_rng(seed).permutation(sorted(subjects))
    assignment = ["train"] * n_train + ["val"] * n_val + ["test"] * n_test
    return {str(s): a for s, a in zip(order, assignment, strict=True)}

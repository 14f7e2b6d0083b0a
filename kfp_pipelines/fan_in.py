"""What a fan-in task checks first: at least one subject of its ParallelFor succeeded."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def require_one_ok(parts: Iterable[Any], stage: str, then: str) -> None:
    """Raise unless some subject's artifact (``metadata`` ``subject`` and ``status``) says ``ok``.

    Parameters
    ----------
    parts : iterable of kfp.dsl.Artifact
        The collected per-subject artifacts.
    stage : str
        The stage that made them, for the message (``"preprocessing"``).
    then : str
        What the failing task would have done (``"decompose"``).

    Raises
    ------
    RuntimeError
        Every subject failed; the message lists each subject's status.
    """
    states = {p.metadata.get("subject", "?"): p.metadata.get("status", "") for p in parts}
    if not any(state.startswith("ok") for state in states.values()):
        reasons = "; ".join(f"sub-{s}: {state}" for s, state in sorted(states.items()))
        raise RuntimeError(f"{stage} failed for every subject, nothing to {then}: {reasons}")

"""Small derivatives folders cut from the shared tiny cohort, for tests that write into them."""

from __future__ import annotations

import shutil
from pathlib import Path

from rsnflow.bids import RunId
from rsnflow.ica.group import preprocessed_runs
from rsnflow.layout import dr_outputs


def preprocessed_only(tiny_group: dict, root: Path, n: int = 2) -> tuple[Path, list[RunId]]:
    """A derivatives folder holding only the preprocessed runs of ``n`` subjects (no group maps, no DR)."""
    src = Path(tiny_group["deriv"])
    deriv = root / "deriv"
    runs = preprocessed_runs(src)[:n]
    for run in runs:
        shutil.copytree(src / f"sub-{run.subject}", deriv / f"sub-{run.subject}")
        for path in dr_outputs(deriv, run).values():
            Path(path).unlink(missing_ok=True)
    assert preprocessed_runs(deriv) == runs
    return deriv, runs

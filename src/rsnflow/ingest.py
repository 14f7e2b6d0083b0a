"""Ingest: find the resting-state runs of a BIDS cohort and validate each one.

A subject whose run is unusable (truncated, not NIfTI, 3D, NaN, no TR, too
short) is reported with the reason and left out; the others go on. Runs are
validated one at a time, so memory does not grow with the cohort.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from rsnflow.io import InvalidInputError, load_bold, write_text
from rsnflow.log import get_logger, progress

__all__ = ["CohortRuns", "SubjectRun", "check_dataset_description", "find_runs", "ingest_cohort"]

log = get_logger(__name__)


@dataclass(frozen=True)
class SubjectRun:
    """One validated run: where it is and what it holds."""

    subject: str
    path: Path
    tr: float
    shape: tuple[int, ...]
    voxel_mm: tuple[float, ...]


@dataclass
class CohortRuns:
    """The outcome of :func:`ingest_cohort`."""

    bids_dir: Path
    runs: list[SubjectRun] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def tr(self) -> float | None:
        """The most common repetition time of the valid runs."""
        if not self.runs:
            return None
        return Counter(r.tr for r in self.runs).most_common(1)[0][0]

    def summary(self) -> pd.DataFrame:
        """One row per subject: status, reason, TR, shape."""
        rows = [
            {
                "participant_id": f"sub-{r.subject}",
                "status": "ok",
                "reason": "",
                "tr": r.tr,
                "shape": "x".join(map(str, r.shape)),
                "path": str(r.path),
            }
            for r in self.runs
        ]
        rows += [
            {
                "participant_id": f"sub-{s}",
                "status": "failed",
                "reason": why,
                "tr": None,
                "shape": "",
                "path": "",
            }
            for s, why in self.failed.items()
        ]
        return pd.DataFrame(rows).sort_values("participant_id", ignore_index=True)


def check_dataset_description(root: Path) -> None:
    """Raise unless ``root/dataset_description.json`` exists and is a JSON object."""
    path = root / "dataset_description.json"
    if not path.exists():
        raise InvalidInputError(root, "not a BIDS dataset (no dataset_description.json)")
    try:
        desc = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInputError(path, f"not valid JSON ({exc})") from exc
    if not isinstance(desc, dict):
        raise InvalidInputError(path, f"expected a JSON object, got {type(desc).__name__}")


def find_runs(bids_dir: str | Path, participant_label: list[str] | None = None) -> dict[str, Path]:
    """Map participant label -> path of its ``task-rest`` BOLD run.

    Raises
    ------
    InvalidInputError
        When ``bids_dir`` is not a BIDS dataset or holds no resting-state run.
    """
    root = Path(bids_dir)
    check_dataset_description(root)
    wanted = {p.removeprefix("sub-") for p in participant_label or []}
    present = {d.name.removeprefix("sub-") for d in root.glob("sub-*") if d.is_dir()}
    if wanted - present:
        missing = ", ".join(f"sub-{p}" for p in sorted(wanted - present))
        raise InvalidInputError(root, f"--participant-label: no such subject in the dataset: {missing}")
    runs: dict[str, Path] = {}
    for sub_dir in sorted(root.glob("sub-*")):
        label = sub_dir.name.removeprefix("sub-")
        if wanted and label not in wanted:
            continue
        found = sorted((sub_dir / "func").glob(f"sub-{label}_*task-rest*_bold.nii*"))
        if found:
            runs[label] = found[0]
    if not runs:
        raise InvalidInputError(root, "no sub-*/func/*task-rest*_bold.nii[.gz] runs found")
    return runs


def ingest_cohort(
    bids_dir: str | Path,
    participant_label: list[str] | None = None,
    min_volumes: int = 10,
    summary_tsv: str | Path | None = None,
) -> CohortRuns:
    """Validate every run of a BIDS cohort; report and skip the bad ones.

    Parameters
    ----------
    bids_dir
        BIDS raw dataset.
    participant_label
        Only these subjects (default: all).
    min_volumes
        Runs with fewer volumes are refused (the temporal filter and ICA need a
        series, not a handful of volumes).
    summary_tsv
        Optional path for the per-subject status table.
    """
    result = CohortRuns(Path(bids_dir))
    for label, path in progress(find_runs(bids_dir, participant_label).items(), "ingest", unit="subject"):
        try:
            bold = load_bold(path, min_volumes=min_volumes)
        except InvalidInputError as exc:
            log.warning("sub-%s skipped: %s", label, exc)
            result.failed[label] = str(exc)
            continue
        zooms = tuple(float(z) for z in bold.img.header.get_zooms()[:3])
        result.runs.append(SubjectRun(label, path, bold.tr, tuple(bold.img.shape), zooms))
    log.info("ingest: %d valid runs, %d skipped", len(result.runs), len(result.failed))
    if summary_tsv is not None:
        write_text(result.summary().to_csv(sep="\t", index=False), summary_tsv)
    return result

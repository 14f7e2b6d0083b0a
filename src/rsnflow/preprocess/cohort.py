"""Participant-level preprocessing over a cohort: independent subjects, failures skipped."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from rsnflow.config import PreprocessConfig
from rsnflow.ingest import find_runs
from rsnflow.io import InvalidInputError, remove_leftovers, write_dataset_description, write_text
from rsnflow.log import get_logger
from rsnflow.preprocess.participant import (
    PreprocessingError,
    preprocess_identity,
    preprocess_subject,
    subject_outputs,
)
from rsnflow.records import Record, StaleOutputError
from rsnflow.subjects import failed_row, guarded, map_subjects, skipped

__all__ = ["CohortPreprocessing", "preprocess_cohort"]

log = get_logger(__name__)


@dataclass(frozen=True)
class CohortPreprocessing:
    """Outcome of :func:`preprocess_cohort`; ``summary`` has one row per subject."""

    deriv_dir: Path
    summary: pd.DataFrame

    @property
    def failed(self) -> list[str]:
        return list(self.summary.loc[self.summary["status"] == "failed", "participant_id"])

    @property
    def succeeded(self) -> list[str]:
        return list(self.summary.loc[self.summary["status"] != "failed", "participant_id"])


def _one(args: tuple[str, Path, Path, PreprocessConfig, str, bool, int]) -> dict[str, object]:
    subject, bold, deriv, config, device, force, threads = args
    if threads:
        import torch

        torch.set_num_threads(threads)
    row: dict[str, object] = {"participant_id": f"sub-{subject}", "source": str(bold)}
    remove_leftovers(deriv / f"sub-{subject}")
    if not force:
        state = Record(subject_outputs(deriv, subject).record).status(*preprocess_identity(bold, config))
        if state.complete:
            return skipped(row)
        if state.state != "missing":
            log.info("sub-%s: redoing preprocessing: %s", subject, state)

    def work() -> dict[str, object]:
        qc = preprocess_subject(bold, deriv, subject, config, device)
        return {"mean_fd_mm": qc["mean_fd_mm"], "mask_dice": qc["mask_dice_with_template"]}

    return guarded(subject, work, row, (InvalidInputError, PreprocessingError))


def _killed(job: tuple[str, Path, Path, PreprocessConfig, str, bool, int], reason: str) -> dict[str, object]:
    return failed_row({"participant_id": f"sub-{job[0]}", "source": str(job[1])}, reason)


def check_not_stale(deriv: Path, runs: dict[str, Path], config: PreprocessConfig) -> None:
    """Raise :class:`~rsnflow.records.StaleOutputError` naming the first output made from other inputs."""
    for subject, bold in runs.items():
        try:
            identity = preprocess_identity(bold, config)
        except OSError:
            continue  # an unreadable input is reported by the subject's own row
        state = Record(subject_outputs(deriv, subject).record).status(*identity)
        if state.state == "stale":
            raise StaleOutputError(
                subject_outputs(deriv, subject).bold,
                f"stale ({state.reason}); rerun without --no-recompute to redo it",
            )


def preprocess_cohort(
    bids_dir: str | Path,
    deriv_dir: str | Path,
    config: PreprocessConfig,
    participant_label: list[str] | None = None,
    device: str = "auto",
    force: bool = False,
    recompute: bool = True,
) -> CohortPreprocessing:
    """Preprocess every subject of a BIDS cohort into ``deriv_dir``.

    Subjects run independently (``config.n_jobs`` processes). A subject that
    fails is logged with its reason and listed in
    ``deriv_dir/preprocess_summary.tsv``; the others go on, also when a
    worker process is killed. Subjects whose outputs are complete (their
    record names the same input files and settings) are skipped unless
    ``force``; outputs made from other inputs or settings are redone, or
    refused when ``recompute`` is false.

    Raises
    ------
    InvalidInputError
        ``deriv_dir`` is or lies inside ``bids_dir`` (it would write into the raw dataset).
    StaleOutputError
        ``recompute`` is false and some outputs are stale.
    """
    deriv = Path(deriv_dir)
    bids = Path(bids_dir).resolve()
    target = deriv.resolve()
    if target == bids or bids in target.parents:
        raise InvalidInputError(
            deriv, f"lies inside the raw BIDS dataset {bids}; write derivatives elsewhere"
        )
    runs = find_runs(bids_dir, participant_label)
    if not recompute and not force:
        check_not_stale(deriv, runs, config)
    write_dataset_description(deriv, name="rsnflow preprocessing", source=str(bids))
    n_jobs = max(1, min(config.n_jobs, len(runs)))
    threads = max(1, (os.cpu_count() or 1) // n_jobs) if n_jobs > 1 else 0
    jobs = [(s, p, deriv, config, device, force, threads) for s, p in runs.items()]
    log.info("preprocessing %d subjects with %d process(es)", len(jobs), n_jobs)
    rows = map_subjects(_one, jobs, n_jobs, "preprocess", on_killed=_killed)
    summary = pd.DataFrame(rows)
    write_text(summary.to_csv(sep="\t", index=False, na_rep="n/a"), deriv / "preprocess_summary.tsv")
    n_failed = int((summary["status"] == "failed").sum())
    log.info("preprocess: %d ok or complete, %d failed", len(summary) - n_failed, n_failed)
    return CohortPreprocessing(deriv, summary)

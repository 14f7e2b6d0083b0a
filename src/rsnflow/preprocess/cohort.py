"""Participant-level preprocessing over a cohort: independent subjects, failures skipped."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from rsnflow.config import PreprocessConfig
from rsnflow.ingest import find_runs
from rsnflow.io import InvalidInputError, write_dataset_description, write_text
from rsnflow.log import get_logger
from rsnflow.preprocess.participant import PreprocessingError, preprocess_subject, subject_outputs
from rsnflow.subjects import guarded, map_subjects, skipped

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
    if not force and subject_outputs(deriv, subject).complete():
        return skipped(row)

    def work() -> dict[str, object]:
        qc = preprocess_subject(bold, deriv, subject, config, device)
        return {"mean_fd_mm": qc["mean_fd_mm"], "mask_dice": qc["mask_dice_with_template"]}

    return guarded(subject, work, row, (InvalidInputError, PreprocessingError))


def preprocess_cohort(
    bids_dir: str | Path,
    deriv_dir: str | Path,
    config: PreprocessConfig,
    participant_label: list[str] | None = None,
    device: str = "auto",
    force: bool = False,
) -> CohortPreprocessing:
    """Preprocess every subject of a BIDS cohort into ``deriv_dir``.

    Subjects run independently (``config.n_jobs`` processes). A subject that
    fails is logged with its reason and listed in
    ``deriv_dir/preprocess_summary.tsv``; the others go on. Subjects whose
    outputs are complete are skipped unless ``force``.
    """
    deriv = Path(deriv_dir)
    runs = find_runs(bids_dir, participant_label)
    write_dataset_description(deriv, name="rsnflow preprocessing", source=str(Path(bids_dir).resolve()))
    n_jobs = max(1, min(config.n_jobs, len(runs)))
    threads = max(1, (os.cpu_count() or 1) // n_jobs) if n_jobs > 1 else 0
    jobs = [(s, p, deriv, config, device, force, threads) for s, p in runs.items()]
    log.info("preprocessing %d subjects with %d process(es)", len(jobs), n_jobs)
    rows = map_subjects(_one, jobs, n_jobs, "preprocess")
    summary = pd.DataFrame(rows)
    write_text(summary.to_csv(sep="\t", index=False, na_rep="n/a"), deriv / "preprocess_summary.tsv")
    n_failed = int((summary["status"] == "failed").sum())
    log.info("preprocess: %d ok or complete, %d failed", len(summary) - n_failed, n_failed)
    return CohortPreprocessing(deriv, summary)

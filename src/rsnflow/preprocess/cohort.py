"""Participant-level preprocessing over a cohort: independent subjects, failures skipped."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from rsnflow.bids import RunId, find_runs
from rsnflow.config import PreprocessConfig
from rsnflow.io import InvalidInputError, remove_leftovers, write_dataset_description, write_text
from rsnflow.layout import group_paths, preprocess_summary_path, subject_outputs
from rsnflow.log import get_logger
from rsnflow.preprocess.participant import PreprocessingError, preprocess_identity, preprocess_subject
from rsnflow.records import Record, StaleOutputError
from rsnflow.subjects import failed_row, guarded, map_subjects, skipped

__all__ = ["CohortPreprocessing", "preprocess_cohort"]

log = get_logger(__name__)


@dataclass(frozen=True)
class CohortPreprocessing:
    """Outcome of :func:`preprocess_cohort`; ``summary`` has one row per run (and per subject without one).

    Attributes
    ----------
    deriv_dir : pathlib.Path
        The derivatives folder written.
    summary : pandas.DataFrame
        The table written to ``preprocess_summary.tsv``: ``participant_id, run, source,
        status, reason, seconds`` and, for runs preprocessed now, ``mean_fd_mm, mask_dice``.
    """

    deriv_dir: Path
    summary: pd.DataFrame

    @property
    def failed(self) -> list[str]:
        """The runs that failed (their prefixes)."""
        return list(self.summary.loc[self.summary["status"] == "failed", "run"])

    @property
    def succeeded(self) -> list[str]:
        """The runs preprocessed now or before."""
        return list(self.summary.loc[self.summary["status"].isin(["ok", "skipped (complete)"]), "run"])


Job = tuple[RunId, Path, Path, PreprocessConfig, str, bool, int]


def _row(run: RunId, bold: Path) -> dict[str, object]:
    return {"participant_id": run.participant_id, "run": str(run), "source": str(bold)}


def _one(args: Job) -> dict[str, object]:
    run, bold, deriv, config, device, force, threads = args
    if threads:
        import torch

        torch.set_num_threads(threads)
    row = _row(run, bold)
    remove_leftovers(deriv / run.folder())
    if not force:
        state = Record(subject_outputs(deriv, run).record).status(*preprocess_identity(bold, config))
        if state.complete:
            return skipped(row)
        if state.state != "missing":
            log.info("%s: redoing preprocessing: %s", run, state)

    def work() -> dict[str, object]:
        qc = preprocess_subject(bold, deriv, run, config, device)
        return {"mean_fd_mm": qc["mean_fd_mm"], "mask_dice": qc["mask_dice_with_template"]}

    return guarded(str(run), work, row, (InvalidInputError, PreprocessingError))


def _killed(job: Job, reason: str) -> dict[str, object]:
    return failed_row(_row(job[0], job[1]), reason)


def check_not_stale(deriv: Path, runs: list[tuple[RunId, Path]], config: PreprocessConfig) -> None:
    """Raise :class:`~rsnflow.records.StaleOutputError` naming the first output made from other inputs."""
    for run, bold in runs:
        try:
            identity = preprocess_identity(bold, config)
        except OSError:
            continue  # an unreadable input is reported by the run's own row
        state = Record(subject_outputs(deriv, run).record).status(*identity)
        if state.state == "stale":
            raise StaleOutputError(
                subject_outputs(deriv, run).bold,
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
    session_label: list[str] | None = None,
    task: str = "rest",
    bids_filter: dict[str, Any] | None = None,
) -> CohortPreprocessing:
    """Preprocess every matching run of a BIDS cohort into ``deriv_dir``.

    Every run of every session is preprocessed on its own (``config.n_jobs``
    processes), its derivatives named with all its entities. A run that fails
    is logged with its reason and listed in ``deriv_dir/preprocess_summary.tsv``
    (one row per run, and one per subject without a matching run); the others
    go on, also when a worker process is killed. Runs whose outputs are
    complete (their record names the same input files and settings) are
    skipped unless ``force``; outputs made from other inputs or settings are
    redone, or refused when ``recompute`` is false.

    Parameters
    ----------
    bids_dir : str or pathlib.Path
        Root of the raw BIDS dataset.
    deriv_dir : str or pathlib.Path
        Output derivatives folder; must not be or lie inside ``bids_dir``.
    config : PreprocessConfig
        The ``preprocess`` settings (``n_jobs`` sets the number of processes).
    participant_label : list of str, optional
        Subjects to preprocess, with or without ``sub-``; default all.
    device : str, default="auto"
        ``auto``, ``cpu`` or ``cuda``.
    force : bool, default=False
        Redo runs whose outputs are already complete.
    recompute : bool, default=True
        Redo stale outputs; when false (and not ``force``) stale outputs raise instead.
    session_label : list of str, optional
        Sessions to keep, with or without ``ses-``; default all.
    task : str, default="rest"
        ``task-`` label of the runs.
    bids_filter : dict, optional
        Further query on the BIDS entities (:func:`rsnflow.bids.find_runs`).

    Returns
    -------
    CohortPreprocessing
        ``deriv_dir`` and the per-run summary (also written to ``preprocess_summary.tsv``).

    Raises
    ------
    InvalidInputError
        ``deriv_dir`` is or lies inside ``bids_dir`` (it would write into the raw
        dataset); a participant or session label that matches nothing.
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
    runs, unmatched = find_runs(bids_dir, participant_label, session_label, task, bids_filter)
    if not recompute and not force:
        check_not_stale(deriv, runs, config)
    write_dataset_description(deriv, name="rsnflow preprocessing", source=str(bids))
    n_jobs = max(1, min(config.n_jobs, len(runs)))
    threads = max(1, (os.cpu_count() or 1) // n_jobs) if n_jobs > 1 else 0
    jobs = [(r, p, deriv, config, device, force, threads) for r, p in runs]
    n_subjects = len({r.subject for r, _ in runs})
    log.info("preprocessing %d runs of %d subjects with %d process(es)", len(jobs), n_subjects, n_jobs)
    for participant, why in unmatched.items():
        log.warning("%s: nothing to preprocess: %s", participant, why)
    rows = map_subjects(_one, jobs, n_jobs, "preprocess", on_killed=_killed)
    rows += [
        {
            "participant_id": p,
            "run": "",
            "source": "",
            "status": "skipped (no run)",
            "reason": why,
            "seconds": 0.0,
        }
        for p, why in unmatched.items()
    ]
    summary = pd.DataFrame(rows)
    write_text(summary.to_csv(sep="\t", index=False, na_rep="n/a"), preprocess_summary_path(deriv))
    _group_qc_page(deriv)
    n_failed = int((summary["status"] == "failed").sum())
    log.info("preprocess: %d runs ok or complete, %d failed", len(runs) - n_failed, n_failed)
    return CohortPreprocessing(deriv, summary)


def _group_qc_page(deriv: Path) -> None:
    """The cohort's QC page (``group/..._desc-qc_report.html``), every run linked to its own page."""
    import os

    from rsnflow.preprocess.group_qc import collect_qc, flag_outliers, write_group_qc

    table = collect_qc([deriv])
    if table.empty:
        return
    page = group_paths(deriv)["qc_report"]
    page.parent.mkdir(parents=True, exist_ok=True)
    write_group_qc(flag_outliers(table), page, lambda row: os.path.relpath(row["qc_html"], page.parent))

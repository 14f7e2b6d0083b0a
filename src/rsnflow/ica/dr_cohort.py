"""The dual-regression stage over a cohort: subjects independent, finished ones skipped.

Writes per subject, beside its preprocessed run::

    sub-XX_task-rest_space-MNI152NLin2009aSym_res-4mm_desc-dr_components.nii.gz   stage-2 maps (45x54x45xK)
    sub-XX_task-rest_space-MNI152NLin2009aSym_res-4mm_desc-drz_components.nii.gz  their z statistics
    sub-XX_task-rest_desc-dr_timeseries.tsv                                        stage-1 time courses

and ``DERIV_DIR/group/dual_regression_summary.tsv``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from numpy.typing import NDArray

from rsnflow.bids import RunId
from rsnflow.config import ConfigError
from rsnflow.ica.dual_regression import dual_regression
from rsnflow.ica.group import group_record, preprocessed_runs
from rsnflow.io import (
    InvalidInputError,
    load_masked_series,
    load_nifti,
    remove_leftovers,
    save_nifti,
    write_text,
)
from rsnflow.layout import dr_outputs, group_paths, subject_outputs
from rsnflow.log import get_logger
from rsnflow.records import Record, RecordStatus, StaleOutputError, config_digest
from rsnflow.space import MNI4_AFFINE, unmask
from rsnflow.subjects import failed_row, guarded, map_subjects, skipped

__all__ = [
    "DualRegressionCohort",
    "check_order_fits",
    "dr_identity",
    "dr_status",
    "dual_regression_cohort",
]

log = get_logger(__name__)


def check_order_fits(order: int | str, n_volumes: int, where: str) -> None:
    """Refuse a model order that dual regression cannot fit to runs of ``n_volumes`` (it needs order + 2).

    Parameters
    ----------
    order : int or str
        The configured ``ica.order``; a string (``"auto"``) is not checked.
    n_volumes : int
        Volumes of the shortest run.
    where : str
        That run's name, for the message.

    Raises
    ------
    ConfigError
        Naming ``ica.order``, the shortest run (``where``) and the largest order that fits.
    """
    if isinstance(order, int) and n_volumes <= order + 1:
        raise ConfigError(
            f"ica.order: {order} components need runs of more than {order + 1} volumes for dual regression; "
            f"{where} has {n_volumes} (set ica.order to {n_volumes - 2} or less)"
        )


def dr_identity(deriv_dir: str | Path, subject: RunId | str, des_norm: bool) -> tuple[dict[str, str], str]:
    """What a run's dual-regression outputs are made from: the run, the group maps and mask, des_norm.

    Parameters
    ----------
    deriv_dir : str or Path
        The derivatives folder.
    subject : RunId or str
        The run, or a participant label for its plain ``task-rest`` run.
    des_norm : bool
        Whether stage-1 time courses are scaled to unit variance.

    Returns
    -------
    inputs : dict of str to str
        SHA-256 of the preprocessed run and of the group maps and mask, as their records hold them.
    config : str
        SHA-256 of the ``des_norm`` setting.

    Raises
    ------
    InvalidInputError
        When the group ICA is missing or incomplete (:func:`~rsnflow.ica.group.group_record`).
    """
    deriv = Path(deriv_dir)
    group = group_record(deriv)
    paths = group_paths(deriv)
    pre = subject_outputs(deriv, subject)
    inputs = {
        "bold": Record(pre.record).digest(pre.bold),
        "group_maps": group.digest(paths["maps"]),
        "group_mask": group.digest(paths["mask"]),
    }
    return inputs, config_digest({"des_norm": des_norm})


def dr_status(deriv_dir: str | Path, subject: RunId | str, des_norm: bool | None = None) -> RecordStatus:
    """Whether a run's dual regression is complete for the current group maps (and ``des_norm``).

    Parameters
    ----------
    deriv_dir : str or Path
        The derivatives folder.
    subject : RunId or str
        The run, or a participant label for its plain ``task-rest`` run.
    des_norm : bool or None, default=None
        The setting the outputs must have been made with. Without it the
        recorded setting is taken as is (the dataset stage only needs the maps
        to come from these group maps and this run).

    Returns
    -------
    RecordStatus
        ``complete``, ``missing``, ``incomplete`` or ``stale``, with the reason.
    """
    record = Record(dr_outputs(deriv_dir, subject)["record"])
    inputs, cfg = dr_identity(deriv_dir, subject, bool(des_norm))
    if des_norm is None:
        cfg = (record.read() or {}).get("config", cfg)
    return record.status(inputs, cfg)


@dataclass(frozen=True)
class DualRegressionCohort:
    """Outcome of :func:`dual_regression_cohort`; one summary row per run.

    Attributes
    ----------
    summary : pandas.DataFrame
        One row per run: ``participant_id``, ``run``, ``status`` (``ok``,
        ``failed`` or ``skipped (complete)``), ``reason`` and ``seconds``.
    """

    summary: pd.DataFrame

    @property
    def failed(self) -> list[str]:
        """The runs that failed (their prefixes)."""
        return list(self.summary.loc[self.summary["status"] == "failed", "run"])


def _one(args: tuple[Path, RunId, bool, bool]) -> dict[str, object]:
    deriv, subject, des_norm, force = args
    out = dr_outputs(deriv, subject)
    row: dict[str, object] = {"participant_id": subject.participant_id, "run": str(subject)}
    remove_leftovers(out["maps"].parent)
    if not force:
        state = dr_status(deriv, subject, des_norm)
        if state.complete:
            return skipped(row)
        if state.state != "missing":
            log.info("%s: redoing dual regression: %s", subject, state)

    def work() -> None:
        out["record"].unlink(missing_ok=True)
        mask, group = _group_design(deriv)
        bold = subject_outputs(deriv, subject).bold
        data = load_masked_series(bold, mask)
        if data.shape[0] <= group.shape[0] + 1:
            raise InvalidInputError(
                bold,
                f"{data.shape[0]} volumes: dual regression needs more than {group.shape[0]} components + 1",
            )
        res = dual_regression(data, group, des_norm=des_norm)
        save_nifti(nib.Nifti1Image(unmask(res.maps, mask), MNI4_AFFINE), out["maps"])
        save_nifti(nib.Nifti1Image(unmask(res.zmaps, mask), MNI4_AFFINE), out["zmaps"])
        cols = [f"ic{k:03d}" for k in range(res.timecourses.shape[1])]
        tcs = pd.DataFrame(res.timecourses, columns=cols)
        write_text(tcs.to_csv(sep="\t", index=False, float_format="%.6g"), out["timeseries"])
        inputs, cfg = dr_identity(deriv, subject, des_norm)
        # Written last: marks the subject complete.
        Record(out["record"]).write(
            "dual-regression", inputs, cfg, [out["maps"], out["zmaps"], out["timeseries"]]
        )

    return guarded(str(subject), work, row)


def _group_design(deriv: Path) -> tuple[NDArray[np.bool_], NDArray[np.float32]]:
    """The group mask and ``(K, V)`` maps, read once per worker process rather than once per run.

    Each file is known by its path, size and modification time, so a group ICA
    rerun while the process lives is read again.
    """
    paths = group_paths(deriv)
    identity = tuple(
        (str(paths[k]), paths[k].stat().st_size, paths[k].stat().st_mtime_ns) for k in ("mask", "maps")
    )
    return _read_group(identity)


@functools.lru_cache(maxsize=1)
def _read_group(identity: tuple[tuple[str, int, int], ...]) -> tuple[NDArray[np.bool_], NDArray[np.float32]]:
    (mask_path, *_), (maps_path, *_) = identity
    mask = load_nifti(mask_path, ndim=3).get_fdata() > 0
    maps = load_masked_series(maps_path, mask)
    mask.flags.writeable = maps.flags.writeable = False  # shared by every run the process regresses
    return mask, maps


def _killed(job: tuple[Path, RunId, bool, bool], reason: str) -> dict[str, object]:
    return failed_row({"participant_id": job[1].participant_id, "run": str(job[1])}, reason)


def dual_regression_cohort(
    deriv_dir: str | Path,
    des_norm: bool = True,
    n_jobs: int = 1,
    force: bool = False,
    recompute: bool = True,
) -> DualRegressionCohort:
    """Dual regression of every preprocessed run (each session and run of each subject) on the group maps.

    A run whose outputs were made from these group maps, this run and
    ``des_norm`` is skipped (unless ``force``); one made from other group maps
    (group ICA rerun) is redone, or refused when ``recompute`` is false. The
    summary is also written to ``DERIV_DIR/group/dual_regression_summary.tsv``.

    Parameters
    ----------
    deriv_dir : str or Path
        The derivatives folder holding the preprocessed runs and the group ICA.
    des_norm : bool, default=True
        Scale stage-1 time courses to unit variance before stage 2.
    n_jobs : int, default=1
        Worker processes (one run each).
    force : bool, default=False
        Redo every run, complete or not.
    recompute : bool, default=True
        Redo runs whose outputs are stale; when false, refuse them instead.

    Returns
    -------
    DualRegressionCohort
        The per-run summary; a run that failed does not stop the others.

    Raises
    ------
    InvalidInputError
        When the group ICA outputs are missing or incomplete.
    StaleOutputError
        ``recompute`` is false and some subject's outputs are stale.
    """
    deriv = Path(deriv_dir)
    paths = group_paths(deriv)
    group_record(deriv)
    subjects = preprocessed_runs(deriv)
    if not recompute and not force:
        for s in subjects:
            state = dr_status(deriv, s, des_norm)
            if state.state == "stale":
                raise StaleOutputError(
                    dr_outputs(deriv, s)["maps"],
                    f"stale ({state.reason}); rerun without --no-recompute to redo it",
                )
    jobs = [(deriv, s, des_norm, force) for s in subjects]
    rows = map_subjects(_one, jobs, n_jobs, "dual regression", on_killed=_killed)
    summary = pd.DataFrame(rows)
    write_text(summary.to_csv(sep="\t", index=False), paths["dr_summary"])
    return DualRegressionCohort(summary)

"""The dual-regression stage over a cohort: subjects independent, finished ones skipped.

Writes per subject, beside its preprocessed run::

    sub-XX_task-rest_space-MNI152NLin2009aSym_res-4mm_desc-dr_components.nii.gz   stage-2 maps (45x54x45xK)
    sub-XX_task-rest_space-MNI152NLin2009aSym_res-4mm_desc-drz_components.nii.gz  their z statistics
    sub-XX_task-rest_desc-dr_timeseries.tsv                                        stage-1 time courses

and ``DERIV_DIR/group/dual_regression_summary.tsv``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from rsnflow.ica.dual_regression import dual_regression
from rsnflow.ica.group import group_paths, preprocessed_subjects
from rsnflow.io import InvalidInputError, derivative_path, load_nifti, save_nifti, write_text
from rsnflow.log import get_logger
from rsnflow.preprocess.participant import subject_outputs
from rsnflow.space import MNI4_AFFINE, SPACE_NAME, unmask
from rsnflow.subjects import guarded, map_subjects, skipped

__all__ = ["DualRegressionCohort", "dr_outputs", "dual_regression_cohort"]

log = get_logger(__name__)


def dr_outputs(deriv_dir: str | Path, subject: str) -> dict[str, Path]:
    """Paths of one subject's dual-regression outputs."""
    space = {"space": SPACE_NAME, "res": 4}
    return {
        "maps": derivative_path(deriv_dir, subject, "components", desc="dr", **space),
        "zmaps": derivative_path(deriv_dir, subject, "components", desc="drz", **space),
        "timeseries": derivative_path(deriv_dir, subject, "timeseries", desc="dr", extension=".tsv"),
    }


@dataclass(frozen=True)
class DualRegressionCohort:
    """Outcome of :func:`dual_regression_cohort`; one summary row per subject."""

    summary: pd.DataFrame

    @property
    def failed(self) -> list[str]:
        return list(self.summary.loc[self.summary["status"] == "failed", "participant_id"])


def _one(args: tuple[Path, str, bool, bool]) -> dict[str, object]:
    deriv, subject, des_norm, force = args
    out = dr_outputs(deriv, subject)
    row: dict[str, object] = {"participant_id": f"sub-{subject}"}
    if not force and all(p.exists() for p in out.values()):
        return skipped(row)

    def work() -> None:
        paths = group_paths(deriv)
        mask = load_nifti(paths["mask"], ndim=3).get_fdata() > 0
        group = np.asarray(load_nifti(paths["maps"], ndim=4).dataobj, dtype=np.float32)[mask].T
        bold = subject_outputs(deriv, subject).bold
        data = np.asarray(load_nifti(bold, ndim=4).dataobj, dtype=np.float32)[mask].T
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
        # Written last: its presence marks the subject complete.
        write_text(tcs.to_csv(sep="\t", index=False, float_format="%.6g"), out["timeseries"])

    return guarded(subject, work, row)


def dual_regression_cohort(
    deriv_dir: str | Path, des_norm: bool = True, n_jobs: int = 1, force: bool = False
) -> DualRegressionCohort:
    """Dual regression of every preprocessed subject against the group maps.

    Raises
    ------
    InvalidInputError
        When the group ICA outputs are missing.
    """
    deriv = Path(deriv_dir)
    paths = group_paths(deriv)
    if not paths["maps"].exists():
        raise InvalidInputError(paths["maps"], "group ICA maps not found (run `rsnflow group-ica` first)")
    jobs = [(deriv, s, des_norm, force) for s in preprocessed_subjects(deriv)]
    rows = map_subjects(_one, jobs, n_jobs, "dual regression")
    summary = pd.DataFrame(rows)
    write_text(summary.to_csv(sep="\t", index=False), paths["maps"].parent / "dual_regression_summary.tsv")
    return DualRegressionCohort(summary)

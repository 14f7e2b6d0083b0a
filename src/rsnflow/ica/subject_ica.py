"""Single-run ICA, as MELODIC runs it per session: each run decomposed on its own, no group maps.

The classifier's real use on data nobody decomposed as a group: a run's own
components, labelled by ``rsnflow classify --maps sica``. Each preprocessed run
(each session and run of each subject) is variance-normalised voxel-wise, reduced
by its exact PCA and unmixed by FastICA (:class:`~rsnflow.ica.GroupICA` on one
run, its volumes as the rows); the components' signs are flipped to a positive
skew (MELODIC's convention: the network is the heavy tail) and their maps
are z statistics against the residual, as the group ICA's. Writes per run,
beside its preprocessed run::

    sub-XX_task-rest_space-MNI152NLin2009aSym_res-4mm_desc-sica_components.nii.gz   z maps (45x54x45xK)
    sub-XX_task-rest_desc-sica_timeseries.tsv                                        time courses (T x K)
    sub-XX_task-rest_desc-sica_record.json                                           written last

and ``DERIV_DIR/group/subject_ica_summary.tsv``. A run whose outputs were made
from this preprocessed run with these settings is skipped; one made from
another (the run was preprocessed again, the order changed) is redone.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from rsnflow.bids import RunId
from rsnflow.config import PreprocessConfig, default_section
from rsnflow.ica.dr_cohort import DualRegressionCohort
from rsnflow.ica.estimator import GroupICA, InsufficientDataError, run_rows
from rsnflow.ica.group import preprocessed_runs
from rsnflow.io import InvalidInputError, load_nifti, remove_leftovers, save_nifti, write_text
from rsnflow.layout import group_paths, sica_outputs, subject_outputs
from rsnflow.log import get_logger
from rsnflow.records import Record, RecordStatus, config_digest
from rsnflow.subjects import failed_row, guarded, map_subjects, skipped

__all__ = ["SicaSettings", "sica_status", "subject_ica_cohort"]

log = get_logger(__name__)


@dataclass(frozen=True)
class SicaSettings:
    """What a run's single-run ICA is made with (its record's configuration).

    Attributes
    ----------
    order : int or str
        Components per run, or ``"auto"`` (Minka's BIC on the run's eigenvalues, in the place of
        MELODIC's default dimensionality estimate).
    seed : int
        FastICA's seed.
    fun : str
        FastICA contrast (``logcosh``, ``exp`` or ``cube``).
    max_iter : int
        FastICA iteration limit.
    tol : float
        FastICA convergence tolerance.
    """

    order: int | str = "auto"
    seed: int = 0
    fun: str = "logcosh"
    max_iter: int = 500
    tol: float = 1e-4

    def __post_init__(self) -> None:
        k = self.order
        if not (k == "auto" or (isinstance(k, int) and not isinstance(k, bool) and k >= 1)):
            raise ValueError(f"order must be a positive integer or 'auto', got {k!r}")


def sica_status(deriv_dir: str | Path, run: RunId | str, settings: SicaSettings) -> RecordStatus:
    """Whether a run's single-run ICA is complete for its current preprocessed run and ``settings``.

    Parameters
    ----------
    deriv_dir : str or Path
        The derivatives folder.
    run : RunId or str
        The run, or a participant label for its plain ``task-rest`` run.
    settings : dict
        The settings the outputs must have been made with.

    Returns
    -------
    RecordStatus
        ``complete``, ``missing``, ``incomplete`` or ``stale``, with the reason.
    """
    return Record(sica_outputs(deriv_dir, run)["record"]).status(*_identity(deriv_dir, run, settings))


def _identity(deriv_dir: str | Path, run: RunId | str, settings: SicaSettings) -> tuple[dict[str, str], str]:
    pre = subject_outputs(deriv_dir, run)
    return {"bold": Record(pre.record).digest(pre.bold)}, config_digest(asdict(settings))


def _decompose(deriv: Path, run: RunId, settings: SicaSettings) -> dict[str, object]:
    """One run's ICA written out (record last); the order used and whether FastICA converged."""
    out = sica_outputs(deriv, run)
    pre = subject_outputs(deriv, run)
    image = load_nifti(pre.bold, ndim=4)
    mask = np.asarray(load_nifti(pre.mask, ndim=3).dataobj) > 0
    n_volumes = image.shape[3]
    order = settings.order
    if isinstance(order, int) and n_volumes <= order + 1:  # refused before anything of the run is touched
        raise InvalidInputError(
            pre.bold, f"{n_volumes} volumes: {order} components need more than {order + 1}"
        )
    out["record"].unlink(missing_ok=True)  # from here on the outputs are incomplete until the record
    fwhm = default_section(PreprocessConfig).fwhm_mm
    if pre.sidecar.is_file():  # the run's own smoothing: the voxels' effective count for order "auto"
        fwhm = float(json.loads(pre.sidecar.read_text()).get("SmoothingFWHM", fwhm))
    ica = GroupICA(
        n_components=order, migp_dim=n_volumes, subject_dim=None, fun=settings.fun,
        max_iter=settings.max_iter, tol=settings.tol, random_state=settings.seed, device="cpu",
        smoothness_fwhm_mm=fwhm,
    )  # fmt: skip
    try:
        ica.fit(image, mask=mask)
    except InsufficientDataError as exc:
        raise InvalidInputError(pre.bold, str(exc)) from exc
    save_nifti(ica.components_img_, out["maps"])
    # Time courses: the run's normalised volumes regressed on the maps (MELODIC's mixing matrix).
    rows = run_rows(np.ascontiguousarray(np.asarray(image.dataobj, dtype=np.float32)[mask].T), None)
    tcs = np.linalg.lstsq(ica.components_.T.astype(np.float64), rows.T.astype(np.float64), rcond=None)[0].T
    cols = [f"ic{k:03d}" for k in range(ica.n_components_)]
    write_text(
        pd.DataFrame(tcs, columns=cols).to_csv(sep="\t", index=False, float_format="%.6g"), out["timeseries"]
    )
    inputs, cfg = _identity(deriv, run, settings)
    Record(out["record"]).write("subject-ica", inputs, cfg, [out["maps"], out["timeseries"]])
    return {"components": ica.n_components_, "converged": bool(ica.converged_)}


def _one(args: tuple[Path, RunId, SicaSettings, bool]) -> dict[str, object]:
    deriv, run, settings, force = args
    row: dict[str, object] = {"participant_id": run.participant_id, "run": str(run)}
    remove_leftovers(sica_outputs(deriv, run)["maps"].parent)
    if not force:
        state = sica_status(deriv, run, settings)
        if state.complete:
            return skipped(row)
        if state.state != "missing":
            log.info("%s: redoing single-run ICA: %s", run, state)
    return guarded(str(run), lambda: _decompose(deriv, run, settings), row)


def _killed(job: tuple[Path, RunId, SicaSettings, bool], reason: str) -> dict[str, object]:
    return failed_row({"participant_id": job[1].participant_id, "run": str(job[1])}, reason)


def subject_ica_cohort(
    deriv_dir: str | Path,
    order: int | str = "auto",
    seed: int = 0,
    n_jobs: int = 1,
    force: bool = False,
) -> DualRegressionCohort:
    """Single-run ICA of every preprocessed run of a derivatives folder.

    Parameters
    ----------
    deriv_dir : str or Path
        The derivatives folder holding the preprocessed runs (``rsnflow preprocess``); no group
        ICA is needed.
    order : int or "auto", default="auto"
        Components per run; ``"auto"`` estimates each run's own (Minka's BIC).
    seed : int, default=0
        FastICA's seed: the same run, settings and seed give the same maps.
    n_jobs : int, default=1
        Worker processes (one run each).
    force : bool, default=False
        Redo every run, complete or not.

    Returns
    -------
    DualRegressionCohort
        The per-run summary (``status`` ok, failed or skipped, ``components``, ``converged``); a
        run that fails does not stop the others.

    Raises
    ------
    InvalidInputError
        When ``deriv_dir`` holds no preprocessed run.
    ValueError
        When ``order`` is invalid.
    """
    deriv = Path(deriv_dir)
    settings = SicaSettings(order=order, seed=seed)
    runs = preprocessed_runs(deriv)
    if not runs:
        raise InvalidInputError(deriv, "no preprocessed run to decompose (run rsnflow preprocess)")
    rows = map_subjects(
        _one, [(deriv, r, settings, force) for r in runs], n_jobs, "subject ICA", on_killed=_killed
    )
    summary = pd.DataFrame(rows)
    write_text(summary.to_csv(sep="\t", index=False), group_paths(deriv)["sica_summary"])
    return DualRegressionCohort(summary)

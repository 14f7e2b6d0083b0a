"""The group-ICA stage: common mask, MIGP, order, FastICA, z-maps, outputs and report.

Streams the preprocessed runs under ``DERIV_DIR`` (two read ahead of MIGP), writes under
``DERIV_DIR/group/``::

    group_task-rest_space-MNI152NLin2009aSym_res-4mm_desc-ica_components.nii.gz  z maps (45x54x45xK)
    group_task-rest_space-MNI152NLin2009aSym_res-4mm_desc-ica_mask.nii.gz        common mask
    group_task-rest_desc-ica_mixing.tsv          mixing matrix in MIGP space (rows x K)
    group_task-rest_desc-ica_components.tsv      explained variance, skewness per component
    group_task-rest_desc-ica_components.json     parameters, subjects, convergence, provenance
    group_task-rest_desc-ica_report.html         montage of every component + spectrum
"""

from __future__ import annotations

import functools
import json
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

import nibabel as nib
import numpy as np
import pandas as pd
import torch
from numpy.typing import NDArray
from scipy import stats
from threadpoolctl import threadpool_limits

from rsnflow.bids import RunId
from rsnflow.config import IcaConfig
from rsnflow.ica.decomposition import GroupPCA, migp, migp_precision
from rsnflow.ica.estimator import GroupICA, InsufficientDataError, run_rows
from rsnflow.io import (
    InvalidInputError,
    load_masked_series,
    load_nifti,
    open_nifti,
    remove_leftovers,
    save_nifti,
    write_json,
    write_text,
)
from rsnflow.layout import group_paths, preprocessed_records, subject_outputs
from rsnflow.log import get_logger, progress
from rsnflow.provenance import provenance
from rsnflow.records import Record, config_digest
from rsnflow.space import MNI4_AFFINE, MNI4_SHAPE, unmask

__all__ = [
    "GroupICAResult",
    "common_mask",
    "group_ica",
    "group_migp",
    "group_record",
    "migp_rows",
    "preprocessed_runs",
]

log = get_logger(__name__)

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class GroupICAResult:
    """What the :func:`group_ica` stage made (maps inside the mask), besides its files.

    Attributes
    ----------
    zmaps : ndarray
        ``(K, V)`` float32 z maps inside ``mask``, sorted by explained variance.
    mask : ndarray of bool
        ``(45, 54, 45)`` common mask on the MNI 4 mm grid.
    mixing : ndarray
        ``(rows, K)`` float32 time courses of the MIGP rows.
    explained_variance : ndarray
        ``(K,)`` fraction of the MIGP rows' variance each component explains.
    runs : list of RunId
        The runs decomposed, sorted.
    order : int
        The model order ``K`` used.
    converged : bool
        Whether FastICA converged.
    """

    zmaps: NDArray[np.float32]  # (K, V)
    mask: NDArray[np.bool_]  # (45, 54, 45)
    mixing: NDArray[np.float32]  # (rows, K)
    explained_variance: NDArray[np.float64]
    runs: list[RunId]
    order: int
    converged: bool

    @property
    def subjects(self) -> list[str]:
        """The participant labels of the runs, each once, in run order."""
        return list(dict.fromkeys(r.subject for r in self.runs))


def group_record(deriv_dir: str | Path) -> Record:
    """The completeness record of the group ICA; raise unless it is intact.

    Parameters
    ----------
    deriv_dir : str or Path
        The derivatives folder.

    Returns
    -------
    Record
        The intact record of the group ICA outputs.

    Raises
    ------
    InvalidInputError
        No group ICA, or one that was interrupted (maps written, record not) or
        whose outputs changed since.
    """
    paths = group_paths(deriv_dir)
    if not paths["maps"].exists():
        raise InvalidInputError(paths["maps"], "group ICA maps not found (run `rsnflow group-ica` first)")
    record = Record(paths["record"])
    state = record.intact()
    if not state.complete:
        raise InvalidInputError(
            paths["maps"], f"group ICA is incomplete ({state}); rerun `rsnflow group-ica`"
        )
    return record


def preprocessed_runs(deriv_dir: str | Path) -> list[RunId]:
    """The runs (every session and run of every subject) whose preprocessing is complete, sorted.

    Parameters
    ----------
    deriv_dir : str or Path
        The derivatives folder.

    Returns
    -------
    list of RunId
        Each run once, sorted.
    """
    return sorted(
        {run for run, _ in preprocessed_records(deriv_dir) if subject_outputs(deriv_dir, run).complete()}
    )


def common_mask(deriv_dir: str | Path, runs: list[RunId] | list[str]) -> NDArray[np.bool_]:
    """Voxels inside every listed run's brain mask (MELODIC's group mask).

    Parameters
    ----------
    deriv_dir : str or Path
        The derivatives folder.
    runs : list of RunId or list of str
        The runs (or participant labels for their plain ``task-rest`` runs).

    Returns
    -------
    ndarray of bool
        ``(45, 54, 45)`` mask on the MNI 4 mm grid.
    """
    mask = np.ones(MNI4_SHAPE, dtype=bool)
    for run in runs:
        mask &= load_nifti(subject_outputs(deriv_dir, run).mask, ndim=3).get_fdata() > 0
    return mask


def group_migp(
    deriv_dir: str | Path,
    subjects: list[RunId] | list[str],
    mask: NDArray[np.bool_],
    dim: int,
    device: torch.device | str = "cpu",
    subject_dim: int | None = None,
    precision: str = "auto",
) -> GroupPCA:
    """MIGP over ``subjects`` in the order given, each variance-normalised, every volume centred over voxels.

    Centring each volume (spatial ICA's samples are voxels) before the PCA
    leaves the eigenmaps centred too. With ``subject_dim``, each subject
    enters MIGP as its ``subject_dim`` whitened eigenmaps
    (:func:`~rsnflow.ica.decomposition.subject_pca`) instead of its volumes.

    Parameters
    ----------
    deriv_dir : str or Path
        The derivatives folder.
    subjects : list of RunId or list of str
        The runs, streamed in this order (two read ahead in threads).
    mask : ndarray of bool
        The 3D mask of the voxels used.
    dim : int
        Rows MIGP keeps between reductions.
    device : torch.device or str, default="cpu"
        Where MIGP computes.
    subject_dim : int or None, default=None
        Whitened eigenmaps per run; ``None``: the run's volumes.
    precision : {"auto", "float32", "bfloat16"}, default="auto"
        MIGP's intermediate products (:func:`~rsnflow.ica.decomposition.migp_precision`).

    Returns
    -------
    GroupPCA
        The strongest eigenmaps of the runs' concatenation.
    """
    prepare = functools.partial(_subject_rows, deriv_dir, mask=mask, subject_dim=subject_dim)
    stream = _prefetch(prepare, progress(subjects, "MIGP", unit="subject"), ahead=_READ_AHEAD)
    return migp(stream, dim, device, migp_precision(precision, device))


def migp_rows(deriv_dir: str | Path, label: RunId | str, mask: NDArray[np.bool_]) -> NDArray[np.float32]:
    """One run's ``(T, V)`` rows as MIGP takes them: voxels variance-normalised, volumes centred.

    Parameters
    ----------
    deriv_dir : str or Path
        The derivatives folder.
    label : RunId or str
        The run, or a participant label for its plain ``task-rest`` run.
    mask : ndarray of bool
        The 3D mask of the ``V`` voxels kept.

    Returns
    -------
    ndarray
        ``(T, V)`` float32 rows.
    """
    return _subject_rows(deriv_dir, label, mask, None)


def _subject_rows(
    deriv_dir: str | Path, label: RunId | str, mask: NDArray[np.bool_], subject_dim: int | None
) -> NDArray[np.float32]:
    """What one run brings to MIGP (:func:`~rsnflow.ica.estimator.run_rows` of its preprocessed file)."""
    return run_rows(_load_subject(Path(deriv_dir), label, mask), subject_dim, copy=False)


#: Subjects read, normalised and reduced (subject PCA) in background threads while
#: MIGP reduces the previous ones (gzip inflation and BLAS release the GIL); each
#: holds ``T x V`` floats.
_READ_AHEAD = 2


def _prefetch(func: Callable[[T], R], items: Iterable[T], ahead: int) -> Iterator[R]:
    """``map(func, items)`` in order, with up to ``ahead`` calls running in threads ahead of the consumer.

    While it streams, numpy's BLAS runs one thread per call: the reading threads
    are the parallelism, and two of them each starting a BLAS pool beside
    torch's on two cores spent more time waiting than computing (group ICA of
    50 subjects 38.9 s against 24.4 s).
    """
    with ThreadPoolExecutor(max_workers=ahead) as pool, threadpool_limits(1, user_api="blas"):
        pending: deque[Future[R]] = deque()
        for item in items:
            pending.append(pool.submit(func, item))
            if len(pending) > ahead:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _load_subject(deriv: Path, label: RunId | str, mask: NDArray[np.bool_]) -> NDArray[np.float32]:
    return load_masked_series(subject_outputs(deriv, label).bold, mask)  # (T, V)


def group_ica(
    deriv_dir: str | Path,
    config: IcaConfig,
    seed: int = 0,
    device: str = "auto",
    report: bool = True,
) -> GroupICAResult:
    """The group-ICA stage: :class:`~rsnflow.ica.estimator.GroupICA` over every preprocessed run.

    Every session and run of ``deriv_dir`` in the common mask; the maps, mask,
    mixing, component table, provenance JSON and report page are written where
    :func:`rsnflow.layout.group_paths` says, the completeness record last.

    Parameters
    ----------
    deriv_dir : str or Path
        The derivatives folder holding the preprocessed runs.
    config : IcaConfig
        The ``ica`` configuration section.
    seed : int, default=0
        Seed of the run order and of FastICA.
    device : str, default="auto"
        ``"auto"``, ``"cpu"`` or ``"cuda"``.
    report : bool, default=True
        Also write the HTML report with a montage and spectrum per component.

    Returns
    -------
    GroupICAResult
        The maps, mask, mixing and fit details.

    Raises
    ------
    InvalidInputError
        No preprocessed subjects, or too little data for the requested order.
    """
    deriv = Path(deriv_dir)
    group_paths(deriv)["record"].unlink(missing_ok=True)  # the old outputs stop being complete now
    remove_leftovers(group_paths(deriv)["dir"])
    runs = preprocessed_runs(deriv)
    if not runs:
        raise InvalidInputError(deriv, "no preprocessed runs found (run `rsnflow preprocess` first)")
    mask = common_mask(deriv, runs)
    n_subjects = len({r.subject for r in runs})
    log.info(
        "group ICA: %d runs of %d subjects, %d voxels in the common mask",
        len(runs),
        n_subjects,
        int(mask.sum()),
    )
    est = GroupICA.from_config(config, seed, device, smoothness_fwhm_mm=_smoothing_of(deriv, runs[0]))

    def rows(i: int) -> NDArray[np.float32]:
        return _subject_rows(deriv, runs[i], mask, config.subject_dim)

    def stream(order: Iterable[int]) -> Iterator[NDArray[np.float32]]:
        return _prefetch(rows, progress(list(order), "MIGP", unit="subject"), ahead=_READ_AHEAD)

    try:
        est.fit_rows(rows, len(runs), mask, MNI4_AFFINE, stream=stream)
    except InsufficientDataError as exc:
        raise InvalidInputError(
            deriv,
            f"ica.order {exc.order} needs more data: the group holds {exc.n_rows} dimensions after MIGP",
        ) from exc
    result = GroupICAResult(
        est.components_, mask, est.mixing_, est.explained_variance_, runs, est.n_components_, est.converged_
    )
    _write(deriv, result, stats.skew(result.zmaps, axis=1), config, seed, est.n_iter_, est.migp_precision_)
    if report:
        _report(deriv, result, runs[est.run_order_[0]])
    paths = group_paths(deriv)
    outputs = [paths[k] for k in ("maps", "mask", "mixing", "table", "json", "report") if paths[k].exists()]
    inputs = {str(r): _bold_digest(deriv, r) for r in runs}
    cfg = config_digest({**asdict(config), "seed": seed})
    Record(paths["record"]).write("group-ica", inputs, cfg, outputs)  # last: marks the group ICA complete
    return result


def _smoothing_of(deriv: Path, run: RunId) -> float:
    """The FWHM the preprocessing smoothed with (the run's sidecar); 0 when it does not say."""
    sidecar = subject_outputs(deriv, run).sidecar
    try:
        return float(json.loads(sidecar.read_text()).get("SmoothingFWHM", 0.0))
    except (OSError, ValueError, TypeError):
        return 0.0


def _bold_digest(deriv: Path, label: RunId) -> str:
    out = subject_outputs(deriv, label)
    return Record(out.record).digest(out.bold)


def _write(
    deriv: Path,
    res: GroupICAResult,
    skew: NDArray[np.float64],
    cfg: IcaConfig,
    seed: int,
    n_iter: int,
    precision: str,
) -> None:
    paths = group_paths(deriv)
    save_nifti(nib.Nifti1Image(unmask(res.zmaps, res.mask), MNI4_AFFINE), paths["maps"])
    save_nifti(nib.Nifti1Image(res.mask.astype(np.uint8), MNI4_AFFINE), paths["mask"])
    cols = [f"ic{k:03d}" for k in range(res.order)]
    write_text(
        pd.DataFrame(res.mixing, columns=cols).to_csv(sep="\t", index=False, float_format="%.6g"),
        paths["mixing"],
    )
    table = pd.DataFrame(
        {"component": np.arange(res.order), "explained_variance": res.explained_variance, "skewness": skew}
    )
    write_text(table.to_csv(sep="\t", index=False, float_format="%.6g"), paths["table"])
    params: dict[str, Any] = {
        "order": res.order, "order_requested": cfg.order,
        "migp_dim": cfg.migp_dim, "subject_dim": cfg.subject_dim, "migp_precision": precision, "seed": seed,
        "nonlinearity": cfg.nonlinearity, "tol": cfg.tol, "max_iter": cfg.max_iter,
        "n_restarts": cfg.n_restarts,
    }  # fmt: skip
    write_json(
        {**provenance(params), "subjects": res.subjects, "runs": [str(r) for r in res.runs],
         "converged": res.converged, "n_iter": n_iter,
         "n_voxels": int(res.mask.sum()), "maps": "z statistics (map over residual noise std, as MELODIC)"},
        paths["json"],
    )  # fmt: skip


def _report(deriv: Path, res: GroupICAResult, example: RunId) -> None:
    from rsnflow.figures import component_montage, montage_anchor
    from rsnflow.report import Report
    from rsnflow.space import load_template

    paths = group_paths(deriv)
    template = load_template().get_fdata()
    tr = float(open_nifti(subject_outputs(deriv, example).bold).header.get_zooms()[3])
    courses = _stage1_courses(deriv, res, example, tr)
    tcs = courses[0]
    freqs = np.fft.rfftfreq(tcs.shape[1], d=tr)
    power = np.stack([np.abs(np.fft.rfft(c - c.mean(1, keepdims=True), axis=1)) ** 2 for c in courses])
    vol = unmask(res.zmaps, res.mask)
    report = Report("rsnflow group ICA")
    report.text(
        f"{len(res.runs)} runs of {len(res.subjects)} subjects, model order {res.order}, FastICA converged: "
        f"{res.converged}. Maps: z statistics over the MNI template, positive red and negative blue, "
        f"|z| < 3 not shown; the time course is {example}'s (stage 1 of dual regression), the spectrum "
        f"the median over {len(courses)} runs with the 25-75% band."
    )
    titles = [f"IC {k}: {100 * res.explained_variance[k]:.2f}% variance" for k in range(res.order)]
    pages = component_montage(
        vol, template, titles, paths["ica_figures"], (freqs, power), affine=MNI4_AFFINE,
        timecourses=(np.arange(tcs.shape[1]) * tr, tcs),
    )  # fmt: skip
    for start, (png, caption) in zip(range(0, res.order, 10), pages, strict=True):
        report.figure(png, caption, anchor=montage_anchor(start))
    report.write(paths["report"])


#: Runs whose stage-1 time courses make the spectra's median and spread on the group page.
_SPECTRA_RUNS = 8


def _stage1_courses(deriv: Path, res: GroupICAResult, example: RunId, tr: float) -> list[NDArray[np.float64]]:
    """Component time courses ``(K, T)`` of ``example`` and of up to 7 more runs of its length and TR."""
    design = res.zmaps - res.zmaps.mean(1, keepdims=True)
    out: list[NDArray[np.float64]] = []
    for run in [example, *(r for r in res.runs if r != example)]:
        out_paths = subject_outputs(deriv, run)
        header = open_nifti(out_paths.bold).header
        if run != example and (header.get_data_shape()[3] != len(out[0][0]) or header.get_zooms()[3] != tr):
            continue
        data = _load_subject(deriv, run, res.mask)
        out.append(np.linalg.lstsq(design.T, (data - data.mean(1, keepdims=True)).T, rcond=None)[0])
        if len(out) == _SPECTRA_RUNS:
            break
    return out

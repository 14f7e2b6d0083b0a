"""Ingest: find the resting-state runs of a BIDS cohort and validate each one.

A subject whose run is unusable (truncated, not NIfTI, 3D, NaN, no TR, too
short) is reported with the reason and left out; the others go on. Runs are
validated one at a time, so memory does not grow with the cohort.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from rsnflow.bids import RunId, check_dataset_description, find_runs
from rsnflow.io import InvalidInputError, load_bold, write_text
from rsnflow.log import get_logger, progress

__all__ = [
    "CohortRuns",
    "ResolvedCohort",
    "SubjectRun",
    "check_dataset_description",
    "fetch_cohort",
    "find_runs",
    "ingest_cohort",
    "resolve_cohort",
]

log = get_logger(__name__)


@dataclass(frozen=True)
class SubjectRun:
    """One validated run: its entities, where it is and what it holds.

    Attributes
    ----------
    run : RunId
        The run's BIDS entities.
    path : Path
        The raw ``*_bold.nii[.gz]`` file.
    tr : float
        Repetition time in seconds.
    shape : tuple of int
        Image shape ``(X, Y, Z, T)``, ``T`` in volumes.
    voxel_mm : tuple of float
        Voxel size along x, y, z in mm.
    """

    run: RunId
    path: Path
    tr: float
    shape: tuple[int, ...]
    voxel_mm: tuple[float, ...]

    @property
    def subject(self) -> str:
        return self.run.subject


@dataclass
class CohortRuns:
    """The outcome of :func:`ingest_cohort`.

    ``failed`` maps a run (its prefix, ``sub-01_ses-2_task-rest_run-1``) that
    was refused, or a subject (``sub-03``) with no matching run, to the reason.

    Attributes
    ----------
    bids_dir : Path
        The raw BIDS dataset.
    runs : list of SubjectRun
        The valid runs, in the order of :func:`find_runs`.
    failed : dict of str to str
        Refused run prefix or participant ID to the reason.
    """

    bids_dir: Path
    runs: list[SubjectRun] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def tr(self) -> float | None:
        """The most common repetition time of the valid runs."""
        if not self.runs:
            return None
        return Counter(r.tr for r in self.runs).most_common(1)[0][0]

    @property
    def subjects(self) -> list[str]:
        """Participant labels with at least one valid run, sorted (one pipeline task each)."""
        return sorted({r.subject for r in self.runs})

    def summary(self) -> pd.DataFrame:
        """One row per run (and per subject without a matching run): status, reason, TR, shape.

        Returns
        -------
        pandas.DataFrame
            Columns ``participant_id``, ``run``, ``status`` (``ok`` or ``failed``),
            ``reason``, ``tr`` (s), ``shape`` (``XxYxZxT``) and ``path``, sorted by
            participant and run.
        """
        rows = [
            {
                "participant_id": r.run.participant_id,
                "run": str(r.run),
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
                "participant_id": key.split("_")[0],
                "run": key if "_" in key else "",
                "status": "failed",
                "reason": why,
                "tr": None,
                "shape": "",
                "path": "",
            }
            for key, why in self.failed.items()
        ]
        return pd.DataFrame(rows).sort_values(["participant_id", "run"], ignore_index=True)


@dataclass(frozen=True)
class ResolvedCohort:
    """The cohort a run processes, named before anything is fetched.

    Attributes
    ----------
    uri : str
        The cohort: ``cohort_uri`` itself, or the one chosen under a watched prefix.
    watched : str
        The watched ``s3://bucket/prefix`` the cohort came from; empty otherwise.
    content_hash : str
        A digest of what the cohort holds (S3: its files' checksums; a local
        folder: every file's path, size and modification time; ``sim://``: the
        URI). The pipeline passes it to the cached tasks, so new data is a new
        cache key and the same cohort run again is served from the cache.
    """

    uri: str
    watched: str
    content_hash: str


def resolve_cohort(cohort_uri: str) -> ResolvedCohort:
    """Name the cohort ``cohort_uri`` stands for, without fetching it.

    Parameters
    ----------
    cohort_uri : str
        ``sim://PROFILE``, ``s3://bucket/prefix``, ``s3://bucket/prefix/*`` (a
        watched prefix: the first complete cohort under it, in lexicographic
        order of the URIs, not yet in its processed manifest) or a local folder.

    Returns
    -------
    ResolvedCohort
        The cohort and its content digest. Nothing is marked processed here:
        :meth:`rsnflow.storage.ObjectStore.mark_processed` is the run's last
        step, so a failed run leaves its cohort to the next one.

    Raises
    ------
    StorageError
        No S3 endpoint or credentials, an incomplete cohort, or no new complete
        cohort under a watched prefix.
    InvalidInputError
        A local folder that does not exist.
    """
    import hashlib

    if cohort_uri.startswith("sim://"):
        return ResolvedCohort(cohort_uri, "", hashlib.sha256(cohort_uri.encode()).hexdigest())
    if cohort_uri.startswith("s3://"):
        from rsnflow.storage import ObjectStore, StorageError

        store = ObjectStore.from_env()
        watched = ""
        uri = cohort_uri
        if cohort_uri.endswith("/*"):
            watched = cohort_uri.removesuffix("/*")
            new = store.discover_cohorts(watched)
            if not new:
                raise StorageError(f"{watched}: no new complete cohort to process")
            uri = new[0]
        return ResolvedCohort(uri, watched, store.cohort_digest(uri))
    root = Path(cohort_uri)
    if not root.is_dir():
        raise InvalidInputError(root, "not a folder (expected a BIDS dataset, s3:// or sim://)")
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        stat = path.stat()
        digest.update(f"{path.relative_to(root)}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
    return ResolvedCohort(str(root.resolve()), "", digest.hexdigest())


def fetch_cohort(cohort_uri: str, out: str | Path, config: Any, seed: int = 0, n_jobs: int = 1) -> str:
    """Bring a cohort into ``out``; returns the cohort's own URI.

    ``sim://PROFILE`` simulates one (the ``simulate`` config section);
    ``s3://bucket/prefix`` downloads a complete (marked) cohort;
    ``s3://bucket/prefix/*`` takes the cohort :func:`resolve_cohort` chooses
    under the prefix (nothing is marked processed: that is the run's last step);
    anything else is a local BIDS folder, linked into ``out``.

    Parameters
    ----------
    cohort_uri : str
        ``sim://PROFILE``, ``s3://bucket/prefix``, ``s3://bucket/prefix/*`` or a local folder.
    out : str or Path
        Folder that receives the cohort.
    config : Config
        Run configuration; only its ``simulate`` section is read (``sim://``).
    seed : int, default=0
        Seed of the simulation (``sim://`` only).
    n_jobs : int, default=1
        Worker processes of the simulation (``sim://`` only).

    Returns
    -------
    str
        The URI of the cohort brought in: ``cohort_uri``, or for a watched prefix
        the cohort chosen under it.

    Raises
    ------
    StorageError
        No S3 endpoint or credentials, no new complete cohort under a watched prefix,
        or a failed download.
    """
    target = Path(out)
    if cohort_uri.startswith("sim://"):
        from rsnflow.simulate import simulate_cohort

        sim = config.simulate
        simulate_cohort(
            target, profile=cohort_uri.removeprefix("sim://"), seed=seed, n_subjects=sim.subjects,
            bad_subjects=sim.bad_subjects, n_volumes=sim.volumes, n_jobs=n_jobs, vary=sim.vary,
        )  # fmt: skip
        return cohort_uri
    if cohort_uri.startswith("s3://"):
        from rsnflow.storage import ObjectStore

        store = ObjectStore.from_env()
        if not cohort_uri.endswith("/*"):
            store.download_cohort(cohort_uri, target)
            return cohort_uri
        chosen = resolve_cohort(cohort_uri).uri
        store.download_cohort(chosen, target)
        return chosen
    from rsnflow.io import link_tree

    link_tree(cohort_uri, target)
    return cohort_uri


def ingest_cohort(
    bids_dir: str | Path,
    participant_label: list[str] | None = None,
    min_volumes: int = 10,
    summary_tsv: str | Path | None = None,
    session_label: list[str] | None = None,
    task: str = "rest",
    bids_filter: dict[str, Any] | None = None,
) -> CohortRuns:
    """Validate every matching run of a BIDS cohort; report and skip the bad ones.

    Parameters
    ----------
    bids_dir
        BIDS raw dataset.
    participant_label, session_label, task, bids_filter
        Which runs (:func:`rsnflow.bids.find_runs`; default: every ``task-rest`` run).
    min_volumes
        Runs with fewer volumes are refused (the temporal filter and ICA need a
        series, not a handful of volumes).
    summary_tsv
        Optional path for the per-run status table (:meth:`CohortRuns.summary`).

    Returns
    -------
    CohortRuns
        The valid runs and the reasons for those left out.

    Raises
    ------
    InvalidInputError
        From :func:`rsnflow.bids.find_runs`: not a BIDS dataset, an unknown participant
        or session label, or no matching run at all.
    """
    result = CohortRuns(Path(bids_dir))
    runs, unmatched = find_runs(bids_dir, participant_label, session_label, task, bids_filter)
    for participant, why in unmatched.items():
        log.warning("%s skipped: %s", participant, why)
        result.failed[participant] = why
    for run, path in progress(runs, "ingest", unit="run"):
        try:
            bold = load_bold(path, min_volumes=min_volumes)
        except InvalidInputError as exc:
            log.warning("%s skipped: %s", run, exc)
            result.failed[str(run)] = str(exc)
            continue
        zooms = tuple(float(z) for z in bold.img.header.get_zooms()[:3])
        result.runs.append(SubjectRun(run, path, bold.tr, tuple(bold.img.shape), zooms))
    log.info(
        "ingest: %d valid runs of %d subjects, %d skipped",
        len(result.runs), len(result.subjects), len(result.failed),
    )  # fmt: skip
    if summary_tsv is not None:
        write_text(result.summary().to_csv(sep="\t", index=False), summary_tsv)
    return result

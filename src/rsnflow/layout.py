"""The derivatives layout: every path rsnflow writes under a derivatives folder, in one place.

Stages ask this module where a file goes; none builds a derivative path by
hand. Names follow BIDS-Derivatives and keep every entity of the source run::

    DERIV/dataset_description.json                 GeneratedBy, SourceDatasets
    DERIV/preprocess_summary.tsv                   one row per run, processed or not
    DERIV/sub-01[/ses-2]/func/
        sub-01[_ses-2]_task-rest[_run-1]_space-MNI152NLin2009aSym_res-4mm_desc-preproc_bold.nii.gz
        ..._desc-preproc_bold.json                 TR, smoothing, filter
        ..._space-..._desc-brain_mask.nii.gz, ..._desc-mean_boldref.nii.gz
        ..._desc-confounds_timeseries.tsv          fMRIPrep's column names
        ..._qc.json, ..._qc.html, figures/*.png    per-run QC page
        ..._space-..._desc-dr_components.nii.gz    dual regression (desc-drz: z-scored)
        ..._desc-dr_timeseries.tsv
        ..._desc-{preproc,dr}_record.json          completeness records (written last)
    DERIV/group/
        group_task-rest_space-..._desc-ica_{components,mask}.nii.gz
        group_task-rest_desc-ica_{mixing.tsv,components.tsv,components.json,report.html,record.json}
        dual_regression_summary.tsv                one row per run
        group_task-rest_desc-ica_labels.tsv, group_task-rest_desc-labels_{report.html,record.json}
        figures/, figures/labels/                  the group pages' images
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rsnflow.bids import RunId
from rsnflow.records import Record
from rsnflow.space import SPACE_NAME

__all__ = [
    "GROUP_DIR",
    "SUMMARY_NAME",
    "SubjectOutputs",
    "derivative_path",
    "dr_outputs",
    "group_paths",
    "preprocess_summary_path",
    "preprocessed_records",
    "sica_outputs",
    "subject_dir",
    "subject_outputs",
]

#: The folder of group-level outputs.
GROUP_DIR = "group"
#: The per-run summary of the preprocessing stage.
SUMMARY_NAME = "preprocess_summary.tsv"
#: Output space of every volume rsnflow writes.
_SPACE: dict[str, Any] = {"space": SPACE_NAME, "res": 4}
_PREPROC_RECORD = "_desc-preproc_record.json"


def subject_dir(root: str | os.PathLike[str], subject: str) -> Path:
    """A participant's folder (every session and run of it below).

    Parameters
    ----------
    root : str or os.PathLike
        The dataset or derivatives folder.
    subject : str
        Participant label, with or without its ``sub-`` prefix.

    Returns
    -------
    pathlib.Path
        ``root/sub-<label>``.
    """
    return Path(root) / f"sub-{subject.removeprefix('sub-')}"


def derivative_path(
    root: str | os.PathLike[str],
    run: Any,
    suffix: str,
    *,
    desc: str | None = None,
    space: str | None = None,
    res: str | int | None = None,
    extension: str = ".nii.gz",
    datatype: str = "func",
) -> Path:
    """A BIDS-Derivatives path under ``root`` that keeps every entity of the source run.

    ``run`` is a :class:`rsnflow.bids.RunId` or a participant label (its plain
    ``task-rest`` run). ``derivative_path(d, "01", "bold", space="MNI152NLin2009aSym", res=4,
    desc="preproc")`` is
    ``d/sub-01/func/sub-01_task-rest_space-MNI152NLin2009aSym_res-4mm_desc-preproc_bold.nii.gz``;
    for ``RunId("01", session="2", run="1")`` the folder is ``sub-01/ses-2/func`` and the name
    starts ``sub-01_ses-2_task-rest_run-1_``.

    Parameters
    ----------
    root : str or os.PathLike
        The derivatives folder.
    run : rsnflow.bids.RunId or str
        The source run, a run prefix (``sub-01_ses-2_task-rest_run-1``) or a participant label.
    suffix : str
        The BIDS suffix (``bold``, ``mask``, ``timeseries``, ...).
    desc : str or None, default=None
        The ``desc-`` entity; ``None`` or empty leaves it out.
    space : str or None, default=None
        The ``space-`` entity; ``None`` or empty leaves it out.
    res : str, int or None, default=None
        The ``res-`` entity; a whole number is in mm (``4`` gives ``res-4mm``), other values are
        written as they are.
    extension : str, default=".nii.gz"
        The file extension, with its leading dot.
    datatype : str, default="func"
        The datatype folder.

    Returns
    -------
    pathlib.Path
        The path (nothing is created).
    """
    rid = RunId.of(run)
    parts = [str(rid)]
    if space:
        parts.append(f"space-{space}")
    if res is not None:
        parts.append(f"res-{res}mm" if str(res).isdigit() else f"res-{res}")
    if desc:
        parts.append(f"desc-{desc}")
    name = "_".join(parts) + f"_{suffix}{extension}"
    return Path(root) / rid.folder(datatype) / name


@dataclass(frozen=True)
class SubjectOutputs:
    """Paths of one run's preprocessing derivatives (BIDS-Derivatives names).

    Attributes
    ----------
    bold : pathlib.Path
        The preprocessed run (``desc-preproc_bold.nii.gz``, on the 4 mm template grid).
    mask : pathlib.Path
        Its brain mask (``desc-brain_mask.nii.gz``).
    confounds : pathlib.Path
        The confounds table (``desc-confounds_timeseries.tsv``).
    qc_json : pathlib.Path
        The QC measures (``_qc.json``).
    qc_html : pathlib.Path
        The QC page (``_qc.html``); its images are in :attr:`figures`.
    mean : pathlib.Path
        The mean volume (``desc-mean_boldref.nii.gz``).
    record : pathlib.Path
        The completeness record (``desc-preproc_record.json``), written last.
    """

    bold: Path
    mask: Path
    confounds: Path
    qc_json: Path
    qc_html: Path
    mean: Path
    record: Path

    @property
    def sidecar(self) -> Path:
        """The preprocessed run's JSON sidecar (TR, smoothing, filter)."""
        return self.bold.with_name(self.bold.name.replace(".nii.gz", ".json"))

    @property
    def figures(self) -> Path:
        """The folder of the QC page's images."""
        return self.qc_html.parent / "figures"

    def figure(self, kind: str) -> Path:
        """A QC image (``kind``: motion, reg, carpet), named after the run.

        Parameters
        ----------
        kind : str
            The figure's name: ``motion``, ``reg`` or ``carpet``.

        Returns
        -------
        pathlib.Path
            ``figures/<run prefix>_<kind>.png`` beside the QC page.
        """
        return self.figures / f"{self.qc_html.name.removesuffix('_qc.html')}_{kind}.png"

    def files(self) -> list[Path]:
        """Every output the record lists.

        Returns
        -------
        list of pathlib.Path
            The preprocessed run, its sidecar, the mask, the mean volume, the confounds, and the
            QC page and measures; the preprocessed run (the main output) first.
        """
        return [self.bold, self.sidecar, self.mask, self.mean, self.confounds, self.qc_html, self.qc_json]

    def complete(self) -> bool:
        """The completeness record exists and every output has its recorded size (written last).

        Returns
        -------
        bool
            Whether the record at :attr:`record` is intact (:meth:`rsnflow.records.Record.intact`).
        """
        return Record(self.record).intact().complete


def subject_outputs(deriv_dir: str | os.PathLike[str], run: Any) -> SubjectOutputs:
    """Where the preprocessing of a run writes.

    Parameters
    ----------
    deriv_dir : str or os.PathLike
        The derivatives folder.
    run : rsnflow.bids.RunId or str
        The source run, or a participant label for its plain ``task-rest`` run.

    Returns
    -------
    SubjectOutputs
        The paths (nothing is created).
    """
    return SubjectOutputs(
        bold=derivative_path(deriv_dir, run, "bold", desc="preproc", **_SPACE),
        mask=derivative_path(deriv_dir, run, "mask", desc="brain", **_SPACE),
        confounds=derivative_path(deriv_dir, run, "timeseries", desc="confounds", extension=".tsv"),
        qc_json=derivative_path(deriv_dir, run, "qc", extension=".json"),
        qc_html=derivative_path(deriv_dir, run, "qc", extension=".html"),
        mean=derivative_path(deriv_dir, run, "boldref", desc="mean", **_SPACE),
        record=derivative_path(deriv_dir, run, "record", desc="preproc", extension=".json"),
    )


def preprocessed_records(deriv_dir: str | os.PathLike[str]) -> Iterator[tuple[Any, Path]]:
    """Every preprocessing record under ``deriv_dir`` with the run it names (sessions included).

    Parameters
    ----------
    deriv_dir : str or os.PathLike
        The derivatives folder.

    Yields
    ------
    tuple of (rsnflow.bids.RunId, pathlib.Path)
        The run and its ``desc-preproc_record.json``, sorted by path, runs without sessions first.
        Records whose names are not a run prefix are skipped.
    """
    root = Path(deriv_dir)
    for pattern in (f"sub-*/func/*{_PREPROC_RECORD}", f"sub-*/ses-*/func/*{_PREPROC_RECORD}"):
        for record in sorted(root.glob(pattern)):
            try:
                yield RunId.parse(record.name.removesuffix(_PREPROC_RECORD)), record
            except ValueError:  # a file rsnflow did not name
                continue


def dr_outputs(deriv_dir: str | os.PathLike[str], run: Any) -> dict[str, Path]:
    """Paths of one run's dual-regression outputs (a participant label: its plain ``task-rest`` run).

    Parameters
    ----------
    deriv_dir : str or os.PathLike
        The derivatives folder.
    run : rsnflow.bids.RunId or str
        The source run, or a participant label.

    Returns
    -------
    dict of str to pathlib.Path
        ``maps`` (the run's component maps), ``zmaps`` (the same, z-scored), ``timeseries``
        (the components' time series, TSV), ``record`` (the completeness record) and
        ``labels`` (the classifier's label per component, ``rsnflow classify``).
    """
    return {
        "labels": derivative_path(deriv_dir, run, "labels", desc="classifier", extension=".tsv"),
        "maps": derivative_path(deriv_dir, run, "components", desc="dr", **_SPACE),
        "zmaps": derivative_path(deriv_dir, run, "components", desc="drz", **_SPACE),
        "timeseries": derivative_path(deriv_dir, run, "timeseries", desc="dr", extension=".tsv"),
        "record": derivative_path(deriv_dir, run, "record", desc="dr", extension=".json"),
    }


def sica_outputs(deriv_dir: str | os.PathLike[str], run: Any) -> dict[str, Path]:
    """Paths of one run's single-run ICA outputs (``rsnflow subject-ica``).

    Parameters
    ----------
    deriv_dir : str or os.PathLike
        The derivatives folder.
    run : rsnflow.bids.RunId or str
        The source run, or a participant label.

    Returns
    -------
    dict of str to pathlib.Path
        ``maps`` (the run's own component z maps), ``timeseries`` (their time courses, TSV),
        ``record`` (the completeness record) and ``labels`` (the classifier's label per
        component, ``rsnflow classify --maps sica``).
    """
    return {
        "labels": derivative_path(deriv_dir, run, "labels", desc="sicaclassifier", extension=".tsv"),
        "maps": derivative_path(deriv_dir, run, "components", desc="sica", **_SPACE),
        "timeseries": derivative_path(deriv_dir, run, "timeseries", desc="sica", extension=".tsv"),
        "record": derivative_path(deriv_dir, run, "record", desc="sica", extension=".json"),
    }


def group_paths(deriv_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Where the group-level outputs live: group ICA, its labels, their pages and figures.

    Parameters
    ----------
    deriv_dir : str or os.PathLike
        The derivatives folder.

    Returns
    -------
    dict of str to pathlib.Path
        The paths under ``deriv_dir/group`` by role: ``dir``; the group ICA's ``maps``, ``mask``,
        ``mixing``, ``table``, ``json``, ``report`` and ``record``; ``dr_summary``; ``figures``
        and ``ica_figures``; the labels' ``labels``, ``labels_report``, ``labels_record`` and
        ``labels_figures``; ``classify_report`` and ``sica_classify_report`` (``rsnflow classify``'s
        review pages of the dual-regression and the single-run ICA maps); ``sica_summary``.
    """
    g = Path(deriv_dir) / GROUP_DIR
    space = f"space-{SPACE_NAME}_res-4mm"
    return {
        "dir": g,
        "maps": g / f"group_task-rest_{space}_desc-ica_components.nii.gz",
        "mask": g / f"group_task-rest_{space}_desc-ica_mask.nii.gz",
        "mixing": g / "group_task-rest_desc-ica_mixing.tsv",
        "table": g / "group_task-rest_desc-ica_components.tsv",
        "json": g / "group_task-rest_desc-ica_components.json",
        "report": g / "group_task-rest_desc-ica_report.html",
        "record": g / "group_task-rest_desc-ica_record.json",
        "dr_summary": g / "dual_regression_summary.tsv",
        "qc_report": g / "group_task-rest_desc-qc_report.html",
        "figures": g / "figures",
        "ica_figures": g / "figures" / "group_ica",
        "labels": g / "group_task-rest_desc-ica_labels.tsv",
        "labels_report": g / "group_task-rest_desc-labels_report.html",
        "labels_record": g / "group_task-rest_desc-labels_record.json",
        "labels_figures": g / "figures" / "labels",
        "classify_report": g / "group_task-rest_desc-classifier_report.html",
        "sica_classify_report": g / "group_task-rest_desc-sicaclassifier_report.html",
        "sica_summary": g / "subject_ica_summary.tsv",
    }


def preprocess_summary_path(deriv_dir: str | os.PathLike[str]) -> Path:
    """The per-run summary of the preprocessing stage.

    Parameters
    ----------
    deriv_dir : str or os.PathLike
        The derivatives folder.

    Returns
    -------
    pathlib.Path
        ``deriv_dir/preprocess_summary.tsv``.
    """
    return Path(deriv_dir) / SUMMARY_NAME

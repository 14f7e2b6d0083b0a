"""The label stage: one label per group component, written as a TSV with a review page.

Writes under ``DERIV_DIR/group/``::

    group_task-rest_desc-ica_labels.tsv       component, label, network, source, score, runner_up, ...
    group_task-rest_desc-labels_report.html   every component's map with its label and score

A reviewer corrects the TSV (the ``label`` column) and re-runs with
``--expert-labels`` on it: the written TSV is a valid expert file.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from rsnflow.atlas import NOISE, UNKNOWN, load_taxonomy
from rsnflow.bids import RunId
from rsnflow.config import LabelingConfig
from rsnflow.ica.dr_cohort import dr_status
from rsnflow.ica.group import group_record, preprocessed_runs
from rsnflow.io import InvalidInputError, load_nifti, open_nifti, write_text
from rsnflow.labeling.auto import auto_labels, reference_scores
from rsnflow.labeling.expert import WRITTEN_COLUMNS, read_expert_labels
from rsnflow.labeling.features import MOTION_COLUMNS, spatial_features, temporal_features
from rsnflow.layout import dr_outputs, group_paths, subject_outputs
from rsnflow.log import get_logger
from rsnflow.records import Record, config_digest, file_digest

__all__ = ["check_labels_current", "label_components", "labels_path", "labels_record", "load_group_maps"]

log = get_logger(__name__)


def labels_path(deriv_dir: str | Path) -> Path:
    """Where the label table of ``deriv_dir`` lives.

    Parameters
    ----------
    deriv_dir : str or pathlib.Path
        The derivatives folder.

    Returns
    -------
    pathlib.Path
        ``DERIV_DIR/group/group_task-rest_desc-ica_labels.tsv``.
    """
    return group_paths(deriv_dir)["labels"]


def labels_record(deriv_dir: str | Path) -> Record:
    """The completeness record of the label table (it names the group maps the labels belong to).

    Parameters
    ----------
    deriv_dir : str or pathlib.Path
        The derivatives folder.

    Returns
    -------
    Record
        The record at ``DERIV_DIR/group/group_task-rest_desc-labels_record.json`` (which may not exist yet).
    """
    return Record(group_paths(deriv_dir)["labels_record"])


def check_labels_current(deriv_dir: str | Path) -> None:
    """Raise unless the label table is complete and was made for the current group maps.

    Parameters
    ----------
    deriv_dir : str or pathlib.Path
        The derivatives folder.

    Raises
    ------
    InvalidInputError
        Missing or interrupted labels, or labels of another group ICA.
    """
    path = labels_path(deriv_dir)
    if not path.exists():
        raise InvalidInputError(path, "missing (run `rsnflow label` first)")
    record = labels_record(deriv_dir)
    if not record.intact().complete:
        raise InvalidInputError(path, "incomplete (no completeness record); rerun `rsnflow label`")
    maps = group_paths(deriv_dir)["maps"]
    if record.inputs().get("group_maps") != group_record(deriv_dir).digest(maps):
        raise InvalidInputError(
            path, "stale: made for other group maps (group ICA was rerun); rerun `rsnflow label`"
        )


def load_group_maps(deriv_dir: str | Path) -> tuple[NDArray[np.float32], NDArray[np.bool_]]:
    """The group z maps inside the group mask ``(K, V)`` and the mask.

    Parameters
    ----------
    deriv_dir : str or pathlib.Path
        Derivatives with group ICA done.

    Returns
    -------
    maps : numpy.ndarray
        ``(K, V)`` float32 z maps, the voxels of ``mask`` in order.
    mask : numpy.ndarray
        The boolean group mask.

    Raises
    ------
    InvalidInputError
        The group maps or mask are missing.
    """
    paths = group_paths(deriv_dir)
    for key in ("maps", "mask"):
        if not paths[key].exists():
            raise InvalidInputError(paths[key], "missing (run `rsnflow group-ica` first)")
    mask = load_nifti(paths["mask"], ndim=3).get_fdata() > 0
    maps = np.asarray(load_nifti(paths["maps"], ndim=4).dataobj, dtype=np.float32)
    return np.moveaxis(maps[mask], 0, 1).copy(), mask


def _runs(
    deriv: Path, subjects: list[RunId]
) -> Iterator[tuple[NDArray[np.float64], NDArray[np.float64], float]]:
    for s in subjects:
        tcs = pd.read_csv(dr_outputs(deriv, s)["timeseries"], sep="\t").to_numpy(dtype=np.float64)
        outputs = subject_outputs(deriv, s)
        motion = pd.read_csv(outputs.confounds, sep="\t")[list(MOTION_COLUMNS)].to_numpy(dtype=np.float64)
        tr = float(open_nifti(outputs.bold).header.get_zooms()[3])
        yield tcs, motion, tr


def label_components(
    deriv_dir: str | Path,
    config: LabelingConfig,
    expert_labels: str | Path | None = None,
    report: bool = True,
) -> pd.DataFrame:
    """Label every group component of ``deriv_dir``; expert labels win when given.

    Parameters
    ----------
    deriv_dir
        Derivatives with group ICA (and, for the temporal noise features,
        dual regression) done.
    config
        Thresholds of the automatic rules.
    expert_labels
        Optional TSV or FIX label file (:func:`read_expert_labels`).
    report
        Also write the HTML review page with every component's map.

    Returns
    -------
    pandas.DataFrame
        The written table: ``component, label, network, source, score,
        runner_up, runner_up_score, reason, notes`` and the noise features.
    """
    deriv = Path(deriv_dir)
    taxonomy = load_taxonomy()
    group = group_record(deriv)
    zmaps, mask = load_group_maps(deriv)
    # A bad expert file is refused before anything on disk changes.
    expert = None if expert_labels is None else read_expert_labels(expert_labels, len(zmaps), taxonomy)
    labels_record(deriv).path.unlink(missing_ok=True)
    subjects = [r for r in preprocessed_runs(deriv) if dr_status(deriv, r).complete]
    if not subjects:
        log.warning("no dual-regression time courses: temporal noise features are unavailable")
    features = pd.concat(
        [spatial_features(zmaps, mask), temporal_features(_runs(deriv, subjects), len(zmaps))], axis=1
    )
    auto = auto_labels(reference_scores(zmaps, mask, taxonomy), features, config)
    table = auto.assign(source="auto", notes="")
    if expert is not None:
        changed = int((expert["label"].to_numpy() != auto["label"].to_numpy()).sum())
        log.info(
            "expert labels from %s; they differ from the automatic ones on %d components",
            expert_labels,
            changed,
        )
        table["label"] = expert["label"].to_numpy()
        table["notes"] = expert["notes"].to_numpy()
        table["source"] = "expert"
    table.insert(0, "component", np.arange(len(zmaps)))
    table["network"] = [taxonomy.parent(lab) for lab in table["label"]]
    cols = ["component", "label", *WRITTEN_COLUMNS[:6], "notes"]
    table = pd.concat([table[cols], features.round(4)], axis=1)
    write_text(table.to_csv(sep="\t", index=False, float_format="%.4g"), labels_path(deriv))
    counts = table["label"].isin([NOISE, UNKNOWN])
    log.info(
        "labels: %d networks, %d Noise, %d Unknown",
        int((~counts).sum()),
        int((table["label"] == NOISE).sum()),
        int((table["label"] == UNKNOWN).sum()),
    )
    if report:
        _report(deriv, table, zmaps, mask)
    paths = group_paths(deriv)
    inputs = {"group_maps": group.digest(paths["maps"]), "group_mask": group.digest(paths["mask"])}
    if expert_labels is not None:
        inputs["expert_labels"] = file_digest(expert_labels)
    for s in subjects:
        inputs[f"{s}_dr"] = Record(dr_outputs(deriv, s)["record"]).digest(dr_outputs(deriv, s)["timeseries"])
    labels_record(deriv).write("label", inputs, config_digest(config), [labels_path(deriv)])
    return table


def _report(deriv: Path, table: pd.DataFrame, zmaps: NDArray[np.float32], mask: NDArray[np.bool_]) -> None:
    from rsnflow.figures import component_montage, montage_anchor
    from rsnflow.report import Report
    from rsnflow.space import MNI4_AFFINE, load_template, unmask

    out = group_paths(deriv)["labels_report"]
    report = Report("rsnflow component labels")
    n_net = int((~table["label"].isin([NOISE, UNKNOWN])).sum())
    report.text(
        f"{len(table)} components: {n_net} networks, {int((table['label'] == NOISE).sum())} Noise, "
        f"{int((table['label'] == UNKNOWN).sum())} Unknown. To correct a label, edit the label column of "
        f"{labels_path(deriv).name} and run `rsnflow label DERIV_DIR --expert-labels` on it."
    )
    columns = ["component", "label", "source", "score", "runner_up", "runner_up_score", "reason"]
    # Each component's number links to its maps below.
    report.table(table[columns], links={"component": [f"#{montage_anchor(k)}" for k in table["component"]]})
    titles = [
        f"IC {k}: {lab} ({src} {sc:.2f})"
        for k, lab, src, sc in zip(
            table["component"], table["label"], table["source"], table["score"], strict=True
        )
    ]
    template = load_template().get_fdata()
    pages = component_montage(
        unmask(zmaps, mask), template, titles, group_paths(deriv)["labels_figures"], affine=MNI4_AFFINE
    )
    for start, (png, caption) in zip(range(0, len(titles), 10), pages, strict=True):
        report.figure(png, caption, anchor=montage_anchor(start))
    report.write(out)

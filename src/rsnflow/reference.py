"""Reference maps: the group decomposition a classifier was trained on, travelling with it.

A classifier labels dual-regression maps, and a map means something only
against the group maps it was regressed from. So the dataset stage keeps the
group maps, mask and component labels it was built from, training copies
them into the model (``MODEL_DIR/reference``, and the MLflow run's
``reference/`` artifacts), and ``rsnflow dual-regression DERIV --group-maps
MODEL`` regresses a new cohort onto them: new subjects get the training
cohort's components, in its order, without a group ICA of their own.

Layout of a reference folder::

    components.nii.gz   group maps (45x54x45xK), as group ICA wrote them
    mask.nii.gz         the group mask
    labels.tsv          the component labels the dataset used
    reference.json      SHA-256 of the three, K, where they came from
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from rsnflow.io import InvalidInputError, atomic_path, load_nifti, sha256_file, write_json
from rsnflow.layout import group_paths
from rsnflow.log import get_logger
from rsnflow.records import Record

__all__ = [
    "REFERENCE_DIR",
    "REFERENCE_FILES",
    "check_reference",
    "export_reference",
    "fetch_reference",
    "import_reference",
    "pin_model",
]

log = get_logger(__name__)

#: The reference's folder inside a dataset or model directory (and the MLflow run's artifact folder).
REFERENCE_DIR = "reference"
#: Reference file name by role; the roles are those of :func:`rsnflow.layout.group_paths`.
REFERENCE_FILES = {"maps": "components.nii.gz", "mask": "mask.nii.gz", "labels": "labels.tsv"}
_STAGE = "reference-maps"


def export_reference(deriv_dir: str | Path, out_dir: str | Path) -> dict[str, Any]:
    """Copy a cohort's group maps, mask and labels into ``out_dir`` with their digests.

    Parameters
    ----------
    deriv_dir : str or Path
        Derivatives holding a complete group ICA (or imported reference) and its labels.
    out_dir : str or Path
        The reference folder to write (created).

    Returns
    -------
    dict
        The content of ``reference.json``: ``sha256`` per file, ``n_components``, ``source``.
    """
    paths = group_paths(deriv_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for role, name in REFERENCE_FILES.items():
        shutil.copyfile(paths[role], out / name)
    meta = {
        "sha256": {name: sha256_file(out / name) for name in REFERENCE_FILES.values()},
        "n_components": int(load_nifti(out / REFERENCE_FILES["maps"], ndim=4).shape[3]),
        "source": str(Path(deriv_dir).resolve()),
    }
    write_json(meta, out / "reference.json")
    return meta


def check_reference(ref_dir: str | Path) -> dict[str, Any]:
    """Read a reference folder's ``reference.json`` and check every file against it.

    Parameters
    ----------
    ref_dir : str or Path
        A reference folder (:func:`export_reference`).

    Returns
    -------
    dict
        The content of ``reference.json``.

    Raises
    ------
    InvalidInputError
        A file is missing, or differs from the digest recorded when the reference was made.
    """
    ref = Path(ref_dir)
    try:
        meta = json.loads((ref / "reference.json").read_text())
        digests = dict(meta["sha256"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InvalidInputError(ref / "reference.json", f"not a readable reference record ({exc})") from exc
    for name in REFERENCE_FILES.values():
        if not (ref / name).is_file():
            raise InvalidInputError(ref / name, "missing from the model's reference maps")
        if sha256_file(ref / name) != digests.get(name):
            raise InvalidInputError(ref / name, "changed since the model was trained (SHA-256 differs)")
    return dict(meta)


def fetch_reference(model: str, dest: str | Path | None = None) -> Path:
    """The reference folder of a model directory or an MLflow model URI, checked.

    Parameters
    ----------
    model : str
        A model directory (``MODEL_DIR/reference``) or an MLflow model URI (``models:/NAME@champion``,
        ``runs:/ID/model``), whose training run holds the ``reference/`` artifacts; MLflow URIs are
        resolved against ``MLFLOW_TRACKING_URI``.
    dest : str or Path or None, default=None
        Where an MLflow reference is downloaded (a new temporary folder when None).

    Returns
    -------
    pathlib.Path
        The reference folder, checked (:func:`check_reference`).

    Raises
    ------
    InvalidInputError
        No such model, or a model without reference maps (trained before they travelled with it).
    """
    from rsnflow.serve.predictor import MLFLOW_SCHEMES

    if model.startswith(MLFLOW_SCHEMES):
        import mlflow

        target = Path(dest) if dest else Path(tempfile.mkdtemp(prefix="rsnflow-reference-"))
        try:
            run_id = mlflow.models.get_model_info(model).run_id
            got = mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path=REFERENCE_DIR, dst_path=str(target)
            )
        except Exception as exc:  # MLflow raises its own and the store's exceptions
            raise InvalidInputError(
                model, f"cannot download the model's reference maps through MLflow ({exc})"
            ) from exc
        ref = Path(got)
    else:
        path = Path(model)
        if not (path / "model.json").is_file():
            raise InvalidInputError(path, "not a model directory (no model.json), nor a models:/ URI")
        ref = path / REFERENCE_DIR
        if not ref.is_dir():
            raise InvalidInputError(path, "no reference maps in the model (trained before rsnflow kept them)")
    check_reference(ref)
    return ref


def _intact(record: Record, paths: dict[str, Path]) -> bool:
    """The imported maps and their labels are whole, and the labels are recorded for these maps."""
    labels = Record(paths["labels_record"])
    return (
        record.intact().complete
        and labels.intact().complete
        and labels.inputs().get("group_maps") == record.digest(paths["maps"])
    )


def pin_model(model: str) -> str:
    """A ``models:/NAME@alias`` URI as the version the alias points to now (``models:/NAME/7``).

    A pipeline resolves the alias once and hands the version to every task,
    so that a new champion registered meanwhile cannot give one task's maps
    and another task's labels. Other references are returned as they are.

    Parameters
    ----------
    model : str
        A model directory or an MLflow model URI (resolved against ``MLFLOW_TRACKING_URI``).

    Returns
    -------
    str
        ``models:/NAME/VERSION`` for an alias, else ``model``.

    Raises
    ------
    InvalidInputError
        MLflow cannot resolve the alias.
    """
    if not (model.startswith("models:/") and "@" in model):
        return model
    from mlflow import MlflowClient

    name, alias = model.removeprefix("models:/").split("@", 1)
    try:
        version = MlflowClient().get_model_version_by_alias(name, alias.rstrip("/")).version
    except Exception as exc:  # MLflow raises its own and the store's exceptions
        raise InvalidInputError(model, f"cannot resolve the alias through MLflow ({exc})") from exc
    return f"models:/{name}/{version}"


def import_reference(deriv_dir: str | Path, ref_dir: str | Path) -> bool:
    """Make a model's reference maps the group decomposition of ``deriv_dir``.

    The maps, mask and labels are written where group ICA and ``rsnflow
    label`` would write them, each with its completeness record, so that dual
    regression, the dataset stage and ``rsnflow classify`` take them as they
    are. A folder whose group decomposition came from these reference maps is
    left alone, one imported from another model's maps is replaced (its dual
    regression is then redone as stale), and one with its own group ICA is
    refused, never overwritten.

    Parameters
    ----------
    deriv_dir : str or Path
        The derivatives folder of the new cohort (preprocessed runs).
    ref_dir : str or Path
        A checked reference folder (:func:`fetch_reference`).

    Returns
    -------
    bool
        True when the maps were written, False when they were already there.

    Raises
    ------
    InvalidInputError
        ``deriv_dir`` has no preprocessed run, or holds its own group ICA (or group files no record
        explains).
    """
    from rsnflow.ica.group import preprocessed_runs

    ref = Path(ref_dir)
    meta = check_reference(ref)
    # The reference is all three files: the same maps with other labels are another reference.
    identity = hashlib.sha256(json.dumps(meta["sha256"], sort_keys=True).encode()).hexdigest()
    if not preprocessed_runs(deriv_dir):
        raise InvalidInputError(deriv_dir, "no preprocessed runs (run rsnflow preprocess into it first)")
    paths = group_paths(deriv_dir)
    record = Record(paths["record"])
    previous = record.read()
    if previous is not None and previous.get("stage") == _STAGE:  # an earlier import: ours to replace
        if record.inputs().get("reference") == identity and _intact(record, paths):
            return False
    else:
        made = "group ICA" if (previous or {}).get("stage") == "group-ica" else "an unrecorded run"
        # A file no record explains is the user's unless it is this reference's own (an interrupted import).
        foreign = [
            paths[role]
            for role, name in REFERENCE_FILES.items()
            if paths[role].exists() and sha256_file(paths[role]) != meta["sha256"][name]
        ]
        if previous is not None or foreign:
            raise InvalidInputError(
                paths["maps"] if previous is not None else foreign[0],  # a group ICA: name its maps
                f"this derivatives folder already has group outputs (from {made}); dual regression onto a "
                "model's reference maps needs a folder without them (preprocess the cohort into a new one)",
            )
    record.path.unlink(missing_ok=True)
    for role, name in REFERENCE_FILES.items():
        with atomic_path(paths[role]) as tmp:
            shutil.copyfile(ref / name, tmp)
    record.write(_STAGE, {"reference": identity}, "", [paths["maps"], paths["mask"]])
    maps_digest = record.digest(paths["maps"])
    # The labels belong to these maps, as `rsnflow label` records them.
    Record(paths["labels_record"]).write(_STAGE, {"group_maps": maps_digest}, "", [paths["labels"]])
    log.info("group maps of %s: reference maps of %s (K=%s)", deriv_dir, ref, meta["n_components"])
    return True

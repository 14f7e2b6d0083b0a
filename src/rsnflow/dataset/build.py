"""The dataset stage: one normalised map per (subject, component), stored for fast training.

Layout of ``DATASET_DIR``::

    maps.npy        (N, 45, 54, 45) float16 (or float32) array, read as a memory map
    mask.npy        (45, 54, 45) bool: the group mask the maps were normalised in
    index.tsv       sample, cohort, subject, session, run, component, label, class_index, network, split
    manifest.json   shapes, hashes, taxonomy version, normalisation, split, class weights, config
    reference/      the group maps, mask and labels the maps come from (rsnflow.reference)

The directory is built under a temporary name beside the target and renamed
into place at the end, so a reader never sees half a dataset.

A dataset may pool several cohorts, each decomposed on its own (its own group
ICA, model order and labels): varied acquisitions and model orders widen what
a classifier learns (issue #19). Their maps are z-scored inside the mask all
of them share, the one the model reads at inference; subjects are named
``c<cohort>-<label>``, split by person (cohorts made from one BIDS dataset hold
the same people: one side of the split each, whichever cohort) and per source
(every source in every split); the first cohort's group maps are the dataset's
reference.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from rsnflow.atlas import load_taxonomy
from rsnflow.bids import RunId
from rsnflow.config import DatasetConfig
from rsnflow.dataset.split import SPLITS, subject_split
from rsnflow.dataset.verify import block_digests
from rsnflow.ica.dr_cohort import dr_status
from rsnflow.ica.group import preprocessed_runs
from rsnflow.io import (
    InvalidInputError,
    load_nifti,
    remove_leftovers,
    sha256_file,
    temp_marker,
    write_json,
    write_text,
)
from rsnflow.labeling.stage import check_labels_current, labels_path
from rsnflow.layout import dr_outputs, group_paths
from rsnflow.log import get_logger, progress
from rsnflow.provenance import provenance
from rsnflow.reference import REFERENCE_DIR, export_reference
from rsnflow.space import MNI4_SHAPE

__all__ = [
    "DATASET_FORMAT",
    "NORMALISATION",
    "build_dataset",
    "check_output_dir",
    "class_weights",
    "normalise_maps",
]

log = get_logger(__name__)

NORMALISATION = "per map: z-score over the group mask (mean 0, std 1 inside), 0 outside"


def normalise_maps(maps: NDArray[np.floating], mask: NDArray[np.bool_]) -> NDArray[np.float32]:
    """Z-score every map of ``maps`` ``(..., X, Y, Z)`` over ``mask``; zero outside it.

    Parameters
    ----------
    maps : numpy.ndarray
        ``(..., X, Y, Z)`` spatial maps.
    mask : numpy.ndarray
        ``(X, Y, Z)`` boolean mask the statistics are computed in.

    Returns
    -------
    numpy.ndarray
        float32 array of the shape of ``maps``: each map with mean 0 and standard
        deviation 1 inside ``mask`` (std floored at 1e-6), 0 outside.
    """
    m = np.asarray(maps, dtype=np.float32)
    inside = m[..., mask]
    mean = inside.mean(-1, keepdims=True)
    std = np.maximum(inside.std(-1, keepdims=True), 1e-6)
    out = np.zeros(m.shape, dtype=np.float32)
    out[..., mask] = (inside - mean) / std
    return out


def class_weights(class_index: NDArray[np.integer], n_classes: int) -> NDArray[np.float64]:
    """Balanced weights ``n / (k * count_c)`` over the ``k`` classes present; 0 for absent ones.

    Parameters
    ----------
    class_index : numpy.ndarray
        Class index of every sample (non-negative integers).
    n_classes : int
        Number of classes (length of the result).

    Returns
    -------
    numpy.ndarray
        ``(n_classes,)`` float64 weights.
    """
    counts = np.bincount(np.asarray(class_index), minlength=n_classes).astype(np.float64)
    present = counts > 0
    weights = np.zeros(n_classes)
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return weights


#: The ``format`` field of every manifest this module writes; only such a folder is ever replaced.
DATASET_FORMAT = "rsnflow-dataset/1"


def check_output_dir(deriv_dir: str | Path, dataset_dir: str | Path, overwrite: bool) -> None:
    """Refuse a ``DATASET_DIR`` that building there could destroy (nothing is touched here).

    Parameters
    ----------
    deriv_dir : str or pathlib.Path
        The input derivatives folder.
    dataset_dir : str or pathlib.Path
        The folder the dataset is to be written to.
    overwrite : bool
        Whether an existing rsnflow dataset at ``dataset_dir`` may be replaced.

    Raises
    ------
    InvalidInputError
        ``dataset_dir`` is a symbolic link; is, holds or lies inside ``deriv_dir``;
        exists and is not an rsnflow dataset (a file, or a folder of other files);
        or is an rsnflow dataset and ``overwrite`` is false.
    """
    deriv, out = Path(deriv_dir).resolve(), Path(dataset_dir)
    if out.is_symlink():
        raise InvalidInputError(out, "is a symbolic link; give the real folder to write the dataset into")
    target = out.resolve()
    if target == deriv or deriv in target.parents or target in deriv.parents:
        raise InvalidInputError(out, f"overlaps the input derivatives {deriv}; choose a separate folder")
    if not out.exists():
        return
    if not out.is_dir():
        raise InvalidInputError(out, "exists and is not a folder; refusing to replace it")
    if not any(out.iterdir()):
        return
    if not _is_dataset(out):
        raise InvalidInputError(
            out, "exists and is not an rsnflow dataset (no manifest.json of one); refusing to replace it"
        )
    if not overwrite:
        raise InvalidInputError(out, "an rsnflow dataset already exists here; pass --overwrite to replace it")


def _is_dataset(folder: Path) -> bool:
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and manifest.get("format") == DATASET_FORMAT


def _swap_into_place(new: Path, out: Path) -> None:
    """Rename ``new`` to ``out``; a (checked) dataset already there is moved aside first, then removed."""
    if not out.exists():
        new.rename(out)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.{temp_marker()}old-", dir=out.parent))
    out.rename(old / out.name)
    new.rename(out)
    shutil.rmtree(old)


def current_runs(deriv: Path) -> list[RunId]:
    """Runs whose dual-regression maps are complete and come from the current group maps.

    Raises
    ------
    InvalidInputError
        A run's maps were made from other group maps (group ICA rerun,
        dual regression not): pairing them with the new labels would be wrong.
    """
    found = []
    for s in preprocessed_runs(deriv):
        state = dr_status(deriv, s)
        if state.state in ("stale", "incomplete"):  # a run without a record never finished: left out
            raise InvalidInputError(
                state.path or dr_outputs(deriv, s)["maps"],
                f"{state.state} ({state.reason}); rerun `rsnflow dual-regression`",
            )
        if state.complete:
            found.append(s)
    return found


@dataclass(frozen=True)
class _Cohort:
    """One decomposed cohort pooled into a dataset: its runs, labels and group mask."""

    number: int  # 1-based, in the order given
    deriv: Path
    runs: list[RunId]
    labels: pd.DataFrame
    mask: NDArray[np.bool_]
    pooled: bool  # more than one cohort: subjects are named c<number>-<label>
    source: str  # the BIDS dataset it was made from: cohorts of one source hold the same people

    def subject(self, run: RunId) -> str:
        return f"c{self.number}-{run.subject}" if self.pooled else run.subject

    def run_name(self, run: RunId) -> str:
        return f"c{self.number}-{run}" if self.pooled else str(run)


def _source(deriv: Path) -> str:
    """The BIDS dataset a derivatives folder was made from (``SourceDatasets``), else the folder."""
    try:
        sources = json.loads((deriv / "dataset_description.json").read_text()).get("SourceDatasets", [])
        url = next((str(s["URL"]) for s in sources if isinstance(s, dict) and s.get("URL")), "")
    except (OSError, ValueError, AttributeError):
        url = ""
    if not url:
        return str(deriv.resolve())
    return url if "://" in url else str(Path(url).resolve())


def _open_cohort(number: int, deriv: Path, pooled: bool) -> _Cohort:
    check_labels_current(deriv)
    labels = pd.read_csv(labels_path(deriv), sep="\t", keep_default_na=False)
    mask = load_nifti(group_paths(deriv)["mask"], ndim=3).get_fdata() > 0
    return _Cohort(number, deriv, current_runs(deriv), labels, mask, pooled, _source(deriv))


def _overlap(cohort: _Cohort, others: list[_Cohort]) -> float:
    """The share of the smaller of a cohort's mask and the others' common mask that both hold."""
    common = np.logical_and.reduce([o.mask for o in others])
    return float((cohort.mask & common).sum() / max(1, min(cohort.mask.sum(), common.sum())))


def _people_split(
    cohorts: list[_Cohort], fractions: Sequence[float], seed: int
) -> tuple[dict[str, str], int]:
    """Each dataset subject's split, and the number of people behind them.

    Two cohorts made from one BIDS dataset (two model orders, say) hold the
    same people: a person is one side of the split whichever cohort their maps
    come from. The people of each source are split on their own, so every
    source (and its labels) is in every split.
    """
    people: dict[str, list[_Cohort]] = {}
    for c in cohorts:
        people.setdefault(c.source, []).append(c)
    side: dict[tuple[str, str], str] = {}
    for source, members in people.items():
        subjects = sorted({r.subject for c in members for r in c.runs})
        if len(subjects) < 3:
            raise InvalidInputError(
                members[0].deriv, f"{len(subjects)} subjects with dual-regression maps; a split needs 3"
            )
        side.update({(source, s): a for s, a in subject_split(subjects, fractions, seed).items()})
    return {c.subject(r): side[(c.source, r.subject)] for c in cohorts for r in c.runs}, len(side)


def _write_maps(
    path: Path,
    cohorts: list[_Cohort],
    mask: NDArray[np.bool_],
    split: dict[str, str],
    dtype: str,
) -> pd.DataFrame:
    """Every run's dual-regression maps, normalised, into one memmapped array; the index of its rows."""
    taxonomy = load_taxonomy()
    total = sum(len(c.runs) * len(c.labels) for c in cohorts)
    arr = np.lib.format.open_memmap(path, mode="w+", dtype=np.dtype(dtype), shape=(total, *MNI4_SHAPE))
    rows = []
    start = 0
    jobs = [(c, s) for c in cohorts for s in c.runs]
    for c, s in progress(jobs, "dataset", unit="run"):
        k = len(c.labels)
        maps_path = dr_outputs(c.deriv, s)["maps"]
        img = load_nifti(maps_path, ndim=4)
        if img.shape[:3] != MNI4_SHAPE or img.shape[3] != k:
            raise InvalidInputError(
                maps_path, f"shape {img.shape}, expected {(*MNI4_SHAPE, k)} (one map per label)"
            )
        maps = np.moveaxis(np.asarray(img.dataobj, dtype=np.float32), -1, 0)
        arr[start : start + k] = normalise_maps(maps, mask)
        rows.append(
            pd.DataFrame(
                {
                    "sample": np.arange(start, start + k),
                    "cohort": c.number,
                    "subject": c.subject(s),
                    "session": s.session or "",
                    "run": c.run_name(s),
                    "component": c.labels["component"],
                    "label": c.labels["label"],
                    "class_index": [taxonomy.index(lab) for lab in c.labels["label"]],
                    "network": c.labels["network"],
                    "split": split[c.subject(s)],
                }
            )
        )
        start += k
    arr.flush()
    del arr
    return pd.concat(rows, ignore_index=True)


def _manifest(
    tmp: Path,
    cohorts: list[_Cohort],
    index: pd.DataFrame,
    split: dict[str, str],
    n_people: int,
    config: DatasetConfig,
    seed: int,
) -> dict[str, Any]:
    """The dataset's manifest: shape, classes, split, class weights and the SHA-256 of every file."""
    taxonomy = load_taxonomy()
    ks = [len(c.labels) for c in cohorts]
    n_runs = sum(len(c.runs) for c in cohorts)
    train = index[index["split"] == "train"]
    weights = class_weights(train["class_index"].to_numpy(), len(taxonomy))
    distribution = {
        sp: (index.loc[index["split"] == sp, "label"].value_counts(normalize=True).round(6).to_dict())
        for sp in SPLITS
    }
    manifest: dict[str, Any] = {
        "format": DATASET_FORMAT,
        "n_samples": len(index),
        "shape": [len(index), *MNI4_SHAPE],
        "dtype": config.dtype,
        "n_subjects": n_people,
        "n_runs": n_runs,
        "n_components": ks[0] if len(cohorts) == 1 else ks,
        "maps": "dual-regression stage-2 maps (desc-dr_components)",
        "normalisation": NORMALISATION,
        "projection_size": config.projection_size,
        "projection": "sum projections along x, y, z as R, G, B, each resized bilinearly to "
        f"{config.projection_size}x{config.projection_size} and scaled to 0-255",
        "taxonomy_version": taxonomy.version,
        "classes": taxonomy.labels,
        "label_source": sorted({src for c in cohorts for src in c.labels["source"]}),
        "split": {
            "fractions": list(config.split),
            "seed": seed,
            "subjects": {sp: sorted(s for s, a in split.items() if a == sp) for sp in SPLITS},
            "samples": {sp: int((index["split"] == sp).sum()) for sp in SPLITS},
            "label_distribution": distribution,
        },
        "class_weights": [round(float(w), 6) for w in weights],
        "sha256": {
            "maps.npy": sha256_file(tmp / "maps.npy"),
            "index.tsv": sha256_file(tmp / "index.tsv"),
            "mask.npy": sha256_file(tmp / "mask.npy"),
            "labels.tsv": sha256_file(labels_path(cohorts[0].deriv)),
        },
        "source": str(cohorts[0].deriv.resolve()),
    }
    if len(cohorts) > 1:
        manifest["cohorts"] = [
            {
                "cohort": c.number,
                "source": str(c.deriv.resolve()),
                "bids": c.source,
                "n_components": len(c.labels),
                "n_runs": len(c.runs),
                "labels_sha256": sha256_file(labels_path(c.deriv)),
                "mask_voxels": int(c.mask.sum()),
            }
            for c in cohorts
        ]
    manifest["maps_block_sha256"] = block_digests(tmp / "maps.npy")
    manifest["sha256"]["dataset"] = hashlib.sha256(
        "".join(manifest["sha256"][f] for f in ("maps.npy", "index.tsv")).encode()
    ).hexdigest()
    return manifest


def build_dataset(
    deriv_dir: str | Path | Sequence[str | Path],
    dataset_dir: str | Path,
    config: DatasetConfig,
    seed: int = 0,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Build the classification dataset from dual-regression maps and component labels.

    Parameters
    ----------
    deriv_dir
        Derivatives with dual regression and ``rsnflow label`` done; or several,
        each a cohort decomposed on its own, pooled into one dataset (their
        subjects named ``c<n>-<label>``, ``n`` counting from 1 in the order
        given; maps z-scored inside the voxels all their group masks share; the
        first cohort's group maps the dataset's reference).
    dataset_dir
        Output directory: new, empty, or an rsnflow dataset replaced as a
        whole when ``overwrite`` (:func:`check_output_dir`).
    config
        Split fractions, storage dtype, projection size.
    seed
        Seed of the subject split.
    overwrite
        Replace an rsnflow dataset already at ``dataset_dir``.

    Returns
    -------
    dict
        The manifest written to ``manifest.json``.

    Raises
    ------
    InvalidInputError
        No labels, no subject maps, maps whose component count disagrees with the
        labels, a cohort given twice, or cohorts whose group masks share too little.
    """
    derivs = [Path(deriv_dir)] if isinstance(deriv_dir, str | Path) else [Path(d) for d in deriv_dir]
    out = Path(dataset_dir)
    if not derivs:
        raise ValueError("build_dataset needs at least one derivatives folder")
    for i, deriv in enumerate(derivs):
        check_output_dir(deriv, out, overwrite)
        if deriv.resolve() in {d.resolve() for d in derivs[:i]}:
            raise InvalidInputError(deriv, "is given twice; each cohort once")
    cohorts = [_open_cohort(i + 1, d, len(derivs) > 1) for i, d in enumerate(derivs)]
    deriv = cohorts[0].deriv
    runs = [r for c in cohorts for r in c.runs]
    # By person: every run of a subject, from any cohort of its source, lands on one side.
    split, n_people = _people_split(cohorts, config.split, seed)
    mask = np.logical_and.reduce([c.mask for c in cohorts])
    if len(cohorts) > 1 and mask.sum() < 0.8 * min(c.mask.sum() for c in cohorts):
        worst = min(cohorts, key=lambda c: _overlap(c, [o for o in cohorts if o is not c]))
        raise InvalidInputError(
            worst.deriv,
            f"its group mask and the others' share {int(mask.sum())} voxels, under 80% of the smallest "
            "mask: not one space; check their registration",
        )

    out.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(out.parent, recursive=False)  # a killed build's temporary folder
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.{temp_marker()}", dir=out.parent))
    try:
        index = _write_maps(tmp / "maps.npy", cohorts, mask, split, config.dtype)
        np.save(tmp / "mask.npy", mask)
        write_text(index.to_csv(sep="\t", index=False), tmp / "index.tsv")
        manifest = _manifest(tmp, cohorts, index, split, n_people, config, seed)
        # The group maps the dataset's maps were regressed from travel with it, then with its models.
        manifest["reference"] = export_reference(deriv, tmp / REFERENCE_DIR)["sha256"]
        write_json({**manifest, **provenance(asdict(config))}, tmp / "manifest.json")
        tmp.chmod(0o755)
        for d in derivs:  # again: the folder may have changed while building
            check_output_dir(d, out, overwrite)
        _swap_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info(
        "dataset: %d maps of %d runs of %d subjects (%s) in %s",
        len(index),
        len(runs),
        n_people,
        ", ".join(f"{sp} {manifest['split']['samples'][sp]}" for sp in SPLITS),
        out,
    )
    return {**manifest, **provenance(asdict(config))}

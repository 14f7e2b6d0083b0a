"""Expert labels: a TSV (or an FSL FIX / Melview / ICA-AROMA file) checked against the taxonomy."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from rsnflow.atlas import NOISE, UNKNOWN, Taxonomy
from rsnflow.io import InvalidInputError

__all__ = ["FIX_NOISE_WORDS", "WRITTEN_COLUMNS", "read_expert_labels"]

#: Columns that ``rsnflow label`` writes besides component and label; a reviewed
#: copy of that table is a valid expert file, so they are accepted (and ignored).
WRITTEN_COLUMNS = (
    "network",
    "source",
    "score",
    "runner_up",
    "runner_up_score",
    "reason",
    "edge_fraction",
    "csf_fraction",
    "wm_fraction",
    "spread",
    "hfc",
    "motion_r",
)

#: Words that mark a FIX/Melview label as a noise class ("Unclassified Noise",
#: "Movement", "Cardiac", "White matter", "Sagittal sinus", ...).
FIX_NOISE_WORDS = (
    "noise",
    "movement",
    "motion",
    "cardiac",
    "respiratory",
    "white matter",
    "sinus",
    "susceptibility",
    "artefact",
    "artifact",
    "mri",
)
_FIX_UNKNOWN = ("signal", "unknown", "unclassified")


def read_expert_labels(path: str | Path, n_components: int, taxonomy: Taxonomy) -> pd.DataFrame:
    """Read and validate expert labels for ``n_components`` group components.

    Two formats:

    * TSV with a header ``component<TAB>label`` and an optional ``notes``
      column (the table ``rsnflow label`` writes is accepted as it is);
      components are 0-based, as in ``group_task-rest_desc-ica_components.tsv``;
      labels must be taxonomy labels (case-insensitive).
    * An FSL FIX / Melview / ICA-AROMA label file (read with fslpy), 1-based
      as MELODIC numbers them. Taxonomy labels pass through; FIX noise classes
      become ``Noise``; ``Signal``, ``Unknown`` and ``Unclassified`` become
      ``Unknown`` (FIX does not name the network); the original label is kept
      in ``notes``.

    Parameters
    ----------
    path : str or pathlib.Path
        The label file (UTF-8 text).
    n_components : int
        Number of group components; every component ``0 .. n_components - 1`` needs one label.
    taxonomy : Taxonomy
        The valid labels.

    Returns
    -------
    pandas.DataFrame
        ``component, label, notes`` sorted by component, one row per component.

    Raises
    ------
    InvalidInputError
        Empty file, wrong columns, unknown label (with the closest valid
        ones), duplicate, missing or out-of-range components.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidInputError(p, f"cannot read label file ({exc.strerror})") from exc
    except UnicodeDecodeError as exc:
        raise InvalidInputError(
            p, f"not UTF-8 text (byte {exc.start}: {exc.reason}); save it as UTF-8"
        ) from exc
    if not text.strip():
        raise InvalidInputError(p, "empty label file")
    first = text.lstrip().splitlines()[0]
    table = _read_tsv(p) if "\t" in first or first.strip().lower().startswith("component") else _read_fix(p)

    upper = {lab.upper(): lab for lab in taxonomy.labels}
    labels = []
    for comp, label in zip(table["component"], table["label"], strict=True):
        found = upper.get(str(label).strip().upper())
        if found is None:
            closest = ", ".join(taxonomy.closest(str(label)))
            raise InvalidInputError(p, f"component {comp}: unknown label {label!r}; closest valid: {closest}")
        labels.append(found)
    table["label"] = labels

    dup = table["component"][table["component"].duplicated()].unique()
    if len(dup):
        raise InvalidInputError(p, f"duplicate components: {', '.join(map(str, dup))}")
    out_of_range = sorted(c for c in table["component"] if not 0 <= c < n_components)
    if out_of_range:
        raise InvalidInputError(
            p, f"components out of range 0..{n_components - 1}: {', '.join(map(str, out_of_range))}"
        )
    missing = sorted(set(range(n_components)) - set(table["component"]))
    if missing:
        shown = ", ".join(map(str, missing[:20])) + (" ..." if len(missing) > 20 else "")
        raise InvalidInputError(p, f"{len(missing)} components have no label: {shown}")
    return table.sort_values("component").reset_index(drop=True)


def _read_tsv(p: Path) -> pd.DataFrame:
    try:
        table = pd.read_csv(p, sep="\t", dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise InvalidInputError(p, f"not a readable TSV ({exc})") from exc
    table.columns = [c.strip().lower() for c in table.columns]
    allowed = {"component", "label", "notes", *WRITTEN_COLUMNS}
    if not {"component", "label"} <= set(table.columns) or set(table.columns) - allowed:
        raise InvalidInputError(
            p, f"expected columns component, label [, notes]; got {', '.join(table.columns)}"
        )
    if table.empty:
        raise InvalidInputError(p, "no label rows under the header")
    try:
        table["component"] = table["component"].astype(int)
    except ValueError as exc:
        raise InvalidInputError(p, f"component must be an integer ({exc})") from exc
    if "notes" not in table:
        table["notes"] = ""
    return table[["component", "label", "notes"]]


def _read_fix(p: Path) -> pd.DataFrame:
    from fsl.data.fixlabels import InvalidLabelFileError, loadLabelFile

    try:
        _, all_labels = loadLabelFile(str(p), includeLabel="Unclassified Noise", excludeLabel="Unknown")
    except (InvalidLabelFileError, ValueError) as exc:
        raise InvalidInputError(p, f"neither a component/label TSV nor a FIX label file ({exc})") from exc
    rows = []
    for i, labs in enumerate(all_labels):
        original = labs[0] if labs else UNKNOWN
        low = original.lower()
        if any(w in low for w in FIX_NOISE_WORDS):
            label = NOISE
        elif low in _FIX_UNKNOWN:
            label = UNKNOWN
        else:
            label = original
        rows.append({"component": i, "label": label, "notes": f"FIX: {', '.join(labs)}"})
    return pd.DataFrame(rows, columns=["component", "label", "notes"])

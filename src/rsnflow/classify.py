"""The ``classify`` stage: label every dual-regression component map of every run with a trained classifier.

For each run of a derivatives folder that has dual-regression maps, the
classifier (a model directory or an MLflow URI such as
``models:/rsnflow-rsn-classifier@champion``) gives each component a label, its
network, the probability of both, whether it abstained (``Unknown`` below the
model's calibrated threshold, or the one given), and its three most probable
labels. One BIDS-derivative table per run
(``sub-XX_..._desc-classifier_labels.tsv``, beside the maps) and one review page
(``group/group_task-rest_desc-classifier_report.html``).

The network probability is the sum of the probabilities of every label of the
best label's network: a map torn between two sub-networks of the Default mode
network is still surely Default mode.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from rsnflow.io import InvalidInputError, open_nifti, write_text
from rsnflow.layout import dr_outputs, group_paths, preprocessed_records
from rsnflow.log import get_logger
from rsnflow.report import Report

__all__ = ["COLUMNS", "classify_runs", "label_table"]

log = get_logger(__name__)

#: The columns of a run's label table, in order.
COLUMNS = (
    "component", "label", "network", "probability", "network_probability", "abstained", "top3_labels",
    "top3_probabilities",
)  # fmt: skip


def label_table(
    ranked: dict[str, NDArray[Any]], probs: NDArray[np.floating], parents: list[str]
) -> pd.DataFrame:
    """One row per map from a predictor's ranking (:meth:`rsnflow.serve.predictor.RSNPredictor.rank`).

    Parameters
    ----------
    ranked : dict of str to numpy.ndarray
        ``label``, ``network``, ``probability``, ``abstained``, ``top_labels`` and ``top_probabilities``.
    probs : numpy.ndarray
        ``(N, C)`` class probabilities the ranking came from.
    parents : list of str
        The network of each class, in the columns' order.

    Returns
    -------
    pandas.DataFrame
        The :data:`COLUMNS`, ``component`` counting from 0.
    """
    best = probs.argmax(1)
    owner = np.asarray(parents, dtype=object)
    network_p = np.array([probs[i, owner == owner[b]].sum() for i, b in enumerate(best)])
    return pd.DataFrame(
        {
            "component": np.arange(len(probs)),
            "label": ranked["label"],
            "network": ranked["network"],
            "probability": np.round(ranked["probability"].astype(float), 4),
            "network_probability": np.round(network_p, 4),
            "abstained": ranked["abstained"],
            "top3_labels": [";".join(row[:3]) for row in ranked["top_labels"]],
            "top3_probabilities": [
                ";".join(f"{p:.4f}" for p in row[:3]) for row in ranked["top_probabilities"]
            ],
        },
        columns=list(COLUMNS),
    )


def classify_runs(
    deriv_dir: str | os.PathLike[str],
    model_ref: str,
    abstain_below: float | None = None,
    device: str = "auto",
    batch: int = 32,
) -> pd.DataFrame:
    """Label every run's dual-regression maps; write a table per run and the review page.

    Parameters
    ----------
    deriv_dir : str or os.PathLike
        A derivatives folder with dual-regression maps (``rsnflow dual-regression``).
    model_ref : str
        A model directory or an MLflow model URI.
    abstain_below : float or None, default=None
        Label ``Unknown`` below this best probability; ``None``: the model's calibrated threshold.
    device : str, default="auto"
        ``auto``, ``cpu`` or ``cuda``.
    batch : int, default=32
        Maps classified together (bounds memory: a run's maps are read a batch at a time).

    Returns
    -------
    pandas.DataFrame
        One row per run: ``run``, ``components``, ``networks`` (not Noise, Unknown or abstained),
        ``noise``, ``abstained`` and ``table`` (its path).

    Raises
    ------
    InvalidInputError
        No run of ``deriv_dir`` has dual-regression maps, or the model cannot be loaded.
    """
    from rsnflow.serve.predictor import RSNPredictor

    runs = [(run, dr_outputs(deriv_dir, run)) for run, _ in preprocessed_records(deriv_dir)]
    runs = [(run, out) for run, out in runs if out["maps"].exists()]
    if not runs:
        raise InvalidInputError(
            deriv_dir, "no dual-regression maps to classify (run rsnflow dual-regression)"
        )
    predictor = RSNPredictor("rsn-classifier", model_ref, device=device, abstain_below=abstain_below)
    predictor.load()
    rows, report = [], Report("rsnflow classify")
    report.text(
        f"Model {model_ref} ({predictor.header_.get('arch', '?')}, {len(predictor.classes_)} classes); "
        f"abstains below {predictor.abstain_below_:.3g}."
    )
    for run, out in runs:
        image = open_nifti(out["maps"])
        n = image.shape[3]
        probs = np.concatenate(
            [
                predictor.probabilities(_maps(image, start, min(start + batch, n)))
                for start in range(0, n, batch)
            ]
        )
        table = label_table(predictor.rank(probs), probs, predictor.parents_)
        write_text(table.to_csv(sep="\t", index=False), out["labels"])
        counts = _counts(table)
        rows.append({"run": str(run), **counts, "table": str(out["labels"])})
        report.heading(str(run)).text(
            f"{counts['networks']} networks, {counts['noise']} Noise, {counts['abstained']} abstained."
        ).table(table.drop(columns=["top3_probabilities"]))
        log.info(
            "%s: %d components, %d networks, %d abstained", run, n, counts["networks"], counts["abstained"]
        )
    summary = pd.DataFrame(rows)
    page = group_paths(deriv_dir)["classify_report"]
    report.write(page)
    log.info("classified %d runs; review page %s", len(summary), page)
    return summary


def _maps(image: Any, start: int, stop: int) -> NDArray[np.float32]:
    """Maps ``start:stop`` of a 4D image as ``(N, 45, 54, 45)`` float32."""
    block = np.asarray(image.dataobj[..., start:stop], dtype=np.float32)
    return np.ascontiguousarray(np.moveaxis(block, -1, 0))


def _counts(table: pd.DataFrame) -> dict[str, int]:
    abstained = table["abstained"].astype(bool)
    noise = (table["label"] == "Noise") & ~abstained
    return {
        "components": len(table),
        "networks": int((~abstained & ~noise & (table["label"] != "Unknown")).sum()),
        "noise": int(noise.sum()),
        "abstained": int(abstained.sum()),
    }

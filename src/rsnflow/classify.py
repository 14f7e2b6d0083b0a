"""The ``classify`` stage: label every component map of every run with a trained classifier.

The maps are a run's dual-regression maps by default, or its own single-run ICA
components (``rsnflow subject-ica``, ``maps="sica"``: the tables are then
``desc-sicaclassifier_labels.tsv`` and the page ``desc-sicaclassifier_report.html``).

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
network is still surely Default mode, and is labelled with the network's name
when its sub-label is unsure (:meth:`~rsnflow.serve.predictor.RSNPredictor.rank`).

A dual-regression map is one subject's copy of a group component, and that
component's group map is a second, cleaner view of the same thing. With
``group_weight`` > 0 (``serve.group_weight``) a map's probabilities are
multiplied by its group map's, raised to that weight (a product of experts,
:func:`with_group_evidence`): one subject's weak copy of a network takes the
network its group map shows. The group map is made from every subject's data,
this one's included, so it is not independent evidence: half weight by
default. And a group map has a say only when it is typical of its own best
label (``serve.group_atypical_below``, the typicality gate applied to the
group map with a floor of its own): a noise component whose group map only
looks like a network (a midline noise component taken for a medial node of the
Default mode) must not talk its subjects' maps out of Noise.

The group map also says whether a component is a network at all, as the
template labeller's rule does (a network map correlates >= 0.4 with some
reference map): a component whose group map correlates less than
``serve.group_network_below`` with the prototype of every network gets no
network label in any run (those maps abstain). One subject's copy of a noise
component can look enough like a network to convince the classifier (p near
1); the group map, the mean of every subject's copy, shows what it is. The
floor is on the prototypes' correlation scale. This component gate takes the
place of the per-map typicality gate for those maps (unless ``atypical_below``
is given): a subject's weak copy of a clear network is often atypical of it,
and the group map is the better judge of what the component is.

Single-run ICA maps have no group map, and a served model returns no full
probability vector, so those maps are labelled alone.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from rsnflow.ica.dr_cohort import dr_status
from rsnflow.io import InvalidInputError, open_nifti, write_text
from rsnflow.layout import dr_outputs, group_paths, preprocessed_records, sica_outputs
from rsnflow.log import get_logger
from rsnflow.records import Record
from rsnflow.report import Report

__all__ = ["COLUMNS", "classify_runs", "label_table", "with_group_evidence"]

log = get_logger(__name__)

#: The columns of a run's label table, in order.
COLUMNS = (
    "component", "label", "network", "probability", "network_probability", "abstained", "top3_labels",
    "top3_probabilities",
)  # fmt: skip


def with_group_evidence(
    probs: NDArray[np.floating], group_probs: NDArray[np.floating], weight: float | NDArray[np.floating]
) -> NDArray[np.float32]:
    """Maps' class probabilities combined with those of their group maps.

    Parameters
    ----------
    probs : numpy.ndarray
        ``(N, C)`` probabilities of N subject maps.
    group_probs : numpy.ndarray
        ``(N, C)`` probabilities of the group map each of them is a copy of.
    weight : float or numpy.ndarray
        Exponent of the group map's probabilities (0: ``probs`` unchanged; 1: equal say), one for
        every map or ``(N,)``, one per map.

    Returns
    -------
    numpy.ndarray
        ``(N, C)`` float32, each row ``probs * group_probs ** weight`` normalised to sum to 1.
    """
    p, g = np.asarray(probs, dtype=np.float64), np.asarray(group_probs, dtype=np.float64)
    if p.shape != g.shape:
        raise ValueError(f"probs {p.shape} and group_probs {g.shape} must have the same shape")
    w = np.asarray(weight, dtype=np.float64)
    if w.ndim > 1 or (w.ndim == 1 and len(w) != len(p)):
        raise ValueError(f"weight must be a number or one per map ({len(p)}), got shape {w.shape}")
    tiny = np.finfo(np.float32).tiny  # a probability of 0 would veto a class outright
    logits = np.log(np.maximum(p, tiny)) + w.reshape(-1, 1) * np.log(np.maximum(g, tiny))
    logits -= logits.max(axis=1, keepdims=True)
    out = np.exp(logits)
    return (out / out.sum(axis=1, keepdims=True)).astype(np.float32)


def label_table(ranked: dict[str, NDArray[Any]]) -> pd.DataFrame:
    """One row per map from a predictor's ranking (:meth:`rsnflow.serve.predictor.RSNPredictor.rank`).

    Parameters
    ----------
    ranked : dict of str to array-like
        ``label``, ``network``, ``probability``, ``network_probability``, ``abstained``,
        ``top_labels`` and ``top_probabilities``, one row per map (as
        :meth:`~rsnflow.serve.predictor.RSNPredictor.rank` returns them, or as a served model
        answers).

    Returns
    -------
    pandas.DataFrame
        The :data:`COLUMNS`, ``component`` counting from 0.
    """
    return pd.DataFrame(
        {
            "component": np.arange(len(ranked["label"])),
            "label": ranked["label"],
            "network": ranked["network"],
            "probability": np.round(np.asarray(ranked["probability"], dtype=float), 4),
            "network_probability": np.round(np.asarray(ranked["network_probability"], dtype=float), 4),
            "abstained": np.asarray(ranked["abstained"], dtype=bool),
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
    maps: str = "dr",
    atypical_below: float | None = None,
    group_weight: float = 0.5,
    group_atypical_below: float = 0.3,
    group_network_below: float = 0.32,
) -> pd.DataFrame:
    """Label every run's component maps; write a table per run and the review page.

    Parameters
    ----------
    deriv_dir : str or os.PathLike
        A derivatives folder with dual-regression maps (``rsnflow dual-regression``).
    model_ref : str
        A model directory, an MLflow model URI, or the ``http(s)://`` URL of a running server
        (``rsnflow serve`` or a KServe InferenceService; :func:`rsnflow.serve.client.infer_url`), which
        gets each run's maps as one 4D file in one request.
    abstain_below : float or None, default=None
        Label ``Unknown`` below this probability; ``None``: the model's calibrated threshold. A
        server applies its own.
    device : str, default="auto"
        ``auto``, ``cpu`` or ``cuda``.
    batch : int, default=32
        Maps classified together (bounds memory: a run's maps are read a batch at a time).
    maps : {"dr", "sica"}, default="dr"
        Which maps: the dual-regression ones (``desc-classifier_labels.tsv``), or each run's own
        single-run ICA (``rsnflow subject-ica``; ``desc-sicaclassifier_labels.tsv``).
    atypical_below : float or None, default=None
        Withhold a network label whose map correlates less than this with its class's prototype
        (0: never); ``None``: the model's floor, set on validation, for maps labelled alone, and no
        such gate for maps whose group map weighs in (``group_network_below`` judges their
        component). A server applies its own.
    group_weight : float, default=0.5
        Combine each dual-regression map's probabilities with its group map's, raised to this
        weight (:func:`with_group_evidence`; 0: each map alone). Applied to a run whose maps come
        from the group maps now in ``deriv_dir`` (its record says so), and with a local model.
    group_atypical_below : float, default=0.3
        A group map whose best label is a network it correlates less than this with (its class's
        prototype) has no say (0: every group map has). Without prototypes every group map has.
    group_network_below : float, default=0.32
        A component whose group map correlates less than this with every network's prototype gets
        no network label: its maps abstain (0: never). Applied where the group maps weigh in
        (``group_weight`` > 0) and the model has prototypes.

    Returns
    -------
    pandas.DataFrame
        One row per run: ``run``, ``components``, ``networks`` (not Noise, Unknown or abstained),
        ``noise``, ``abstained`` and ``table`` (its path).

    Raises
    ------
    InvalidInputError
        No run of ``deriv_dir`` has such maps, the model cannot be loaded, or a threshold is given
        for a server.
    ConnectionError
        The server cannot be reached.
    """
    if maps not in _MAPS:
        raise ValueError(f"maps must be one of {', '.join(_MAPS)}, got {maps!r}")
    outputs, what, stage, page_key = _MAPS[maps]
    runs = [(run, outputs(deriv_dir, run)) for run, _ in preprocessed_records(deriv_dir)]
    runs = [(run, out) for run, out in runs if out["maps"].exists()]
    if maps == "sica":  # a decomposition cut short leaves maps without their record: not taken
        runs = [(run, out) for run, out in runs if Record(out["record"]).intact().complete]
    if not runs:
        raise InvalidInputError(deriv_dir, f"no {what} maps to classify (run rsnflow {stage})")
    labeller, about, group = _labeller(model_ref, (abstain_below, atypical_below), device, batch)
    prior = None
    if group_weight > 0 and maps == "dr":
        prior = _group_evidence(deriv_dir, group, group_weight, (group_atypical_below, group_network_below))
    if prior is not None:
        about += (
            f" Each map's group map weighs in at weight {group_weight:g}, where it is typical of its"
            f" best label (typicality >= {group_atypical_below:g}: {int((prior.weight > 0).sum())} of"
            f" {len(prior.weight)} group maps). {int(prior.withhold.sum())} group maps correlate less"
            f" than {group_network_below:g} with every network's prototype: their maps get no network"
            " label."
            + (
                ""
                if atypical_below is not None
                else " Where the group map weighs in, this replaces the typicality gate."
            )
        )
    rows, report = [], Report(f"rsnflow classify: {what} maps")
    report.text(about)
    for run, out in runs:
        evidence = None
        if prior is not None:
            if _from_group(Path(deriv_dir), run):
                evidence = prior
            else:
                log.warning("%s: its maps are not from the current group maps: labelled alone", run)
        table = labeller(out["maps"], evidence)
        write_text(table.to_csv(sep="\t", index=False), out["labels"])
        counts = _counts(table)
        rows.append({"run": str(run), **counts, "table": str(out["labels"])})
        report.heading(str(run)).text(
            f"{counts['networks']} networks, {counts['noise']} Noise, {counts['abstained']} abstained."
        ).table(table.drop(columns=["top3_probabilities"]))
        log.info(
            "%s: %d components, %d networks, %d abstained",
            run,
            counts["components"],
            counts["networks"],
            counts["abstained"],
        )
    summary = pd.DataFrame(rows)
    page = group_paths(deriv_dir)[page_key]
    report.write(page)
    log.info("classified %d runs; review page %s", len(summary), page)
    return summary


class _GroupEvidence(NamedTuple):
    """What a run's group maps say about its maps, one row per component."""

    probs: NDArray[np.float32]  # the group maps' class probabilities
    weight: NDArray[np.float64]  # their weight (0 where atypical of their best label)
    withhold: NDArray[np.bool_]  # the component is like no network: no network label


def _group_evidence(
    deriv_dir: str | os.PathLike[str],
    scores: _GroupScores | None,
    weight: float,
    floors: tuple[float, float],
) -> _GroupEvidence | None:
    """What the folder's group maps say (``floors``: ``group_atypical_below`` and
    ``group_network_below``); None (each map alone) when there are none."""
    path = group_paths(deriv_dir)["maps"]
    if scores is None:
        log.info("a served model answers without every probability: each map labelled alone")
        return None
    if not path.exists():
        log.info("no group maps (%s): each map labelled alone", path)
        return None
    probs, atypical, like_no_network = scores(path, floors)
    return _GroupEvidence(probs, np.where(atypical, 0.0, weight), like_no_network)


def _from_group(deriv: Path, run: Any) -> bool:
    """Whether the run's dual-regression maps come from the group maps now in ``deriv``."""
    try:
        return dr_status(deriv, run).complete
    except InvalidInputError:  # the group ICA's record is missing or cut short
        return False


#: ``maps=`` choices: where a run's maps and table are, what they are, the stage making them, the page.
_MAPS: dict[str, tuple[Callable[[Any, Any], dict[str, Path]], str, str, str]] = {
    "dr": (dr_outputs, "dual-regression", "dual-regression", "classify_report"),
    "sica": (sica_outputs, "single-run ICA", "subject-ica", "sica_classify_report"),
}


#: A labeller's inputs: a run's 4D maps file and, optionally, what its group maps say.
_Labeller = Callable[[Path, "_GroupEvidence | None"], pd.DataFrame]
#: From a 4D maps file and two typicality floors (of their best label, of any network) to its maps'
#: probabilities, which are atypical of their best label, and which are like no network (none of
#: either without prototypes).
_GroupScores = Callable[
    [Path, "tuple[float, float]"], "tuple[NDArray[np.float32], NDArray[np.bool_], NDArray[np.bool_]]"
]


def _labeller(
    model_ref: str, thresholds: tuple[float | None, float | None], device: str, batch: int
) -> tuple[_Labeller, str, _GroupScores | None]:
    """A function from a run's 4D maps file to its label table, a sentence about the model, and a
    function from a 4D maps file to what decides its maps' say as group maps (None for a server).

    ``thresholds`` are ``abstain_below`` and ``atypical_below`` (``None``: the model's).
    """
    abstain_below, atypical_below = thresholds
    if model_ref.startswith(("http://", "https://")):
        from rsnflow.serve.client import infer_url, predict_file

        for given, flag in ((abstain_below, "--abstain-below"), (atypical_below, "--atypical-below")):
            if given is not None:
                raise InvalidInputError(
                    model_ref, f"a server applies its own threshold (rsnflow serve {flag})"
                )
        return (
            (lambda path, _prior: predict_file(path, model_ref)),
            f"Served model at {infer_url(model_ref, 'rsn-classifier')}.",
            None,
        )
    from rsnflow.serve.predictor import RSNPredictor

    predictor = RSNPredictor(
        "rsn-classifier", model_ref, device=device, abstain_below=abstain_below, atypical_below=atypical_below
    )
    predictor.load()

    def scores(path: Path) -> tuple[NDArray[np.float32], NDArray[np.float32] | None]:
        image = open_nifti(path)
        n = image.shape[3]
        scored = [
            predictor.scores(_maps(image, start, min(start + batch, n))) for start in range(0, n, batch)
        ]
        probs = np.concatenate([p for p, _ in scored])
        typical = None if predictor.prototypes_ is None else np.concatenate([t for _, t in scored])
        return probs, typical

    def label(path: Path, prior: _GroupEvidence | None) -> pd.DataFrame:
        probs, typical = scores(path)
        if prior is None:
            return label_table(predictor.rank(probs, typical))
        if prior.probs.shape != probs.shape:
            raise InvalidInputError(path, f"{len(probs)} maps, but the group maps number {len(prior.probs)}")
        probs = with_group_evidence(probs, prior.probs, prior.weight)
        gated = None if atypical_below is None else typical  # the group map judges the component
        return label_table(predictor.rank(probs, gated, withhold=prior.withhold))

    about = (
        f"Model {model_ref} ({predictor.header_.get('arch', '?')}, {len(predictor.classes_)} classes); "
        f"abstains below {predictor.abstain_below_:.3g}, "
        f"and below typicality {predictor.atypical_below_:.3g}."
    )

    def group_scores(
        path: Path, floors: tuple[float, float]
    ) -> tuple[NDArray[np.float32], NDArray[np.bool_], NDArray[np.bool_]]:
        probs, typical = scores(path)
        if typical is None:
            none = np.zeros(len(probs), dtype=bool)
            return probs, none, none
        atypical_floor, network_floor = floors
        best = probs.argmax(axis=1)
        return (
            probs,
            predictor.atypical(best, typical, atypical_floor),
            predictor.like_no_network(typical, network_floor),
        )

    return label, about, group_scores


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

"""The KServe predictor: component maps in, a resting-state network label per map out.

One :class:`RSNPredictor` answers both protocols through ``kserve.Model``:
V1 (``{"instances": [...]}`` -> ``{"predictions": [...]}``) and V2 / Open
Inference Protocol (``InferRequest`` -> ``InferResponse``). Each map gets its
label, the label's parent network, the probability, and the top 5 labels with
their probabilities, and its network's probability (the sum over the
network's labels); with ``abstain_below`` set, a map whose best probability is
under it is labelled with its network's name, or ``Unknown`` (and says so)
when its network probability is under it too. A map given a network label
that is less typical of it than the model's ``atypical_below``
(:mod:`rsnflow.models.prototypes`) abstains as well, however sure the
probabilities are: they say nothing about maps unlike the training data.
"""

from __future__ import annotations

import asyncio
import functools
from pathlib import Path
from typing import Any

import numpy as np
import torch
from kserve import InferOutput, InferRequest, InferResponse, Model
from numpy.typing import NDArray

from rsnflow.atlas import NOISE, UNKNOWN, load_taxonomy
from rsnflow.io import InvalidInputError
from rsnflow.log import get_logger
from rsnflow.models import RSNClassifier, load_classifier
from rsnflow.models.prototypes import PROTOTYPES_FILE, load_prototypes, typicality
from rsnflow.resample import pick_device
from rsnflow.serve.inputs import decode_v1, decode_v2
from rsnflow.space import MNI4_SHAPE

__all__ = [
    "MLFLOW_SCHEMES",
    "OUTPUTS",
    "TOP_K",
    "RSNPredictor",
    "load_served_classifier",
    "load_served_prototypes",
]

log = get_logger(__name__)

#: How many ranked labels each prediction carries.
TOP_K = 5
#: V2 outputs and their datatypes, in answer order; ``top_*`` have TOP_K columns.
OUTPUTS = {
    "label": "BYTES",
    "network": "BYTES",
    "probability": "FP32",
    "network_probability": "FP32",
    "abstained": "BOOL",
    "top_labels": "BYTES",
    "top_probabilities": "FP32",
}
#: Model URIs that are read through MLflow rather than from a directory.
MLFLOW_SCHEMES = ("models:/", "runs:/", "mlflow-artifacts:/", "s3://", "gs://")


def load_served_classifier(ref: str, device: torch.device) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Load a classifier and its header (``arch``, ``classes``) from a directory or an MLflow URI.

    MLflow URIs (``models:/NAME@champion``) are resolved against
    ``MLFLOW_TRACKING_URI``; the registered model is the exported (pt2)
    :class:`RSNClassifier`, whose header is the MLflow model's metadata.

    Parameters
    ----------
    ref : str
        A model directory (:func:`rsnflow.models.load_classifier`) or an MLflow model URI
        (``models:/``, ``runs:/``, ``mlflow-artifacts:/``, ``s3://``, ``gs://``).
    device : torch.device
        Where the model is placed.

    Returns
    -------
    model : torch.nn.Module
        The classifier on ``device``.
    header : dict
        Its header, with at least ``classes`` (the labels in output order).

    Raises
    ------
    InvalidInputError
        MLflow cannot load the model or its metadata has no class labels, or ``ref`` is not a
        model directory.
    """
    if ref.startswith(MLFLOW_SCHEMES):
        import mlflow

        try:
            model = mlflow.pytorch.load_model(ref, map_location="cpu")
            header = dict(mlflow.models.get_model_info(ref).metadata or {})
        except Exception as exc:  # MLflow raises its own and the store's exceptions
            raise InvalidInputError(ref, f"cannot load the model through MLflow ({exc})") from exc
        if isinstance(model, RSNClassifier):
            header = model.header()
        if not header.get("classes"):
            raise InvalidInputError(
                ref, "the MLflow model has no class labels in its metadata (not from rsnflow train)"
            )
        return model.to(device), header
    path = Path(ref)
    if not path.is_dir():
        raise InvalidInputError(path, "no such model directory (nor a models:/ or runs:/ URI)")
    return load_classifier(path, device)


def load_served_prototypes(ref: str) -> tuple[NDArray[np.bool_], NDArray[np.float32], list[str]] | None:
    """The class prototypes that travel with a model (:mod:`rsnflow.models.prototypes`), or None.

    Parameters
    ----------
    ref : str
        A model directory (its ``prototypes.npz``) or an MLflow model URI (the ``prototypes/``
        artifact of the version's run).

    Returns
    -------
    tuple or None
        ``(mask, prototypes, classes)``; None for a model trained before rsnflow kept them.
    """
    if not ref.startswith(MLFLOW_SCHEMES):
        path = Path(ref) / PROTOTYPES_FILE
        return load_prototypes(path) if path.exists() else None
    import tempfile

    import mlflow

    try:
        run_id = mlflow.models.get_model_info(ref).run_id
        with tempfile.TemporaryDirectory(prefix="rsnflow-prototypes-") as tmp:
            local = mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path=f"prototypes/{PROTOTYPES_FILE}", dst_path=tmp
            )
            return load_prototypes(local)
    except Exception as exc:  # no such artifact (an older model), or the store's own errors
        log.warning("%s: no class prototypes (%s); the typicality gate is off", ref, exc)
        return None


class RSNPredictor(Model):
    """KServe custom predictor for an rsnflow classifier.

    Parameters
    ----------
    name
        Model name in the URLs (``/v1/models/NAME:predict``, ``/v2/models/NAME/infer``).
    model_ref
        Model directory or MLflow model URI.
    device
        ``auto``, ``cpu`` or ``cuda``.
    max_batch
        Most maps in one request (larger requests get HTTP 400).
    max_nifti_bytes
        Most uncompressed NIfTI bytes accepted in one request, over all its files.
    abstain_below
        Below this probability a map is labelled with its network only, and ``Unknown`` when its
        network probability is below it too (0 = never); ``None``: the model's own calibrated
        threshold (``abstain_below`` of its header; 0 when absent).
    atypical_below
        A network label whose map correlates less than this with its class's
        prototype is withheld (``Unknown``); 0 turns the gate off; ``None``: the
        model's own floor (``atypical_below`` of its header, set on validation;
        off for a model without prototypes).
    """

    def __init__(
        self,
        name: str,
        model_ref: str,
        device: str = "auto",
        max_batch: int = 128,
        max_nifti_bytes: int = 64 << 20,
        abstain_below: float | None = None,
        atypical_below: float | None = None,
    ) -> None:
        super().__init__(name)
        self.model_ref = model_ref
        self.device = pick_device(device)
        self.max_batch = max_batch
        self.max_nifti_bytes = max_nifti_bytes
        self.abstain_below = abstain_below
        self.atypical_below = atypical_below
        self.ready = False

    def load(self) -> bool:
        """Load the classifier and its labels, check its weights, and run it once on a blank map.

        Returns
        -------
        bool
            ``True``: the predictor is ready.

        Raises
        ------
        InvalidInputError
            The model cannot be loaded (:func:`load_served_classifier`) or has NaN or infinite weights.
        """
        self.classifier_, self.header_ = load_served_classifier(self.model_ref, self.device)
        self.classes_ = list(self.header_["classes"])
        self.prototypes_ = load_served_prototypes(self.model_ref)
        if self.prototypes_ is not None and self.prototypes_[2] != self.classes_:
            log.warning("%s: the prototypes' classes are not the model's; the gate is off", self.model_ref)
            self.prototypes_ = None
        floor = (
            self.header_.get("atypical_below", 0.0) if self.atypical_below is None else self.atypical_below
        )
        self.atypical_below_ = float(floor) if self.prototypes_ else 0.0
        if self.atypical_below and not self.prototypes_:
            log.warning("%s has no class prototypes: atypical_below=%g is ignored", self.model_ref, floor)
        given = self.abstain_below
        self.abstain_below_ = float(self.header_.get("abstain_below", 0.0) if given is None else given)
        taxonomy = load_taxonomy()
        known = set(taxonomy.labels)
        self.parents_ = [taxonomy.parent(c) if c in known else c for c in self.classes_]
        bad = [
            n
            for n, t in self.classifier_.state_dict().items()
            if t.is_floating_point() and not t.isfinite().all()
        ]
        if bad:
            raise InvalidInputError(
                self.model_ref, f"non-finite weights ({', '.join(bad[:3])}): refusing to serve"
            )
        with torch.inference_mode():  # first call pays for lazy initialisation, not a client
            self.classifier_(torch.zeros((1, *MNI4_SHAPE), device=self.device))
        log.info(
            "serving %s (%s, %d classes) on %s; abstains below %.3g, and below typicality %.3g",
            self.model_ref,
            self.header_.get("arch", "?"),
            len(self.classes_),
            self.device,
            self.abstain_below_,
            self.atypical_below_,
        )
        self.ready = True
        return self.ready

    # ------------------------------------------------------------------ inference

    def probabilities(self, maps: NDArray[np.float32]) -> NDArray[np.float32]:
        """Class probabilities ``(N, C)`` for raw maps ``(N, 45, 54, 45)``.

        Parameters
        ----------
        maps : numpy.ndarray
            float32 maps of shape ``(N, 45, 54, 45)`` on the MNI 4 mm grid.

        Returns
        -------
        numpy.ndarray
            Softmax probabilities of shape ``(N, C)``, one column per class of ``classes_``.

        Raises
        ------
        RuntimeError
            The model gave NaN or infinite probabilities.
        """
        with torch.inference_mode():
            logits = self.classifier_(torch.from_numpy(np.ascontiguousarray(maps)).to(self.device))
            probs = torch.softmax(logits.float(), dim=1).cpu().numpy()
        if not np.isfinite(probs).all():  # an answer of null would look like a label to a client
            raise RuntimeError("the model gave non-finite probabilities; no answer")
        return probs

    def scores(self, maps: NDArray[np.float32]) -> tuple[NDArray[np.float32], NDArray[np.float32] | None]:
        """Class probabilities and typicalities of raw maps (None without prototypes).

        Parameters
        ----------
        maps : numpy.ndarray
            float32 maps of shape ``(N, 45, 54, 45)`` on the MNI 4 mm grid.

        Returns
        -------
        probs : numpy.ndarray
            ``(N, C)`` softmax probabilities (:meth:`probabilities`).
        typical : numpy.ndarray or None
            ``(N, C)`` spatial correlations of each map with each class's prototype.
        """
        probs = self.probabilities(maps)
        if self.prototypes_ is None:
            return probs, None
        mask, protos, _ = self.prototypes_
        return probs, typicality(maps, mask, protos)

    def atypical(
        self, best: NDArray[np.integer], typical: NDArray[np.float32], floor: float
    ) -> NDArray[np.bool_]:
        """Maps whose best label is a network they correlate less than ``floor`` with (its prototype).

        Parameters
        ----------
        best : numpy.ndarray
            ``(N,)`` index of each map's best class in ``classes_``.
        typical : numpy.ndarray
            ``(N, C)`` typicalities (:meth:`scores`).
        floor : float
            The least typicality a network label needs.

        Returns
        -------
        numpy.ndarray
            ``(N,)`` bool: True where the label is a network (not Noise or Unknown) below the floor.
        """
        return self._said_network(best) & (typical[np.arange(len(best)), best] < floor)

    def like_no_network(self, typical: NDArray[np.float32], floor: float) -> NDArray[np.bool_]:
        """Maps that correlate less than ``floor`` with every network's prototype.

        Parameters
        ----------
        typical : numpy.ndarray
            ``(N, C)`` typicalities (:meth:`scores`).
        floor : float
            The least typicality with some network a map needs to be taken for one.

        Returns
        -------
        numpy.ndarray
            ``(N,)`` bool; all False when the model has no network class.
        """
        network = self._said_network(np.arange(len(self.classes_)))
        if not network.any():
            return np.zeros(len(typical), dtype=bool)
        return np.asarray(typical)[:, network].max(axis=1) < floor

    def _said_network(self, index: NDArray[np.integer]) -> NDArray[np.bool_]:
        """Whether each class index is a network (not Noise or Unknown)."""
        return ~np.isin(np.asarray(self.classes_, dtype=object)[index], [NOISE, UNKNOWN])

    def rank(
        self,
        probs: NDArray[np.float32],
        typical: NDArray[np.float32] | None = None,
        withhold: NDArray[np.bool_] | None = None,
    ) -> dict[str, NDArray[Any]]:
        """Label, network, their probabilities and top-k per map, with abstention applied.

        The network probability is the sum over every label of the best
        label's network: a map torn between two sub-networks of the Default
        mode network is still surely Default mode. Below the threshold
        ``abstain_below_``, a map whose network is sure is labelled with the
        network's name; one whose network is unsure too is ``Unknown``. With
        ``typical``, a map given a network label whose typicality for it is
        below ``atypical_below_`` abstains too.

        Parameters
        ----------
        probs : numpy.ndarray
            Class probabilities of shape ``(N, C)`` (:meth:`probabilities`).
        typical : numpy.ndarray or None, default=None
            ``(N, C)`` typicalities (:meth:`scores`); None: no typicality gate.
        withhold : numpy.ndarray or None, default=None
            ``(N,)`` bool: maps whose network label is withheld for a reason of the caller's
            (``rsnflow classify``: their group map is like no network); they abstain when their
            best label is a network.

        Returns
        -------
        dict of str to numpy.ndarray
            The :data:`OUTPUTS`, one row per map: ``label`` (the best class; its network's name
            when only the network is sure; ``Unknown`` when abstained), ``network`` (``Unknown``
            when abstained), ``probability`` (of the best class), ``network_probability``,
            ``abstained`` (network probability below ``abstain_below_``, an atypical network
            label, or a network label ``withhold`` withholds), ``top_labels`` and
            ``top_probabilities`` (the best ``min(TOP_K, C)`` classes, most probable first).
        """
        k = min(TOP_K, probs.shape[1])
        top = np.argsort(-probs, axis=1, kind="stable")[:, :k]
        best = top[:, 0]
        best_p = probs[np.arange(len(probs)), best]
        owner = np.asarray(self.parents_, dtype=object)
        network_p = (probs * (owner[None, :] == owner[best][:, None])).sum(axis=1)
        labels = np.array([self.classes_[i] for i in best], dtype=object)
        networks = owner[best].copy()
        only_network = (best_p < self.abstain_below_) & (network_p >= self.abstain_below_)
        labels[only_network] = networks[only_network]
        abstained = network_p < self.abstain_below_
        if typical is not None and self.atypical_below_ > 0:
            abstained |= self.atypical(best, typical, self.atypical_below_)
        if withhold is not None:
            abstained |= self._said_network(best) & np.asarray(withhold, dtype=bool)
        labels[abstained] = UNKNOWN
        networks[abstained] = UNKNOWN
        return {
            "label": labels,
            "network": networks,
            "probability": best_p.astype(np.float32),
            "network_probability": network_p.astype(np.float32),
            "abstained": abstained,
            "top_labels": np.array([[self.classes_[i] for i in row] for row in top], dtype=object),
            "top_probabilities": np.take_along_axis(probs, top, axis=1).astype(np.float32),
        }

    def _v1(self, payload: Any) -> dict[str, Any]:
        r = self.rank(*self.scores(decode_v1(payload, self.max_batch, self.max_nifti_bytes)))
        return {
            "predictions": [
                {
                    "label": r["label"][i],
                    "network": r["network"][i],
                    "probability": float(r["probability"][i]),
                    "network_probability": float(r["network_probability"][i]),
                    "abstained": bool(r["abstained"][i]),
                    "top5": [
                        {"label": lab, "probability": float(p)}
                        for lab, p in zip(r["top_labels"][i], r["top_probabilities"][i], strict=True)
                    ],
                }
                for i in range(len(r["label"]))
            ]
        }

    def _v2(self, request: InferRequest) -> InferResponse:
        r = self.rank(*self.scores(decode_v2(request, self.max_batch, self.max_nifti_bytes)))
        outputs = [
            InferOutput(name, list(r[name].shape), dtype, data=r[name]) for name, dtype in OUTPUTS.items()
        ]
        return InferResponse(
            response_id=request.id or "",
            model_name=self.name,
            infer_outputs=outputs,
            use_binary_outputs=request.use_binary_outputs,
            requested_outputs=request.request_outputs,
        )

    async def predict(
        self,
        payload: dict[str, Any] | InferRequest,
        headers: dict[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> dict[str, Any] | InferResponse:
        """Label every map of a V1 or V2 request, off the event loop.

        Parameters
        ----------
        payload : dict, bytes or kserve.InferRequest
            A decoded V1 body (``{"instances": [...]}``, or a NIfTI file's bytes) or a V2 request.
        headers : dict of str to str or None, default=None
            The request's headers (unused).
        response_headers : dict of str to str or None, default=None
            The response's headers (unused).

        Returns
        -------
        dict or kserve.InferResponse
            V1: ``{"predictions": [...]}``, one object per map with ``label``, ``network``,
            ``probability``, ``network_probability``, ``abstained`` and ``top5``. V2: a response
            with the :data:`OUTPUTS`.

        Raises
        ------
        kserve.errors.InvalidInput
            A request that cannot be decoded into maps (HTTP 400).
        """
        # Decoding and the forward pass are CPU-bound: off the event loop so
        # health checks and other requests are answered meanwhile.
        work = self._v2 if isinstance(payload, InferRequest) else self._v1
        return await asyncio.get_running_loop().run_in_executor(None, functools.partial(work, payload))

    # ------------------------------------------------------------------ metadata

    def get_input_types(self) -> list[dict[str, Any]]:
        """The V2 inputs accepted, for the model metadata endpoint.

        Returns
        -------
        list of dict
            ``maps`` (FP32, ``[-1, 45, 54, 45]``) and ``nifti`` (BYTES, ``[-1]``).
        """
        return [
            {"name": "maps", "datatype": "FP32", "shape": [-1, *MNI4_SHAPE]},
            {"name": "nifti", "datatype": "BYTES", "shape": [-1]},
        ]

    def get_output_types(self) -> list[dict[str, Any]]:
        """The V2 outputs, for the model metadata endpoint.

        Returns
        -------
        list of dict
            Name, datatype and shape of each of the :data:`OUTPUTS`; ``top_*`` have ``TOP_K`` columns.
        """
        return [
            {"name": name, "datatype": dtype, "shape": [-1, TOP_K] if name.startswith("top_") else [-1]}
            for name, dtype in OUTPUTS.items()
        ]

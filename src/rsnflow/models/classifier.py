"""One deployable module per model: raw component maps in, class logits out.

:class:`RSNClassifier` wraps an architecture with everything inference needs,
so MLflow, the evaluation and the KServe predictor all call the same thing:
z-scoring of every map inside the training dataset's mask (as the dataset
stored them), the architecture's view (volume or RGB projections), the network.
It saves as a ``state_dict`` plus a small JSON header (:func:`save_classifier`,
:func:`load_classifier`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from rsnflow.config import ARCHS, TrainConfig, default_section
from rsnflow.dataset.views import rgb_projections
from rsnflow.io import InvalidInputError, atomic_path, write_json
from rsnflow.models.cnn import R3D18, ResNet2p5D
from rsnflow.models.mlp import MLP
from rsnflow.space import MNI4_SHAPE

_TRAIN = default_section(TrainConfig)

__all__ = [
    "ARCHS",
    "VIEWS",
    "RSNClassifier",
    "build_network",
    "load_classifier",
    "load_pretrained",
    "save_classifier",
]

Arch = Literal["mlp", "resnet2p5d", "r3d18"]
#: The input view each architecture is trained on (rsnflow.dataset.MapDataset).
VIEWS: dict[str, Literal["volume", "projection"]] = {
    "mlp": "volume",
    "resnet2p5d": "projection",
    "r3d18": "volume",
}


def build_network(
    arch: str,
    n_classes: int,
    hidden: tuple[int, ...] = tuple(_TRAIN.mlp_hidden),
    dropout: float = _TRAIN.mlp_dropout,
    mask: NDArray[np.bool_] | None = None,
) -> nn.Module:
    """A randomly initialised network of architecture ``arch`` (``mask``: the MLP's input voxels).

    Parameters
    ----------
    arch : str
        ``"mlp"``, ``"resnet2p5d"`` or ``"r3d18"``.
    n_classes : int
        Number of output logits.
    hidden : tuple of int, default=(200, 200, 200)
        The MLP's hidden widths (ignored by the CNNs).
    dropout : float, default=0.66
        The MLP's dropout after its second hidden layer (ignored by the CNNs).
    mask : ndarray of bool or None, default=None
        The voxels the MLP's first layer reads; ``None``: the whole grid (ignored by the CNNs).

    Returns
    -------
    torch.nn.Module
        The network, an :class:`~rsnflow.models.mlp.MLP`,
        :class:`~rsnflow.models.cnn.ResNet2p5D` or :class:`~rsnflow.models.cnn.R3D18`.

    Raises
    ------
    ValueError
        For an unknown ``arch``.
    """
    if arch == "mlp":
        return MLP(n_classes, hidden, dropout, mask)
    if arch == "resnet2p5d":
        return ResNet2p5D(n_classes)
    if arch == "r3d18":
        return R3D18(n_classes)
    raise ValueError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHS)}")


def load_pretrained(network: nn.Module, path: str | Path) -> list[str]:
    """Load weights from a local file (nothing is downloaded) into ``network``.

    Accepts a plain ``state_dict`` of the bare torchvision model (``resnet50``
    or ``r3d_18``, as torchvision's own checkpoints are) or of the rsnflow
    network. Tensors whose shape differs (the 1000- or 400-class head) are left
    at random init; a 3-channel ``r3d_18`` stem is summed to one channel.

    Parameters
    ----------
    network : torch.nn.Module
        The network to load into (in place, non-strictly).
    path : str or Path
        The ``state_dict`` file.

    Returns
    -------
    list of str
        Names of the parameters left at their initial values.

    Raises
    ------
    InvalidInputError
        When the file is not a readable ``state_dict`` or no tensor in it matches the network.
    """
    p = Path(path)
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for a bad file
        raise InvalidInputError(p, f"not a readable torch state_dict ({exc})") from exc
    if not isinstance(state, dict):
        raise InvalidInputError(p, "expected a state_dict (a mapping of parameter names to tensors)")
    own = network.state_dict()
    if not any(k in own for k in state) and hasattr(network, "net"):
        state = {f"net.{k}": v for k, v in state.items()}
    loaded = {}
    for name, value in state.items():
        if name not in own:
            continue
        if (
            name.endswith("stem.0.weight")
            and value.ndim == 5
            and value.shape[1] == 3
            and own[name].shape[1] == 1
        ):
            value = value.sum(dim=1, keepdim=True)
        if value.shape == own[name].shape:
            loaded[name] = value
    if not loaded:
        raise InvalidInputError(p, "no tensor in the file matches the network (wrong architecture?)")
    network.load_state_dict(loaded, strict=False)
    return sorted(set(own) - set(loaded))


class RSNClassifier(nn.Module):
    """Component maps ``(N, 45, 54, 45)`` to logits over the taxonomy classes.

    Parameters
    ----------
    arch : str
        ``"mlp"``, ``"resnet2p5d"`` or ``"r3d18"``.
    classes : list of str
        The class labels, in the order of the logits.
    mask : ndarray of bool
        ``(45, 54, 45)`` group mask the maps are z-scored inside (kept as a buffer).
    projection_size : int, default=64
        Side of the projection image, for the ``"projection"`` view.
    network : torch.nn.Module or None, default=None
        The network; ``None`` builds a random one with :func:`build_network`.
    temperature : float, default=1.0
        The logits are divided by it (:mod:`rsnflow.models.calibration` fits it after training).
    abstain_below : float, default=0.0
        The calibrated abstention threshold: served maps whose best probability is lower are
        labelled ``Unknown`` unless the server is given its own (0: never).
    atypical_below : float, default=0.0
        The typicality threshold (:mod:`rsnflow.models.prototypes`): served maps given a network
        label whose correlation with that label's prototype is lower abstain (0: never).
    """

    mask: torch.Tensor  # buffer: the group mask the maps are normalised inside

    def __init__(
        self,
        arch: str,
        classes: list[str],
        mask: NDArray[np.bool_],
        projection_size: int = 64,
        network: nn.Module | None = None,
        temperature: float = 1.0,
        abstain_below: float = 0.0,
        atypical_below: float = 0.0,
    ) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.temperature = float(temperature)
        self.abstain_below = float(abstain_below)
        self.atypical_below = float(atypical_below)
        self.arch = arch
        self.classes = list(classes)
        self.projection_size = projection_size
        self.net = network if network is not None else build_network(arch, len(classes), mask=mask)
        self.register_buffer("mask", torch.as_tensor(np.asarray(mask, dtype=bool)))

    def prepare(self, maps: torch.Tensor) -> torch.Tensor:
        """Normalise raw maps and turn them into the network's input view.

        Each map is z-scored over the voxels of ``mask`` and set to zero outside it.

        Parameters
        ----------
        maps : torch.Tensor
            ``(N, 45, 54, 45)`` raw component maps.

        Returns
        -------
        torch.Tensor
            ``(N, 1, 45, 54, 45)`` volumes, or ``(N, 3, S, S)`` RGB projections
            (``S = projection_size``) for the projection view.
        """
        x = maps.float()
        inside = self.mask.expand_as(x)
        n = self.mask.sum()
        mean = (x * inside).sum(dim=(1, 2, 3), keepdim=True) / n
        var = (((x - mean) * inside) ** 2).sum(dim=(1, 2, 3), keepdim=True) / n
        x = torch.where(inside, (x - mean) / torch.clamp(var.sqrt(), min=1e-6), torch.zeros_like(x))
        if VIEWS[self.arch] == "projection":
            return rgb_projections(x, self.projection_size)
        return x.unsqueeze(1)

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        """Logits of raw component maps (:meth:`prepare`, the network, over :attr:`temperature`).

        Parameters
        ----------
        maps : torch.Tensor
            ``(N, 45, 54, 45)`` raw component maps.

        Returns
        -------
        torch.Tensor
            ``(N, n_classes)`` logits, columns in the order of ``classes``.
        """
        logits = self.net(self.prepare(maps))
        return logits if self.temperature == 1.0 else logits / self.temperature

    def header(self) -> dict[str, Any]:
        """What ``model.json`` records about the classifier.

        Returns
        -------
        dict
            ``arch``, ``classes``, ``projection_size``, ``temperature``, ``abstain_below``,
            ``atypical_below``, ``input_shape`` and ``format``.
        """
        return {
            "arch": self.arch,
            "classes": self.classes,
            "projection_size": self.projection_size,
            "temperature": self.temperature,
            "abstain_below": self.abstain_below,
            "atypical_below": self.atypical_below,
            "input_shape": list(MNI4_SHAPE),
            "format": "rsnflow-classifier/1",
        }


def save_classifier(model: RSNClassifier, model_dir: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write ``weights.pt`` and ``model.json`` into ``model_dir`` (atomically, each).

    Parameters
    ----------
    model : RSNClassifier
        The classifier to save.
    model_dir : str or Path
        The folder, created if needed.
    extra : dict or None, default=None
        More entries for ``model.json`` (they override the header's).

    Returns
    -------
    Path
        ``model_dir``.
    """
    d = Path(model_dir)
    d.mkdir(parents=True, exist_ok=True)
    with atomic_path(d / "weights.pt") as tmp:
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, tmp)
    hidden = [m.out_features for m in model.net.modules() if isinstance(m, nn.Linear)][:-1]
    dropout = [m.p for m in model.net.modules() if isinstance(m, nn.Dropout)]
    meta = {
        **model.header(),
        "mlp_hidden": hidden,
        "mlp_dropout": dropout[0] if dropout else 0.0,
        # older models read the whole grid
        "mlp_input": "mask" if getattr(model.net, "inputs", None) is not None else "grid",
        **(extra or {}),
    }
    write_json(meta, d / "model.json")
    return d


def load_classifier(
    model_dir: str | Path, device: str | torch.device = "cpu"
) -> tuple[RSNClassifier, dict[str, Any]]:
    """Load a classifier written by :func:`save_classifier`, in eval mode.

    Parameters
    ----------
    model_dir : str or Path
        The folder holding ``model.json`` and ``weights.pt``.
    device : str or torch.device, default="cpu"
        Where the model is moved.

    Returns
    -------
    model : RSNClassifier
        The classifier, in eval mode on ``device``.
    meta : dict
        The content of ``model.json``.

    Raises
    ------
    InvalidInputError
        When ``model.json`` is missing, the weights cannot be read or hold non-finite values.
    """
    d = Path(model_dir)
    meta_path = d / "model.json"
    if not meta_path.exists():
        raise InvalidInputError(d, "not an rsnflow model directory (no model.json)")
    meta = json.loads(meta_path.read_text())
    try:
        state = torch.load(d / "weights.pt", map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InvalidInputError(d / "weights.pt", f"cannot read model weights ({exc})") from exc
    network = build_network(
        meta["arch"],
        len(meta["classes"]),
        # A model file without them was written with the defaults of the time, the paper's.
        tuple(meta.get("mlp_hidden") or _TRAIN.mlp_hidden),
        float(meta.get("mlp_dropout", _TRAIN.mlp_dropout)),
        state["mask"].numpy() if meta.get("mlp_input") == "mask" else None,
    )
    model = RSNClassifier(
        meta["arch"], meta["classes"], state["mask"].numpy(), meta["projection_size"], network,
        # A model saved before calibration: unscaled, never abstains by itself.
        float(meta.get("temperature", 1.0)), float(meta.get("abstain_below", 0.0)),
        float(meta.get("atypical_below", 0.0)),
    )  # fmt: skip
    model.load_state_dict(state)
    bad = [name for name, t in state.items() if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:
        raise InvalidInputError(
            d / "weights.pt", f"non-finite weights ({', '.join(bad[:3])}); retrain the model"
        )
    return model.to(device).eval(), meta

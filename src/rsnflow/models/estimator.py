"""The network classifier as a scikit-learn style estimator: ``fit(dataset)``, ``predict(maps)``.

``MapClassifier(arch="mlp").fit(DATASET_DIR)`` trains as ``rsnflow train`` does
(the same code, :func:`rsnflow.train.train_classifier`, without MLflow) and keeps
the model in memory; ``predict_proba(maps)`` takes component maps
``(N, 45, 54, 45)`` (arrays or 4D images on the MNI 4 mm grid) and returns the
class probabilities in the order of ``classes_``.
"""

from __future__ import annotations

import dataclasses
import tempfile
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
import torch
from numpy.typing import NDArray
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import check_is_fitted

from rsnflow.config import ARCHS, TrainConfig, build_section, default_section
from rsnflow.resample import check_device
from rsnflow.space import MNI4_SHAPE

__all__ = ["MapClassifier"]

#: The parameters' defaults: the ``train`` section of ``defaults.yaml``.
_DEFAULTS = default_section(TrainConfig)
#: The section's fields that are this estimator's parameters.
_PARAMS = tuple(f.name for f in dataclasses.fields(TrainConfig) if f.name != "num_workers")


class MapClassifier(ClassifierMixin, BaseEstimator):
    """One of the paper's three classifiers of component maps into resting-state networks.

    Parameters
    ----------
    arch
        ``"mlp"``, ``"resnet2p5d"`` or ``"r3d18"``.
    epochs, batch_size, lr, momentum, optimizer
        Training (the paper: 25 epochs, SGD, learning rate 1e-3, momentum 0.9).
    weighted_loss
        Cross-entropy weighted by inverse class frequency.
    early_stopping_patience
        Epochs without a better validation accuracy before stopping (0: off).
    mlp_hidden, mlp_dropout
        The MLP's hidden widths and the dropout after its second layer.
    cpu_precision
        The CNNs on a CPU: ``"auto"`` (bfloat16 autocast where the CPU has BF16 units),
        ``"float32"`` or ``"bfloat16"``.
    noise_maps, whole_networks
        Synthetic Noise maps and whole-network maps added to training, each as a share of
        the training maps (:mod:`rsnflow.dataset.noise_maps`,
        :mod:`rsnflow.dataset.whole_networks`; 0: none).
    random_state
        Seed of initialisation, dropout and shuffling.
    device
        ``"auto"``, ``"cpu"`` or ``"cuda"``.

    Attributes
    ----------
    model_ : rsnflow.models.RSNClassifier
        The network with its normalisation and view, in eval mode.
    classes_ : ndarray of str
        The taxonomy's labels, the columns of :meth:`predict_proba`.
    history_ : pandas.DataFrame
        Loss and accuracy per epoch.
    best_epoch_ : int
        The epoch kept (best validation accuracy).
    """

    def __init__(
        self,
        arch: str = ARCHS[0],
        epochs: int = _DEFAULTS.epochs,
        batch_size: int = _DEFAULTS.batch_size,
        lr: float = _DEFAULTS.lr,
        momentum: float = _DEFAULTS.momentum,
        optimizer: str = _DEFAULTS.optimizer,
        weighted_loss: bool = _DEFAULTS.weighted_loss,
        early_stopping_patience: int = _DEFAULTS.early_stopping_patience,
        mlp_hidden: tuple[int, ...] = tuple(_DEFAULTS.mlp_hidden),
        mlp_dropout: float = _DEFAULTS.mlp_dropout,
        cpu_precision: str = _DEFAULTS.cpu_precision,
        noise_maps: float = _DEFAULTS.noise_maps,
        whole_networks: float = _DEFAULTS.whole_networks,
        random_state: int = 0,
        device: str = "auto",
    ) -> None:
        self.arch = arch
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.momentum = momentum
        self.optimizer = optimizer
        self.weighted_loss = weighted_loss
        self.early_stopping_patience = early_stopping_patience
        self.mlp_hidden = mlp_hidden
        self.mlp_dropout = mlp_dropout
        self.cpu_precision = cpu_precision
        self.noise_maps = noise_maps
        self.whole_networks = whole_networks
        self.random_state = random_state
        self.device = device

    @classmethod
    def from_config(
        cls, config: TrainConfig, arch: str = ARCHS[0], random_state: int = 0, device: str = "auto"
    ) -> MapClassifier:
        """The estimator a ``train`` configuration section describes.

        Parameters
        ----------
        config
            The section (``load_config().train``); ``num_workers`` belongs to the stage.
        arch
            ``"mlp"``, ``"resnet2p5d"`` or ``"r3d18"``.
        random_state
            Seed of initialisation, dropout and shuffling (the run's ``seed``).
        device
            ``"auto"``, ``"cpu"`` or ``"cuda"``.

        Returns
        -------
        MapClassifier
            An unfitted estimator.
        """
        values = {name: getattr(config, name) for name in _PARAMS}
        values["mlp_hidden"] = tuple(config.mlp_hidden)
        return cls(arch=arch, random_state=random_state, device=device, **values)

    def fit(self, dataset: Any, y: Any = None) -> MapClassifier:
        """Train on a dataset folder written by ``rsnflow dataset`` (train split; best validation epoch).

        Parameters
        ----------
        dataset
            The dataset directory (maps, index, manifest).
        y
            Ignored: the labels are the dataset's.

        Returns
        -------
        MapClassifier
            ``self``, fitted.
        """
        from rsnflow.models import load_classifier
        from rsnflow.train import train_classifier

        config = self._config()
        with tempfile.TemporaryDirectory(prefix="rsnflow-fit-") as tmp:
            meta = train_classifier(
                dataset, tmp, self.arch, config, seed=int(self.random_state), device=self.device
            )
            self.model_, _ = load_classifier(tmp, "cpu")
            self.history_ = pd.read_csv(f"{tmp}/history.tsv", sep="\t")
        self.classes_ = np.asarray(self.model_.classes)
        self.best_epoch_ = int(meta["best_epoch"])
        return self

    def predict_proba(self, maps: Any, batch_size: int = 32) -> NDArray[np.float32]:
        """Class probabilities ``(N, n_classes)`` of component maps ``(N, 45, 54, 45)`` (or a 4D image).

        Parameters
        ----------
        maps : array-like or nibabel image
            ``(N, 45, 54, 45)`` or one ``(45, 54, 45)`` array, a 4D image with
            the maps last, or a list of 3D images, on the MNI 4 mm grid.
        batch_size : int, default=32
            Maps per forward pass.

        Returns
        -------
        ndarray
            ``(N, n_classes)`` float32 probabilities, columns in the order of ``classes_``.

        Raises
        ------
        ValueError
            When the maps are not on the MNI 4 mm grid or hold NaN or infinite values.
        """
        check_is_fitted(self, "model_")
        x = _as_maps(maps)
        out = []
        with torch.no_grad():
            for start in range(0, len(x), batch_size):
                logits = self.model_(torch.from_numpy(x[start : start + batch_size]))
                out.append(torch.softmax(logits, dim=1).numpy())
        return np.concatenate(out).astype(np.float32)

    def predict(self, maps: Any) -> NDArray[np.str_]:
        """The most probable label of each map.

        Parameters
        ----------
        maps : array-like or nibabel image
            Component maps, as for :meth:`predict_proba`.

        Returns
        -------
        ndarray of str
            ``(N,)`` labels from ``classes_``.
        """
        return np.asarray(self.classes_[self.predict_proba(maps).argmax(1)])

    def _config(self) -> TrainConfig:
        """The parameters as the stage's configuration section, checked as a config file's are."""
        if self.arch not in ARCHS:
            raise ValueError(f"arch must be one of {', '.join(ARCHS)}, got {self.arch!r}")
        check_device(self.device)
        values = {name: getattr(self, name) for name in _PARAMS}
        hidden = self.mlp_hidden
        values["mlp_hidden"] = list(hidden) if isinstance(hidden, tuple | list) else hidden
        return build_section(TrainConfig, {**values, "num_workers": 0})


def _as_maps(maps: Any) -> NDArray[np.float32]:
    """``(N, 45, 54, 45)`` float32 maps from an array, a 4D image (maps last) or a list of 3D ones."""
    if isinstance(maps, nib.spatialimages.SpatialImage):
        maps = np.moveaxis(np.asanyarray(maps.dataobj), -1, 0)
    elif isinstance(maps, list | tuple) and maps and isinstance(maps[0], nib.spatialimages.SpatialImage):
        maps = np.stack([np.asanyarray(m.dataobj) for m in maps])
    x = np.asarray(maps, dtype=np.float32)
    if x.ndim == 3:
        x = x[None]
    if x.shape[1:] != MNI4_SHAPE:
        raise ValueError(
            f"maps must be (N, {', '.join(map(str, MNI4_SHAPE))}) on the MNI 4 mm grid, got {x.shape}"
        )
    if len(x) == 0:
        raise ValueError("no maps: expected at least one (N, 45, 54, 45) map")
    if not np.isfinite(x).all():
        raise ValueError("maps hold NaN or infinite values")
    return np.ascontiguousarray(x)

"""The network classifier as a scikit-learn style estimator: ``fit(dataset)``, ``predict(maps)``.

``MapClassifier(arch="mlp").fit(DATASET_DIR)`` trains as ``rsnflow train`` does
(the same code, :func:`rsnflow.train.train_classifier`, without MLflow) and keeps
the model in memory; ``predict_proba(maps)`` takes component maps
``(N, 45, 54, 45)`` (arrays or 4D images on the MNI 4 mm grid) and returns the
class probabilities in the order of ``classes_``.
"""

from __future__ import annotations

import math
import tempfile
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
import torch
from numpy.typing import NDArray
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import check_is_fitted

from rsnflow.config import ARCHS, TrainConfig
from rsnflow.resample import check_device
from rsnflow.space import MNI4_SHAPE

__all__ = ["MapClassifier"]


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
        arch: str = "mlp",
        epochs: int = 25,
        batch_size: int = 32,
        lr: float = 0.001,
        momentum: float = 0.9,
        optimizer: str = "sgd",
        weighted_loss: bool = True,
        early_stopping_patience: int = 0,
        mlp_hidden: tuple[int, ...] = (200, 200, 200),
        mlp_dropout: float = 0.66,
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
        self.random_state = random_state
        self.device = device

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
        """Class probabilities ``(N, n_classes)`` of component maps ``(N, 45, 54, 45)`` (or a 4D image)."""
        check_is_fitted(self, "model_")
        x = _as_maps(maps)
        out = []
        with torch.no_grad():
            for start in range(0, len(x), batch_size):
                logits = self.model_(torch.from_numpy(x[start : start + batch_size]))
                out.append(torch.softmax(logits, dim=1).numpy())
        return np.concatenate(out).astype(np.float32)

    def predict(self, maps: Any) -> NDArray[np.str_]:
        """The most probable label of each map."""
        return np.asarray(self.classes_[self.predict_proba(maps).argmax(1)])

    def _config(self) -> TrainConfig:
        if self.arch not in ARCHS:
            raise ValueError(f"arch must be one of {', '.join(ARCHS)}, got {self.arch!r}")
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not (isinstance(value, int) and value >= 1):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not (isinstance(self.lr, int | float) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")
        if not (isinstance(self.momentum, int | float) and 0 <= self.momentum < 1):
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum!r}")
        if self.optimizer not in ("sgd", "adam"):
            raise ValueError(f"optimizer must be 'sgd' or 'adam', got {self.optimizer!r}")
        if not (isinstance(self.mlp_dropout, int | float) and 0 <= self.mlp_dropout < 1):
            raise ValueError(f"mlp_dropout must be in [0, 1), got {self.mlp_dropout!r}")
        if not self.mlp_hidden or any(not isinstance(w, int) or w < 1 for w in self.mlp_hidden):
            raise ValueError(f"mlp_hidden must be positive widths, got {self.mlp_hidden!r}")
        check_device(self.device)
        return TrainConfig(
            optimizer=self.optimizer,  # type: ignore[arg-type]  # checked above
            lr=float(self.lr),
            momentum=float(self.momentum),
            batch_size=int(self.batch_size),
            epochs=int(self.epochs),
            weighted_loss=bool(self.weighted_loss),
            early_stopping_patience=int(self.early_stopping_patience),
            mlp_hidden=list(self.mlp_hidden),
            mlp_dropout=float(self.mlp_dropout),
            num_workers=0,
        )


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
    if not np.isfinite(x).all():
        raise ValueError("maps hold NaN or infinite values")
    return np.ascontiguousarray(x)

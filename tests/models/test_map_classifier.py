"""The classifier estimator: fit(dataset), predict_proba(maps), the same model as ``rsnflow train``."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from estimator_checks import API_CHECKS
from rsnflow.config import load_config
from rsnflow.dataset import MapDataset
from rsnflow.models import MapClassifier, load_classifier
from rsnflow.space import MNI4_AFFINE


@pytest.mark.parametrize("check", API_CHECKS)
def test_sklearn_estimator_checks(check) -> None:
    check("MapClassifier", MapClassifier())


def test_defaults_are_the_config_defaults() -> None:
    cfg, params = load_config().train, MapClassifier().get_params()
    for name in ("epochs", "batch_size", "lr", "momentum", "optimizer", "weighted_loss", "mlp_dropout"):
        assert params[name] == getattr(cfg, name), name
    assert list(params["mlp_hidden"]) == cfg.mlp_hidden


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"arch": "vit"}, "arch"),
        ({"epochs": 0}, "epochs"),
        ({"lr": -1.0}, "lr"),
        ({"mlp_dropout": 1.5}, "dropout"),
    ],
)
def test_parameters_are_validated_in_fit(params: dict, message: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=message):
        MapClassifier(**params).fit(tmp_path)


def test_fit_is_rsnflow_train_and_predicts_maps(tiny_dataset: Path, tiny_mlp: Path) -> None:
    """Trained with tiny_mlp's settings and seed, the estimator is that model: same probabilities."""
    est = MapClassifier(epochs=30, lr=0.003, random_state=1, device="cpu").fit(tiny_dataset)
    reference, _ = load_classifier(tiny_mlp)
    test = MapDataset(tiny_dataset, "test")
    maps = np.stack([test[i][0].numpy() for i in range(len(test))])[:, 0]
    labels = np.asarray(est.classes_)[[int(test[i][1]) for i in range(len(test))]]
    probs = est.predict_proba(maps)
    with torch.no_grad():
        expected = torch.softmax(reference(torch.from_numpy(maps)), dim=1).numpy()
    np.testing.assert_allclose(probs, expected, atol=1e-5)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    assert float((est.predict(maps) == labels).mean()) >= 0.7  # as the train test's bar (chance 1/58)
    assert len(est.history_) == 30 and 1 <= est.best_epoch_ <= 30
    img = nib.Nifti1Image(np.moveaxis(maps[:3], 0, -1), MNI4_AFFINE)  # a 4D image of three maps
    np.testing.assert_allclose(est.predict_proba(img), probs[:3], atol=1e-5)
    with pytest.raises(ValueError, match="MNI 4 mm grid"):
        est.predict_proba(np.zeros((2, 10, 10, 10)))
    with pytest.raises(ValueError, match="no maps"):
        est.predict_proba(np.zeros((0, 45, 54, 45)))

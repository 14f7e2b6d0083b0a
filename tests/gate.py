"""What the typicality gate withholds, computed from the model directory alone (rsnflow.models.prototypes)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rsnflow.models import load_classifier
from rsnflow.models.prototypes import PROTOTYPES_FILE, load_prototypes, typicality


def withheld(model_dir: Path, maps: np.ndarray, best: np.ndarray, floor: float | None = None) -> np.ndarray:
    """Maps whose best label (class index ``best``) is a network they are less typical of than the floor
    (``None``: the model's)."""
    mask, protos, classes = load_prototypes(model_dir / PROTOTYPES_FILE)
    if floor is None:
        floor = load_classifier(model_dir)[1]["atypical_below"]
    typical = typicality(maps, mask, protos)[np.arange(len(best)), best]
    return ~np.isin(np.asarray(classes)[best], ["Noise", "Unknown"]) & (typical < floor)


def like_no_network(model_dir: Path, maps: np.ndarray, floor: float) -> np.ndarray:
    """Maps that correlate less than ``floor`` with the prototype of every network (not Noise or Unknown)."""
    mask, protos, classes = load_prototypes(model_dir / PROTOTYPES_FILE)
    network = ~np.isin(np.asarray(classes), ["Noise", "Unknown"])
    return typicality(maps, mask, protos)[:, network].max(axis=1) < floor

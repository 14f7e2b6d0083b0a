"""Class prototypes: how typical a map is of the label the classifier gives it.

A classifier answers for every map, including maps unlike anything it was
trained on: a noise component of another scanner, simulator or model order
can get a network label with a probability near 1, and no temperature
changes that. So training keeps, for every class, the mean of its training
maps (normalised as the classifier sees them), and a map's *typicality* is its
spatial correlation with the prototype of the label it was given. The
validation split sets the floor, below which a network label is not given (the
predictor abstains), halfway between two figures: what ``keep`` of the network
maps the classifier got right reach, and what the noise maps reach at most
(the 99th percentile of their typicality with any network's prototype). A
floor at the edge of the right maps' range, as the first alone would put it,
withholds right labels as soon as another scanner or simulator makes maps a
little less typical; halfway leaves the same margin on both sides. Noise and
Unknown are never gated: saying nothing needs no evidence.

The prototypes travel with the model as ``prototypes.npz`` (the mask, the
prototypes inside it as float16, the class labels): in the model directory
and as the MLflow run's ``prototypes/`` artifact.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from rsnflow.atlas import NOISE, UNKNOWN
from rsnflow.io import InvalidInputError, atomic_path

__all__ = [
    "PROTOTYPES_FILE",
    "atypical_threshold",
    "class_prototypes",
    "load_prototypes",
    "save_prototypes",
    "typicality",
]

#: The prototypes' file name in a model directory (and in the MLflow run's ``prototypes/``).
PROTOTYPES_FILE = "prototypes.npz"


def _unit_rows(x: NDArray[np.floating]) -> NDArray[np.float32]:
    x = np.asarray(x, dtype=np.float32)
    x = x - x.mean(axis=1, keepdims=True)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-6)


def class_prototypes(
    maps: NDArray[np.floating], rows: NDArray[np.integer], targets: NDArray[np.integer], n_classes: int,
    mask: NDArray[np.bool_], chunk: int = 256,
) -> NDArray[np.float32]:  # fmt: skip
    """The mean map of every class inside ``mask``, centred and of unit norm, read ``chunk`` maps at a time.

    Parameters
    ----------
    maps : ndarray
        ``(M, 45, 54, 45)`` maps (a dataset's memory-mapped ``maps.npy``).
    rows : ndarray of int
        The rows of ``maps`` to use (a split).
    targets : ndarray of int
        Their class indices.
    n_classes : int
        Number of classes.
    mask : ndarray of bool
        ``(45, 54, 45)`` voxels kept.
    chunk : int, default=256
        Maps read at once.

    Returns
    -------
    ndarray
        ``(n_classes, n_voxels)`` float32; a row of zeros for a class with no map.
    """
    sums = np.zeros((n_classes, int(mask.sum())), dtype=np.float64)
    counts = np.zeros(n_classes)
    for start in range(0, len(rows), chunk):
        block = np.asarray(maps[rows[start : start + chunk]], dtype=np.float32)[:, mask]
        y = np.asarray(targets[start : start + chunk])
        np.add.at(sums, y, block)
        counts += np.bincount(y, minlength=n_classes)
    present = counts > 0
    out = np.zeros(sums.shape, dtype=np.float32)
    out[present] = _unit_rows(sums[present] / counts[present, None])
    return out


def typicality(
    maps: NDArray[np.floating], mask: NDArray[np.bool_], prototypes: NDArray[np.floating]
) -> NDArray[np.float32]:
    """Spatial correlation of every map with every prototype, inside ``mask``.

    Parameters
    ----------
    maps : ndarray
        ``(N, 45, 54, 45)`` maps, raw or normalised (correlation ignores scale).
    mask : ndarray of bool
        ``(45, 54, 45)`` the prototypes' mask.
    prototypes : ndarray
        ``(C, n_voxels)`` from :func:`class_prototypes`.

    Returns
    -------
    ndarray
        ``(N, C)`` float32 correlations.
    """
    x = _unit_rows(np.asarray(maps, dtype=np.float32).reshape(len(maps), -1)[:, mask.reshape(-1)])
    return x @ np.asarray(prototypes, dtype=np.float32).T


def atypical_threshold(
    similarity: NDArray[np.floating],
    probs: NDArray[np.floating],
    labels: NDArray[np.integer],
    classes: list[str],
    keep: float = 0.995,
    noise_quantile: float = 0.99,
) -> float:
    """The floor of the typicality gate: halfway between what right network maps and noise maps reach.

    Parameters
    ----------
    similarity : ndarray
        ``(N, C)`` :func:`typicality` of the validation maps.
    probs : ndarray
        ``(N, C)`` their class probabilities (or logits).
    labels : ndarray of int
        ``(N,)`` their true class indices.
    classes : list of str
        The class labels.
    keep : float, default=0.995
        Share of the correctly classified network maps whose typicality for
        their label is the upper end (``net``).
    noise_quantile : float, default=0.99
        Quantile of the noise maps' best typicality with a network prototype
        that is the lower end (``noise``).

    Returns
    -------
    float
        ``(net + noise) / 2``, or ``net`` when the noise maps reach it (the two
        overlap) or there is no Noise map; 0 (no gate) when no network map was
        classified right.
    """
    sim = np.asarray(similarity)
    labels = np.asarray(labels)
    pred = np.asarray(probs).argmax(1)
    network = np.array([c not in (NOISE, UNKNOWN) for c in classes])
    right = (pred == labels) & network[pred]
    if not right.any():
        return 0.0
    net = float(np.quantile(sim[np.arange(len(pred)), pred][right], 1.0 - keep))
    noise_rows = np.isin(labels, [i for i, c in enumerate(classes) if c == NOISE])
    if not noise_rows.any():
        return net
    noise = float(np.quantile(sim[noise_rows][:, network].max(axis=1), noise_quantile))
    return min(net, (net + noise) / 2)


def save_prototypes(
    path: str | Path, mask: NDArray[np.bool_], prototypes: NDArray[np.floating], classes: list[str]
) -> Path:
    """Write ``prototypes.npz`` atomically (float16 prototypes).

    Parameters
    ----------
    path : str or Path
        The file.
    mask : ndarray of bool
        ``(45, 54, 45)`` mask.
    prototypes : ndarray
        ``(C, n_voxels)`` prototypes inside it.
    classes : list of str
        The class labels, in the prototypes' order.

    Returns
    -------
    Path
        ``path``.
    """
    p = Path(path)
    with atomic_path(p) as tmp, tmp.open("wb") as f:
        np.savez_compressed(
            f, mask=np.asarray(mask, bool), prototypes=np.asarray(prototypes, np.float16),
            classes=np.asarray(classes),
        )  # fmt: skip
    return p


def load_prototypes(path: str | Path) -> tuple[NDArray[np.bool_], NDArray[np.float32], list[str]]:
    """Read ``prototypes.npz``: the mask, the prototypes (float32) and the class labels.

    Parameters
    ----------
    path : str or Path
        The file.

    Returns
    -------
    mask : ndarray of bool
        ``(45, 54, 45)``.
    prototypes : ndarray
        ``(C, n_voxels)`` float32.
    classes : list of str
        The class labels.

    Raises
    ------
    InvalidInputError
        The file cannot be read or its arrays do not agree.
    """
    p = Path(path)
    try:
        with np.load(p, allow_pickle=False) as z:
            mask, protos, classes = (
                z["mask"],
                z["prototypes"].astype(np.float32),
                [str(c) for c in z["classes"]],
            )
    except Exception as exc:  # numpy raises several types for a damaged file
        raise InvalidInputError(p, f"not a readable prototypes file ({exc})") from exc
    if protos.shape != (len(classes), int(mask.sum())):
        raise InvalidInputError(p, f"prototypes of shape {protos.shape} for {len(classes)} classes and "
                                f"a mask of {int(mask.sum())} voxels")  # fmt: skip
    return mask.astype(bool), protos, classes

"""Whole networks: training maps of a network that a decomposition did not split.

At order 100 group ICA splits most networks into sub-networks, and the
taxonomy's labels are those sub-networks. A cohort decomposed at a lower order,
or one whose sub-networks move together, gives one component for a whole
network (the Default mode network as one map), which a classifier trained only
on split components has never seen: it calls it Noise. These maps are one
subject's maps of two or more sub-networks of one network, summed with random
weights and z-scored again inside the mask, labelled with one of those
sub-networks at random (so the network, the sum of its labels' probabilities,
is what is learned, not a sub-label).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from numpy.typing import NDArray
from torch.utils.data import Dataset

from rsnflow.atlas import load_taxonomy
from rsnflow.dataset.views import rgb_projections

__all__ = ["WholeNetworkDataset", "whole_network_recipes"]


def whole_network_recipes(
    index: pd.DataFrame, classes: list[str], n: int, seed: int = 0
) -> list[tuple[NDArray[np.int64], NDArray[np.float64], int]]:
    """``n`` recipes: the rows summed, their weights and the label, from one split's index.

    Parameters
    ----------
    index : pandas.DataFrame
        The split's rows of ``index.tsv`` (``subject``, ``sample``, ``class_index``).
    classes : list of str
        The dataset's class labels.
    n : int
        Number of recipes.
    seed : int, default=0
        Seed.

    Returns
    -------
    list of tuple
        ``(rows, weights, class_index)`` per map; empty when no subject has two
        sub-networks of one network.
    """
    tax = load_taxonomy()
    known = set(tax.network_labels)
    parent = {i: tax.parent(c) for i, c in enumerate(classes) if c in known}
    frame = index[index["class_index"].isin(list(parent))].assign(
        network=lambda f: f["class_index"].map(parent)
    )
    groups = [
        g[["sample", "class_index"]].drop_duplicates("class_index").to_numpy()
        for _, g in frame.groupby(["subject", "network"])
        if g["class_index"].nunique() >= 2
    ]
    if not groups:
        return []
    rng = np.random.default_rng([seed, 104_729])
    recipes = []
    for _ in range(n):
        g = groups[int(rng.integers(len(groups)))]
        k = int(rng.integers(2, len(g) + 1))
        pick = g[rng.choice(len(g), k, replace=False)]
        recipes.append((pick[:, 0].astype(np.int64), rng.uniform(0.5, 1.0, k), int(rng.choice(pick[:, 1]))))
    return recipes


class WholeNetworkDataset(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Whole-network maps made from a dataset's maps, in the view of a :class:`MapDataset`.

    Parameters
    ----------
    dataset_dir : str or Path
        The dataset (its ``maps.npy`` is memory-mapped on first access, per worker).
    index : pandas.DataFrame
        The training split's rows of ``index.tsv``.
    classes : list of str
        The dataset's class labels.
    mask : ndarray of bool
        ``(45, 54, 45)`` the dataset's mask.
    n : int
        Number of maps.
    seed : int, default=0
        Seed of the recipes.
    view : {"volume", "projection"}, default="volume"
        As :class:`~rsnflow.dataset.reader.MapDataset`.
    projection_size : int, default=64
        Side of the projection images.
    """

    def __init__(
        self,
        dataset_dir: str | Path,
        index: pd.DataFrame,
        classes: list[str],
        mask: NDArray[np.bool_],
        n: int,
        seed: int = 0,
        view: str = "volume",
        projection_size: int = 64,
    ) -> None:
        self.root = Path(dataset_dir)
        self._maps: Any = None
        self.mask = np.asarray(mask, bool)
        self.recipes = whole_network_recipes(index, classes, n, seed)
        self.view = view
        self.projection_size = projection_size

    def __len__(self) -> int:
        return len(self.recipes)

    @property
    def targets(self) -> torch.Tensor:
        return torch.tensor([label for _, _, label in self.recipes], dtype=torch.long)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_maps"] = None  # workers open their own memory map
        return state

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self._maps is None:
            self._maps = np.load(self.root / "maps.npy", mmap_mode="r")
        rows, weights, label = self.recipes[i]
        inside = np.asarray(self._maps[rows], dtype=np.float32)[:, self.mask].T @ weights.astype(np.float32)
        vol = np.zeros(self.mask.shape, np.float32)
        vol[self.mask] = (inside - inside.mean()) / max(float(inside.std()), 1e-6)
        x = torch.from_numpy(vol)
        x = rgb_projections(x, self.projection_size) if self.view == "projection" else x.unsqueeze(0)
        return x, torch.tensor(label)

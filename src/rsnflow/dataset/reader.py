"""Streaming the stored dataset into torch: a memory map read by DataLoader workers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from rsnflow.dataset.views import rgb_projections

__all__ = ["MapDataset", "View", "load_manifest", "make_loader"]

View = Literal["volume", "projection"]


def load_manifest(dataset_dir: str | Path) -> dict[str, Any]:
    """The manifest of a dataset built by :func:`rsnflow.dataset.build_dataset`.

    Parameters
    ----------
    dataset_dir : str or pathlib.Path
        The dataset folder.

    Returns
    -------
    dict
        The parsed ``manifest.json``.

    Raises
    ------
    InvalidInputError
        ``manifest.json`` is missing.
    """
    from rsnflow.io import InvalidInputError

    path = Path(dataset_dir) / "manifest.json"
    if not path.exists():
        raise InvalidInputError(path, "missing: not an rsnflow dataset (run `rsnflow dataset` first)")
    return json.loads(path.read_text())


class MapDataset(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Subject component maps of one split, read lazily from ``maps.npy``.

    Parameters
    ----------
    dataset_dir
        A directory written by :func:`rsnflow.dataset.build_dataset`.
    split
        ``train``, ``val``, ``test`` or ``all``.
    view
        ``volume``: ``(1, 45, 54, 45)`` float32 (the MLP flattens it, r3d_18
        takes it as is); ``projection``: ``(3, S, S)`` RGB sum projections.

    Notes
    -----
    The memory map is opened on first access in each worker process, so the
    dataset pickles cheaply and no worker holds the whole array.
    """

    def __init__(self, dataset_dir: str | Path, split: str = "train", view: View = "volume") -> None:
        self.root = Path(dataset_dir)
        self.manifest = load_manifest(self.root)
        index = pd.read_csv(self.root / "index.tsv", sep="\t", dtype={"subject": str})
        self.index = index if split == "all" else index[index["split"] == split].reset_index(drop=True)
        if self.index.empty:
            raise ValueError(f"{self.root}: the {split!r} split is empty")
        self.view = view
        self.projection_size = int(self.manifest["projection_size"])
        self._rows = self.index["sample"].to_numpy()
        self._targets = torch.as_tensor(self.index["class_index"].to_numpy(), dtype=torch.long)
        self._maps: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self._rows)

    @property
    def targets(self) -> torch.Tensor:
        return self._targets

    def _array(self) -> np.ndarray:
        if self._maps is None:
            self._maps = np.load(self.root / "maps.npy", mmap_mode="r")
        return self._maps

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_maps"] = None
        return state

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        vol = torch.from_numpy(np.asarray(self._array()[self._rows[i]], dtype=np.float32))
        x = rgb_projections(vol, self.projection_size) if self.view == "projection" else vol.unsqueeze(0)
        return x, self._targets[i]


def make_loader(
    dataset: MapDataset, batch_size: int, shuffle: bool = False, num_workers: int = 0, seed: int = 0
) -> DataLoader[tuple[torch.Tensor, torch.Tensor]]:
    """A DataLoader over ``dataset`` whose shuffle order depends only on ``seed``.

    Parameters
    ----------
    dataset : MapDataset
        The samples to load.
    batch_size : int
        Samples per batch.
    shuffle : bool, default=False
        Reshuffle the samples at every epoch.
    num_workers : int, default=0
        Worker processes (0: load in the main process); workers persist across epochs.
    seed : int, default=0
        Seed of the loader's random generator (shuffle order).

    Returns
    -------
    torch.utils.data.DataLoader
        Yields ``(maps, class_index)`` batches; memory is pinned when CUDA is available.
    """
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=num_workers,
        generator=generator,
        persistent_workers=num_workers > 0,
        pin_memory=torch.cuda.is_available(),
    )

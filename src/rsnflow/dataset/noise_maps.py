"""Synthetic maps of nothing: training examples of ``Noise`` that no simulator's noise model limits.

A classifier learns ``Noise`` from the noise components of its training
decomposition, which are as varied as the simulator (or the cohort) that made
them. A cohort from elsewhere has other noise (thermal noise that ICA splits
into many "nothing" components at high order, other physiology, other
artefacts) and the classifier, never shown such maps, calls them networks.
These maps widen what ``Noise`` means, in the normalised space the dataset
stores maps in (z-scored inside the group mask), with the spatial patterns
noise components take whatever their source:

- ``thermal``: white noise smoothed by the preprocessing's kernel (FWHM 5-10 mm),
  the "nothing" components of a high model order;
- ``field``: smooth random fields (FWHM 15-40 mm), drifts and global signal;
- ``rim``: a random field on the mask's outer shell, head motion;
- ``slices``: a few planes of one axis, slice-wise and interleave artefacts;
- ``blobs``: one to four compact sources away from every network node of the
  taxonomy (vessels, CSF, white matter), so no network is taught as noise.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from scipy import ndimage
from torch.utils.data import Dataset

from rsnflow.atlas import load_taxonomy
from rsnflow.dataset.views import rgb_projections
from rsnflow.space import MNI4_AFFINE

__all__ = ["KINDS", "NoiseMapDataset", "blob_pool", "noise_map"]

#: The kinds of synthetic noise maps, drawn in turn.
KINDS = ("thermal", "field", "rim", "slices", "blobs")
_VOXEL_MM = 4.0
#: Blob centres are kept this far (mm) from every taxonomy node.
_NODE_CLEARANCE_MM = 18.0


def _sigma(fwhm_mm: float) -> float:
    return fwhm_mm / (2 * np.sqrt(2 * np.log(2))) / _VOXEL_MM


def blob_pool(mask: NDArray[np.bool_]) -> NDArray[np.int64]:
    """Voxels of ``mask`` (``(n, 3)`` indices) at least 18 mm from every network node of the taxonomy.

    Parameters
    ----------
    mask : ndarray of bool
        ``(45, 54, 45)`` group mask.

    Returns
    -------
    ndarray
        ``(n, 3)`` voxel indices; all of the mask's when none is that far.
    """
    tax = load_taxonomy()
    nodes = np.concatenate([tax.nodes(lab) for lab in tax.network_labels])
    ijk = np.argwhere(mask)
    xyz = ijk @ MNI4_AFFINE[:3, :3].T + MNI4_AFFINE[:3, 3]
    # the nearest node per mask voxel, in chunks (29k x 200 distances)
    far = np.ones(len(ijk), bool)
    for start in range(0, len(ijk), 4096):
        d = np.linalg.norm(xyz[start : start + 4096, None] - nodes[None], axis=-1).min(1)
        far[start : start + 4096] = d > _NODE_CLEARANCE_MM
    return ijk[far] if far.any() else ijk


def noise_map(
    kind: str, mask: NDArray[np.bool_], rng: np.random.Generator, pool: NDArray[np.int64] | None = None
) -> NDArray[np.float32]:
    """One synthetic noise map of ``kind``, z-scored inside ``mask`` and 0 outside.

    Parameters
    ----------
    kind : str
        One of :data:`KINDS`.
    mask : ndarray of bool
        ``(45, 54, 45)`` group mask.
    rng : numpy.random.Generator
        The source of randomness.
    pool : ndarray or None, default=None
        Where ``blobs`` may be centred (:func:`blob_pool` of ``mask``; computed when None).

    Returns
    -------
    ndarray
        ``(45, 54, 45)`` float32 map.

    Raises
    ------
    ValueError
        For an unknown ``kind``.
    """
    shape = mask.shape
    if kind == "thermal":
        m = ndimage.gaussian_filter(rng.normal(size=shape), _sigma(rng.uniform(5, 10)))
    elif kind == "field":
        m = ndimage.gaussian_filter(rng.normal(size=shape), _sigma(rng.uniform(15, 40)))
    elif kind == "rim":
        depth = ndimage.distance_transform_edt(mask) * _VOXEL_MM
        shell = np.exp(-(depth**2) / (2 * rng.uniform(3, 8) ** 2)) * mask
        field = ndimage.gaussian_filter(rng.normal(size=shape), _sigma(rng.uniform(20, 40)))
        # a whole ring, or parts of one of either sign (motion along one axis)
        m = shell * (rng.uniform(0, 1.5) + field / field.std())
    elif kind == "slices":
        axis = int(rng.integers(3))
        profile = np.zeros(shape[axis])
        step = int(rng.integers(2, 6))
        planes = slice(int(rng.integers(step)), None, step)
        profile[planes] = rng.normal(size=len(profile[planes]))
        m = np.moveaxis(np.broadcast_to(profile, (*np.delete(shape, axis), shape[axis])), -1, axis)
        m = m + 0.3 * ndimage.gaussian_filter(rng.normal(size=shape), _sigma(8))
    elif kind == "blobs":
        m = np.zeros(shape)
        pool = blob_pool(mask) if pool is None else pool
        for centre in pool[rng.integers(len(pool), size=int(rng.integers(1, 5)))].astype(float):
            d2 = ((np.indices(shape).T - centre) ** 2).T.sum(0) * _VOXEL_MM**2
            m += rng.choice([-1.0, 1.0]) * rng.uniform(0.5, 1) * np.exp(-d2 / (2 * rng.uniform(4, 10) ** 2))
        m = m + 0.1 * ndimage.gaussian_filter(rng.normal(size=shape), _sigma(8))
    else:
        raise ValueError(f"unknown noise map kind {kind!r}; choose one of {', '.join(KINDS)}")
    inside = np.asarray(m, dtype=np.float64)[mask]
    out = np.zeros(shape, np.float32)
    out[mask] = (inside - inside.mean()) / max(float(inside.std()), 1e-6)
    return out


class NoiseMapDataset(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """``n`` synthetic noise maps labelled ``noise_index``, in the view of a :class:`MapDataset`.

    The maps depend only on ``seed`` and are made once, on first access, and kept
    inside the mask as float16 (``n`` x mask voxels x 2 bytes).

    Parameters
    ----------
    mask : ndarray of bool
        ``(45, 54, 45)`` group mask of the dataset.
    n : int
        Number of maps.
    noise_index : int
        The class index of ``Noise``.
    seed : int, default=0
        Seed of the maps.
    view : {"volume", "projection"}, default="volume"
        As :class:`~rsnflow.dataset.reader.MapDataset`.
    projection_size : int, default=64
        Side of the projection images.
    """

    def __init__(
        self,
        mask: NDArray[np.bool_],
        n: int,
        noise_index: int,
        seed: int = 0,
        view: str = "volume",
        projection_size: int = 64,
    ) -> None:
        self.mask = np.asarray(mask, bool)
        self.n = int(n)
        self.noise_index = int(noise_index)
        self.seed = seed
        self.view = view
        self.projection_size = projection_size
        self._maps: NDArray[np.float16] | None = None

    def __len__(self) -> int:
        return self.n

    @property
    def targets(self) -> torch.Tensor:
        return torch.full((self.n,), self.noise_index, dtype=torch.long)

    def _all(self) -> NDArray[np.float16]:
        if self._maps is None:
            rngs = [np.random.default_rng([self.seed, 7_919, i]) for i in range(self.n)]
            pool = blob_pool(self.mask)
            self._maps = np.stack(
                [noise_map(KINDS[i % len(KINDS)], self.mask, r, pool)[self.mask] for i, r in enumerate(rngs)]
            ).astype(np.float16)
        return self._maps

    def __getitem__(self, i: int) -> tuple[torch.Tensor, Any]:
        vol = np.zeros(self.mask.shape, np.float32)
        vol[self.mask] = self._all()[i]
        x = torch.from_numpy(vol)
        x = rgb_projections(x, self.projection_size) if self.view == "projection" else x.unsqueeze(0)
        return x, torch.tensor(self.noise_index)

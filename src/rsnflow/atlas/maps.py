"""Spatial maps of the taxonomy: Gaussian nodes confined to grey matter."""

from __future__ import annotations

import functools

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["node_map", "reference_maps"]


def node_map(points_mm: ArrayLike, nodes_mm: ArrayLike, sigma_mm: float | ArrayLike) -> NDArray[np.float32]:
    """Sum of isotropic Gaussians centred on ``nodes_mm`` evaluated at ``points_mm``.

    Parameters
    ----------
    points_mm
        ``(n_points, 3)`` world coordinates.
    nodes_mm
        ``(n_nodes, 3)`` node centres.
    sigma_mm
        Width of every node, or one width per node.

    Returns
    -------
    numpy.ndarray
        ``(n_points,)`` values, 1 at an isolated node centre.
    """
    pts = np.asarray(points_mm, dtype=np.float32)
    nodes = np.asarray(nodes_mm, dtype=np.float32).reshape(-1, 3)
    sig = np.broadcast_to(np.asarray(sigma_mm, dtype=np.float32), (len(nodes),))
    # |p - c|^2 for all nodes at once through one matrix product.
    d2 = np.einsum("ij,ij->i", pts, pts)[:, None] - 2.0 * (pts @ nodes.T)
    d2 += np.einsum("ij,ij->i", nodes, nodes)[None, :]
    np.maximum(d2, 0.0, out=d2)
    return np.exp(-d2 / (2.0 * sig * sig)).sum(axis=1, dtype=np.float32)


@functools.cache
def reference_maps() -> NDArray[np.float32]:
    """Reference maps of every taxonomy class on the MNI 4 mm grid.

    Returns
    -------
    numpy.ndarray
        ``(58, 45, 54, 45)``: for each network label the sum of Gaussians at
        its nodes times the grey-matter probability, scaled to a peak of 1;
        zeros for ``Noise`` and ``Unknown``.
    """
    from rsnflow.atlas.taxonomy import load_taxonomy
    from rsnflow.space import MNI4_SHAPE, load_tissue_probabilities, voxel_to_world

    tax = load_taxonomy()
    gm = load_tissue_probabilities()["gm"]
    inside = gm > 0
    ijk = np.argwhere(inside)
    xyz = voxel_to_world(ijk)
    maps = np.zeros((len(tax), *MNI4_SHAPE), dtype=np.float32)
    for k, label in enumerate(tax.labels):
        nodes = tax.nodes(label)
        if len(nodes) == 0:
            continue
        values = node_map(xyz, nodes, tax.extent(label)) * gm[inside]
        maps[k][inside] = values / max(float(values.max()), 1e-6)
    maps.setflags(write=False)
    return maps

"""Batched trilinear sampling of volumes at arbitrary voxel coordinates, in torch.

One function serves the simulator (head frame into native grids), motion
correction (every volume through its own pose) and the single resampling of a
run into the MNI grid: each is "sample these volumes at these voxel
coordinates", done with ``torch.nn.functional.grid_sample`` on whatever device
holds the tensors.
"""

from __future__ import annotations

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray

__all__ = ["affine_points", "grid_points", "pick_device", "sample", "volumes_first"]


#: The device names rsnflow accepts.
DEVICES = ("auto", "cpu", "cuda")


def check_device(device: object) -> None:
    """Raise ``ValueError`` unless ``device`` is one of :data:`DEVICES`."""
    if device not in DEVICES:
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")


def pick_device(device: str = "auto") -> torch.device:
    """``cuda`` when asked for or (``auto``) when present, else ``cpu``.

    Parameters
    ----------
    device : {"auto", "cpu", "cuda"}, default="auto"
        The requested device.

    Returns
    -------
    torch.device
        The device to compute on.

    Raises
    ------
    ValueError
        ``device`` is not one of :data:`DEVICES`.
    RuntimeError
        ``"cuda"`` was requested but torch sees no CUDA device.
    """
    check_device(device)
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but torch sees no CUDA device")
    return torch.device(device)


def grid_points(shape: tuple[int, ...]) -> NDArray[np.float64]:
    """Voxel coordinates ``(prod(shape), 3)`` of a grid, in C order.

    Parameters
    ----------
    shape : tuple of int
        Grid shape; only the first three axes are used (a 4D shape is fine).

    Returns
    -------
    ndarray of float64, shape (X * Y * Z, 3)
        ``(i, j, k)`` of every voxel, the last axis varying fastest.
    """
    return np.indices(shape[:3]).reshape(3, -1).T.astype(np.float64)


def affine_points(matrices: ArrayLike, points: ArrayLike) -> NDArray[np.float64]:
    """Apply one ``(4, 4)`` or a batch ``(B, 4, 4)`` of matrices to points ``(N, 3)``.

    Parameters
    ----------
    matrices : array-like, shape (4, 4) or (B, 4, 4)
        Affine matrices.
    points : array-like, shape (N, 3)
        Points, one per row.

    Returns
    -------
    ndarray of float64, shape (N, 3) or (B, N, 3)
        The points through each matrix.
    """
    m = np.asarray(matrices, dtype=np.float64)
    p = np.asarray(points, dtype=np.float64)
    return np.einsum("...ij,nj->...ni", m[..., :3, :3], p) + m[..., None, :3, 3]


def volumes_first(data: NDArray[np.generic], start: int, stop: int, device: torch.device) -> torch.Tensor:
    """Volumes ``start:stop`` of an ``(X, Y, Z, T)`` array as a ``(B, X, Y, Z)`` float32 tensor.

    Parameters
    ----------
    data : ndarray, shape (X, Y, Z, T)
        A 4D series, any numeric dtype.
    start, stop : int
        Volume range, as in a slice (``stop`` excluded).
    device : torch.device
        Where the tensor goes.

    Returns
    -------
    torch.Tensor of float32, shape (B, X, Y, Z)
        The volumes, ``B = stop - start`` (fewer when the range passes the end).
    """
    block = np.ascontiguousarray(np.moveaxis(data[..., start:stop], -1, 0), dtype=np.float32)
    return torch.from_numpy(block).to(device)


def sample(volumes: torch.Tensor, coords: torch.Tensor, fill: float = 0.0) -> torch.Tensor:
    """Trilinear samples of volumes at voxel coordinates.

    Parameters
    ----------
    volumes
        ``(X, Y, Z)`` one volume, ``(B, X, Y, Z)`` one volume per batch item,
        or ``(B, C, X, Y, Z)`` several channels sampled at the same points.
    coords
        ``(N, 3)`` or ``(B, N, 3)`` voxel coordinates (index space of ``volumes``).
    fill
        Value outside the volume.

    Returns
    -------
    torch.Tensor
        ``(N,)``, ``(B, N)`` or ``(B, C, N)`` matching the inputs.
    """
    vol = volumes
    squeeze_batch = vol.dim() == 3
    squeeze_channel = vol.dim() <= 4
    if vol.dim() == 3:
        vol = vol[None]
    if vol.dim() == 4:
        vol = vol[:, None]
    b = vol.shape[0]
    pts = coords if coords.dim() == 3 else coords[None].expand(b, -1, -1)
    size = torch.tensor(vol.shape[2:], dtype=pts.dtype, device=pts.device)
    # grid_sample wants (x, y, z) = (W, H, D) order in [-1, 1] (align_corners).
    norm = (2.0 * pts / (size - 1.0) - 1.0).flip(-1).to(vol.dtype)
    grid = norm.reshape(b, 1, 1, -1, 3)
    if fill != 0.0:
        vol = vol - fill
    out = torch.nn.functional.grid_sample(
        vol, grid, mode="bilinear", padding_mode="zeros", align_corners=True
    )
    out = out.reshape(b, vol.shape[1], -1)
    if fill != 0.0:
        out = out + fill
    if squeeze_channel:
        out = out[:, 0]
    if squeeze_batch:
        out = out[0]
    return out

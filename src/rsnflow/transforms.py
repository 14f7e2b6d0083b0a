"""Rigid and affine transforms in world (mm) coordinates, and head-motion summaries.

Convention for the 6 rigid parameters used everywhere in rsnflow (simulator
ground truth, motion estimates, confounds TSV): ``[trans_x, trans_y, trans_z,
rot_x, rot_y, rot_z]``, translations in mm and rotations in radians. The
matrix is ``x -> R (x - c) + c + t`` with ``R = Rz @ Ry @ Rx`` (rotation about x
first), each a right-handed rotation, and ``c`` the rotation centre (the
centre of the volume's field of view). Column names follow fMRIPrep's confounds
(``trans_x`` ... ``rot_z``); MCFLIRT's ``.par`` files hold the same six
quantities as ``rot_x rot_y rot_z trans_x trans_y trans_z``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike, NDArray

if TYPE_CHECKING:
    import torch

__all__ = [
    "MOTION_COLUMNS",
    "apply_affine",
    "framewise_displacement",
    "rigid_matrix",
    "rigid_params",
    "rotations_torch",
]

MOTION_COLUMNS = ("trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z")


def rigid_matrix(params: ArrayLike, centre: ArrayLike = (0.0, 0.0, 0.0)) -> NDArray[np.float64]:
    """4x4 matrices of rigid parameters ``(..., 6)`` about ``centre`` (mm).

    Parameters
    ----------
    params : array-like, shape (..., 6)
        ``[trans_x, trans_y, trans_z, rot_x, rot_y, rot_z]``: mm and radians.
    centre : array-like, shape (3,), default=(0, 0, 0)
        Rotation centre ``c`` in mm.

    Returns
    -------
    ndarray, shape (..., 4, 4)
        The matrices of ``x -> R (x - c) + c + t`` with ``R = Rz @ Ry @ Rx``.
    """
    p = np.asarray(params, dtype=float)
    t, (ax, ay, az) = p[..., :3], np.moveaxis(p[..., 3:], -1, 0)
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    one, zero = np.ones_like(ax), np.zeros_like(ax)
    rx = np.stack([one, zero, zero, zero, cx, -sx, zero, sx, cx], -1).reshape(*ax.shape, 3, 3)
    ry = np.stack([cy, zero, sy, zero, one, zero, -sy, zero, cy], -1).reshape(*ax.shape, 3, 3)
    rz = np.stack([cz, -sz, zero, sz, cz, zero, zero, zero, one], -1).reshape(*ax.shape, 3, 3)
    r = rz @ ry @ rx
    c = np.asarray(centre, dtype=float)
    out = np.zeros((*ax.shape, 4, 4))
    out[..., :3, :3] = r
    out[..., :3, 3] = c - r @ c + t
    out[..., 3, 3] = 1.0
    return out


def rigid_params(matrix: ArrayLike, centre: ArrayLike = (0.0, 0.0, 0.0)) -> NDArray[np.float64]:
    """Inverse of :func:`rigid_matrix`: the 6 parameters of rigid 4x4 matrices.

    Parameters
    ----------
    matrix : array-like, shape (..., 4, 4)
        Rigid matrices (rotation and translation only).
    centre : array-like, shape (3,), default=(0, 0, 0)
        Rotation centre in mm, the one the matrices were built about.

    Returns
    -------
    ndarray, shape (..., 6)
        ``[trans_x, trans_y, trans_z, rot_x, rot_y, rot_z]`` in mm and radians,
        ``rot_y`` in ``[-pi/2, pi/2]``.
    """
    m = np.asarray(matrix, dtype=float)
    r = m[..., :3, :3]
    ry = np.arcsin(np.clip(-r[..., 2, 0], -1.0, 1.0))
    rx = np.arctan2(r[..., 2, 1], r[..., 2, 2])
    rz = np.arctan2(r[..., 1, 0], r[..., 0, 0])
    c = np.asarray(centre, dtype=float)
    t = m[..., :3, 3] - c + r @ c
    return np.concatenate([t, np.stack([rx, ry, rz], -1)], -1)


def apply_affine(matrix: ArrayLike, points: ArrayLike) -> NDArray[np.float64]:
    """Apply a 4x4 matrix to points ``(..., 3)``.

    Parameters
    ----------
    matrix : array-like, shape (4, 4)
        One affine matrix (not a batch).
    points : array-like, shape (..., 3)
        Points, one per row.

    Returns
    -------
    ndarray, shape (..., 3)
        The transformed points.
    """
    m = np.asarray(matrix, dtype=float)
    p = np.asarray(points, dtype=float)
    return p @ m[:3, :3].T + m[:3, 3]


def framewise_displacement(params: ArrayLike, radius_mm: float = 50.0) -> NDArray[np.float64]:
    """Power et al. (2012) framewise displacement of ``(n_volumes, 6)`` parameters.

    Sum of absolute backward differences of the translations and of the
    rotations converted to arc length on a sphere of ``radius_mm``; 0 for the
    first volume.

    Parameters
    ----------
    params : array-like, shape (n_volumes, 6)
        Rigid parameters per volume, translations in mm and rotations in radians.
    radius_mm : float, default=50.0
        Radius of the sphere that turns rotations into displacements, in mm.

    Returns
    -------
    ndarray, shape (n_volumes,)
        Framewise displacement in mm.
    """
    p = np.asarray(params, dtype=float)
    d = np.abs(np.diff(p, axis=0))
    fd = d[:, :3].sum(1) + radius_mm * d[:, 3:].sum(1)
    return np.concatenate([[0.0], fd])


def rotations_torch(theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Torch twin of the rotation in :func:`rigid_matrix`, for batched optimisation.

    ``theta`` ``(B, 3)`` -> ``R = Rz Ry Rx`` ``(B, 3, 3)`` and ``dR/dtheta`` ``(B, 3, 3, 3)``
    (axis 1: the angle).

    Parameters
    ----------
    theta : torch.Tensor, shape (B, 3)
        ``[rot_x, rot_y, rot_z]`` in radians.

    Returns
    -------
    r : torch.Tensor, shape (B, 3, 3)
        The rotation matrices.
    d : torch.Tensor, shape (B, 3, 3, 3)
        Their derivatives: ``d[:, k]`` is ``dR / dtheta[:, k]``.
    """
    import torch

    cx, cy, cz = torch.cos(theta).unbind(-1)
    sx, sy, sz = torch.sin(theta).unbind(-1)
    o, z = torch.ones_like(cx), torch.zeros_like(cx)

    def mat(*rows: torch.Tensor) -> torch.Tensor:
        return torch.stack(rows, -1).reshape(*cx.shape, 3, 3)

    rx = mat(o, z, z, z, cx, -sx, z, sx, cx)
    ry = mat(cy, z, sy, z, o, z, -sy, z, cy)
    rz = mat(cz, -sz, z, sz, cz, z, z, z, o)
    drx = mat(z, z, z, z, -sx, -cx, z, cx, -sx)
    dry = mat(-sy, z, cy, z, z, z, -cy, z, -sy)
    drz = mat(-sz, -cz, z, cz, -sz, z, z, z, z)
    r = rz @ ry @ rx
    d = torch.stack([rz @ ry @ drx, rz @ dry @ rx, drz @ ry @ rx], dim=1)
    return r, d

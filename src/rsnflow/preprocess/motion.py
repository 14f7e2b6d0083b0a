"""Head-motion correction: rigid registration of every volume to a reference, batched in torch.

All volumes of a chunk are optimised together by Gauss-Newton on the least
squares difference to the reference (EPI to EPI, after a global intensity
normalisation per volume), coarse to fine: a smoothed, subsampled pass, then
a lightly smoothed pass on every masked voxel. The Jacobian is analytic: the
image gradient sampled at the moved points times the derivative of the moved
points with respect to the six parameters.

Parameters follow :mod:`rsnflow.transforms`: ``T_t`` maps the reference frame
onto volume ``t`` (``I_t(T_t y) ~ I_ref(y)``), i.e. the head pose of volume
``t`` relative to the reference, rotations about the centre of the field of view.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import NDArray
from scipy import ndimage

from rsnflow.log import get_logger, progress
from rsnflow.resample import affine_points, grid_points, sample, volumes_first
from rsnflow.transforms import rigid_matrix, rigid_params, rotations_torch

__all__ = ["CHUNK_VOXELS", "MotionEstimate", "estimate_motion", "fov_centre"]

log = get_logger(__name__)

#: Voxels x volumes optimised together: 48 volumes of a 64x64x33 run. A larger grid gets fewer
#: volumes per chunk, so the chunk's images, gradients and Jacobian stay a few hundred MB
#: (8 volumes of a 104x104x72 multiband run) however large the run.
CHUNK_VOXELS = 48 * 64 * 64 * 33

#: (Gaussian sigma in mm, voxel stride, Gauss-Newton iterations) per level, coarse to fine.
LEVELS: tuple[tuple[float, int, int], ...] = ((4.0, 2, 8), (1.5, 1, 3))


@dataclass(frozen=True)
class MotionEstimate:
    """Result of :func:`estimate_motion`.

    Attributes
    ----------
    params
        ``(T, 6)`` pose of every volume relative to the reference.
    reference_index
        The reference volume, or -1 for the mean volume.
    centre
        Rotation centre (world mm).
    cost
        ``(T,)`` final root-mean-square intensity residual (normalised units).
    """

    params: NDArray[np.float64]
    reference_index: int
    centre: NDArray[np.float64]
    cost: NDArray[np.float64]

    def matrices(self) -> NDArray[np.float64]:
        """``(T, 4, 4)`` world-mm matrices ``T_t``.

        Returns
        -------
        numpy.ndarray
            ``(T, 4, 4)`` rigid matrices mapping the reference frame onto each volume, rotating about
            :attr:`centre`.
        """
        return rigid_matrix(self.params, self.centre)


def fov_centre(shape: tuple[int, ...], affine: NDArray[np.float64]) -> NDArray[np.float64]:
    """World coordinates of the centre of a grid.

    Parameters
    ----------
    shape : tuple of int
        Shape of the image; only the first three axes are used.
    affine : numpy.ndarray
        ``(4, 4)`` voxel-to-world affine.

    Returns
    -------
    numpy.ndarray
        ``(3,)`` world coordinates (mm) of voxel ``(shape - 1) / 2``.
    """
    c = (np.asarray(shape[:3], dtype=float) - 1) / 2
    return affine[:3, :3] @ c + affine[:3, 3]


def _default_chunk(shape: tuple[int, ...]) -> int:
    """Volumes per chunk: :data:`CHUNK_VOXELS` over the voxels of one volume, between 4 and 48."""
    return int(np.clip(CHUNK_VOXELS // int(np.prod(shape[:3])), 4, 48))


def _smooth(data: NDArray[np.float32], sigma_mm: float, voxel: NDArray[np.float64]) -> NDArray[np.float32]:
    sig = [sigma_mm / v for v in voxel] + [0.0] * (data.ndim - 3)
    return ndimage.gaussian_filter(data, sig, mode="nearest").astype(np.float32)


def _reference_mask(ref: NDArray[np.float32]) -> NDArray[np.bool_]:
    # Brain and its edge (where motion shows) but not the empty background.
    thr = 0.15 * float(np.percentile(ref, 99))
    return ndimage.binary_dilation(ref > thr, iterations=2)


def _align(
    moving: NDArray[np.generic],
    reference: NDArray[np.float32],
    affine: NDArray[np.float64],
    centre: NDArray[np.float64],
    init: NDArray[np.float64],
    device: torch.device,
    chunk: int,
    show: bool,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    voxel = np.sqrt((affine[:3, :3] ** 2).sum(0))
    inv = np.linalg.inv(affine)
    n = moving.shape[-1]
    params = init.copy()
    cost = np.zeros(n)
    for sigma_mm, stride, n_iter in LEVELS:
        ref = _smooth(reference, sigma_mm, voxel)
        mask = _reference_mask(ref)
        sub = np.zeros_like(mask)
        sub[::stride, ::stride, ::stride] = True
        ijk = grid_points(ref.shape)[(mask & sub).reshape(-1)]
        world = ijk @ affine[:3, :3].T + affine[:3, 3]
        ref_vals = ref[(mask & sub)]
        y = torch.from_numpy(world - centre).to(device, torch.float32)
        c = torch.from_numpy(centre).to(device, torch.float64)
        inv3 = torch.from_numpy(inv[:3, :3]).to(device, torch.float64)
        inv_shift = torch.from_numpy(inv[:3, 3]).to(device, torch.float64)
        r0 = torch.from_numpy(ref_vals / ref_vals.mean()).to(device, torch.float32)
        starts = range(0, n, chunk)
        bar = progress(starts, f"motion {sigma_mm:g} mm", total=len(starts), unit="chunk")
        for start in bar if show else starts:
            stop = min(start + chunk, n)
            # Smoothed a chunk at a time (in space only: the same as smoothing the run), so a
            # multiband run is never copied whole in float32.
            block = _smooth(np.asarray(moving[..., start:stop], dtype=np.float32), sigma_mm, voxel)
            vol = volumes_first(block, 0, stop - start, device)
            grads = torch.gradient(vol, dim=(1, 2, 3))
            stack = torch.stack([vol, *grads], dim=1)  # (B, 4, X, Y, Z)
            p = torch.from_numpy(params[start:stop]).to(device, torch.float64)
            for _ in range(n_iter):
                rot, drot = rotations_torch(p[:, 3:])
                # Voxel of the moved point: inv3 (R y + c + t) + inv_shift, as one affine per volume.
                lin = (inv3 @ rot).float()
                off = ((c + p[:, :3]) @ inv3.T + inv_shift).float()
                vox = y @ lin.transpose(1, 2) + off[:, None, :]
                vals = sample(stack, vox)  # (B, 4, N)
                scale = vals[:, 0].mean(1, keepdim=True).clamp_min(1e-6)
                resid = vals[:, 0] / scale - r0
                g_mm = (vals[:, 1:] / scale[:, None]).transpose(1, 2) @ inv3.float()  # (B, N, 3)
                # d(moved)/d(angle_k) = dR_k y, so J_k = g_mm . (dR_k y): one product for the 3 angles.
                d_all = drot.float().permute(0, 2, 1, 3).reshape(-1, 3, 9)  # (B, j, k*3 + l)
                j_rot = ((g_mm @ d_all).reshape(*g_mm.shape[:2], 3, 3) * y[None, :, None, :]).sum(-1)
                jac = torch.cat([g_mm, j_rot], dim=2)  # (B, N, 6), float32
                hess = (jac.transpose(1, 2) @ jac).double()
                grad = (jac.transpose(1, 2) @ resid[..., None]).double()
                damp = 1e-6 * torch.diagonal(hess, dim1=1, dim2=2).mean(1)[:, None, None]
                step = torch.linalg.solve(hess + damp * torch.eye(6, dtype=hess.dtype, device=device), grad)
                p = p - step[..., 0]
                # Converged: every volume moved by < 1e-3 mm (rotations as arc at 50 mm).
                moved = torch.cat([step[:, :3, 0].abs(), 50.0 * step[:, 3:, 0].abs()], 1)
                if float(moved.max()) < 1e-3:
                    break
            params[start:stop] = p.cpu().numpy()
            cost[start:stop] = resid.pow(2).mean(1).sqrt().cpu().numpy()
    return params, cost


def estimate_motion(
    data: NDArray[np.generic],
    affine: NDArray[np.float64],
    reference: str = "middle",
    device: str | torch.device = "cpu",
    chunk: int | None = None,
    show_progress: bool = True,
) -> MotionEstimate:
    """Estimate the rigid head motion of every volume of a 4D run.

    Parameters
    ----------
    data
        ``(X, Y, Z, T)`` native BOLD run, in any real dtype (read in float32 a
        chunk at a time: an int16 run is never converted whole).
    affine
        Its voxel-to-world affine.
    reference
        ``"middle"`` (volume ``T // 2``, like MCFLIRT) or ``"mean"`` (align to
        the middle volume, then realign to the mean of the aligned run).
    device
        Torch device.
    chunk
        Volumes optimised together (memory vs speed); default :data:`CHUNK_VOXELS` over
        the volume's voxel count, between 4 and 48.
    show_progress
        Show a progress bar per chunk loop.

    Returns
    -------
    MotionEstimate
        Pose of every volume (translations mm, rotations rad) about the field-of-view centre.

    Raises
    ------
    ValueError
        ``reference`` is neither ``"middle"`` nor ``"mean"``.
    """
    if reference not in ("middle", "mean"):
        raise ValueError(f"reference must be 'middle' or 'mean', got {reference!r}")
    dev = torch.device(device)
    vols = np.asanyarray(data)
    n = vols.shape[-1]
    if chunk is None:
        chunk = _default_chunk(vols.shape)
    centre = fov_centre(vols.shape, affine)
    ref_index = n // 2
    zeros = np.zeros((n, 6))
    reference_volume = np.asarray(vols[..., ref_index], dtype=np.float32)
    params, cost = _align(vols, reference_volume, affine, centre, zeros, dev, chunk, show_progress)
    if reference == "mean":
        mean = apply_motion_mean(vols, affine, params, centre, dev)
        params, cost = _align(vols, mean, affine, centre, params, dev, chunk, show_progress)
        ref_index = -1
    worst_rot = np.rad2deg(np.abs(params[:, 3:]).max())
    log.debug("motion: max |trans| %.2f mm, max |rot| %.2f deg", np.abs(params[:, :3]).max(), worst_rot)
    return MotionEstimate(params, ref_index, centre, cost)


def apply_motion_mean(
    data: NDArray[np.generic],
    affine: NDArray[np.float64],
    params: NDArray[np.float64],
    centre: NDArray[np.float64],
    device: torch.device,
    chunk: int | None = None,
    max_volumes: int = 60,
) -> NDArray[np.float32]:
    """Mean of the run after undoing the motion (used only as an image, never as data).

    At most ``max_volumes`` evenly spaced volumes are averaged: enough for a
    reference image, at a fraction of the cost of resampling the whole run.
    ``chunk`` volumes are resampled together (default as :func:`estimate_motion`'s):
    their sample points are ``chunk x voxels x 3`` doubles.
    """
    if chunk is None:
        chunk = _default_chunk(data.shape)
    inv = np.linalg.inv(affine)
    ijk = grid_points(data.shape)
    picks = np.unique(
        np.linspace(0, data.shape[-1] - 1, min(max_volumes, data.shape[-1])).round().astype(int)
    )
    total = torch.zeros(len(ijk), device=device)
    for start in range(0, len(picks), chunk):
        idx = picks[start : start + chunk]
        mats = inv @ rigid_matrix(params[idx], centre) @ affine
        pts = torch.from_numpy(affine_points(mats, ijk)).to(device)
        vol = torch.from_numpy(np.ascontiguousarray(np.moveaxis(data[..., idx], -1, 0), dtype=np.float32))
        total += sample(vol.to(device), pts.float()).sum(0)
    return (total / len(picks)).reshape(data.shape[:3]).cpu().numpy()


def relative_to(
    params: NDArray[np.float64], ref: NDArray[np.float64], centre: NDArray[np.float64]
) -> NDArray[np.float64]:
    """Poses ``params`` re-expressed relative to the pose ``ref`` (``T_t R_ref^-1``)."""
    mats = rigid_matrix(params, centre) @ np.linalg.inv(rigid_matrix(ref, centre))
    return rigid_params(mats, centre)

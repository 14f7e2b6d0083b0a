"""Registration of the mean EPI to the MNI152 template: rigid, then 12-DOF affine.

As FLIRT does it: a cost that works across contrasts (the correlation ratio:
the EPI's variance left within bins of template intensity), initialised by
matching centres of mass, optimised by L-BFGS with the exact gradient (torch autograd through the
trilinear sampling) from coarse to fine
(smoothed images and an 8 mm point lattice, then 4 mm), first with 6, then 9,
then 12 degrees of freedom. Points of the template that fall outside the EPI's
field of view (a slab often misses the cerebellum) are left out of the cost.

The result maps MNI mm to the EPI's world mm (the reference frame of motion
correction), so that the run can be resampled once into the MNI grid by
composing it with each volume's motion.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import NDArray
from scipy import ndimage, optimize

from rsnflow.log import get_logger
from rsnflow.resample import affine_points, grid_points, sample
from rsnflow.space import MNI4_AFFINE, load_brain_mask, load_template
from rsnflow.transforms import rotations_torch

__all__ = ["AffineRegistration", "affine_from_params", "register_to_mni"]

log = get_logger(__name__)

#: Units of the 12 parameters so Powell sees steps of similar size:
#: translation (mm), rotation (1 degree), log-scale (1%), shear (0.01).
_UNITS = np.array([1.0, 1.0, 1.0, *([np.deg2rad(1.0)] * 3), 0.01, 0.01, 0.01, 0.01, 0.01, 0.01])
#: (degrees of freedom, EPI smoothing sigma mm, point stride on the 4 mm grid) per stage.
_STAGES = ((6, 6.0, 2), (9, 4.0, 2), (12, 3.0, 1), (12, 2.0, 1))
_N_BINS = 24


@dataclass(frozen=True)
class AffineRegistration:
    """Result of :func:`register_to_mni`.

    Attributes
    ----------
    mni_to_epi
        ``(4, 4)`` MNI mm -> EPI world mm.
    cost
        Final correlation-ratio cost (0 perfect, 1 no relation).
    params
        The 12 parameters (translation mm, rotation rad, log-scales, shears).
    """

    mni_to_epi: NDArray[np.float64]
    cost: float
    params: NDArray[np.float64]

    @property
    def scales(self) -> NDArray[np.float64]:
        """Scale factor along each axis (MNI mm per EPI mm; 1 is a brain of the template's size)."""
        return np.exp(self.params[6:9])

    @property
    def shears(self) -> NDArray[np.float64]:
        """The three shear parameters (0: none)."""
        return self.params[9:12]


def affine_from_params(
    p: NDArray[np.float64], centre_mni: NDArray[np.float64], centre_epi: NDArray[np.float64]
) -> NDArray[np.float64]:
    """``x_epi = R S H (x_mni - c_mni) + c_epi + t``: rotation, scales, shears.

    Parameters
    ----------
    p : numpy.ndarray
        The 12 parameters: translation ``t`` (mm), rotations (rad), log-scales, shears.
    centre_mni : numpy.ndarray
        ``(3,)`` centre ``c_mni`` in MNI mm.
    centre_epi : numpy.ndarray
        ``(3,)`` centre ``c_epi`` in EPI world mm.

    Returns
    -------
    numpy.ndarray
        ``(4, 4)`` matrix from MNI mm to EPI world mm.
    """
    with torch.no_grad():
        lin, off = _affine_torch(
            torch.from_numpy(np.asarray(p, dtype=np.float64)),
            torch.from_numpy(np.asarray(centre_mni, dtype=np.float64)),
            torch.from_numpy(np.asarray(centre_epi, dtype=np.float64)),
        )
    out = np.eye(4)
    out[:3, :3] = lin.numpy()
    out[:3, 3] = off.numpy()
    return out


def _centre_of_mass(img: NDArray[np.float32], affine: NDArray[np.float64]) -> NDArray[np.float64]:
    w = np.where(img > 0.2 * np.percentile(img, 99), img, 0)
    com = np.array(ndimage.center_of_mass(w))
    return affine[:3, :3] @ com + affine[:3, 3]


def _correlation_ratio(
    values: torch.Tensor, valid: torch.Tensor, bins: torch.Tensor, n_bins: int
) -> torch.Tensor:
    """FLIRT's cost: EPI variance left within bins of template intensity over total variance.

    Differentiable in ``values`` (the bins come from the fixed template).
    """
    w = valid.to(values.dtype)
    zeros = torch.zeros(n_bins, dtype=values.dtype, device=values.device)
    n = zeros.scatter_add(0, bins, w)
    s1 = zeros.scatter_add(0, bins, w * values)
    s2 = zeros.scatter_add(0, bins, w * values * values)
    total_n = n.sum().clamp_min(1.0)
    within = (s2 - s1 * s1 / n.clamp_min(1e-9)).sum()
    total = s2.sum() - s1.sum() ** 2 / total_n
    ratio = (within / total.clamp_min(1e-12)).clamp(0.0, 1.0)
    # Points that leave the EPI's field of view count as unexplained (cost 1):
    # otherwise moving the template out of the image would look like a perfect fit.
    overlap = n.sum() / float(len(values))
    return overlap * ratio + (1.0 - overlap)


def _affine_torch(
    p: torch.Tensor, c_mni: torch.Tensor, c_epi: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Linear part and offset of :func:`affine_from_params`, differentiable in ``p``."""
    rot, _ = rotations_torch(p[3:6][None])
    scale = torch.diag(torch.exp(p[6:9]))
    one, zero = torch.ones((), dtype=p.dtype), torch.zeros((), dtype=p.dtype)
    shear = torch.stack([one, p[9], p[10], zero, one, p[11], zero, zero, one]).reshape(3, 3)
    lin = rot[0] @ scale @ shear
    return lin, c_epi + p[:3] - lin @ c_mni


@dataclass(frozen=True)
class _Stage:
    """The cost of one coarse-to-fine stage: the first ``dof`` parameters free, the rest fixed."""

    dof: int
    fixed: NDArray[np.float64]
    world: torch.Tensor  # (N, 3) template points, MNI mm
    vol: torch.Tensor  # smoothed mean EPI
    bins: torch.Tensor  # template intensity bin of each point
    to_vox: torch.Tensor  # EPI world mm -> voxel (4, 4)
    c_mni: torch.Tensor
    c_epi: torch.Tensor

    def __call__(self, z: NDArray[np.float64]) -> tuple[float, NDArray[np.float64]]:
        dev = self.world.device
        zt = torch.tensor(z, dtype=torch.float64, device=dev, requires_grad=True)
        rest = torch.from_numpy(self.fixed[self.dof :] / _UNITS[self.dof :]).to(dev)
        p = torch.cat([zt, rest]) * torch.from_numpy(_UNITS).to(dev)
        lin, off = _affine_torch(p, self.c_mni, self.c_epi)
        m3, shift = self.to_vox[:3, :3], self.to_vox[:3, 3]
        vox = (self.world @ (m3 @ lin).T + (m3 @ off + shift)).float()
        size = torch.tensor(self.vol.shape, dtype=torch.float32, device=dev)
        valid = ((vox >= 0) & (vox <= size - 1)).all(-1)
        cost = _correlation_ratio(sample(self.vol, vox).double(), valid, self.bins, _N_BINS)
        cost.backward()
        grad = zt.grad
        if grad is None:  # cannot happen: zt requires grad and the cost depends on it
            raise RuntimeError("registration cost has no gradient")
        return float(cost.detach()), grad.cpu().numpy()


def register_to_mni(
    mean_epi: NDArray[np.floating],
    affine: NDArray[np.float64],
    device: str | torch.device = "cpu",
    dof: int = 12,
) -> AffineRegistration:
    """Affine registration of a mean EPI to the MNI152 template on the 4 mm grid.

    Parameters
    ----------
    mean_epi
        ``(X, Y, Z)`` mean of the motion-corrected run.
    affine
        Its voxel-to-world affine.
    device
        Torch device for the sampling.
    dof
        Degrees of freedom of the final transform: 6 (rigid), 9 (plus a scale
        per axis) or 12 (plus shears); the coarse-to-fine stages stop there.

    Returns
    -------
    AffineRegistration
        The MNI-mm to EPI-mm matrix, its parameters and the final correlation-ratio cost.

    Raises
    ------
    ValueError
        ``dof`` is not 6, 9 or 12.
    """
    if dof not in (6, 9, 12):
        raise ValueError(f"dof must be 6, 9 or 12, got {dof}")
    dev = torch.device(device)
    epi = np.asarray(mean_epi, dtype=np.float32)
    template = load_template().get_fdata(dtype=np.float32)
    mask = ndimage.binary_dilation(load_brain_mask().get_fdata() > 0, iterations=1)
    voxel = np.sqrt((affine[:3, :3] ** 2).sum(0))
    c_mni = _centre_of_mass(np.where(mask, template, 0), MNI4_AFFINE)
    c_epi = _centre_of_mass(epi, affine)
    edges = np.quantile(template[mask], np.linspace(0, 1, _N_BINS + 1)[1:-1])
    params = np.zeros(12)
    cost = 1.0
    stages = [(min(d, dof), sigma, stride) for d, sigma, stride in _STAGES]
    for dof, sigma_mm, stride in stages:
        smooth = ndimage.gaussian_filter(epi, [sigma_mm / v for v in voxel], mode="constant")
        sub = np.zeros_like(mask)
        sub[::stride, ::stride, ::stride] = True
        sel = (mask & sub).reshape(-1)
        stage = _Stage(
            dof=dof,
            fixed=params.copy(),
            world=torch.from_numpy(affine_points(MNI4_AFFINE, grid_points(mask.shape)[sel])).to(dev),
            vol=torch.from_numpy(smooth).to(dev),
            bins=torch.from_numpy(np.searchsorted(edges, template.reshape(-1)[sel])).to(dev),
            to_vox=torch.from_numpy(np.linalg.inv(affine)).to(dev),
            c_mni=torch.from_numpy(c_mni).to(dev),
            c_epi=torch.from_numpy(c_epi).to(dev),
        )
        res = optimize.minimize(
            stage, params[:dof] / _UNITS[:dof], jac=True, method="L-BFGS-B",
            options={"maxiter": 200, "ftol": 1e-7, "gtol": 1e-6},
        )  # fmt: skip
        params[:dof] = res.x * _UNITS[:dof]
        cost = float(res.fun)
        log.debug("registration %d dof, %.0f mm: cost %.4f (%d evaluations)", dof, sigma_mm, cost, res.nfev)
    return AffineRegistration(affine_from_params(params, c_mni, c_epi), cost, params)

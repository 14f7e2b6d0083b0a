"""Registration of the mean EPI to the MNI152 template: rigid, then 12-DOF affine.

As FLIRT does it: a cost that works across contrasts (the correlation ratio:
the EPI's variance left within bins of template intensity), initialised by
matching centres of mass, optimised by Powell's method from coarse to fine
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
from rsnflow.transforms import rigid_matrix

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


def affine_from_params(
    p: NDArray[np.float64], centre_mni: NDArray[np.float64], centre_epi: NDArray[np.float64]
) -> NDArray[np.float64]:
    """``x_epi = R S H (x_mni - c_mni) + c_epi + t``: rotation, scales, shears."""
    rot = rigid_matrix(np.concatenate([[0.0, 0.0, 0.0], p[3:6]]))[:3, :3]
    scale = np.diag(np.exp(p[6:9]))
    shear = np.eye(3)
    shear[0, 1], shear[0, 2], shear[1, 2] = p[9], p[10], p[11]
    lin = rot @ scale @ shear
    out = np.eye(4)
    out[:3, :3] = lin
    out[:3, 3] = centre_epi + p[:3] - lin @ centre_mni
    return out


def _centre_of_mass(img: NDArray[np.float32], affine: NDArray[np.float64]) -> NDArray[np.float64]:
    w = np.where(img > 0.2 * np.percentile(img, 99), img, 0)
    com = np.array(ndimage.center_of_mass(w))
    return affine[:3, :3] @ com + affine[:3, 3]


def _correlation_ratio(values: torch.Tensor, valid: torch.Tensor, bins: torch.Tensor, n_bins: int) -> float:
    w = valid.double()
    v = values.double()
    n = torch.zeros(n_bins, dtype=torch.float64).scatter_add_(0, bins, w)
    s1 = torch.zeros(n_bins, dtype=torch.float64).scatter_add_(0, bins, w * v)
    s2 = torch.zeros(n_bins, dtype=torch.float64).scatter_add_(0, bins, w * v * v)
    total_n = n.sum()
    if float(total_n) < 100:
        return 1.0
    within = (s2 - s1 * s1 / n.clamp_min(1e-9)).sum()
    mean = s1.sum() / total_n
    total = s2.sum() - total_n * mean * mean
    return float(within / total.clamp_min(1e-12))


def register_to_mni(
    mean_epi: NDArray[np.floating],
    affine: NDArray[np.float64],
    device: str | torch.device = "cpu",
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
    """
    dev = torch.device(device)
    epi = np.asarray(mean_epi, dtype=np.float32)
    template = load_template().get_fdata(dtype=np.float32)
    mask = ndimage.binary_dilation(load_brain_mask().get_fdata() > 0, iterations=1)
    voxel = np.sqrt((affine[:3, :3] ** 2).sum(0))
    inv = np.linalg.inv(affine)
    c_mni = _centre_of_mass(np.where(mask, template, 0), MNI4_AFFINE)
    c_epi = _centre_of_mass(epi, affine)
    params = np.zeros(12)
    edges = np.quantile(template[mask], np.linspace(0, 1, _N_BINS + 1)[1:-1])
    cost = 1.0
    for dof, sigma_mm, stride in _STAGES:
        smooth = ndimage.gaussian_filter(epi, [sigma_mm / v for v in voxel], mode="constant")
        vol = torch.from_numpy(smooth).to(dev)
        sub = np.zeros_like(mask)
        sub[::stride, ::stride, ::stride] = True
        sel = (mask & sub).reshape(-1)
        world = affine_points(MNI4_AFFINE, grid_points(mask.shape)[sel])
        bins = torch.from_numpy(np.searchsorted(edges, template.reshape(-1)[sel])).to(dev)
        size = torch.tensor(epi.shape, dtype=torch.float32, device=dev)

        def cost_fn(
            z: NDArray[np.float64],
            dof: int = dof,
            world: NDArray[np.float64] = world,
            vol: torch.Tensor = vol,
            bins: torch.Tensor = bins,
            size: torch.Tensor = size,
        ) -> float:
            p = params.copy()
            p[:dof] = z * _UNITS[:dof]
            m = inv @ affine_from_params(p, c_mni, c_epi)
            pts = torch.from_numpy(affine_points(m, world)).to(dev, torch.float32)
            valid = ((pts >= 0) & (pts <= size - 1)).all(-1)
            return _correlation_ratio(sample(vol, pts), valid, bins, _N_BINS)

        res = optimize.minimize(
            cost_fn, params[:dof] / _UNITS[:dof], method="Powell",
            options={"xtol": 1e-2, "ftol": 1e-5, "maxfev": 4000},
        )  # fmt: skip
        params[:dof] = res.x * _UNITS[:dof]
        cost = float(res.fun)
        log.debug("registration %d dof, %.0f mm: cost %.4f (%d evaluations)", dof, sigma_mm, cost, res.nfev)
    return AffineRegistration(affine_from_params(params, c_mni, c_epi), cost, params)

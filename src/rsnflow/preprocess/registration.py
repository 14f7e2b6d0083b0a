"""Registration of the mean EPI to the MNI152 template: rigid, then 12-DOF affine.

Coarse to fine, each stage optimised by L-BFGS with the exact gradient (torch
autograd through the trilinear sampling of the EPI at template points),
initialised by matching centres of mass:

1. 6, then 9 degrees of freedom on smoothed images and an 8 mm point lattice,
   with FLIRT's cost that works across contrasts: the correlation ratio (the
   EPI's variance left within bins of the T1 template's intensity). Template
   points that fall outside the EPI's field of view count as unexplained, so
   that a slab missing the cerebellum is not stretched over it.
2. 12 degrees of freedom on the unsmoothed EPI and every 4 mm point, with a
   partial-volume model of the EPI: its intensity at a point is a mix of the
   template's grey matter, white matter and CSF fractions and the background,
   with contrasts fitted at each evaluation (any EPI contrast). The cost is
   the fraction of the EPI's variance the model leaves. Points are those
   inside the field of view at the stage's start.

Measured against two simulators' true transforms (``bench/bench_registration.py``,
docs/benchmarks.md), the correlation ratio alone left 0.84 mm (median of 6
beijing runs; ANTsPy's affine 0.56): the T1's intensity is not a function of
the EPI's (CSF, partial volumes at the brain's edge), and the smoothing the
cost needs far from the optimum blurs the edges it should align near it. The
final stage removes both (0.24 mm). A
smooth intensity nonuniformity field added to the model (additive or
multiplicative) made it worse, even on runs shaded by 15% across the head:
the field soaks up part of the anatomy's own gradients.

The result maps MNI mm to the EPI's world mm (the reference frame of motion
correction), so that the run can be resampled once into the MNI grid by
composing it with each volume's motion. Its ``cost`` is the correlation ratio
at 2 mm smoothing, the number the plausibility gate of preprocessing reads.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import NDArray
from scipy import ndimage, optimize

from rsnflow.log import get_logger
from rsnflow.resample import affine_points, grid_points, sample
from rsnflow.space import MNI4_AFFINE, load_brain_mask, load_template, load_tissue_probabilities
from rsnflow.transforms import rotations_torch

__all__ = ["AffineRegistration", "affine_from_params", "register_to_mni"]

log = get_logger(__name__)

#: Units of the 12 parameters so the optimiser sees steps of similar size:
#: translation (mm), rotation (1 degree), log-scale (1%), shear (0.01).
_UNITS = np.array([1.0, 1.0, 1.0, *([np.deg2rad(1.0)] * 3), 0.01, 0.01, 0.01, 0.01, 0.01, 0.01])
#: (degrees of freedom, EPI smoothing sigma mm, point stride on the 4 mm grid, cost) per stage.
_STAGES: tuple[tuple[int, float, int, str], ...] = (
    (6, 6.0, 2, "ratio"),
    (9, 4.0, 2, "ratio"),
    (12, 0.0, 1, "tissue"),
)
_N_BINS = 24
#: Smoothing (mm) of the EPI for the reported correlation-ratio cost (the gate's calibration).
_GATE_SIGMA_MM = 2.0
#: Points closer than this (voxels) to the EPI's edge at a stage's start are left out of it.
_FOV_MARGIN = 1.0
#: L-BFGS stopping: relative cost change and projected gradient (in the units above).
_OPTIONS = {"maxiter": 200, "ftol": 1e-5, "gtol": 1e-4}


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


def _tissue_design(tissues: NDArray[np.float64], world: NDArray[np.float64]) -> NDArray[np.float64]:
    """Regressors of the partial-volume model at template points ``world`` (MNI mm).

    The intercept (the background's intensity) and a column per tissue
    fraction (each tissue's intensity above it). ``world`` is there for the
    benchmark's variants with an intensity field (bench/bench_registration.py).
    """
    return np.concatenate([np.ones((len(world), 1)), tissues], axis=1)


def _unexplained(values: torch.Tensor, design: torch.Tensor, solve: torch.Tensor) -> torch.Tensor:
    """Fraction of the variance of ``values`` that least squares on ``design`` leaves.

    ``solve`` is the pseudo-inverse of ``design``, fixed for a stage, so an evaluation is two
    thin matrix products and the cost is smooth in ``values``.
    """
    residual = values - design @ (solve @ values)
    centred = values - values.mean()
    return (residual @ residual) / (centred @ centred).clamp_min(1e-12)


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
    """The cost of one coarse-to-fine stage: the first ``dof`` parameters free, the rest fixed.

    ``cost`` takes the EPI's values at the points and returns the stage's cost:
    the correlation ratio (points that leave the field of view count) or the
    partial-volume model's unexplained variance.
    """

    dof: int
    fixed: NDArray[np.float64]
    world: torch.Tensor  # (N, 3) template points, MNI mm
    vol: torch.Tensor  # the mean EPI, smoothed for the stage
    to_vox: torch.Tensor  # EPI world mm -> voxel (4, 4)
    c_mni: torch.Tensor
    c_epi: torch.Tensor
    cost: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (values, inside the image) -> cost

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
        cost = self.cost(sample(self.vol, vox).double(), valid)
        cost.backward()
        grad = zt.grad
        if grad is None:  # cannot happen: zt requires grad and the cost depends on it
            raise RuntimeError("registration cost has no gradient")
        return float(cost.detach()), grad.cpu().numpy()


@dataclass(frozen=True)
class _Inputs:
    """What every stage shares: the EPI, the template and the centres the parameters turn about."""

    epi: NDArray[np.float32]
    affine: NDArray[np.float64]
    template: NDArray[np.float32]
    tissues: NDArray[np.float64]  # (3, X, Y, Z) grey matter, white matter, CSF fractions
    mask: NDArray[np.bool_]  # template brain, dilated by one voxel
    edges: NDArray[np.float64]  # correlation-ratio bins of template intensity
    c_mni: NDArray[np.float64]
    c_epi: NDArray[np.float64]
    device: torch.device

    @classmethod
    def load(
        cls, mean_epi: NDArray[np.floating], affine: NDArray[np.float64], device: torch.device
    ) -> _Inputs:
        epi = np.asarray(mean_epi, dtype=np.float32)
        template = load_template().get_fdata(dtype=np.float32)
        mask = ndimage.binary_dilation(load_brain_mask().get_fdata() > 0, iterations=1)
        probs = load_tissue_probabilities()
        tissues = np.stack([probs["gm"], probs["wm"], probs["csf"]]).astype(np.float64)
        edges = np.quantile(template[mask], np.linspace(0, 1, _N_BINS + 1)[1:-1])
        c_mni = _centre_of_mass(np.where(mask, template, 0), MNI4_AFFINE)
        return cls(epi, affine, template, tissues, mask, edges, c_mni, _centre_of_mass(epi, affine), device)

    def stage(self, dof: int, sigma_mm: float, stride: int, kind: str, params: NDArray[np.float64]) -> _Stage:
        """The stage's cost at the current ``params`` (which fix its point set for the tissue model)."""
        voxel = np.sqrt((self.affine[:3, :3] ** 2).sum(0))
        epi = self.epi
        if sigma_mm > 0:
            epi = ndimage.gaussian_filter(epi, [sigma_mm / v for v in voxel], mode="constant")
        sub = np.zeros_like(self.mask)
        sub[::stride, ::stride, ::stride] = True
        sel = (self.mask & sub).reshape(-1)
        world = affine_points(MNI4_AFFINE, grid_points(self.mask.shape)[sel])
        to_vox = np.linalg.inv(self.affine)
        dev = self.device
        cost: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
        if kind == "ratio":
            bins = torch.from_numpy(np.searchsorted(self.edges, self.template.reshape(-1)[sel])).to(dev)

            def cost(values: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
                return _correlation_ratio(values, valid, bins, _N_BINS)

        else:
            # Keep the points inside the image at the stage's start: a fixed set, so that
            # the fit cannot improve by moving the template out of the field of view.
            vox = affine_points(to_vox @ affine_from_params(params, self.c_mni, self.c_epi), world)
            inside = ((vox >= _FOV_MARGIN) & (vox <= np.array(epi.shape) - 1 - _FOV_MARGIN)).all(-1)
            world = world[inside]
            design = _tissue_design(self.tissues.reshape(3, -1)[:, sel][:, inside].T, world)
            d = torch.from_numpy(design).to(dev)
            solve = torch.from_numpy(np.linalg.pinv(design)).to(dev)  # collinear columns allowed

            def cost(values: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
                return _unexplained(values, d, solve)

        return _Stage(
            dof=dof,
            fixed=params.copy(),
            world=torch.from_numpy(world).to(dev),
            vol=torch.from_numpy(epi).to(dev),
            to_vox=torch.from_numpy(to_vox).to(dev),
            c_mni=torch.from_numpy(self.c_mni).to(dev),
            c_epi=torch.from_numpy(self.c_epi).to(dev),
            cost=cost,
        )


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
        The MNI-mm to EPI-mm matrix, its parameters and the correlation-ratio
        cost at 2 mm smoothing (what the plausibility gate reads).

    Raises
    ------
    ValueError
        ``dof`` is not 6, 9 or 12.
    """
    if dof not in (6, 9, 12):
        raise ValueError(f"dof must be 6, 9 or 12, got {dof}")
    inputs = _Inputs.load(mean_epi, affine, torch.device(device))
    params = np.zeros(12)
    for stage_dof, sigma_mm, stride, kind in _STAGES:
        free = min(stage_dof, dof)
        stage = inputs.stage(free, sigma_mm, stride, kind, params)
        res = optimize.minimize(
            stage, params[:free] / _UNITS[:free], jac=True, method="L-BFGS-B", options=_OPTIONS
        )
        params[:free] = res.x * _UNITS[:free]
        log.debug(
            "registration %d dof, %s, %.0f mm: cost %.4f (%d evaluations)",
            free,
            kind,
            sigma_mm,
            res.fun,
            res.nfev,
        )
    gate = inputs.stage(dof, _GATE_SIGMA_MM, 1, "ratio", params)
    cost, _ = gate(params[:dof] / _UNITS[:dof])
    return AffineRegistration(affine_from_params(params, inputs.c_mni, inputs.c_epi), cost, params)

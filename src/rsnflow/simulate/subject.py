"""One simulated subject: networks, structured noise, head motion and an EPI acquisition.

The signal model, per 2 mm MNI voxel ``a`` (the head frame) and volume ``t``::

    S(a, t) = B(a) * (1 + sum_k W[a, k] * C[k, t])

``B`` is the EPI baseline from tissue probabilities, ``W`` the spatial maps of
the sources (56 taxonomy networks with subject variability, and noise sources)
and ``C`` their time courses as signal fractions. Each volume is then sampled
into the native acquisition grid through the subject's native-to-MNI affine
and that volume's rigid head pose, multiplied by a scanner-fixed coil bias
field, and thermal noise is added in the complex domain (magnitude image).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from rsnflow.atlas import NOISE, load_taxonomy
from rsnflow.resample import grid_points, sample
from rsnflow.simulate.anatomy import EPI_CONTRAST, Anatomy, load_anatomy
from rsnflow.simulate.profiles import Profile
from rsnflow.simulate.signals import band_limited, head_motion
from rsnflow.simulate.variation import (
    SubjectVariation,
    aliased_physiology,
    ar1_in_time,
    node_offsets,
    vary_subject,
)
from rsnflow.transforms import framewise_displacement, rigid_matrix

__all__ = ["SimulatedSubject", "simulate_subject", "source_table"]

#: Peak signal change of a network map (fraction of the baseline).
NETWORK_AMPLITUDE = 0.02
#: Noise sources: name, spatial model, frequency band (Hz) and amplitude.
NOISE_SOURCES: tuple[tuple[str, str, tuple[float, float], float], ...] = (
    ("noise-csf", "csf", (0.08, 0.25), 0.03),
    ("noise-wm", "wm", (0.005, 0.05), 0.01),
    ("noise-edge-motion", "edge", (0.0, 0.0), 0.03),
    ("noise-highfreq-1", "blob", (0.12, 0.25), 0.03),
    ("noise-highfreq-2", "blob", (0.12, 0.25), 0.03),
    ("noise-highfreq-3", "blob", (0.12, 0.25), 0.03),
    ("noise-vessel", "vessel", (0.1, 0.25), 0.04),
    ("noise-drift", "drift", (0.0, 0.0), 0.02),
)
#: Sagittal-sinus-like path (MNI mm) for the vessel noise source.
_VESSEL_PATH = np.array(
    [
        [0.0, y, z]
        for y, z in [
            (-95, 10),
            (-88, 30),
            (-75, 48),
            (-58, 62),
            (-38, 72),
            (-15, 76),
            (10, 72),
            (32, 62),
        ]
    ]
)


def source_table() -> pd.DataFrame:
    """The simulated sources in order: index, name, label, network, kind.

    Returns
    -------
    pandas.DataFrame
        One row per source: the taxonomy's networks (``kind`` ``"network"``),
        then the noise sources (``kind`` ``"noise"``, label Noise).
    """
    tax = load_taxonomy()
    rows = [(lab, lab, tax.parent(lab), "network") for lab in tax.network_labels]
    rows += [(name, NOISE, "NOISE", "noise") for name, *_ in NOISE_SOURCES]
    table = pd.DataFrame(rows, columns=["name", "label", "network", "kind"])
    table.insert(0, "index", np.arange(len(table)))
    return table


@dataclass
class SimulatedSubject:
    """Everything known about one simulated subject.

    Attributes
    ----------
    bold : ndarray
        The native 4D run ``(X, Y, Z, T)``, float32.
    affine : ndarray
        Its ``(4, 4)`` voxel-to-scanner affine.
    tr : float
        Repetition time in seconds.
    motion : ndarray
        The head pose per volume (``(T, 6)``, see :mod:`rsnflow.transforms`),
        relative to the pose in which ``native_to_mni`` holds.
    native_to_mni : ndarray
        ``(4, 4)`` affine from scanner mm to MNI mm.
    sources_mni : ndarray
        The true source maps on the MNI 4 mm grid (``(45, 54, 45, K)``).
    timecourses : ndarray
        Their time courses (``(T, K)``, signal fractions).
    info : dict
        Geometry (rotation, scale, translation), median FD and thermal noise level.
    """

    bold: NDArray[np.float32]
    affine: NDArray[np.float64]
    tr: float
    motion: NDArray[np.float64]
    native_to_mni: NDArray[np.float64]
    sources_mni: NDArray[np.float32]
    timecourses: NDArray[np.float32]
    info: dict[str, Any] = field(default_factory=dict)


def native_affine(profile: Profile) -> NDArray[np.float64]:
    """RAS voxel-to-scanner affine with the scanner origin at the centre of the grid."""
    vox = np.asarray(profile.voxel_mm, dtype=float)
    shape = np.asarray(profile.shape, dtype=float)
    aff = np.diag([*vox, 1.0])
    aff[:3, 3] = -vox * (shape - 1) / 2
    return aff


def _subject_to_mni(rng: np.random.Generator) -> tuple[NDArray[np.float64], dict[str, Any]]:
    # The MNI152 template is larger than most brains: scale > 1 maps a smaller head onto it.
    angles = np.deg2rad(rng.uniform(-6.0, 6.0, 3))
    scale = rng.uniform(1.0, 1.12) * (1 + rng.uniform(-0.02, 0.02, 3))
    # The Beijing slab (119 mm) cannot hold the whole brain: keep the cerebrum
    # (vertex included) and lose the bottom of the cerebellum, as such scans do.
    shift = np.array([0.0, -18.0, 15.0]) + rng.normal(0, 4.0, 3)
    m = rigid_matrix(np.concatenate([shift, angles]))
    m[:3, :3] = m[:3, :3] @ np.diag(scale)
    return m, {"rotation_deg": np.rad2deg(angles), "scale": scale, "translation_mm": shift}


def _spatial_maps(
    rng: np.random.Generator,
    anat: Anatomy,
    extent_scale: float = 1.0,
    offsets: dict[str, NDArray[np.float64]] | None = None,
) -> NDArray[np.float32]:
    tax = load_taxonomy()
    n_net = len(tax.network_labels)
    # Column-major: each map is written whole into one column (row-major strided every write).
    maps = np.zeros((anat.n_active, n_net + len(NOISE_SOURCES)), dtype=np.float32, order="F")
    for k, label in enumerate(tax.network_labels):
        nodes = tax.nodes(label) + rng.normal(0.0, 2.5, (len(tax.nodes(label)), 3))
        if offsets is not None:  # after the draw: the subject's stream is the same with or without
            nodes = nodes + offsets[label]
        sigma = tax.extent(label) * rng.uniform(0.85, 1.15) * extent_scale
        values = anat.node_map(nodes, sigma) * anat.gm
        maps[:, k] = values / max(float(values.max()), 1e-6) * rng.uniform(0.7, 1.3)
    for j, (_, kind, _, _) in enumerate(NOISE_SOURCES):
        if kind in ("csf", "wm"):
            m = getattr(anat, kind)
        elif kind == "edge":
            m = anat.edge * (anat.brain + anat.scalp)
        elif kind == "blob":
            centre = anat.xyz[rng.integers(anat.n_active)]
            m = anat.node_map(centre[None], rng.uniform(6.0, 10.0)) * anat.brain
        elif kind == "vessel":
            m = anat.node_map(_VESSEL_PATH + rng.normal(0, 1.5, _VESSEL_PATH.shape), 4.0)
            m = np.clip(m, 0, 1) * (anat.brain + anat.scalp)
        else:  # drift: the whole head
            m = anat.brain + anat.scalp
        maps[:, n_net + j] = m / max(float(m.max()), 1e-6)
    return maps


def _time_courses(
    rng: np.random.Generator,
    n: int,
    tr: float,
    motion: NDArray[np.float64],
    whole: Sequence[str] = (),
    variation: SubjectVariation | None = None,
    physiology: NDArray[np.float64] | None = None,
) -> NDArray[np.float64]:
    tax = load_taxonomy()
    networks = [tax.parent(lab) for lab in tax.network_labels]
    parents = sorted(set(networks))
    shared = dict(zip(parents, band_limited(rng, n, tr, 0.01, 0.1, len(parents)), strict=True))
    glob = band_limited(rng, n, tr, 0.01, 0.1)[0]
    own = band_limited(rng, n, tr, 0.01, 0.1, len(networks))
    # A whole network's sub-networks have no time course of their own: they move as one.
    own[[p in whole for p in networks]] = 0.0
    # Correlated within a network (~0.3) and weakly across networks (~0.04).
    tc = 0.55 * np.stack([shared[p] for p in networks]) + 0.8 * own + 0.2 * glob
    tc = (tc - tc.mean(1, keepdims=True)) / tc.std(1, keepdims=True)
    amplitude = NETWORK_AMPLITUDE if variation is None else variation.network_amplitude
    rows = [amplitude * tc]
    t = np.linspace(-1, 1, n)
    fd = framewise_displacement(motion)
    for j, (_, kind, (lo, hi), amp) in enumerate(NOISE_SOURCES):
        if variation is not None:
            amp *= variation.noise_gain[j]
        if kind == "edge":
            x = fd + 0.2 * np.abs(motion[:, :3]).sum(1)
            sig = (x - x.mean()) / max(x.std(), 1e-9)
        elif kind == "drift":
            coef = rng.normal(0, 1, 2)
            sig = coef[0] * t + coef[1] * (t**2 - 1 / 3)
        else:
            sig = band_limited(rng, n, tr, lo, hi)[0]
        if physiology is not None and variation is not None and kind in ("csf", "vessel"):
            w = variation.physiology
            sig = np.sqrt(1 - w * w) * sig + w * physiology
        rows.append(amp * np.atleast_2d(sig))
    return np.concatenate(rows, axis=0)


def _bias_field(rng: np.random.Generator, shape: tuple[int, int, int]) -> NDArray[np.float32]:
    grids = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    lin = sum(c * g for c, g in zip(rng.normal(0, 0.06, 3), grids, strict=True))
    quad = rng.normal(0, 0.04) * (grids[0] ** 2 + grids[1] ** 2)
    return (1.0 + lin + quad).astype(np.float32)


def _acquire(
    anat: Anatomy,
    maps: NDArray[np.float32],
    coeffs: NDArray[np.float64],
    to_box: NDArray[np.float64],
    motion: NDArray[np.float64],
    profile: Profile,
    device: str,
    chunk: int,
) -> NDArray[np.float32]:
    """Every volume's signal sampled into the native grid at that volume's head pose."""
    import torch

    aff = native_affine(profile)
    n = profile.n_volumes
    # Points and volumes column-major (i fastest): each chunk of volumes is then one contiguous
    # block of ``bold``, as NIfTI stores it, instead of a write strided by the run length.
    dev = torch.device(device)
    ijk = torch.from_numpy(grid_points(profile.shape[::-1])[:, ::-1].astype(np.float32)).to(dev)
    poses = rigid_matrix(motion)
    w = torch.from_numpy(maps).to(dev)
    base = torch.from_numpy(anat.baseline).to(dev)
    active = torch.from_numpy(anat.active).to(dev)
    bold = np.empty((*profile.shape, n), dtype=np.float32, order="F")
    flat = bold.T.reshape(n, -1)  # a view: (volume, voxel in column-major order)
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        c = torch.from_numpy(coeffs[:, start:stop].astype(np.float32)).to(dev)
        values = base[:, None] * (1.0 + w @ c)  # (n_active, chunk)
        vol = torch.zeros((stop - start, int(np.prod(anat.box_shape))), device=dev)
        vol[:, active] = values.T
        # Native voxel -> scanner mm -> head frame at this pose -> MNI mm -> box voxel.
        mats = to_box @ np.linalg.inv(poses[start:stop]) @ aff
        # In float32 through torch (the grid the sampler builds is float32 anyway): 10x numpy's float64.
        m = torch.from_numpy(mats.astype(np.float32)).to(dev)
        pts = ijk @ m[:, :3, :3].transpose(1, 2) + m[:, None, :3, 3]
        out = sample(vol.reshape(stop - start, *anat.box_shape), pts)
        flat[start:stop] = out.cpu().numpy()
    return bold


def _drawn_like(
    bold: NDArray[np.float32], rng: np.random.Generator, out: NDArray[np.float32] | None = None
) -> NDArray[np.float32]:
    """Standard normal draws for every value of ``bold``, in row-major draw order, laid out as ``bold``.

    The draws keep the order of the row-major stream (the same subject for a
    seed). A column-major ``bold`` gets them slab by slab of its first axis (the
    stream does not depend on how it is cut), each slab transposed by torch's
    copy: about 0.15 s for a beijing run and no second run-sized array, where
    each arithmetic pass mixing the two layouts took 1.3 s. ``out`` (an earlier
    return value for the same ``bold``) is filled instead of a new array.
    """
    import torch

    if not bold.flags.f_contiguous or bold.flags.c_contiguous:
        if out is None:
            return rng.standard_normal(bold.shape, dtype=np.float32)
        return rng.standard_normal(dtype=np.float32, out=out)
    if out is None:
        out = np.empty(bold.shape, dtype=np.float32, order="F")
    target = torch.from_numpy(out.T)  # row-major (..., first axis last)
    axes = tuple(reversed(range(bold.ndim)))
    step = max(1, bold.shape[0] // 8)
    for i in range(0, bold.shape[0], step):
        slab = rng.standard_normal((min(step, bold.shape[0] - i), *bold.shape[1:]), dtype=np.float32)
        target[..., i : i + len(slab)].copy_(torch.from_numpy(slab).permute(*axes))
    return out


def _add_rician_noise(
    bold: NDArray[np.float32], sigma: float, rng: np.random.Generator, ar: float = 0.0
) -> None:
    """Thermal noise in the complex domain, magnitude taken: ``|S + n_re + i n_im|``, in place.

    ``ar``: the AR(1) coefficient of each noise channel in time (0: white).
    """
    # In place and in float32: a beijing run is 120 MB per copy.
    noise = _drawn_like(bold, rng)
    ar1_in_time(noise, ar)
    noise *= sigma
    bold += noise
    np.square(bold, out=bold)
    _drawn_like(bold, rng, out=noise)
    ar1_in_time(noise, ar)
    noise *= sigma
    np.square(noise, out=noise)
    bold += noise
    np.sqrt(bold, out=bold)


def simulate_subject(
    profile: Profile,
    seed: int,
    index: int,
    device: str = "cpu",
    chunk: int = 16,
    fluctuations: bool = True,
    motion_scale: float = 1.0,
    vary: bool = False,
    whole: Sequence[str] = (),
) -> SimulatedSubject:
    """Simulate one subject of a cohort.

    Parameters
    ----------
    profile
        Acquisition grid, run length and TR.
    seed, index
        Cohort seed and subject index: the subject's random stream is
        ``SeedSequence(seed, spawn_key=(index,))``, independent of the
        cohort size, so subject 3 is the same whether 4 or 176 are made.
    device
        Torch device for the resampling.
    chunk
        Volumes resampled together (memory vs speed).
    fluctuations
        ``False`` silences every time course and the thermal noise, leaving
        the static head and its motion (for testing motion estimation alone);
        the random stream is drawn the same way, so geometry and motion are
        those of the full subject.
    motion_scale
        Multiplies the head motion (a stress test for motion correction).
    vary
        Draw the subject's network amplitude, node sizes, noise amplitudes,
        thermal noise and physiological cycles
        (:func:`~rsnflow.simulate.variation.vary_subject`), and move the
        cohort's network nodes (:func:`~rsnflow.simulate.variation.node_offsets`),
        from streams of their own: the rest of the subject is drawn as without.
    whole
        Parent networks whose sub-networks share one time course.

    Returns
    -------
    SimulatedSubject
        The run and its ground truth.
    """
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(index,)))
    anat = load_anatomy()
    n = profile.n_volumes
    variation = vary_subject(seed, index, len(NOISE_SOURCES)) if vary else None
    physiology = None
    if variation is not None:
        phys_rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(index, 1)))
        physiology = aliased_physiology(
            phys_rng, n, profile.tr, variation.cardiac_hz, variation.respiration_hz
        )
    to_mni, geometry = _subject_to_mni(rng)
    median_fd = float(rng.uniform(0.07, 0.25))
    motion = head_motion(rng, n, median_fd) * motion_scale
    if variation is None:
        maps = _spatial_maps(rng, anat)
    else:
        maps = _spatial_maps(rng, anat, variation.extent_scale, node_offsets(seed)[1])
    coeffs = _time_courses(rng, n, profile.tr, motion, whole, variation, physiology)
    if not fluctuations:
        coeffs = np.zeros_like(coeffs)
    tsnr_thermal = float(rng.uniform(70.0, 130.0))
    if variation is not None:
        tsnr_thermal = variation.thermal_tsnr
    bias = _bias_field(rng, profile.shape)

    aff = native_affine(profile)
    bold = _acquire(
        anat, maps, coeffs, np.linalg.inv(anat.box_affine) @ to_mni, motion, profile, device, chunk
    )

    bold *= bias[..., None]
    sigma = EPI_CONTRAST["gm"] / tsnr_thermal
    if fluctuations:
        _add_rician_noise(bold, sigma, rng, 0.0 if variation is None else variation.thermal_ar)

    info = {
        **{k: np.asarray(v).tolist() for k, v in geometry.items()},
        "median_fd_mm": float(np.median(framewise_displacement(motion)[1:])),
        "thermal_tsnr_gm": tsnr_thermal,
        "thermal_sigma": sigma,
    }
    if variation is not None:
        info["variation"] = asdict(variation)
    if whole:
        info["whole_networks"] = list(whole)
    return SimulatedSubject(
        bold=bold,
        affine=aff,
        tr=profile.tr,
        motion=motion,
        native_to_mni=to_mni,
        sources_mni=anat.to_mni4(maps),
        timecourses=coeffs.T.astype(np.float32),
        info=info,
    )

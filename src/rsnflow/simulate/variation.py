"""Domain randomisation: cohorts that differ in acquisition, network granularity and noise.

A classifier trained on cohorts of one fixed simulator learns that simulator:
its TR, its voxel grid, its noise. ``rsnflow simulate --vary`` widens what a
training cohort can look like, as scanners and sites do:

- per cohort (all its subjects share an acquisition, as one site's do): the
  TR (0.7-3 s, the run keeping the profile's length in seconds), the voxel
  size (0.8-1.25 times the profile's on each axis, the field of view kept),
  and which networks move as one (each network with two or more sub-networks
  has a 30% chance of giving all of them one time course, so that a group
  decomposition finds it whole, as a low model order does), and where the
  networks sit: every node moved 0-8 mm (one distance per cohort, a random
  direction per node) from the taxonomy's coordinate, as a population's
  networks do not sit exactly where an atlas puts them;
- per subject: the networks' peak signal change (1-3%), node sizes (0.75-1.35
  times the taxonomy's), each noise source's amplitude (0.5-2 times), thermal
  noise (temporal SNR 40-150, autocorrelated in time with an AR(1)
  coefficient of 0-0.5) and cardiac and respiratory cycles aliased by the TR
  into the CSF and vessel sources.

Every draw comes from its own stream of the cohort seed, so a cohort made
without ``vary`` is the same, byte for byte, as before.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from rsnflow.atlas import load_taxonomy
from rsnflow.simulate.profiles import Profile

__all__ = [
    "CohortVariation",
    "SubjectVariation",
    "aliased_physiology",
    "ar1_in_time",
    "node_offsets",
    "vary_cohort",
    "vary_subject",
]

#: The spawn keys of the cohort-level draws (subject streams use the subject index).
_COHORT_STREAM = 2_000_000
_NODE_STREAM = 2_000_001
#: Range of the repetition time (s), of the voxel-size factor and of the chance that a network is whole.
TR_RANGE = (0.7, 3.0)
VOXEL_FACTOR = (0.8, 1.25)
WHOLE_CHANCE = 0.3
#: Range of the distance (mm) every node of a cohort is moved from the taxonomy's coordinate.
NODE_SHIFT_MM = (0.0, 8.0)


@dataclass(frozen=True)
class CohortVariation:
    """What every subject of a varied cohort shares.

    Attributes
    ----------
    profile : Profile
        The acquisition drawn: TR, voxel size, grid and volumes (named ``<profile>-varied``).
    whole : tuple of str
        Parent networks whose sub-networks share one time course.
    """

    profile: Profile
    whole: tuple[str, ...]


@dataclass(frozen=True)
class SubjectVariation:
    """One subject's draws of a varied cohort (recorded in its ``_xfm.json``).

    Attributes
    ----------
    network_amplitude : float
        Peak signal change of a network map (fraction of the baseline).
    extent_scale : float
        Multiplies every network's node size.
    noise_gain : tuple of float
        Multiplies each noise source's amplitude, in the order of the sources.
    thermal_tsnr : float
        Temporal SNR of the thermal noise in grey matter.
    thermal_ar : float
        AR(1) coefficient of the thermal noise in time (0: white).
    physiology : float
        Share of aliased cardiac and respiratory cycles in the CSF and vessel sources.
    cardiac_hz : float
        Heart rate (Hz).
    respiration_hz : float
        Breathing rate (Hz).
    """

    network_amplitude: float
    extent_scale: float
    noise_gain: tuple[float, ...]
    thermal_tsnr: float
    thermal_ar: float
    physiology: float
    cardiac_hz: float
    respiration_hz: float


def vary_cohort(profile: Profile, seed: int) -> CohortVariation:
    """The acquisition and network granularity of a varied cohort.

    Parameters
    ----------
    profile : Profile
        The profile varied: its field of view and run length in seconds are kept.
    seed : int
        The cohort seed.

    Returns
    -------
    CohortVariation
        The same for the same profile and seed.
    """
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_COHORT_STREAM,)))
    tr = float(np.round(rng.uniform(*TR_RANGE), 3))
    n_volumes = max(3, round(profile.n_volumes * profile.tr / tr))
    factor = rng.uniform(*VOXEL_FACTOR, 2)
    voxel = np.round(np.asarray(profile.voxel_mm) * factor[[0, 0, 1]], 3)
    fov = np.asarray(profile.shape) * np.asarray(profile.voxel_mm)
    shape = tuple(int(s) for s in np.maximum(np.round(fov / voxel), 8))
    tax = load_taxonomy()
    parents = sorted({tax.parent(lab) for lab in tax.network_labels})
    split = [p for p in parents if sum(tax.parent(lab) == p for lab in tax.network_labels) > 1]
    whole = tuple(p for p, u in zip(split, rng.uniform(size=len(split)), strict=True) if u < WHOLE_CHANCE)
    varied = dataclasses.replace(
        profile,
        name=f"{profile.name}-varied",
        shape=shape,  # type: ignore[arg-type]
        voxel_mm=tuple(float(v) for v in voxel),  # type: ignore[arg-type]
        n_volumes=n_volumes,
        tr=tr,
    )
    return CohortVariation(varied, whole)


def node_offsets(seed: int) -> tuple[float, dict[str, NDArray[np.float64]]]:
    """Where a varied cohort's networks sit: every node moved one drawn distance, each its own way.

    Parameters
    ----------
    seed : int
        The cohort seed (a stream of its own: the other draws are untouched).

    Returns
    -------
    distance : float
        The distance in mm, drawn from :data:`NODE_SHIFT_MM`.
    offsets : dict of str to ndarray
        Per network label, ``(n_nodes, 3)`` mm added to the taxonomy's node coordinates.
    """
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_NODE_STREAM,)))
    distance = float(np.round(rng.uniform(*NODE_SHIFT_MM), 2))
    tax = load_taxonomy()
    offsets = {}
    for label in tax.network_labels:
        v = rng.normal(size=(len(tax.nodes(label)), 3))
        offsets[label] = distance * v / np.linalg.norm(v, axis=1, keepdims=True)
    return distance, offsets


def vary_subject(seed: int, index: int, n_noise: int) -> SubjectVariation:
    """One subject's draws, from a stream of its own (the subject's main stream is untouched).

    Parameters
    ----------
    seed, index : int
        Cohort seed and subject index.
    n_noise : int
        Number of noise sources.

    Returns
    -------
    SubjectVariation
        The same for the same seed and index.
    """
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(index, _COHORT_STREAM)))
    return SubjectVariation(
        network_amplitude=float(rng.uniform(0.01, 0.03)),
        extent_scale=float(rng.uniform(0.75, 1.35)),
        noise_gain=tuple(float(g) for g in np.exp(rng.uniform(np.log(0.5), np.log(2.0), n_noise))),
        thermal_tsnr=float(rng.uniform(40.0, 150.0)),
        thermal_ar=float(rng.uniform(0.0, 0.5)),
        physiology=float(rng.uniform(0.0, 1.0)),
        cardiac_hz=float(rng.uniform(0.9, 1.3)),
        respiration_hz=float(rng.uniform(0.2, 0.35)),
    )


def aliased_physiology(
    rng: np.random.Generator, n: int, tr: float, cardiac_hz: float, respiration_hz: float
) -> NDArray[np.float64]:
    """Cardiac and respiratory cycles sampled once a TR: zero-mean, unit variance, ``(n,)``.

    Each rate wanders by a few percent over the run (a random walk of its
    phase); sampling at the TR folds it to ``|f - k / TR|`` as a scanner does,
    so the same heart rate gives a different apparent frequency at each TR.

    Parameters
    ----------
    rng : numpy.random.Generator
        Draws the phases and their wander.
    n : int
        Volumes.
    tr : float
        Repetition time (s).
    cardiac_hz : float
        Heart rate (Hz).
    respiration_hz : float
        Breathing rate (Hz).

    Returns
    -------
    numpy.ndarray
        ``(n,)`` float64, zero mean and unit variance.
    """
    t = np.arange(n) * tr
    out = np.zeros(n)
    for hz, weight in ((cardiac_hz, 1.0), (respiration_hz, 1.5)):
        wander = np.cumsum(rng.normal(0.0, 0.02 * hz * tr, n))  # cycles per sample, drifting
        phase = 2 * np.pi * (hz * t + wander + rng.uniform())
        out += weight * (np.sin(phase) + 0.3 * np.sin(2 * phase))  # a harmonic: not a pure tone
    out -= out.mean()
    return out / max(float(out.std()), 1e-12)


def ar1_in_time(noise: NDArray[np.float32], phi: float) -> None:
    """Make white noise ``(..., T)`` AR(1) in its last axis, in place, keeping its variance.

    ``e[t] = phi * e[t - 1] + sqrt(1 - phi**2) * w[t]``: volume by volume, so
    that a column-major run (each volume contiguous) is never copied.

    Parameters
    ----------
    noise : numpy.ndarray
        White noise of unit variance, time last; overwritten.
    phi : float
        AR(1) coefficient in ``[0, 1)``; 0 leaves the noise white.
    """
    if phi == 0.0:
        return
    scale = np.float32(np.sqrt(1.0 - phi * phi))
    for t in range(1, noise.shape[-1]):
        cur = noise[..., t]
        cur *= scale
        cur += np.float32(phi) * noise[..., t - 1]

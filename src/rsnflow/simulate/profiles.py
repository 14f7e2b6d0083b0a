"""Cohort profiles of the simulator: acquisition grid, length and size of a cohort."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PROFILES", "Profile", "get_profile"]


@dataclass(frozen=True)
class Profile:
    """Acquisition and cohort size of a simulated cohort.

    Attributes
    ----------
    name
        Profile name.
    n_subjects
        Default number of subjects.
    shape
        Native voxel grid (x, y, z).
    voxel_mm
        Native voxel size in mm (slice spacing for z).
    n_volumes
        Volumes per run.
    tr
        Repetition time in seconds.
    """

    name: str
    n_subjects: int
    shape: tuple[int, int, int]
    voxel_mm: tuple[float, float, float]
    n_volumes: int
    tr: float


PROFILES: dict[str, Profile] = {
    # Tests: seconds per subject; a coarse grid that still covers the whole head.
    "tiny": Profile("tiny", 4, (40, 48, 36), (4.5, 4.5, 4.5), 60, 2.0),
    # make run: the Beijing-Zhang grid with fewer subjects and volumes.
    "demo": Profile("demo", 16, (64, 64, 33), (3.125, 3.125, 3.6), 150, 2.0),
    # The 1000 Functional Connectomes Beijing-Zhang release (shared/DESIGN.md).
    "beijing": Profile("beijing", 176, (64, 64, 33), (3.125, 3.125, 3.6), 225, 2.0),
    # A modern multiband run (HCP-like: 2 mm isotropic, TR 0.72 s, 1,200 volumes):
    # 29 times a beijing run's voxels x volumes, for the bounded-memory checks.
    "multiband": Profile("multiband", 1, (104, 104, 72), (2.0, 2.0, 2.0), 1200, 0.72),
}


def get_profile(name: str) -> Profile:
    """The profile called ``name``; ``ValueError`` lists the valid names.

    Parameters
    ----------
    name : str
        ``"tiny"``, ``"demo"``, ``"beijing"`` or ``"multiband"``.

    Returns
    -------
    Profile
        The profile from :data:`PROFILES`.

    Raises
    ------
    ValueError
        For an unknown name.
    """
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown profile {name!r} (valid: {', '.join(PROFILES)})") from None

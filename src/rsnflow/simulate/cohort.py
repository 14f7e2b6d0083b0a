"""Write a simulated cohort as a BIDS raw dataset with its ground truth beside it.

Layout (documented for users in ``derivatives/groundtruth/README.md``)::

    OUT/dataset_description.json, participants.tsv, README
    OUT/task-rest_bold.json                      TaskName (inherited by every run)
    OUT/sub-XX/func/sub-XX_task-rest_bold.nii.gz int16 native EPI
    OUT/sub-XX/func/sub-XX_task-rest_bold.json   RepetitionTime (s)
    OUT/derivatives/groundtruth/
        dataset_description.json, README.md, sources.tsv, bad_subjects.tsv
        variation.json                           acquisition and whole networks drawn (``vary`` only)
        sub-XX/sub-XX_motion.tsv                 trans_x..rot_z, framewise_displacement
        sub-XX/sub-XX_xfm.json                   native_to_mni (4x4), geometry, noise levels
        sub-XX/sub-XX_space-MNI152NLin2009aSym_res-4mm_desc-sources_components.nii.gz
        sub-XX/sub-XX_desc-sources_timeseries.tsv

Subjects are generated and written one at a time (or one per worker process),
never the whole cohort in memory. Every file is written atomically and
deterministically: the same seed gives identical bytes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from rsnflow.io import save_nifti, write_dataset_description, write_json, write_text
from rsnflow.log import get_logger
from rsnflow.simulate.profiles import Profile, get_profile
from rsnflow.simulate.subject import SimulatedSubject, simulate_subject, source_table
from rsnflow.simulate.variation import node_offsets, vary_cohort
from rsnflow.space import MNI4_AFFINE, SPACE_NAME
from rsnflow.subjects import map_subjects
from rsnflow.transforms import MOTION_COLUMNS, framewise_displacement

__all__ = ["BAD_KINDS", "CohortResult", "cohort_profile", "simulate_cohort"]

log = get_logger(__name__)

#: Defects that can be written on purpose for reliability tests.
BAD_KINDS = {
    "truncated": "the .nii.gz is cut to half its bytes",
    "nan": "a block of voxels holds NaN",
    "3d": "a single 3D volume instead of a 4D run",
    "no-tr": "no RepetitionTime in the sidecar and pixdim[4] = 0",
    "short": "only 3 volumes, fewer than the temporal filter needs",
}


@dataclass(frozen=True)
class CohortResult:
    """What :func:`simulate_cohort` wrote.

    Attributes
    ----------
    bids_dir : Path
        The BIDS root.
    subjects : list of str
        Every participant label written (``"01"``, ...), the defective ones last.
    bad_subjects : dict of str to str
        Label of each defective subject to its defect (a key of :data:`BAD_KINDS`).
    groundtruth_dir : Path
        ``bids_dir/derivatives/groundtruth``.
    profile : Profile
        The profile used, with ``n_volumes`` as overridden.
    """

    bids_dir: Path
    subjects: list[str]
    bad_subjects: dict[str, str]
    groundtruth_dir: Path
    profile: Profile


def _bold_image(sub: SimulatedSubject, dtype: type = np.int16) -> nib.Nifti1Image:
    data = sub.bold
    if dtype is np.int16:
        data = np.clip(np.rint(data), 0, np.iinfo(np.int16).max).astype(np.int16)
    img = nib.Nifti1Image(data, sub.affine)
    img.header.set_xyzt_units("mm", "sec")
    img.header.set_zooms((*np.abs(np.diag(sub.affine)[:3]), sub.tr))
    img.header.set_qform(sub.affine, code=1)
    img.header.set_sform(sub.affine, code=1)
    return img


def _write_groundtruth(gt: Path, label: str, sub: SimulatedSubject, names: list[str]) -> None:
    d = gt / f"sub-{label}"
    motion = pd.DataFrame(sub.motion, columns=list(MOTION_COLUMNS))
    motion["framewise_displacement"] = framewise_displacement(sub.motion)
    write_text(motion.to_csv(sep="\t", index=False, float_format="%.6g"), d / f"sub-{label}_motion.tsv")
    write_json(
        {"native_to_mni": sub.native_to_mni, "repetition_time": sub.tr, **sub.info},
        d / f"sub-{label}_xfm.json",
    )
    maps = nib.Nifti1Image(sub.sources_mni.astype(np.float32), MNI4_AFFINE)
    save_nifti(maps, d / f"sub-{label}_space-{SPACE_NAME}_res-4mm_desc-sources_components.nii.gz")
    tcs = pd.DataFrame(sub.timecourses, columns=names)
    write_text(
        tcs.to_csv(sep="\t", index=False, float_format="%.6g"),
        d / f"sub-{label}_desc-sources_timeseries.tsv",
    )


def _write_bold(bids: Path, label: str, sub: SimulatedSubject, defect: str | None) -> None:
    func = bids / f"sub-{label}" / "func"
    bold_path = func / f"sub-{label}_task-rest_bold.nii.gz"
    sidecar: dict[str, object] = {"RepetitionTime": sub.tr, "TaskName": "rest"}
    img = _bold_image(sub)
    if defect == "nan":
        data = sub.bold.copy()
        data[10:14, 10:14, 5:8, :] = np.nan
        img = _bold_image(SimulatedSubject(**{**sub.__dict__, "bold": data}), dtype=np.float32)
    elif defect == "3d":
        img = nib.Nifti1Image(np.asarray(img.dataobj)[..., 0], sub.affine, img.header)
    elif defect == "short":
        img = nib.Nifti1Image(np.asarray(img.dataobj)[..., :3], sub.affine, img.header)
    elif defect == "no-tr":
        img.header.set_zooms((*img.header.get_zooms()[:3], 0.0))
        del sidecar["RepetitionTime"]
    save_nifti(img, bold_path)
    write_json(sidecar, func / f"sub-{label}_task-rest_bold.json")
    if defect == "truncated":
        size = bold_path.stat().st_size
        with bold_path.open("r+b") as f:
            f.truncate(size // 2)


_Job = tuple[Path, Path, Profile, int, int, str, str | None, list[str], bool, tuple[str, ...]]


def _one_subject(args: _Job) -> str:
    bids, gt, profile, seed, index, label, defect, names, vary, whole = args
    sub = simulate_subject(profile, seed, index, vary=vary, whole=whole)
    _write_bold(bids, label, sub, defect)
    _write_groundtruth(gt, label, sub, names)
    return label


_GT_README = """# Ground truth of a simulated rsnflow cohort

Written by `rsnflow simulate` beside the raw BIDS data; no pipeline stage reads it.

- `sources.tsv`: every simulated source (index, name, taxonomy label, parent
  network, kind network|noise). Column `index` is the volume of the
  `desc-sources_components` images and the column order of the time series.
- `bad_subjects.tsv`: subjects written with a deliberate defect, and which.
- `sub-XX/sub-XX_motion.tsv`: the head pose per volume, `trans_x trans_y trans_z`
  (mm) and `rot_x rot_y rot_z` (rad), about the centre of the native field of
  view, with `R = Rz @ Ry @ Rx` (see `rsnflow.transforms`); the image of volume
  t is the motion-free head moved by that rigid transform. Pose 0 is the pose
  in which `native_to_mni` holds; `framewise_displacement` is Power's FD (50 mm).
- `sub-XX/sub-XX_xfm.json`: `native_to_mni`, the 4x4 affine from the native
  scanner coordinates (the NIfTI affine's world, mm) to MNI152 mm; the
  rotation, scale and translation it was built from; the median FD; the thermal
  noise level; in a varied cohort (`rsnflow simulate --vary`), the subject's
  draws (`variation`: network amplitude, node size, noise gains, thermal noise
  and its AR(1) coefficient, cardiac and respiratory rates).
- `variation.json` (varied cohorts only): the acquisition drawn for the cohort
  (TR, voxel size, grid, volumes) and `whole_networks`, the parent networks
  whose sub-networks share one time course.
- `sub-XX/sub-XX_space-MNI152NLin2009aSym_res-4mm_desc-sources_components.nii.gz`:
  the subject's true source maps on the 45x54x45 MNI grid (peak-scaled weights).
- `sub-XX/sub-XX_desc-sources_timeseries.tsv`: the sources' time courses as
  fractions of the baseline signal (network peaks change the signal by ~2%).
"""


def _write_metadata(
    bids: Path, gt: Path, prof: Profile, seed: int, labels: list[str], defects: list[str | None]
) -> None:
    """The cohort's BIDS metadata (description, participants, README) and its ground-truth tables."""
    total = len(labels)
    sources = source_table()
    write_dataset_description(
        bids,
        name=f"rsnflow simulated cohort ({prof.name}, {prof.n_volumes} volumes, seed {seed})",
        dataset_type="raw",
    )
    write_json({"TaskName": "rest"}, bids / "task-rest_bold.json")
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1_000_000,)))
    participants = pd.DataFrame(
        {
            "participant_id": [f"sub-{lab}" for lab in labels],
            "age": rng.integers(18, 27, total),
            "sex": rng.choice(["F", "M"], total),
        }
    )
    write_text(participants.to_csv(sep="\t", index=False), bids / "participants.tsv")
    write_text(
        f"Simulated resting-state fMRI cohort written by rsnflow (profile {prof.name}, seed {seed}).\n"
        "Ground truth: derivatives/groundtruth/README.md\n",
        bids / "README",
    )
    write_dataset_description(gt, name="rsnflow simulator ground truth")
    write_text(_GT_README, gt / "README.md")
    write_text(sources.to_csv(sep="\t", index=False), gt / "sources.tsv")
    bad = {lab: d for lab, d in zip(labels, defects, strict=True) if d is not None}
    bad_table = pd.DataFrame({"participant_id": [f"sub-{k}" for k in bad], "defect": list(bad.values())})
    write_text(bad_table.to_csv(sep="\t", index=False), gt / "bad_subjects.tsv")


def cohort_profile(
    profile: str, n_volumes: int | None = None, vary: bool = False, seed: int = 0
) -> tuple[Profile, tuple[str, ...]]:
    """The acquisition a cohort is simulated with, and the networks it moves whole.

    Parameters
    ----------
    profile : str
        Profile name.
    n_volumes : int or None, default=None
        Volumes per run (default: the profile's); a varied cohort keeps this
        many times the profile's TR in seconds.
    vary : bool, default=False
        Draw the acquisition and whole networks from ``seed``
        (:func:`rsnflow.simulate.variation.vary_cohort`).
    seed : int, default=0
        The cohort seed.

    Returns
    -------
    tuple
        The profile and the parent networks whose sub-networks share one time course.
    """
    prof = get_profile(profile)
    if n_volumes is not None:
        if n_volumes < 3:
            raise ValueError(f"n_volumes must be at least 3, got {n_volumes}")
        prof = dataclasses.replace(prof, n_volumes=int(n_volumes))
    if not vary:
        return prof, ()
    varied = vary_cohort(prof, seed)
    return varied.profile, varied.whole


def simulate_cohort(
    out_dir: str | Path,
    profile: str = "demo",
    seed: int = 0,
    n_subjects: int | None = None,
    bad_subjects: Sequence[str] = (),
    n_jobs: int = 1,
    n_volumes: int | None = None,
    vary: bool = False,
) -> CohortResult:
    """Simulate a cohort and write it as BIDS with ground truth.

    Parameters
    ----------
    out_dir
        BIDS root to create (may exist; subjects in it are overwritten).
    profile
        ``tiny``, ``demo``, ``beijing`` or ``multiband`` (:data:`~rsnflow.simulate.profiles.PROFILES`).
    seed
        Cohort seed; the same seed writes the same bytes.
    n_subjects
        Good subjects to write (default: the profile's count).
    bad_subjects
        Defects from :data:`BAD_KINDS`, one extra subject per entry, numbered
        after the good ones.
    n_jobs
        Worker processes.
    n_volumes
        Volumes per run (default: the profile's).
    vary
        Domain randomisation (:mod:`rsnflow.simulate.variation`): the cohort's
        TR, voxel size and whole networks are drawn from the seed, and each
        subject's amplitudes and noise models; ``False`` writes the profile as is.

    Returns
    -------
    CohortResult
        What was written, and where.

    Raises
    ------
    ValueError
        For an unknown profile or defect, ``n_volumes`` below 3 or ``n_subjects`` below 1.
    """
    prof, whole = cohort_profile(profile, n_volumes, vary, seed)
    n = prof.n_subjects if n_subjects is None else int(n_subjects)
    if n < 1:
        raise ValueError(f"n_subjects must be at least 1, got {n}")
    for kind in bad_subjects:
        if kind not in BAD_KINDS:
            raise ValueError(f"unknown bad-subject kind {kind!r} (valid: {', '.join(BAD_KINDS)})")
    total = n + len(bad_subjects)
    width = max(2, len(str(total)))
    labels = [f"{i + 1:0{width}d}" for i in range(total)]
    defects: list[str | None] = [None] * n + list(bad_subjects)
    bids = Path(out_dir)
    gt = bids / "derivatives" / "groundtruth"
    names = list(source_table()["name"])

    _write_metadata(bids, gt, prof, seed, labels, defects)
    if vary:
        acquisition = {k: getattr(prof, k) for k in ("tr", "voxel_mm", "shape", "n_volumes")}
        shift = {"node_shift_mm": node_offsets(seed)[0]}
        write_json({**acquisition, "whole_networks": list(whole), **shift}, gt / "variation.json")
    else:  # a varied cohort simulated over: its acquisition is no longer this one
        (gt / "variation.json").unlink(missing_ok=True)
    bad = {lab: d for lab, d in zip(labels, defects, strict=True) if d is not None}
    jobs = [
        (bids, gt, prof, seed, i, lab, d, names, vary, whole)
        for i, (lab, d) in enumerate(zip(labels, defects, strict=True))
    ]
    log.info("simulating %d subjects (%s profile, seed %d) into %s", total, prof.name, seed, bids)
    map_subjects(_one_subject, jobs, n_jobs, "simulate")
    return CohortResult(bids, labels, bad, gt, prof)

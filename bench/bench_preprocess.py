"""Preprocessing speed and accuracy at the beijing profile, side by side with peers.

For each of N simulated beijing subjects (64x64x33x225), in this one script:

- rsnflow's ``preprocess_subject``: seconds per step, peak memory, and
  accuracy against the simulator's truth (motion RMS error, registration mean
  displacement error over MNI brain voxels);
- motion correction by nipy ``Realign4d`` and ANTsPy ``motion_correction``
  (BOLDRigid), and registration by ANTsPy ``registration(type_of_transform=
  "Affine")`` (mutual information), when those packages are importable.

Accuracy is one convention-free measure for every tool: the mean distance
(mm) between where the tool maps brain points and where the truth maps them.
A tool's transform direction convention is taken as the one of its two
directions that agrees with the truth (the other is off by the full motion).

    python bench/bench_preprocess.py [--subjects 3] [--no-peers]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

from rsnflow.config import load_config
from rsnflow.preprocess.motion import fov_centre, relative_to
from rsnflow.preprocess.participant import preprocess_subject
from rsnflow.resample import affine_points, grid_points
from rsnflow.simulate import PROFILES, simulate_cohort
from rsnflow.space import MNI4_AFFINE, load_brain_mask, load_template
from rsnflow.transforms import rigid_matrix

SEED = 2024


def _truth(gt: Path, label: str) -> tuple[np.ndarray, np.ndarray]:
    import pandas as pd

    motion = pd.read_csv(gt / f"sub-{label}" / f"sub-{label}_motion.tsv", sep="\t").iloc[:, :6].to_numpy()
    xfm = json.loads((gt / f"sub-{label}" / f"sub-{label}_xfm.json").read_text())
    return motion, np.asarray(xfm["native_to_mni"])


def _brain_points_native(img: nib.Nifti1Image) -> np.ndarray:
    mean = np.asarray(img.dataobj[..., img.shape[-1] // 2], dtype=np.float32)
    sel = (mean > 0.3 * np.percentile(mean, 99)).reshape(-1)
    return affine_points(img.affine, grid_points(img.shape)[sel][::7])


def _motion_error(mats: np.ndarray, truth: np.ndarray, pts: np.ndarray) -> float:
    """Mean over volumes and points of |T_est y - T_true y| (mm); both (T, 4, 4)."""
    d = affine_points(mats, pts) - affine_points(truth, pts)
    return float(np.linalg.norm(d, axis=-1).mean())


def _best_direction(mats: np.ndarray, truth: np.ndarray, pts: np.ndarray) -> float:
    return min(_motion_error(mats, truth, pts), _motion_error(np.linalg.inv(mats), truth, pts))


def _ras_lps() -> np.ndarray:
    return np.diag([-1.0, -1.0, 1.0, 1.0])


def _ants_matrix(path: str) -> np.ndarray:
    """An ITK affine/rigid transform file as a 4x4 RAS matrix (fixed -> moving points)."""
    import ants

    tx = ants.read_transform(path)
    p = np.asarray(tx.parameters, dtype=float)
    centre = np.asarray(tx.fixed_parameters, dtype=float)
    if len(p) == 6:  # Euler3D: angles then translation
        m3 = ants.create_ants_transform(
            transform_type="Euler3DTransform", parameters=p, fixed_parameters=centre
        )
        p = np.asarray(m3.parameters)
        lin = _euler_matrix(p[:3])
        t = p[3:]
    else:
        lin = p[:9].reshape(3, 3)
        t = p[9:12]
    m = np.eye(4)
    m[:3, :3] = lin
    m[:3, 3] = t + centre - lin @ centre
    return _ras_lps() @ m @ _ras_lps()


def _euler_matrix(angles: np.ndarray) -> np.ndarray:
    ax, ay, az = angles
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ rx @ ry  # ITK Euler3D default (ComputeZYX off): Z X Y


def _peer_motion(img: nib.Nifti1Image, ref: int, truth: np.ndarray, pts: np.ndarray) -> dict[str, dict]:
    out: dict[str, dict] = {}
    try:
        from nipy.algorithms.registration import Realign4d
        from nipy.io.nifti_ref import nifti2nipy

        t0 = time.perf_counter()
        # slice_info given: nipy 0.6.1's own guess of the slice axis fails on numpy >= 2.
        r = Realign4d(nifti2nipy(img), tr=2.0, slice_info=(2, 1))
        r.estimate(refscan=ref)
        mats = np.stack([t.as_affine() for t in r._transforms[0]])
        secs = time.perf_counter() - t0
        out["nipy_Realign4d"] = {
            "seconds": secs,
            "mean_displacement_error_mm": _best_direction(mats, truth, pts),
        }
    except Exception as exc:  # the peer is optional; say why it did not run
        out["nipy_Realign4d"] = {"error": f"{type(exc).__name__}: {exc}"}
    try:
        import ants

        with tempfile.TemporaryDirectory() as tmp:
            nib.save(img, f"{tmp}/bold.nii.gz")
            image = ants.image_read(f"{tmp}/bold.nii.gz")
            fixed = ants.slice_image(image, axis=3, idx=ref)
            t0 = time.perf_counter()
            res = ants.motion_correction(
                image, fixed=fixed, type_of_transform="BOLDRigid", outprefix=f"{tmp}/mc_"
            )
            secs = time.perf_counter() - t0
            mats = np.stack([_ants_matrix(p[0]) for p in res["motion_parameters"]])
        out["ants_motion_correction"] = {
            "seconds": secs, "mean_displacement_error_mm": _best_direction(mats, truth, pts)
        }  # fmt: skip
    except Exception as exc:
        out["ants_motion_correction"] = {"error": f"{type(exc).__name__}: {exc}"}
    return out


def _peer_registration(mean_epi: nib.Nifti1Image, truth: np.ndarray, mni_pts: np.ndarray) -> dict[str, dict]:
    try:
        import ants

        with tempfile.TemporaryDirectory() as tmp:
            nib.save(mean_epi, f"{tmp}/mean.nii.gz")
            nib.save(load_template(), f"{tmp}/template.nii.gz")
            moving = ants.image_read(f"{tmp}/mean.nii.gz")
            fixed = ants.image_read(f"{tmp}/template.nii.gz")
            t0 = time.perf_counter()
            # outprefix: ANTs otherwise leaves its transform files in /tmp.
            reg = ants.registration(
                fixed=fixed, moving=moving, type_of_transform="Affine", outprefix=f"{tmp}/reg_"
            )
            secs = time.perf_counter() - t0
            m = _ants_matrix(reg["fwdtransforms"][0])
        err = min(
            float(np.linalg.norm(affine_points(mm, mni_pts) - affine_points(truth, mni_pts), axis=1).mean())
            for mm in (m, np.linalg.inv(m))
        )
        return {"ants_registration_affine": {"seconds": secs, "mean_displacement_error_mm": err}}
    except Exception as exc:
        return {"ants_registration_affine": {"error": f"{type(exc).__name__}: {exc}"}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--subjects", type=int, default=3)
    ap.add_argument("--no-peers", action="store_true")
    args = ap.parse_args()
    cfg = load_config().preprocess
    template_mask = load_brain_mask().get_fdata() > 0
    mni_pts = affine_points(MNI4_AFFINE, grid_points(template_mask.shape)[template_mask.reshape(-1)])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cohort = simulate_cohort(f"{tmp}/bids", profile="beijing", seed=SEED, n_subjects=args.subjects)
        for label in cohort.subjects:
            bold_path = cohort.bids_dir / f"sub-{label}" / "func" / f"sub-{label}_task-rest_bold.nii.gz"
            motion_true, native_to_mni = _truth(cohort.groundtruth_dir, label)
            qc = preprocess_subject(bold_path, f"{tmp}/deriv", label, cfg, device="cpu")
            ref = PROFILES["beijing"].n_volumes // 2
            img = nib.load(bold_path)
            centre = fov_centre(img.shape, img.affine)
            truth_rel = rigid_matrix(relative_to(motion_true, motion_true[ref], centre), centre)
            pts = _brain_points_native(img)
            conf = np.loadtxt(
                Path(f"{tmp}/deriv/sub-{label}/func/sub-{label}_task-rest_desc-confounds_timeseries.tsv"),
                skiprows=1, usecols=range(6),
            )  # fmt: skip
            reg_truth = rigid_matrix(motion_true[ref]) @ np.linalg.inv(native_to_mni)
            reg_est = np.asarray(qc["mni_to_epi"])
            row = {
                "subject": label,
                "rsnflow_seconds": qc["seconds"],
                "rsnflow_total_s": sum(qc["seconds"].values()),
                "rsnflow_motion_error_mm": _motion_error(rigid_matrix(conf, centre), truth_rel, pts),
                "rsnflow_registration_error_mm": float(
                    np.linalg.norm(
                        affine_points(reg_est, mni_pts) - affine_points(reg_truth, mni_pts), axis=1
                    ).mean()
                ),
            }
            if not args.no_peers:
                row |= _peer_motion(img, ref, truth_rel, pts)
                mean_epi = nib.load(bold_path)
                mean_native = nib.Nifti1Image(
                    np.asarray(mean_epi.dataobj, np.float32).mean(-1), mean_epi.affine
                )
                row |= _peer_registration(mean_native, reg_truth, mni_pts)
            rows.append(row)
            print(json.dumps(row, default=float), flush=True)
    summary = {
        "rsnflow_total_s_median": statistics.median(r["rsnflow_total_s"] for r in rows),
        "rsnflow_step_s_median": {
            k: statistics.median(r["rsnflow_seconds"][k] for r in rows) for k in rows[0]["rsnflow_seconds"]
        },
        "rsnflow_motion_error_mm_median": statistics.median(r["rsnflow_motion_error_mm"] for r in rows),
        "rsnflow_registration_error_mm_median": statistics.median(
            r["rsnflow_registration_error_mm"] for r in rows
        ),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    for peer in ("nipy_Realign4d", "ants_motion_correction", "ants_registration_affine"):
        ok = [r[peer] for r in rows if peer in r and "seconds" in r[peer]]
        if ok:
            summary[f"{peer}_s_median"] = statistics.median(p["seconds"] for p in ok)
            summary[f"{peer}_error_mm_median"] = statistics.median(
                p["mean_displacement_error_mm"] for p in ok
            )
        elif rows and peer in rows[0]:
            summary[f"{peer}_error"] = rows[0][peer].get("error")
    print(json.dumps(summary, indent=2, default=float))


if __name__ == "__main__":
    main()

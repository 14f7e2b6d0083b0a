"""Registration to MNI 4 mm against two simulators' truth, side by side with ANTsPy's affine.

Two sets of mean EPIs, registered by every variant in this one process:

- **A**: beijing-profile runs of ``rsnflow.simulate`` (64x64x33, 3.1x3.1x3.6 mm,
  a 119 mm slab missing the bottom of the cerebellum, a smooth bias field),
  motion-corrected and averaged as ``rsnflow preprocess`` does it; the truth
  is the simulator's MNI -> reference-volume transform (affine: rotation,
  translation, a scale per axis). Error: the mean distance over MNI brain
  voxels between where the registration and the truth map them.
- **B**: the head of ``bench/second_simulator.py`` (the MNI T1 turned into EPI
  contrast by thresholds, not rsnflow's tissue maps; 3.3 mm isotropic,
  LPS-ordered, oblique) under a rigid pose and a smooth nonlinear warp (up to
  3 mm) that no affine undoes, plus the thermal noise of a mean. Error: the
  mean distance over native brain voxels between where the registration puts
  them in MNI and where they truly are; its floor (the least-squares best
  affine, warp included) is printed beside it.

Variants: rsnflow as it is; the ablations that locate the error (the
correlation ratio alone, as before, at 2 mm final smoothing; unsmoothed; the
partial-volume model plus a smooth intensity field, tried and dropped);
ANTsPy ``registration(type_of_transform="Affine")`` on the same images when
``ants`` imports (it is not in the lock; see docs/benchmarks.md for the
scratch venv). Every variant registers a case before the next case is made
ready, so that a busy machine slows all alike. Prints one JSON line per
variant and a markdown table: median error, worst error, median seconds, and
ANTs' median time over each variant's. Usage::

    python bench/bench_registration.py [--subjects 6] [--seed 2024]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage

from rsnflow.preprocess import registration
from rsnflow.preprocess.motion import apply_motion_mean, estimate_motion
from rsnflow.resample import affine_points, grid_points
from rsnflow.simulate import simulate_cohort
from rsnflow.space import MNI4_AFFINE, load_brain_mask, load_template
from rsnflow.transforms import rigid_matrix

sys.path.insert(0, str(Path(__file__).resolve().parent))
import second_simulator  # a sibling script, not a package
from bench_preprocess import _ants_matrix

Case = dict[str, Any]


def cohort_a(n: int, seed: int) -> list[Case]:
    """Mean EPIs of beijing runs as preprocessing makes them, with the true MNI -> EPI matrix."""
    mask = load_brain_mask().get_fdata() > 0
    pts = affine_points(MNI4_AFFINE, grid_points(mask.shape)[mask.reshape(-1)])
    cases = []
    with tempfile.TemporaryDirectory() as tmp:
        cohort = simulate_cohort(f"{tmp}/bids", profile="beijing", seed=seed, n_subjects=n)
        for label in cohort.subjects:
            img = nib.load(cohort.bids_dir / f"sub-{label}" / "func" / f"sub-{label}_task-rest_bold.nii.gz")
            data = np.asarray(img.dataobj, np.float32)
            gt = cohort.groundtruth_dir / f"sub-{label}"
            motion = pd.read_csv(gt / f"sub-{label}_motion.tsv", sep="\t").iloc[:, :6].to_numpy()
            to_mni = np.asarray(json.loads((gt / f"sub-{label}_xfm.json").read_text())["native_to_mni"])
            est = estimate_motion(data, img.affine, reference="middle", device="cpu", show_progress=False)
            truth = rigid_matrix(motion[est.reference_index]) @ np.linalg.inv(to_mni)
            mean = apply_motion_mean(data, img.affine, est.params, est.centre, "cpu")
            true_pts = affine_points(truth, pts)

            def error(m: np.ndarray, true_pts: np.ndarray = true_pts) -> float:
                return float(np.linalg.norm(affine_points(m, pts) - true_pts, axis=1).mean())

            cases.append({"set": "A", "mean": mean, "affine": img.affine, "error": error, "floor": 0.0})
    return cases


def cohort_b(n: int, seed: int) -> list[Case]:
    """Mean EPIs of the second simulator's head under a pose and a warp, with where each voxel truly is."""
    sim = second_simulator
    head = sim.Head()
    shape = sim.SHAPE
    cases = []
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        aff = np.diag([-sim.VOXEL_MM, sim.VOXEL_MM, sim.VOXEL_MM, 1.0])
        aff[:3, 3] = -np.diag(aff)[:3] * (np.array(shape) - 1) / 2
        angles = rng.normal(0, [0.08, 0.05, 0.05])
        shift = np.array([0.0, -15.0, 12.0]) + rng.normal(0, 3, 3)
        warp = sim._warp(rng, head.shape)
        native = grid_points(shape) @ aff[:3, :3].T + aff[:3, 3]
        to_vox = np.linalg.inv(head.affine)
        vox = affine_points(to_vox, native @ sim._rotation(angles).T + shift)
        src = vox + np.stack([ndimage.map_coordinates(w, vox.T, order=1) for w in warp], axis=1)
        mean = ndimage.map_coordinates(head.epi, src.T, order=1).reshape(shape)
        # The thermal noise left in a mean of 240 volumes of sigma 8 (x4: a margin).
        mean = (mean + rng.normal(0, 4 * 8.0 / np.sqrt(240), shape)).astype(np.float32)
        brain = ndimage.map_coordinates(head.brain.astype(np.float32), src.T, order=0) > 0.5
        at, true_mni = native[brain], affine_points(head.affine, src[brain])

        def error(m: np.ndarray, at: np.ndarray = at, true_mni: np.ndarray = true_mni) -> float:
            return float(np.linalg.norm(affine_points(np.linalg.inv(m), at) - true_mni, axis=1).mean())

        design = np.c_[at, np.ones(len(at))]
        best = design @ np.linalg.lstsq(design, true_mni, rcond=None)[0]
        floor = float(np.linalg.norm(best - true_mni, axis=1).mean())
        cases.append({"set": "B", "mean": mean, "affine": aff, "error": error, "floor": floor})
    return cases


@contextlib.contextmanager
def patched(**attrs: Any) -> Iterator[None]:
    """Set module attributes of ``rsnflow.preprocess.registration`` for one variant."""
    old = {k: getattr(registration, k) for k in attrs}
    for k, v in attrs.items():
        setattr(registration, k, v)
    try:
        yield
    finally:
        for k, v in old.items():
            setattr(registration, k, v)


def _field_design(tissues: np.ndarray, world: np.ndarray) -> np.ndarray:
    """The model plus a quadratic in position: an additive intensity nonuniformity."""
    x, y, z = ((world - world.mean(0)) / 60.0).T
    field = np.stack([x, y, z, x * x, y * y, z * z, x * y, x * z, y * z], axis=1)
    return np.concatenate([np.ones((len(world), 1)), tissues, field], axis=1)


#: The ablations: module settings that turn the final stage back into what it replaced.
ABLATIONS: dict[str, dict[str, Any]] = {
    "correlation ratio only, 3 then 2 mm final smoothing (before)": {
        "_STAGES": ((6, 6.0, 2, "ratio"), (9, 4.0, 2, "ratio"), (12, 3.0, 1, "ratio"), (12, 2.0, 1, "ratio")),
        "_OPTIONS": {"maxiter": 200, "ftol": 1e-7, "gtol": 1e-6},
    },
    "correlation ratio only, unsmoothed final stage": {
        "_STAGES": ((6, 6.0, 2, "ratio"), (9, 4.0, 2, "ratio"), (12, 0.0, 1, "ratio")),
    },
    "partial-volume model plus a quadratic intensity field (tried)": {"_tissue_design": _field_design},
    "rsnflow (partial-volume model, unsmoothed final stage)": {},
}


def _run_patched(attrs: dict[str, Any], case: Case) -> tuple[float, np.ndarray]:
    """Seconds and MNI -> EPI matrix of rsnflow's registration with ``attrs`` set."""
    with patched(**attrs):
        t0 = time.perf_counter()
        reg = registration.register_to_mni(case["mean"], case["affine"])
        return time.perf_counter() - t0, reg.mni_to_epi


def _ants(case: Case) -> tuple[float, np.ndarray]:
    import ants

    with tempfile.TemporaryDirectory() as tmp:
        nib.save(nib.Nifti1Image(case["mean"], case["affine"]), f"{tmp}/mean.nii.gz")
        nib.save(load_template(), f"{tmp}/template.nii.gz")
        moving, fixed = ants.image_read(f"{tmp}/mean.nii.gz"), ants.image_read(f"{tmp}/template.nii.gz")
        t0 = time.perf_counter()
        reg = ants.registration(fixed=fixed, moving=moving, type_of_transform="Affine", outprefix=f"{tmp}/r_")
        seconds = time.perf_counter() - t0
        m = _ants_matrix(reg["fwdtransforms"][0])
    # Its direction convention: the one of the two that agrees with the truth.
    return seconds, min((m, np.linalg.inv(m)), key=case["error"])


def _summary(name: str, results: list[tuple[Case, float, np.ndarray]]) -> dict[str, Any]:
    """Errors and times of one variant over every case; printed as a JSON line."""
    row: dict[str, Any] = {"variant": name}
    for which in ("A", "B"):
        errs = [case["error"](m) for case, _, m in results if case["set"] == which]
        row[f"{which}_errors_mm"] = [round(e, 3) for e in errs]
        row[f"{which}_median_mm"] = statistics.median(errs)
        row[f"{which}_worst_mm"] = max(errs)
    row["median_s"] = statistics.median(seconds for _, seconds, _ in results)
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--subjects", type=int, default=6, help="per set")
    ap.add_argument("--seed", type=int, default=2024)
    args = ap.parse_args()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = cohort_a(args.subjects, args.seed) + cohort_b(args.subjects, args.seed)
    floors = [c["floor"] for c in cases if c["set"] == "B"]
    print(json.dumps({"B_best_affine_floor_mm": [round(f, 3) for f in floors]}))
    variants: dict[str, Callable[[Case], tuple[float, np.ndarray]]] = {}
    for name, attrs in ABLATIONS.items():
        variants[name] = functools.partial(_run_patched, attrs)
    try:
        import ants  # noqa: F401
    except ImportError:
        print("ants is not importable: no peer row (see the module docstring)")
    else:
        variants["ANTsPy registration(type_of_transform='Affine')"] = _ants
    results: dict[str, list[tuple[Case, float, np.ndarray]]] = {name: [] for name in variants}
    for case in cases:
        for name, run in variants.items():
            seconds, m = run(case)
            results[name].append((case, seconds, m))
    rows = [_summary(name, res) for name, res in results.items()]
    peer = rows[-1] if rows[-1]["variant"].startswith("ANTsPy") else None
    print(f"\nB's floor (best affine to the warped truth): median {statistics.median(floors):.2f} mm\n")
    print("| variant | A median (worst) mm | B median (worst) mm | median s | ANTs s / this s |")
    print("|---|---|---|---|---|")
    for r in rows:
        ratio = f"{peer['median_s'] / r['median_s']:.2f}" if peer else ""
        print(
            f"| {r['variant']} | {r['A_median_mm']:.2f} ({r['A_worst_mm']:.2f}) | "
            f"{r['B_median_mm']:.2f} ({r['B_worst_mm']:.2f}) | {r['median_s']:.2f} | {ratio} |"
        )


if __name__ == "__main__":
    main()

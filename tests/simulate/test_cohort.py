from __future__ import annotations

import hashlib
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from rsnflow.io import InvalidInputError, load_bold
from rsnflow.simulate import PROFILES, simulate_cohort, simulate_subject
from rsnflow.space import load_tissue_probabilities, world_to_voxel
from rsnflow.transforms import apply_affine, framewise_displacement, rigid_matrix


def _truth(cohort, label: str) -> tuple[pd.DataFrame, dict]:
    d = cohort.groundtruth_dir / f"sub-{label}"
    motion = pd.read_csv(d / f"sub-{label}_motion.tsv", sep="\t")
    xfm = json.loads((d / f"sub-{label}_xfm.json").read_text())
    return motion, xfm


def _bold(cohort, label: str) -> nib.Nifti1Image:
    return nib.load(cohort.bids_dir / f"sub-{label}" / "func" / f"sub-{label}_task-rest_bold.nii.gz")


def _gm_at(native_img: nib.Nifti1Image, to_mni: np.ndarray) -> np.ndarray:
    """Grey-matter probability (MNI, nearest 4 mm voxel) of every native voxel."""
    ijk = np.indices(native_img.shape[:3]).reshape(3, -1).T
    mni = apply_affine(np.asarray(to_mni) @ native_img.affine, ijk)
    vox = np.rint(world_to_voxel(mni)).astype(int)
    gm = load_tissue_probabilities()["gm"]
    ok = np.all((vox >= 0) & (vox < gm.shape), axis=1)
    out = np.zeros(len(vox), np.float32)
    out[ok] = gm[tuple(vox[ok].T)]
    return out


def test_bids_layout_and_sidecars(tiny_cohort) -> None:
    root = tiny_cohort.bids_dir
    desc = json.loads((root / "dataset_description.json").read_text())
    assert desc["DatasetType"] == "raw"
    assert desc["BIDSVersion"]
    parts = pd.read_csv(root / "participants.tsv", sep="\t")
    assert list(parts["participant_id"]) == [f"sub-{s}" for s in tiny_cohort.subjects]
    prof = PROFILES["tiny"]
    for label in tiny_cohort.subjects[:3]:
        img = _bold(tiny_cohort, label)
        assert img.shape == (*prof.shape, prof.n_volumes)
        assert img.get_data_dtype() == np.int16
        np.testing.assert_allclose(img.header.get_zooms()[:3], prof.voxel_mm)
        side = json.loads((root / f"sub-{label}/func/sub-{label}_task-rest_bold.json").read_text())
        assert side["RepetitionTime"] == prof.tr
        assert load_bold(root / f"sub-{label}/func/sub-{label}_task-rest_bold.nii.gz").tr == prof.tr
    gt = tiny_cohort.groundtruth_dir
    assert json.loads((gt / "dataset_description.json").read_text())["DatasetType"] == "derivative"
    sources = pd.read_csv(gt / "sources.tsv", sep="\t")
    assert (sources["kind"] == "network").sum() == 56
    assert set(sources.loc[sources["kind"] == "noise", "label"]) == {"Noise"}
    maps = nib.load(gt / "sub-01" / "sub-01_space-MNI152NLin2009aSym_res-4mm_desc-sources_components.nii.gz")
    assert maps.shape == (45, 54, 45, len(sources))


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_same_seed_same_bytes_and_independent_of_cohort_size(tiny_cohort, tmp_path: Path) -> None:
    one = simulate_cohort(tmp_path / "a", profile="tiny", seed=7, n_subjects=1)
    mine = _digest(one.bids_dir / "sub-01")
    theirs = _digest(tiny_cohort.bids_dir / "sub-01")
    assert mine == theirs
    assert _digest(one.groundtruth_dir / "sub-01") == _digest(tiny_cohort.groundtruth_dir / "sub-01")
    parallel = simulate_cohort(tmp_path / "p", profile="tiny", seed=7, n_subjects=2, n_jobs=2)
    assert _digest(parallel.bids_dir / "sub-02") == _digest(tiny_cohort.bids_dir / "sub-02")
    other = simulate_cohort(tmp_path / "b", profile="tiny", seed=8, n_subjects=1)
    assert _digest(other.bids_dir / "sub-01") != mine


def _motion_errors(data: np.ndarray, affine: np.ndarray, params: np.ndarray) -> tuple[float, float, float]:
    """Edge mismatch of the most displaced volumes with volume 0 (the reference pose):
    as acquired, after undoing the true motion, and after applying it twice."""
    inv = np.linalg.inv(affine)
    ijk = np.indices(data.shape[:3]).reshape(3, -1).astype(float)
    disp = np.abs(params[:, :3]).sum(1) + 50 * np.abs(params[:, 3:]).sum(1)
    worst = np.argsort(disp)[-8:]
    ref = data[..., 0]
    edges = ndimage.gaussian_gradient_magnitude(ref, 1.0) > np.percentile(ref, 90) * 0.1

    def err(sign: float) -> float:
        total = 0.0
        for t in worst:
            # Volume t shows the head moved by R_t: sample it at R_t(y) to undo that.
            m = inv @ rigid_matrix(sign * params[t]) @ affine
            pts = m[:3, :3] @ ijk + m[:3, 3:4]
            back = ndimage.map_coordinates(data[..., t], pts, order=1).reshape(ref.shape)
            total += float(np.mean((back - ref)[edges] ** 2))
        return total

    return err(0.0), err(1.0), err(-1.0)


def test_true_motion_is_what_is_in_the_data(tiny_cohort) -> None:
    # Static head and the subject's motion made 8 times larger, so that motion,
    # not the interpolation of a 4.5 mm grid, dominates the change between
    # volumes: undoing the true motion removes nearly all of it.
    sub = simulate_subject(PROFILES["tiny"], 7, 0, fluctuations=False, motion_scale=8.0)
    raw, undone, wrong = _motion_errors(sub.bold, sub.affine, sub.motion)
    assert undone < 0.25 * raw, (raw, undone)
    assert wrong > 1.5 * raw, (raw, wrong)
    # The cohort's subject has the same motion (same random stream) at its real
    # size; there physiology, thermal noise and motion-related intensity
    # changes remain after undoing it, but undoing still helps and doubling hurts.
    img = _bold(tiny_cohort, "01")
    motion, _ = _truth(tiny_cohort, "01")
    np.testing.assert_allclose(8.0 * motion.iloc[:, :6].to_numpy(), sub.motion, atol=1e-5)
    raw, undone, wrong = _motion_errors(
        np.asarray(img.dataobj, np.float32), img.affine, motion.iloc[:, :6].to_numpy()
    )
    assert undone < raw < wrong, (raw, undone, wrong)


def test_networks_fall_in_grey_matter_after_the_true_transform(tiny_cohort) -> None:
    img = _bold(tiny_cohort, "02")
    data = np.asarray(img.dataobj, dtype=np.float32)
    _, xfm = _truth(tiny_cohort, "02")
    sources = pd.read_csv(tiny_cohort.groundtruth_dir / "sources.tsv", sep="\t")
    tcs = pd.read_csv(tiny_cohort.groundtruth_dir / "sub-02" / "sub-02_desc-sources_timeseries.tsv", sep="\t")
    y = data.reshape(-1, data.shape[-1]).T
    inside = y.mean(0) > 200
    # Correlation of each voxel with each true time course (60 volumes are
    # too few for one regression on all 64 sources at once).
    yc = y[:, inside] - y[:, inside].mean(0)
    yc /= np.linalg.norm(yc, axis=0)
    xc = tcs.to_numpy() - tcs.to_numpy().mean(0)
    xc /= np.linalg.norm(xc, axis=0)
    beta = xc.T @ yc
    gm = _gm_at(img, xfm["native_to_mni"])[inside]
    fractions = []
    for k in np.flatnonzero(sources["kind"] == "network"):
        top = np.argsort(beta[k])[-10:]
        fractions.append(np.mean(gm[top] > 0.3))
    # Where the data carry a network's time course is grey matter in MNI space.
    assert np.median(fractions) >= 0.8
    assert np.mean(np.array(fractions) >= 0.5) >= 0.9


def test_tsnr_and_framewise_displacement_in_range(tiny_cohort) -> None:
    for label in tiny_cohort.subjects[:3]:
        motion, xfm = _truth(tiny_cohort, label)
        fd = framewise_displacement(motion.iloc[:, :6].to_numpy())
        assert 0.05 <= np.median(fd[1:]) <= 0.3
        np.testing.assert_allclose(fd, motion["framewise_displacement"], atol=1e-5)
        img = _bold(tiny_cohort, label)
        y = np.asarray(img.dataobj, dtype=np.float32).reshape(-1, img.shape[-1]).T
        t = np.linspace(-1, 1, len(y))
        x = np.column_stack([np.ones_like(t), t, t * t])
        resid = y - x @ np.linalg.lstsq(x, y, rcond=None)[0]
        tsnr = y.mean(0) / np.maximum(resid.std(0), 1e-6)
        gm = _gm_at(img, xfm["native_to_mni"]) > 0.6
        assert 40 <= np.median(tsnr[gm]) <= 100, np.median(tsnr[gm])


def test_bad_subjects_have_their_defects(tiny_cohort) -> None:
    bad = pd.read_csv(tiny_cohort.groundtruth_dir / "bad_subjects.tsv", sep="\t", keep_default_na=False)
    expected = {
        "truncated": "truncated",
        "nan": "NaN",
        "3d": "expected a 4D",
        "no-tr": "no repetition time",
        "short": "3 volumes",
    }
    assert set(bad["defect"]) == set(expected)
    for pid, defect in zip(bad["participant_id"], bad["defect"], strict=True):
        path = tiny_cohort.bids_dir / pid / "func" / f"{pid}_task-rest_bold.nii.gz"
        with pytest.raises(InvalidInputError, match=expected[defect]):
            load_bold(path, min_volumes=10)


def test_unknown_profile_and_defect() -> None:
    with pytest.raises(ValueError, match="unknown profile"):
        simulate_cohort("/nonexistent", profile="huge")
    with pytest.raises(ValueError, match="unknown bad-subject kind"):
        simulate_cohort("/nonexistent", profile="tiny", bad_subjects=["flaky"])

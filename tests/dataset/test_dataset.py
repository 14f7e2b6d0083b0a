from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from rsnflow.atlas import load_taxonomy
from rsnflow.cli import EXIT_ERROR, main
from rsnflow.config import load_config
from rsnflow.dataset import (
    SPLITS,
    MapDataset,
    build_dataset,
    class_weights,
    make_loader,
    normalise_maps,
    rgb_projections,
    subject_split,
)
from rsnflow.ica import dr_outputs
from rsnflow.io import InvalidInputError
from rsnflow.space import MNI4_SHAPE, load_brain_mask


@pytest.fixture(scope="module")
def dataset(tiny_dataset: Path) -> Path:
    return tiny_dataset


def test_layout_and_manifest(dataset: Path, tiny_group) -> None:
    manifest = json.loads((dataset / "manifest.json").read_text())
    index = pd.read_csv(dataset / "index.tsv", sep="\t", dtype={"subject": str})
    maps = np.load(dataset / "maps.npy", mmap_mode="r")
    k = tiny_group["ica"].order
    assert maps.shape == (8 * k, *MNI4_SHAPE) and maps.dtype == np.float16
    assert manifest["n_samples"] == len(index) == 8 * k
    assert manifest["classes"] == load_taxonomy().labels
    for name in ("maps.npy", "index.tsv"):
        assert manifest["sha256"][name] == hashlib.sha256((dataset / name).read_bytes()).hexdigest()
    assert "code_version" in manifest and manifest["parameters"]["dtype"] == "float16"
    assert not list(dataset.parent.glob(".dataset.*"))  # no temporary directory left


def test_no_subject_leakage_and_stratified_splits(dataset: Path) -> None:
    index = pd.read_csv(dataset / "index.tsv", sep="\t", dtype={"subject": str})
    per_subject = index.groupby("subject")["split"].nunique()
    assert (per_subject == 1).all()
    sets = [set(index.loc[index["split"] == s, "subject"]) for s in SPLITS]
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
    assert [len(s) for s in sets] == [5, 1, 2]  # 70/10/20 of 8 subjects, rounded
    dist = pd.crosstab(index["label"], index["split"], normalize="columns")
    assert (dist.max(axis=1) - dist.min(axis=1)).max() <= 0.02


def test_class_weights_from_the_training_split(dataset: Path) -> None:
    manifest = json.loads((dataset / "manifest.json").read_text())
    index = pd.read_csv(dataset / "index.tsv", sep="\t")
    train = index[index["split"] == "train"]
    counts = np.bincount(train["class_index"], minlength=58)
    w = np.array(manifest["class_weights"])
    present = counts > 0
    expected = len(train) / (present.sum() * counts[present])
    np.testing.assert_allclose(w[present], expected, atol=5e-7)  # the manifest keeps 6 decimals
    assert (w[~present] == 0).all()


def test_stored_maps_are_the_normalised_dual_regression_maps(dataset: Path, tiny_group) -> None:
    import nibabel as nib

    index = pd.read_csv(dataset / "index.tsv", sep="\t", dtype={"subject": str})
    row = index.iloc[-1]
    dr = np.asarray(nib.load(dr_outputs(tiny_group["deriv"], row["subject"])["maps"]).dataobj)[
        ..., row["component"]
    ]
    mask = tiny_group["ica"].mask
    want = normalise_maps(dr[None], mask)[0]
    got = np.load(dataset / "maps.npy", mmap_mode="r")[row["sample"]].astype(np.float32)
    assert np.abs(got - want).max() < 2e-3 * np.abs(want).max()


def test_reader_views_and_worker_determinism(dataset: Path) -> None:
    vol = MapDataset(dataset, "train", "volume")
    x, y = vol[0]
    assert x.shape == (1, *MNI4_SHAPE) and x.dtype == torch.float32 and y.dtype == torch.long
    proj = MapDataset(dataset, "val", "projection")
    p, _ = proj[3]
    assert p.shape == (3, 64, 64) and p.min() == 0 and p.max() == 255
    serial = [b for b in make_loader(vol, 16, shuffle=True, num_workers=0, seed=5)]
    parallel = [b for b in make_loader(vol, 16, shuffle=True, num_workers=2, seed=5)]
    assert len(serial) == len(parallel)
    for (xa, ya), (xb, yb) in zip(serial, parallel, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert sum(len(b[1]) for b in serial) == len(vol)


def test_rgb_projections_by_hand() -> None:
    vol = torch.zeros(45, 54, 45)
    vol[10, 20, 30] = 2.0
    vol[40, 5, 1] = 1.0
    img = rgb_projections(vol, size=64)
    assert img.shape == (3, 64, 64)
    # Each channel: its own projection, resized, min-max scaled to 0-255.
    from torch.nn import functional

    for c, axis in enumerate((0, 1, 2)):
        proj = vol.sum(axis)[None, None]
        want = functional.interpolate(proj, size=(64, 64), mode="bilinear", align_corners=False)[0, 0]
        want = (want - want.min()) / (want.max() - want.min()) * 255
        assert torch.allclose(img[c], want, atol=1e-3)
    batch = rgb_projections(torch.stack([vol, 2 * vol]), size=32)
    assert batch.shape == (2, 3, 32, 32) and torch.allclose(batch[0], batch[1], atol=1e-3)


def test_subject_split_rules() -> None:
    subjects = [f"{i:02d}" for i in range(176)]
    a = subject_split(subjects, [0.7, 0.1, 0.2], seed=1)
    assert a == subject_split(list(reversed(subjects)), [0.7, 0.1, 0.2], seed=1)
    counts = pd.Series(a).value_counts()
    assert (counts["train"], counts["val"], counts["test"]) == (123, 18, 35)
    assert subject_split(subjects, [0.7, 0.1, 0.2], seed=2) != a
    with pytest.raises(ValueError, match="at least 3 subjects"):
        subject_split(["01", "02"], [0.7, 0.1, 0.2], seed=0)


def test_normalise_and_weights_helpers() -> None:
    mask = load_brain_mask().get_fdata() > 0
    rng = np.random.default_rng(0)
    maps = rng.normal(3.0, 2.0, (2, *MNI4_SHAPE)).astype(np.float32)
    out = normalise_maps(maps, mask)
    assert np.allclose(out[:, mask].mean(1), 0, atol=1e-4) and np.allclose(out[:, mask].std(1), 1, atol=1e-4)
    assert (out[:, ~mask] == 0).all()
    assert list(class_weights(np.array([0, 0, 0, 1]), 3)) == pytest.approx([4 / 6, 2.0, 0.0])


def test_failed_build_leaves_the_previous_dataset(dataset: Path, tiny_group, tmp_path: Path) -> None:
    import shutil

    deriv = tmp_path / "deriv"
    shutil.copytree(tiny_group["deriv"], deriv)
    out = tmp_path / "ds"
    build_dataset(deriv, out, load_config().dataset)
    before = (out / "manifest.json").read_bytes()
    bad = dr_outputs(deriv, "08")["maps"]
    bad.write_bytes(bad.read_bytes()[:1000])  # truncated
    with pytest.raises(InvalidInputError, match="sub-08"):
        build_dataset(deriv, out, load_config().dataset, overwrite=True)
    assert (out / "manifest.json").read_bytes() == before
    assert not list(tmp_path.glob(".ds.*"))
    assert main(["dataset", str(tmp_path / "nowhere"), str(tmp_path / "x")]) == EXIT_ERROR

"""Synthetic noise maps: normalised like the dataset's maps, seeded, and never on a network."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from rsnflow.atlas import load_taxonomy
from rsnflow.dataset.noise_maps import KINDS, NoiseMapDataset, blob_pool, noise_map
from rsnflow.space import MNI4_AFFINE, MNI4_SHAPE


@pytest.fixture(scope="module")
def mask() -> np.ndarray:
    ijk = np.indices(MNI4_SHAPE).reshape(3, -1).T
    xyz = ijk @ MNI4_AFFINE[:3, :3].T + MNI4_AFFINE[:3, 3]
    # an ellipsoidal "brain" about the size of MNI's
    inside = (((xyz - [0, -18, 18]) / [68, 86, 62]) ** 2).sum(1) < 1
    return inside.reshape(MNI4_SHAPE)


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_is_z_scored_inside_the_mask_and_seeded(kind: str, mask: np.ndarray) -> None:
    a = noise_map(kind, mask, np.random.default_rng(1))
    b = noise_map(kind, mask, np.random.default_rng(1))
    c = noise_map(kind, mask, np.random.default_rng(2))
    assert a.shape == MNI4_SHAPE and a.dtype == np.float32
    assert abs(a[mask].mean()) < 1e-4 and abs(a[mask].std() - 1) < 1e-3
    assert not a[~mask].any()
    np.testing.assert_array_equal(a, b)
    assert np.corrcoef(a[mask], c[mask])[0, 1] < 0.9


def test_unknown_kind() -> None:
    with pytest.raises(ValueError, match="unknown noise map kind 'spikes'"):
        noise_map("spikes", np.ones(MNI4_SHAPE, bool), np.random.default_rng(0))


def test_blobs_keep_clear_of_every_network_node(mask: np.ndarray) -> None:
    pool = blob_pool(mask)
    xyz = pool @ MNI4_AFFINE[:3, :3].T + MNI4_AFFINE[:3, 3]
    tax = load_taxonomy()
    nodes = np.concatenate([tax.nodes(lab) for lab in tax.network_labels])
    nearest = np.linalg.norm(xyz[:, None] - nodes[None], axis=-1).min(1)
    assert len(pool) > 1000 and nearest.min() > 18.0
    # and the maps' peaks sit there: a blob map's strongest voxel is no network node
    m = noise_map("blobs", mask, np.random.default_rng(3), pool)
    peak = np.array(np.unravel_index(np.abs(m).argmax(), MNI4_SHAPE)) @ MNI4_AFFINE[:3, :3].T
    peak = peak + MNI4_AFFINE[:3, 3]
    assert np.linalg.norm(nodes - peak, axis=1).min() > 10.0


@pytest.mark.parametrize(("view", "shape"), [("volume", (1, *MNI4_SHAPE)), ("projection", (3, 32, 32))])
def test_dataset_gives_a_map_datasets_views(view: str, shape: tuple[int, ...], mask: np.ndarray) -> None:
    ds = NoiseMapDataset(mask, 7, noise_index=5, seed=4, view=view, projection_size=32)
    x, y = ds[6]
    assert len(ds) == 7 and tuple(x.shape) == shape and int(y) == 5
    assert torch.equal(ds.targets, torch.full((7,), 5))
    again = NoiseMapDataset(mask, 7, noise_index=5, seed=4, view=view, projection_size=32)
    assert torch.equal(again[6][0], x)  # the same seed, the same maps


def test_whole_networks_sum_one_subjects_sub_networks_of_one_network(
    tmp_path: Path, mask: np.ndarray
) -> None:
    from rsnflow.dataset.whole_networks import WholeNetworkDataset, whole_network_recipes

    classes = ["DMN-PCC-MID", "DMN-MPFC-MID", "DMN-ANGULAR-LEFT", "VISUAL-PRIMARY-MID", "Noise"]
    tax = load_taxonomy()
    assert {tax.parent(c) for c in classes[:3]} == {"DMN"}  # the taxonomy's own sub-networks
    rng = np.random.default_rng(0)
    index = pd.DataFrame(
        {
            "subject": np.repeat(["01", "02"], 5),
            "sample": np.arange(10),
            "class_index": np.tile(np.arange(5), 2),
        }
    )
    maps = np.zeros((10, *MNI4_SHAPE), np.float32)
    maps[:, mask] = rng.normal(size=(10, int(mask.sum())))
    np.save(tmp_path / "maps.npy", maps)
    recipes = whole_network_recipes(index, classes, 50, seed=1)
    for rows, weights, label in recipes:
        assert 2 <= len(rows) <= 3 and len(set(index.loc[rows, "subject"])) == 1  # one subject's maps
        assert set(index.loc[rows, "class_index"]) <= {0, 1, 2} and label in set(
            index.loc[rows, "class_index"]
        )
        assert ((weights >= 0.5) & (weights <= 1)).all()
    ds = WholeNetworkDataset(tmp_path, index, classes, mask, 50, seed=1)
    x, y = ds[0]
    rows, weights, label = recipes[0]
    expected = maps[rows][:, mask].T @ weights
    assert int(y) == label and np.corrcoef(x[0].numpy()[mask], expected)[0, 1] > 0.999
    assert abs(float(x[0].numpy()[mask].std()) - 1) < 1e-3 and not x[0].numpy()[~mask].any()
    # a dataset with no two sub-networks of one network in a subject makes none
    assert whole_network_recipes(index[index["class_index"] >= 2], classes, 5) == []

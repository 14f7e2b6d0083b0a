from __future__ import annotations

import numpy as np
import pytest

from rsnflow import space


def test_mask_grid_and_voxel_count() -> None:
    mask = space.load_brain_mask()
    assert mask.shape == (45, 54, 45)
    np.testing.assert_array_equal(
        mask.affine, [[-4, 0, 0, 90], [0, 4, 0, -126], [0, 0, 4, -72], [0, 0, 0, 1]]
    )
    n = int(mask.get_fdata().sum())
    assert 25_000 <= n <= 32_000


def test_template_matches_mask() -> None:
    t = space.load_template().get_fdata()
    m = space.load_brain_mask().get_fdata() > 0
    assert t.shape == (45, 54, 45)
    assert t[m].mean() > 3 * t[~m].mean()


@pytest.mark.parametrize(
    ("mm", "ijk"),
    [
        ((0, 0, 0), (22.5, 31.5, 18.0)),
        ((90, -126, -72), (0, 0, 0)),
        ((-86, 86, 104), (44, 53, 44)),
        ((2, -2, 0), (22, 31, 18)),
    ],
)
def test_world_voxel_round_trip(mm: tuple[float, ...], ijk: tuple[float, ...]) -> None:
    np.testing.assert_allclose(space.world_to_voxel(mm), ijk)
    np.testing.assert_allclose(space.voxel_to_world(ijk), mm)


def test_known_points_fall_in_the_brain() -> None:
    mask = space.load_brain_mask().get_fdata() > 0
    for mm in [(0, -52, 26), (-40, -20, 50), (0, 50, 0)]:  # PCC, left motor cortex, mPFC
        i, j, k = np.rint(space.world_to_voxel(mm)).astype(int)
        assert mask[i, j, k], mm
    i, j, k = np.rint(space.world_to_voxel((0, 0, 100))).astype(int)
    assert not mask[i, j, k]


def test_tissue_probabilities() -> None:
    tp = space.load_tissue_probabilities()
    total = tp["gm"] + tp["wm"] + tp["csf"]
    assert total.max() <= 1.0 + 1e-5
    mask = space.load_brain_mask().get_fdata() > 0
    assert np.all(total[~mask] == 0)
    assert tp["gm"][mask].mean() > 0.3


def test_resample_to_grid_preserves_world_positions() -> None:
    import nibabel as nib

    # A 2 mm image with a bright voxel at MNI (10, -20, 30).
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    aff[:3, 3] = [-100, -140, -80]
    data = np.zeros((100, 120, 100), np.float32)
    i, j, k = ((np.array([10, -20, 30]) - aff[:3, 3]) / 2).astype(int)
    data[i - 2 : i + 3, j - 2 : j + 3, k - 2 : k + 3] = 1
    out = space.resample_to_grid(nib.Nifti1Image(data, aff), "linear")
    peak = np.unravel_index(np.argmax(out.get_fdata()), out.shape)
    np.testing.assert_allclose(space.voxel_to_world(peak), [10, -20, 30], atol=4)

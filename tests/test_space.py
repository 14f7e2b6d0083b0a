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


def _left_blob() -> np.ndarray:
    """A 4D image on the grid, one bright voxel at MNI x = -40 (the left hemisphere)."""
    data = np.zeros((*space.MNI4_SHAPE, 2), np.float32)
    i, j, k = np.rint(space.world_to_voxel([-40, -20, 30])).astype(int)
    data[i, j, k, :] = [1.0, 2.0]
    return data


def test_grid_data_reads_the_grid_as_is() -> None:
    import nibabel as nib

    data = _left_blob()
    assert np.array_equal(space.grid_data(nib.Nifti1Image(data, space.MNI4_AFFINE)), data)


def test_grid_data_reorients_a_right_to_left_image_exactly() -> None:
    import nibabel as nib

    # The same voxel centres written RAS (x increasing with i, as fMRIPrep and nilearn write MNI):
    # read as an array it puts the left blob in the right hemisphere.
    data = _left_blob()
    ras = np.array(space.MNI4_AFFINE)
    ras[0] = [4.0, 0.0, 0.0, 90.0 - 4.0 * (space.MNI4_SHAPE[0] - 1)]
    img = nib.Nifti1Image(np.ascontiguousarray(data[::-1]), ras)
    assert not np.array_equal(np.asarray(img.dataobj), data)
    assert np.array_equal(space.grid_data(img), data)
    # another axis order too
    yxz = np.ascontiguousarray(np.transpose(data, (1, 0, 2, 3)))
    aff = np.array(space.MNI4_AFFINE)[:, [1, 0, 2, 3]]
    assert np.array_equal(space.grid_data(nib.Nifti1Image(yxz, aff)), data)


def test_grid_data_resamples_a_shifted_grid_by_world_position() -> None:
    import nibabel as nib

    # RAS with the field of view one voxel over (x from -90 to 86, as bench/second_simulator.py
    # writes its truth): no axis flip lands on the grid, so it is resampled by world position.
    data = np.zeros(space.MNI4_SHAPE, np.float32)
    aff = np.array(space.MNI4_AFFINE)
    aff[0] = [4.0, 0.0, 0.0, -90.0]
    i, j, k = np.rint(np.linalg.solve(aff, [-38, -22, 28, 1])[:3]).astype(int)
    data[i, j, k] = 1
    out = space.grid_data(nib.Nifti1Image(data, aff))
    peak = np.unravel_index(np.argmax(out), out.shape)
    np.testing.assert_allclose(space.voxel_to_world(peak), [-38, -22, 28], atol=1e-6)
    assert out[peak] == pytest.approx(1.0, abs=1e-4)

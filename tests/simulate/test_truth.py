"""Ground truth read by world position: a truth file of another orientation is not mirrored."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from rsnflow.simulate.truth import mean_true_maps
from rsnflow.space import MNI4_AFFINE, MNI4_SHAPE, SPACE_NAME, world_to_voxel


def _truth(bids: Path, data: np.ndarray, affine: np.ndarray) -> None:
    gt = bids / "derivatives" / "groundtruth"
    (gt / "sub-01").mkdir(parents=True)
    names = ["AUDITORY-LEFT", "AUDITORY-RIGHT"]
    table = {"index": [0, 1], "name": names, "label": names, "network": ["AUDITORY"] * 2}
    table["kind"] = ["network"] * 2
    pd.DataFrame(table).to_csv(gt / "sources.tsv", sep="\t", index=False)
    name = f"sub-01_space-{SPACE_NAME}_res-4mm_desc-sources_components.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), gt / "sub-01" / name)


def test_a_right_to_left_truth_file_is_read_by_its_affine(tmp_path: Path) -> None:
    # Two sources on the grid: one at MNI x = -50 (left), one at x = +50 (right).
    data = np.zeros((*MNI4_SHAPE, 2), np.float32)
    for k, x in enumerate((-50, 50)):
        i, j, z = np.rint(world_to_voxel([x, -22, 8])).astype(int)
        data[i - 1 : i + 2, j - 1 : j + 2, z - 1 : z + 2, k] = 1.0
    mask = np.ones(MNI4_SHAPE, bool)
    _truth(tmp_path / "las", data, np.asarray(MNI4_AFFINE))
    # the same world positions written RAS (as fMRIPrep, nilearn and bench/second_simulator.py write MNI)
    ras = np.array(MNI4_AFFINE)
    ras[0] = [4.0, 0.0, 0.0, 90.0 - 4.0 * (MNI4_SHAPE[0] - 1)]
    _truth(tmp_path / "ras", np.ascontiguousarray(data[::-1]), ras)
    las_maps, _ = mean_true_maps(tmp_path / "las", mask)
    ras_maps, sources = mean_true_maps(tmp_path / "ras", mask)
    np.testing.assert_array_equal(ras_maps, las_maps)
    left = las_maps[list(sources["name"]).index("AUDITORY-LEFT")].reshape(MNI4_SHAPE)
    assert np.rint(world_to_voxel([-50, -22, 8])).astype(int).tolist() in np.argwhere(left > 0).tolist()

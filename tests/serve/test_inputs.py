"""Request decoding: a NIfTI stack is read by its affine, never by its array order."""

from __future__ import annotations

import nibabel as nib
import numpy as np

from rsnflow.serve.inputs import maps_from_nifti
from rsnflow.space import MNI4_AFFINE, MNI4_SHAPE


def test_a_right_to_left_stack_gives_the_same_maps_exactly() -> None:
    # fMRIPrep and nilearn write MNI images RAS (x increasing with i); the grid runs LAS.
    maps = np.random.default_rng(0).normal(size=(*MNI4_SHAPE, 3)).astype(np.float32)
    ras = np.array(MNI4_AFFINE)
    ras[0] = [4.0, 0.0, 0.0, 90.0 - 4.0 * (MNI4_SHAPE[0] - 1)]
    las_bytes = nib.Nifti1Image(maps, np.asarray(MNI4_AFFINE)).to_bytes()
    ras_bytes = nib.Nifti1Image(np.ascontiguousarray(maps[::-1]), ras).to_bytes()
    expected = maps_from_nifti(las_bytes, "las.nii", 10**9)
    assert expected.shape == (3, *MNI4_SHAPE)
    np.testing.assert_array_equal(expected, np.moveaxis(maps, -1, 0))
    np.testing.assert_array_equal(maps_from_nifti(ras_bytes, "ras.nii", 10**9), expected)

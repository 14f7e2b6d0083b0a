from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from rsnflow.transforms import apply_affine, framewise_displacement, rigid_matrix, rigid_params

angles = st.floats(-0.5, 0.5)
shifts = st.floats(-20, 20)


@settings(max_examples=50, deadline=None)
@given(st.tuples(shifts, shifts, shifts, angles, angles, angles))
def test_params_round_trip(p: tuple[float, ...]) -> None:
    centre = (3.0, -7.0, 11.0)
    m = rigid_matrix(p, centre)
    np.testing.assert_allclose(rigid_params(m, centre), p, atol=1e-9)
    np.testing.assert_allclose(m[:3, :3] @ m[:3, :3].T, np.eye(3), atol=1e-12)


def test_rotation_is_right_handed_about_the_centre() -> None:
    m = rigid_matrix([0, 0, 0, 0, 0, np.pi / 2], centre=(10, 0, 0))
    np.testing.assert_allclose(apply_affine(m, [11, 0, 0]), [10, 1, 0], atol=1e-12)
    np.testing.assert_allclose(apply_affine(m, [10, 0, 0]), [10, 0, 0], atol=1e-12)


def test_batched_matrices() -> None:
    p = np.random.default_rng(0).normal(0, 0.1, (7, 6))
    ms = rigid_matrix(p)
    assert ms.shape == (7, 4, 4)
    np.testing.assert_allclose(ms[3], rigid_matrix(p[3]))


def test_framewise_displacement_power() -> None:
    p = np.zeros((3, 6))
    p[1, 0] = 0.5  # 0.5 mm translation
    p[2, 0] = 0.5
    p[2, 3] = 0.01  # 0.01 rad -> 0.5 mm at 50 mm
    np.testing.assert_allclose(framewise_displacement(p), [0.0, 0.5, 0.5])


def test_torch_rotations_match_numpy_and_their_derivatives() -> None:
    import torch

    from rsnflow.transforms import rotations_torch

    theta = np.array([[0.1, -0.2, 0.3], [0.0, 0.05, -0.4]])
    rot, drot = rotations_torch(torch.from_numpy(theta))
    for b in range(2):
        np.testing.assert_allclose(rot[b].numpy(), rigid_matrix([0, 0, 0, *theta[b]])[:3, :3], atol=1e-12)
        for k in range(3):
            h = np.zeros(3)
            h[k] = 1e-6
            num = (rigid_matrix([0, 0, 0, *(theta[b] + h)]) - rigid_matrix([0, 0, 0, *(theta[b] - h)]))[
                :3, :3
            ] / 2e-6
            np.testing.assert_allclose(drot[b, k].numpy(), num, atol=1e-6)

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

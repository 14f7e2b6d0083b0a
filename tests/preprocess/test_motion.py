from __future__ import annotations

import numpy as np
import pytest

from rsnflow.preprocess.motion import estimate_motion, relative_to
from rsnflow.simulate import PROFILES, simulate_subject


@pytest.mark.parametrize("motion_scale", [1.0, 4.0])
def test_motion_matches_ground_truth(motion_scale: float) -> None:
    sub = simulate_subject(PROFILES["tiny"], 11, 0, motion_scale=motion_scale)
    est = estimate_motion(sub.bold, sub.affine, show_progress=False)
    assert est.reference_index == sub.bold.shape[-1] // 2
    truth = relative_to(sub.motion, sub.motion[est.reference_index], est.centre)
    err = est.params - truth
    rms_trans = float(np.sqrt(np.mean(err[:, :3] ** 2)))
    rms_rot_deg = float(np.rad2deg(np.sqrt(np.mean(err[:, 3:] ** 2))))
    assert rms_trans < 0.1, rms_trans
    assert rms_rot_deg < 0.1, rms_rot_deg
    # The estimate is not trivially zero: the truth moves well beyond the error.
    assert np.abs(truth[:, :3]).max() > 5 * rms_trans


def test_mean_reference_is_consistent() -> None:
    sub = simulate_subject(PROFILES["tiny"], 11, 1)
    mid = estimate_motion(sub.bold, sub.affine, show_progress=False)
    mean = estimate_motion(sub.bold, sub.affine, reference="mean", show_progress=False)
    assert mean.reference_index == -1
    # Relative poses between volumes do not depend on the reference.
    a = relative_to(mid.params, mid.params[0], mid.centre)
    b = relative_to(mean.params, mean.params[0], mean.centre)
    assert np.sqrt(np.mean((a[:, :3] - b[:, :3]) ** 2)) < 0.05
    with pytest.raises(ValueError, match="reference"):
        estimate_motion(sub.bold, sub.affine, reference="first")


def test_int16_run_read_in_chunks_matches_float32() -> None:
    """A run kept in its file's dtype (int16) gives the motion of the same run converted whole.

    The run is read in float32 a chunk at a time (and smoothed per chunk, in space only), so
    the chunk size cannot change a result either.
    """
    sub = simulate_subject(PROFILES["tiny"], 11, 2)
    run16 = np.clip(np.rint(sub.bold), 0, np.iinfo(np.int16).max).astype(np.int16)
    whole = estimate_motion(run16.astype(np.float32), sub.affine, show_progress=False)
    chunked = estimate_motion(run16, sub.affine, show_progress=False, chunk=7)
    np.testing.assert_allclose(chunked.params, whole.params, atol=1e-4)
    np.testing.assert_allclose(chunked.cost, whole.cost, rtol=1e-3)

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

"""The confounds fMRIPrep users expect, each checked against a case whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from rsnflow.preprocess.confounds import (
    RMS_RADIUS_MM,
    confounds_table,
    non_steady_state_volumes,
    rmsd,
    std_dvars,
)


def test_non_steady_state_volumes_are_the_leading_outliers() -> None:
    rng = np.random.default_rng(0)
    run = 1000 + rng.normal(0, 5, (6, 6, 6, 120))
    assert non_steady_state_volumes(run) == 0
    run[..., :3] *= 1.4  # T1 not yet at equilibrium: the first volumes are brighter
    assert non_steady_state_volumes(run) == 3
    run[..., 10] *= 1.4  # a late spike is not a non-steady state
    assert non_steady_state_volumes(run) == 3


def test_rmsd_of_a_translation_and_of_a_rotation_about_the_centre() -> None:
    centre = np.array([2.0, -20.0, 10.0])
    params = np.zeros((3, 6))
    params[1, 0] = 1.0  # 1 mm along x
    theta = np.deg2rad(1.0)
    params[2, :] = [1.0, 0, 0, 0, 0, theta]  # then a rotation about z through the centre
    out = rmsd(params, centre)
    assert np.isnan(out[0])
    assert out[1] == pytest.approx(1.0)
    # Volume 2 relative to volume 1 is a rotation about centre + (1, 0, 0): R^2/5 tr(A^T A) + |A t|^2,
    # A = R_z - I, tr(A^T A) = 4 (1 - cos), |A (1, 0, 0)|^2 = 2 (1 - cos).
    expected = np.sqrt(RMS_RADIUS_MM**2 / 5 * 4 * (1 - np.cos(theta)) + 2 * (1 - np.cos(theta)))
    assert out[2] == pytest.approx(expected, rel=1e-9)


def test_std_dvars_is_one_for_white_noise_and_higher_for_a_jump() -> None:
    rng = np.random.default_rng(1)
    data = rng.normal(100, 3, (10, 10, 10, 200))
    mask = np.ones((10, 10, 10), bool)
    s = std_dvars(data, mask)
    assert np.isnan(s[0]) and np.nanmedian(s) == pytest.approx(1.0, abs=0.05)
    data[..., 100] += 15  # a 5-sd jump of the whole volume: DVARS sqrt(2 * 9 + 225) against sqrt(2) * 3
    assert std_dvars(data, mask)[100] == pytest.approx(np.sqrt(18 + 225) / (np.sqrt(2) * 3), rel=0.1)


def test_the_table_has_fmriprep_columns() -> None:
    params = np.zeros((5, 6))
    signals = {"global_signal": np.ones(5), "white_matter": np.ones(5), "csf": np.ones(5)}
    table = confounds_table(
        params, np.ones(5), centre=np.zeros(3), std_dvars_values=np.ones(5), signals=signals, n_non_steady=2
    )
    assert list(table.columns) == [
        "trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z", "framewise_displacement", "rmsd", "dvars",
        "std_dvars", "global_signal", "white_matter", "csf", "non_steady_state_outlier_00",
        "non_steady_state_outlier_01",
    ]  # fmt: skip
    assert table["non_steady_state_outlier_01"].tolist() == [0, 1, 0, 0, 0]

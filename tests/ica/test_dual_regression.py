from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from rsnflow.ica import dual_regression, spatial_correlation, t_to_z


def _numpy_reference(
    y: np.ndarray, g: np.ndarray, des_norm: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """FSL dual_regression written plainly: fsl_glm --demean, then --demean [--des_norm] --out_z."""
    ys = y - y.mean(axis=1, keepdims=True)
    gs = g - g.mean(axis=1, keepdims=True)
    tc = np.linalg.pinv(gs.T) @ ys.T
    tc = tc.T
    x = tc - tc.mean(axis=0)
    if des_norm:
        x = x / x.std(axis=0, ddof=1)  # sample std, as FSL (and torch) compute it
    yt = y - y.mean(axis=0)
    beta = np.linalg.pinv(x) @ yt
    resid = yt - x @ beta
    dof = y.shape[0] - g.shape[0] - 1
    se = np.sqrt(np.outer(np.diag(np.linalg.inv(x.T @ x)), (resid**2).sum(0) / dof))
    t = beta / se
    z = np.sign(t) * stats.norm.isf(stats.t.sf(np.abs(t), dof))  # symmetric: no saturation
    return tc, beta, z


@pytest.mark.parametrize("des_norm", [True, False])
def test_equals_numpy_reference(des_norm: bool) -> None:
    rng = np.random.default_rng(0)
    g = rng.standard_normal((6, 500))
    y = rng.standard_normal((80, 6)) @ g + rng.standard_normal((80, 500)) + 10
    res = dual_regression(y, g, des_norm=des_norm)
    tc, beta, z = _numpy_reference(y, g, des_norm)
    np.testing.assert_allclose(res.timecourses, tc, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(res.maps, beta, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(res.zmaps, z, rtol=1e-4, atol=1e-4)


def test_subject_maps_beat_group_maps_when_subjects_differ() -> None:
    rng = np.random.default_rng(1)
    k, v, t = 20, 8000, 225
    group = rng.standard_normal((k, v))
    subject = group + 0.6 * rng.standard_normal((k, v))
    y = rng.standard_normal((t, k)) @ subject + 3 * rng.standard_normal((t, v))
    res = dual_regression(y, group)
    dr = np.diag(spatial_correlation(res.maps, subject))
    grp = np.diag(spatial_correlation(group, subject))
    assert dr.mean() > grp.mean() + 0.05


def test_too_few_volumes_is_an_error() -> None:
    with pytest.raises(ValueError, match="more volumes"):
        dual_regression(np.ones((10, 50)), np.ones((9, 50)))


def test_t_to_z_matches_scipy_in_both_tails() -> None:
    t = np.array([-40.0, -3.0, 0.0, 2.0, 40.0])
    expected = stats.norm.isf(stats.t.sf(t[1:4], 30))
    np.testing.assert_allclose(t_to_z(t, 30)[1:4], expected, atol=1e-6)
    assert t_to_z(t, 30)[-1] == pytest.approx(-t_to_z(t, 30)[0])
    assert np.isfinite(t_to_z(t, 30)).all()

from __future__ import annotations

import numpy as np
import pytest

from rsnflow.preprocess.confounds import confounds_table, dvars
from rsnflow.preprocess.smoothing import fwhm_to_sigma, smooth_in_mask
from rsnflow.preprocess.temporal import fsl_highpass_matrix, highpass


def _fwhm_along(img: np.ndarray, axis: int, voxel: float) -> float:
    profile = img.sum(axis=tuple(a for a in range(3) if a != axis))
    x = (np.arange(len(profile)) - np.argmax(profile)) * voxel
    var = float((profile * x * x).sum() / profile.sum())
    return np.sqrt(var) * np.sqrt(8 * np.log(2))


@pytest.mark.parametrize("voxel", [(4.0, 4.0, 4.0), (2.0, 3.0, 3.6)])
def test_point_source_fwhm_is_7mm(voxel: tuple[float, float, float]) -> None:
    shape = (61, 51, 45)
    img = np.zeros(shape, np.float32)
    img[30, 25, 22] = 1
    out = smooth_in_mask(img, np.ones(shape, bool), voxel, 7.0)
    for axis in range(3):
        assert _fwhm_along(out, axis, voxel[axis]) == pytest.approx(7.0, rel=0.05)
    assert out.sum() == pytest.approx(1.0, rel=1e-3)


def test_mask_edge_not_darkened() -> None:
    mask = np.zeros((30, 30, 30), bool)
    mask[5:25, 5:25, 5:25] = True
    out = smooth_in_mask(np.where(mask, 100.0, 0.0)[..., None].repeat(3, -1), mask, (4, 4, 4), 7.0)
    np.testing.assert_allclose(out[mask], 100.0, rtol=1e-4)
    assert not out[~mask].any()
    assert fwhm_to_sigma(7.0) == pytest.approx(2.9726, abs=1e-4)


def test_highpass_removes_drift_and_keeps_band() -> None:
    tr, n = 2.0, 225
    t = np.arange(n) * tr
    drift = 1000 + 0.5 * t
    out = highpass(drift[None], tr, 100.0)[0]
    assert np.std(out) < 1e-3 * np.std(drift)
    assert out.mean() == pytest.approx(drift.mean(), rel=1e-6)
    for f in (0.01, 0.02, 0.05, 0.1):
        wave = np.sin(2 * np.pi * f * t)
        kept = highpass(wave[None] + 500, tr, 100.0)[0] - 500
        core = slice(25, n - 25)  # away from the ends, where any filter is one-sided
        gain = np.std(kept[core]) / np.std(wave[core])
        assert gain == pytest.approx(1.0, abs=0.05), (f, gain)
    slow = np.sin(2 * np.pi * 0.002 * t)
    assert np.std(highpass(slow[None], tr, 100.0)[0]) < 0.2 * np.std(slow)


@pytest.mark.parametrize("method", ["butterworth", "cosine"])
def test_other_highpass_methods(method: str) -> None:
    t = np.arange(200) * 2.0
    x = 100 + 0.3 * t + np.sin(2 * np.pi * 0.05 * t)
    out = highpass(x[None], 2.0, 100.0, method)[0]
    assert np.corrcoef(out, np.sin(2 * np.pi * 0.05 * t))[0, 1] > 0.9
    with pytest.raises(ValueError, match="unknown high-pass"):
        highpass(x[None], 2.0, 100.0, "median")


def test_fsl_operator_reproduces_lines() -> None:
    m = fsl_highpass_matrix(50, 12.5)
    line = 3 + 0.2 * np.arange(50)
    np.testing.assert_allclose(m @ line, line, atol=1e-9)


def test_confounds_columns_and_dvars() -> None:
    data = np.zeros((3, 3, 3, 4), np.float32)
    data[..., 2] = 2.0
    mask = np.ones((3, 3, 3), bool)
    d = dvars(data, mask)
    assert np.isnan(d[0])
    np.testing.assert_allclose(d[1:], [0.0, 2.0, 2.0])
    table = confounds_table(np.zeros((4, 6)), d)
    assert list(table.columns) == [
        "trans_x",
        "trans_y",
        "trans_z",
        "rot_x",
        "rot_y",
        "rot_z",
        "framewise_displacement",
        "dvars",
    ]
    assert np.isnan(table["framewise_displacement"][0])

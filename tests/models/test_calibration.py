"""Temperature scaling and the abstention threshold against cases with a known answer."""

from __future__ import annotations

import numpy as np
import pytest

from rsnflow.evaluate import expected_calibration_error
from rsnflow.models.calibration import abstain_threshold, fit_temperature, scaled_probabilities


def _overconfident(factor: float, n: int = 20000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from softmax(z); the classifier reports z * factor."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 2.0, size=(n, 6))
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    y = (p.cumsum(1) > rng.random((n, 1))).argmax(1)
    return z * factor, y


@pytest.mark.parametrize("factor", [0.3, 1.0, 3.0])
def test_the_temperature_undoes_a_known_miscalibration(factor: float) -> None:
    logits, y = _overconfident(factor)
    t = fit_temperature(logits, y)
    assert t == pytest.approx(factor, rel=0.08)
    before = expected_calibration_error(scaled_probabilities(logits, 1.0), y)
    after = expected_calibration_error(scaled_probabilities(logits, t), y)
    assert after < 0.02
    if factor != 1.0:
        assert before > 0.05  # the case was miscalibrated to begin with
    assert (scaled_probabilities(logits, t).argmax(1) == logits.argmax(1)).all()  # labels unchanged


def test_the_threshold_keeps_the_asked_share_of_correct_maps() -> None:
    logits, y = _overconfident(1.0)
    probs = scaled_probabilities(logits, 1.0)
    tau = abstain_threshold(probs, y, keep=0.9)
    right = probs.argmax(1) == y
    assert (probs.max(1)[right] >= tau).mean() == pytest.approx(0.9, abs=0.002)
    assert abstain_threshold(probs, (probs.argmax(1) + 1) % 6) == 0.0  # nothing right: no threshold


def test_a_validation_split_all_right_keeps_a_finite_temperature() -> None:
    # 200 maps, nearly every one right by a wide margin: the plain likelihood drives T towards 0
    # (every probability 1, a threshold of 1 that abstains on everything short of certainty)
    rng = np.random.default_rng(1)
    y = rng.integers(0, 58, 200)
    logits = rng.normal(0, 1, (200, 58))
    logits[np.arange(200), y] += rng.uniform(4, 8, 200)
    t = fit_temperature(logits, y)
    probs = scaled_probabilities(logits, t)
    assert 0.05 < t < 2.0
    # as sure as k of 200 right answers allow (Laplace: (k + 1) / 202), not more
    k = (logits.argmax(1) == y).sum()
    assert k >= 195 and probs.max(1).mean() == pytest.approx((k + 1) / 202, abs=1e-4)
    assert abstain_threshold(probs, y) < 0.99


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="N > 0"):
        fit_temperature(np.zeros((0, 3)), np.zeros(0, dtype=int))
    with pytest.raises(ValueError, match="labels"):
        fit_temperature(np.zeros((4, 3)), np.zeros(3, dtype=int))

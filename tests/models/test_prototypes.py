"""Class prototypes and the typicality gate: known patterns in, known correlations out."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rsnflow.io import InvalidInputError
from rsnflow.models.prototypes import (
    PROTOTYPES_FILE,
    atypical_threshold,
    class_prototypes,
    load_prototypes,
    save_prototypes,
    typicality,
)
from rsnflow.serve.predictor import RSNPredictor

SHAPE = (6, 5, 4)


def _maps(
    rng: np.random.Generator, n_per_class: int, noise: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    patterns = rng.normal(size=(3, *SHAPE))
    y = np.repeat(np.arange(3), n_per_class)
    maps = patterns[y] + noise * rng.normal(size=(len(y), *SHAPE))
    return maps.astype(np.float32), y, patterns


def test_prototypes_are_the_centred_class_means_read_in_chunks() -> None:
    rng = np.random.default_rng(0)
    maps, y, patterns = _maps(rng, 40, 0.5)
    mask = np.ones(SHAPE, bool)
    mask[0] = False
    rows = rng.permutation(len(y))
    protos = class_prototypes(maps, rows, y[rows], 4, mask, chunk=7)
    np.testing.assert_allclose(protos, class_prototypes(maps, rows, y[rows], 4, mask, chunk=1000), atol=1e-5)
    assert not protos[3].any()  # a class with no map
    np.testing.assert_allclose(np.linalg.norm(protos[:3], axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(protos[:3].mean(1), 0.0, atol=1e-6)
    # each prototype is its class's pattern (the noise averages out over 40 maps)
    r = typicality(patterns, mask, protos)
    assert (r[:, :3].argmax(1) == [0, 1, 2]).all() and np.diag(r[:, :3]).min() > 0.95
    # a map's typicality is a correlation: scale and offset do not change it
    np.testing.assert_allclose(
        typicality(3 * maps[:5] + 2, mask, protos), typicality(maps[:5], mask, protos), atol=1e-5
    )


def test_the_threshold_keeps_the_asked_share_of_right_network_maps() -> None:
    rng = np.random.default_rng(1)
    classes = ["DMN-A", "VISUAL-B", "Noise"]
    n = 1000
    y = rng.integers(0, 3, n)
    probs = np.eye(3)[y]
    sim = rng.uniform(0, 1, (n, 3))
    tau = atypical_threshold(sim, probs, y, classes, keep=0.9)
    network = y < 2
    assert (sim[np.arange(n), y][network] >= tau).mean() == pytest.approx(0.9, abs=0.002)
    wrong = np.eye(3)[(y + 1) % 3]
    assert atypical_threshold(sim, wrong, y, classes) == 0.0  # nothing right: no gate


def test_the_threshold_sits_halfway_between_right_network_maps_and_noise() -> None:
    rng = np.random.default_rng(3)
    classes = ["DMN-A", "VISUAL-B", "Noise"]
    y = np.repeat([0, 1, 2], 400)
    probs = np.eye(3)[y]
    sim = np.zeros((len(y), 3))
    sim[y < 2, y[y < 2]] = rng.uniform(0.2, 0.8, 800)  # right network maps: 0.2 and up
    sim[y == 2, :2] = rng.uniform(0.0, 0.05, (400, 2))  # noise maps: at most 0.05 with a network
    net = atypical_threshold(sim[y < 2], probs[y < 2], y[y < 2], classes)  # no Noise map: the network end
    assert net == pytest.approx(0.2 + 0.6 * 0.005, abs=0.003)
    tau = atypical_threshold(sim, probs, y, classes)
    assert tau == pytest.approx((net + 0.05 * 0.99) / 2, abs=0.003)
    # noise maps as typical as the networks' edge: the two overlap, the network end stays
    sim[y == 2, 0] = 0.5
    assert atypical_threshold(sim, probs, y, classes) == pytest.approx(net)


def test_save_load_and_a_damaged_file(tmp_path: Path) -> None:
    mask = np.zeros(SHAPE, bool)
    mask[1:4] = True
    protos = np.random.default_rng(2).normal(size=(2, int(mask.sum()))).astype(np.float32)
    path = save_prototypes(tmp_path / PROTOTYPES_FILE, mask, protos, ["A", "Noise"])
    m, p, c = load_prototypes(path)
    assert (m == mask).all() and c == ["A", "Noise"]
    np.testing.assert_allclose(p, protos, atol=2e-3)  # stored as float16
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(InvalidInputError, match="not a readable prototypes file"):
        load_prototypes(path)


def test_the_predictor_withholds_atypical_network_labels_only() -> None:
    predictor = RSNPredictor("gate", "unused")
    predictor.classes_ = ["DMN-A", "DMN-B", "VISUAL-A", "Noise", "Unknown"]
    predictor.parents_ = ["DMN", "DMN", "VISUAL", "NOISE", "UNKNOWN"]
    predictor.abstain_below_ = 0.0
    predictor.atypical_below_ = 0.3
    probs = np.array(
        [[0.9, 0.05, 0.05, 0, 0], [0.9, 0.05, 0.05, 0, 0], [0, 0, 0.02, 0.98, 0], [0, 0.9, 0.1, 0, 0]],
        np.float32,
    )
    typical = np.array(
        [[0.6, 0, 0, 0, 0], [0.1, 0.5, 0, 0, 0], [0, 0, 0.1, 0.9, 0], [0, 0.29, 0, 0, 0]], np.float32
    )
    ranked = predictor.rank(probs, typical)
    # typical DMN-A kept; a sure DMN-A unlike DMN-A's prototype withheld; Noise needs no evidence
    assert ranked["abstained"].tolist() == [False, True, False, True]
    assert ranked["label"].tolist() == ["DMN-A", "Unknown", "Noise", "Unknown"]
    assert predictor.rank(probs)["abstained"].tolist() == [False] * 4  # no typicalities: no gate
    # Like no network: the best typicality with any network's prototype below the floor (Noise's
    # own typicality does not count).
    assert predictor.like_no_network(typical, 0.3).tolist() == [False, False, True, True]
    # What the caller withholds: network labels only; Noise is still said.
    predictor.atypical_below_ = 0.0
    ranked = predictor.rank(probs, typical, withhold=np.array([True, False, True, False]))
    assert ranked["abstained"].tolist() == [True, False, False, False]
    assert ranked["label"].tolist() == ["Unknown", "DMN-A", "Noise", "DMN-B"]
    assert ranked["network"].tolist() == ["Unknown", "DMN", "NOISE", "DMN"]


def test_a_trained_model_keeps_its_prototypes_and_gate(tiny_mlp: Path) -> None:
    meta = json.loads((tiny_mlp / "model.json").read_text())
    mask, protos, classes = load_prototypes(tiny_mlp / PROTOTYPES_FILE)
    assert classes == meta["classes"] and protos.shape == (len(classes), int(mask.sum()))
    # set on validation: a correlation of a typical map with its class mean, well above 0
    assert 0.05 < meta["atypical_below"] < 0.9

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from rsnflow.atlas import NOISE, UNKNOWN, build_taxonomy, load_taxonomy, reference_maps
from rsnflow.space import load_tissue_probabilities

NAME = re.compile(r"^[A-Z]+(-[A-Z0-9]+){1,3}$")


def test_58_unique_classes_with_noise_and_unknown_last() -> None:
    tax = load_taxonomy()
    assert len(tax) == 58
    assert len(set(tax.labels)) == 58
    assert tax.labels[-2:] == [NOISE, UNKNOWN]
    assert len(tax.network_labels) == 56
    for label in tax.network_labels:
        assert NAME.match(label), label
        assert label.split("-")[0] == tax.parent(label)


def test_paper_examples_are_present() -> None:
    tax = load_taxonomy()
    for label in [
        "DMN-PCC-MID",
        "EXECUTIVE-POSTERIOR-LEFT",
        "MOTOR-VENTRAL",
        "VISUAL-LINGUAL-ANTERIOR",
        "SENSORY-DORSAL-HAND-RIGHT",
        "DMN-CINGULATE-MID",
        "SALIENCE-INSULA-POSTERIOR",
        "COGNITIVE-MFG",
        "LANG-BROCA",
    ]:
        assert tax.parent(label) == label.split("-")[0]


def test_shipped_file_equals_rebuild_from_nilearn() -> None:
    rebuilt = build_taxonomy()
    shipped = load_taxonomy().table
    pd.testing.assert_frame_equal(rebuilt.reset_index(drop=True), shipped, check_dtype=False)


def test_nodes_are_in_the_brain_and_on_the_right_side() -> None:
    tax = load_taxonomy()
    for label in tax.network_labels:
        nodes = tax.nodes(label)
        assert len(nodes) >= 1
        assert np.all(np.abs(nodes) < 110)
        if label.endswith("-LEFT"):
            assert np.all(nodes[:, 0] < 0), label
        if label.endswith("-RIGHT"):
            assert np.all(nodes[:, 0] > 0), label


def test_unknown_label_suggests_closest() -> None:
    tax = load_taxonomy()
    with pytest.raises(KeyError, match="DMN-PCC-MID"):
        tax.index("DMN-PCC-MIDD")
    assert tax.closest("dmn-pcc-mid")[0] == "DMN-PCC-MID"


def test_reference_maps_in_grey_matter_and_distinct() -> None:
    maps = reference_maps()
    assert maps.shape == (58, 45, 54, 45)
    assert not maps[-2:].any()
    gm = load_tissue_probabilities()["gm"]
    for k in range(56):
        m = maps[k]
        assert m.max() == pytest.approx(1.0)
        # Most of the map's weight sits where grey matter is likely.
        assert m[gm > 0.3].sum() / m.sum() > 0.75
    flat = maps[:56].reshape(56, -1)
    flat = flat - flat.mean(1, keepdims=True)
    flat /= np.linalg.norm(flat, axis=1, keepdims=True)
    corr = flat @ flat.T
    np.fill_diagonal(corr, 0)
    assert corr.max() < 0.6

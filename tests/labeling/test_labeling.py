from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rsnflow.atlas import NOISE, UNKNOWN, load_taxonomy
from rsnflow.cli import EXIT_ERROR, main
from rsnflow.config import load_config
from rsnflow.io import InvalidInputError
from rsnflow.labeling import (
    auto_labels,
    label_components,
    labels_path,
    load_group_maps,
    read_expert_labels,
    spatial_features,
    temporal_features,
)
from rsnflow.simulate.truth import component_truth
from rsnflow.space import load_brain_mask

TAX = load_taxonomy()


@pytest.fixture(scope="module")
def labelled(tiny_group):
    deriv = tiny_group["deriv"]
    table = label_components(deriv, load_config().labeling)
    zmaps, mask = load_group_maps(deriv)
    truth = component_truth(tiny_group["cohort"].bids_dir, zmaps, mask)
    return {"deriv": deriv, "table": table, "truth": truth}


def test_auto_labels_agree_with_ground_truth(labelled) -> None:
    table, truth = labelled["table"], labelled["truth"]
    agree = table["label"].to_numpy() == truth["truth"].to_numpy()
    # Recorded on this fixture (8 tiny subjects x 150 volumes, order 100, subject PCA 100): 99/100;
    # docs/benchmarks.md.
    assert agree.mean() >= 0.95, pd.concat([table, truth], axis=1)[~agree].to_string()
    is_net = ~truth["truth"].isin([NOISE, UNKNOWN])
    assert (table.loc[is_net, "label"] == truth.loc[is_net, "truth"]).mean() >= 0.9
    assert labels_path(labelled["deriv"]).exists()
    assert (labelled["deriv"] / "group" / "group_task-rest_desc-labels_report.html").stat().st_size > 10_000


def test_written_table_columns(labelled) -> None:
    table = pd.read_csv(labels_path(labelled["deriv"]), sep="\t", keep_default_na=False)
    assert list(table.columns[:8]) == [
        "component",
        "label",
        "network",
        "source",
        "score",
        "runner_up",
        "runner_up_score",
        "reason",
    ]
    assert set(table["source"]) == {"auto"}
    for lab, net in zip(table["label"], table["network"], strict=True):
        assert TAX.parent(lab) == net


def test_expert_labels_round_trip(labelled, tmp_path: Path) -> None:
    deriv = labelled["deriv"]
    auto = labelled["table"]
    expert = auto[["component", "label"]].copy()
    expert.loc[0, "label"] = "DMN-PCC-MID"
    expert.loc[1, "label"] = "noise"  # case-insensitive
    expert["notes"] = ["checked by A.B."] + [""] * (len(expert) - 1)
    f = tmp_path / "expert.tsv"
    expert.to_csv(f, sep="\t", index=False)
    got = label_components(deriv, load_config().labeling, expert_labels=f, report=False)
    want = list(expert["label"])
    want[1] = NOISE
    assert list(got["label"]) == want
    assert set(got["source"]) == {"expert"}
    assert got.loc[0, "notes"] == "checked by A.B."
    # The written table is itself a valid expert file and reproduces itself.
    again = label_components(deriv, load_config().labeling, expert_labels=labels_path(deriv), report=False)
    assert list(again["label"]) == want
    label_components(deriv, load_config().labeling, report=False)  # restore the automatic labels


def _tsv(tmp_path: Path, text: str) -> Path:
    f = tmp_path / "labels.tsv"
    f.write_text(text)
    return f


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty label file"),
        ("component\tlabel\n", "no label rows"),
        ("comp\tname\n0\tNoise\n1\tNoise\n2\tNoise\n", "expected columns component, label"),
        ("component\tlabel\n0\tNoise\n1\tDMN-PCC-MIDD\n2\tNoise\n", "closest valid: DMN-PCC-MID"),
        ("component\tlabel\n0\tNoise\n0\tNoise\n1\tNoise\n2\tNoise\n", "duplicate components: 0"),
        ("component\tlabel\n0\tNoise\n2\tNoise\n", "1 components have no label: 1"),
        ("component\tlabel\n0\tNoise\n1\tNoise\n2\tNoise\n3\tNoise\n", "out of range 0..2: 3"),
        ("component\tlabel\nzero\tNoise\n", "component must be an integer"),
        ("this is not a label file\nat all\n", "neither a component/label TSV nor a FIX label file"),
    ],
)
def test_bad_label_files(tmp_path: Path, text: str, message: str) -> None:
    f = _tsv(tmp_path, text)
    with pytest.raises(InvalidInputError) as exc:
        read_expert_labels(f, 3, TAX)
    assert message in str(exc.value)
    assert str(f) in str(exc.value)


def test_bad_label_file_through_the_cli(labelled, tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    f = _tsv(tmp_path, "component\tlabel\n0\tVISUAL\n")
    before = labels_path(labelled["deriv"]).read_bytes()
    assert main(["label", str(labelled["deriv"]), "--expert-labels", str(f)]) == EXIT_ERROR
    assert "unknown label 'VISUAL'" in capfd.readouterr().err
    assert labels_path(labelled["deriv"]).read_bytes() == before  # nothing half-written


def test_fix_label_file(tmp_path: Path) -> None:
    f = tmp_path / "hand_labels_noise.txt"
    f.write_text(
        "filtered_func_data.ica\n1, Signal, False\n2, Unclassified Noise, True\n"
        "3, Unknown, False\n4, Movement, True\n[2, 4]\n"
    )
    table = read_expert_labels(f, 4, TAX)
    assert list(table["label"]) == [UNKNOWN, NOISE, UNKNOWN, NOISE]
    assert table.loc[3, "notes"] == "FIX: Movement"


def test_spatial_features_on_synthetic_maps() -> None:
    mask = load_brain_mask().get_fdata() > 0
    from scipy import ndimage

    edge = mask & ~ndimage.binary_erosion(mask, iterations=2)
    core = ndimage.binary_erosion(mask, iterations=6)
    maps = np.zeros((3, int(mask.sum())))
    maps[0, edge[mask]] = 5.0
    maps[1, core[mask]] = 5.0
    maps[2, :] = 5.0
    f = spatial_features(maps, mask)
    assert f.loc[0, "edge_fraction"] == pytest.approx(1.0)
    assert f.loc[1, "edge_fraction"] == pytest.approx(0.0)
    assert f.loc[2, "spread"] == pytest.approx(1.0)
    assert f.loc[1, "spread"] < 0.5


def test_temporal_features_on_synthetic_time_courses() -> None:
    rng = np.random.default_rng(0)
    t = np.arange(300) * 2.0
    slow = np.sin(2 * np.pi * 0.03 * t)
    white = rng.standard_normal(300)
    motion = np.c_[rng.standard_normal((300, 1)).cumsum(0), rng.standard_normal((300, 5))]
    tcs = np.c_[slow, white, motion[:, 0]]
    f = temporal_features([(tcs, motion, 2.0)], 3)
    assert f.loc[0, "hfc"] < 0.01
    assert 0.5 < f.loc[1, "hfc"] < 0.75  # white noise: (0.25 - 0.1) / (0.25 - 0.01) of the power
    assert f.loc[2, "motion_r"] == pytest.approx(1.0)
    assert f.loc[0, "motion_r"] < 0.5


def test_auto_rule_order() -> None:
    cfg = load_config().labeling
    scores = pd.DataFrame(np.zeros((3, len(TAX.network_labels))), columns=TAX.network_labels)
    scores.loc[0, "DMN-PCC-MID"] = 0.8
    scores.loc[0, "DMN-MPFC-MID"] = 0.3
    scores.loc[1, "DMN-PCC-MID"] = 0.2
    scores.loc[2, "DMN-PCC-MID"] = 0.2
    quiet = {
        "edge_fraction": 0.1,
        "csf_fraction": 0.0,
        "wm_fraction": 0.1,
        "spread": 0.02,
        "hfc": 0.05,
        "motion_r": 0.1,
    }
    noisy = {**quiet, "hfc": 0.6}
    feats = pd.DataFrame([noisy, noisy, quiet])
    out = auto_labels(scores, feats, cfg)
    assert list(out["label"]) == ["DMN-PCC-MID", NOISE, UNKNOWN]
    assert out.loc[0, "runner_up"] == "DMN-MPFC-MID"
    assert "high_frequency" in out.loc[1, "reason"]

"""Datasets pooling several cohorts, each decomposed on its own (here: two model orders)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rsnflow.cli import EXIT_ERROR, EXIT_OK, main
from rsnflow.config import load_config
from rsnflow.dataset import SPLITS, build_dataset
from rsnflow.ica import dual_regression_cohort, group_ica
from rsnflow.io import InvalidInputError
from rsnflow.labeling import label_components


@pytest.fixture(scope="module")
def order40(tiny_group, tiny_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny cohort's runs decomposed again at order 40 in a folder of their own."""
    deriv = tmp_path_factory.mktemp("order40") / "deriv"
    shutil.copytree(tiny_group["deriv"], deriv, symlinks=True)
    config = load_config(overrides={"ica": {"order": 40}})
    group_ica(deriv, config.ica, seed=0, device="cpu", report=False)
    dual_regression_cohort(deriv)
    label_components(deriv, config.labeling, report=False)
    return deriv


@pytest.mark.slow
def test_two_model_orders_pool_into_one_dataset(
    tiny_group, tiny_dataset: Path, order40: Path, tmp_path: Path
) -> None:
    out = tmp_path / "pooled"
    argv = ["dataset", str(tiny_group["deriv"]), str(order40), str(out), "--seed", "3"]
    assert main(argv) == EXIT_OK
    manifest = json.loads((out / "manifest.json").read_text())
    index = pd.read_csv(out / "index.tsv", sep="\t", keep_default_na=False)
    maps = np.load(out / "maps.npy", mmap_mode="r")
    assert manifest["n_components"] == [100, 40] and len(index) == len(maps) == 8 * 140
    assert [c["n_components"] for c in manifest["cohorts"]] == [100, 40]
    assert sorted(set(index["cohort"])) == [1, 2]
    assert index.loc[index["cohort"] == 2, "subject"].str.startswith("c2-").all()
    # the two cohorts are the same 8 people (one BIDS source): a person is on one side of the split
    assert manifest["n_subjects"] == 8
    assert {c["bids"] for c in manifest["cohorts"]} == {str(tiny_group["cohort"].bids_dir.resolve())}
    person = index["subject"].str.removeprefix("c1-").str.removeprefix("c2-")
    assert (index.groupby(person)["split"].nunique() == 1).all()
    assert all(set(index.loc[index["split"] == sp, "cohort"]) == {1, 2} for sp in SPLITS)
    # the same runs, the same mask: cohort 1's maps are the single-cohort dataset's, row for row
    single = np.load(tiny_dataset / "maps.npy", mmap_mode="r")
    single_index = pd.read_csv(tiny_dataset / "index.tsv", sep="\t", dtype={"subject": str})
    rows = index.loc[index["cohort"] == 1, "sample"].to_numpy()
    assert len(rows) == len(single)
    np.testing.assert_array_equal(maps[rows[:200]], single[:200])
    assert list(index.loc[index["cohort"] == 1, "label"]) == list(single_index["label"])
    # the reference is the first cohort's (order 100)
    reference = json.loads((out / "reference" / "reference.json").read_text())
    assert reference["n_components"] == 100


def test_a_cohort_given_twice_is_refused(tiny_group, tmp_path: Path, capsys) -> None:
    deriv = tiny_group["deriv"]
    with pytest.raises(InvalidInputError, match="given twice"):
        build_dataset([deriv, deriv], tmp_path / "ds", load_config().dataset)
    assert main(["dataset", str(deriv), str(deriv), str(tmp_path / "ds")]) == EXIT_ERROR
    assert "given twice" in capsys.readouterr().err
    assert not (tmp_path / "ds").exists()

"""``rsnflow classify``: a trained classifier labels every run's dual-regression maps."""

from __future__ import annotations

import functools
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from gate import like_no_network, withheld
from rsnflow.classify import COLUMNS, with_group_evidence
from rsnflow.cli import EXIT_OK, main
from rsnflow.ica.dr_cohort import dr_status
from rsnflow.layout import dr_outputs, group_paths, preprocessed_records
from rsnflow.models import load_classifier


@pytest.fixture()
def deriv(tiny_group, tmp_path: Path) -> Path:
    """The shared cohort's records and dual-regression maps, linked into a folder of this test's own."""
    src, out = Path(tiny_group["deriv"]), tmp_path / "deriv"
    for pattern in ("*desc-preproc_record.json", "*desc-dr_components.nii.gz"):
        for f in src.rglob(pattern):
            target = out / f.relative_to(src)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(f)
    return out


def _atypical(model_dir: Path, maps: np.ndarray, table: pd.DataFrame) -> np.ndarray:
    """The maps the typicality gate withholds a network label from (rsnflow.models.prototypes)."""
    classes = load_classifier(model_dir)[1]["classes"]
    best = np.array([classes.index(label) for label in table["top3_labels"].str.split(";").str[0]])
    return withheld(model_dir, maps, best)


def _maps(deriv: Path, run: object) -> np.ndarray:
    return np.moveaxis(np.asarray(nib.load(dr_outputs(deriv, run)["maps"]).dataobj, dtype=np.float32), -1, 0)


def test_every_run_gets_a_table_that_agrees_with_the_model(deriv: Path, tiny_mlp: Path) -> None:
    assert main(["classify", str(deriv), "--model", str(tiny_mlp)]) == EXIT_OK
    model, meta = load_classifier(tiny_mlp)
    threshold = meta["abstain_below"]
    runs = [run for run, _ in preprocessed_records(deriv)]
    assert len(runs) == 8
    for run in runs:
        table = pd.read_csv(dr_outputs(deriv, run)["labels"], sep="\t")
        assert tuple(table.columns) == COLUMNS and len(table) == 100
        assert set(table["label"]) <= set(meta["classes"]) | {"Unknown"}
        assert table["probability"].between(0, 1).all()
        assert (table["network_probability"] >= table["probability"] - 1e-4).all()
        # unsure of the network, or a network label atypical of the map
        unsure = (table["network_probability"] < threshold).to_numpy()
        atypical = _atypical(tiny_mlp, _maps(deriv, run), table)
        assert (table["abstained"].to_numpy() == (unsure | atypical)).all()
        assert ((table["label"] == "Unknown") == table["abstained"]).all()
        # Sure of the network, not of the label: the network is said.
        network_only = (table["probability"] < threshold) & ~table["abstained"]
        assert (table.loc[network_only, "label"] == table.loc[network_only, "network"]).all()
    # The first run's labels are the model's own, in process.
    maps = _maps(deriv, runs[0])
    with torch.no_grad():
        probs = torch.softmax(model(torch.from_numpy(maps)), 1).numpy()
    table = pd.read_csv(dr_outputs(deriv, runs[0])["labels"], sep="\t")
    kept = ((table["probability"] >= threshold) & ~table["abstained"]).to_numpy()
    assert kept.sum() > 50  # most maps of a cohort like the training one are labelled
    assert list(table["label"][kept]) == [meta["classes"][i] for i in probs.argmax(1)[kept]]
    np.testing.assert_allclose(table["probability"], probs.max(1), atol=1e-4)
    page = group_paths(deriv)["classify_report"].read_text()
    assert str(runs[0]) in page and "abstains below" in page


def test_the_threshold_can_be_given_and_is_checked(
    deriv: Path, tiny_mlp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["classify", str(deriv), "--model", str(tiny_mlp), "--abstain-below", "0"]) == EXIT_OK
    capsys.readouterr()
    (run, _), *_ = preprocessed_records(deriv)
    table = pd.read_csv(dr_outputs(deriv, run)["labels"], sep="\t")
    # no probability is too low: only the typicality gate withholds a label
    assert (table["abstained"].to_numpy() == _atypical(tiny_mlp, _maps(deriv, run), table)).all()
    assert main(["classify", str(deriv), "--model", str(tiny_mlp), "--abstain-below", "1"]) == EXIT_OK
    capsys.readouterr()
    table = pd.read_csv(dr_outputs(deriv, run)["labels"], sep="\t")
    assert table["abstained"].any()
    # Only a network probability of 1 is sure enough (the float32 sum of its labels may round above)
    assert (table.loc[~table["abstained"], "network_probability"] >= 0.9999).all()
    assert main(["classify", str(deriv), "--model", str(tiny_mlp), "--abstain-below", "2"]) != EXIT_OK
    assert "serve.abstain_below" in capsys.readouterr().err


def test_the_typicality_gate_can_be_set_or_turned_off(
    deriv: Path, tiny_mlp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (run, _), *_ = preprocessed_records(deriv)
    base = ["classify", str(deriv), "--model", str(tiny_mlp), "--abstain-below", "0"]
    # Both thresholds off: every map keeps its best label.
    assert main([*base, "--atypical-below", "0"]) == EXIT_OK
    table = pd.read_csv(dr_outputs(deriv, run)["labels"], sep="\t")
    assert not table["abstained"].any()
    # A floor above every correlation: every network label is withheld, Noise is still said.
    assert main([*base, "--atypical-below", "1"]) == EXIT_OK
    table = pd.read_csv(dr_outputs(deriv, run)["labels"], sep="\t")
    best = table["top3_labels"].str.split(";").str[0]
    assert (table["abstained"] == ~best.isin(["Noise", "Unknown"])).all()
    capsys.readouterr()
    assert main([*base, "--atypical-below", "-0.5"]) != EXIT_OK
    assert "serve.atypical_below" in capsys.readouterr().err


def test_a_folder_without_maps_is_refused_in_one_line(
    tmp_path: Path, tiny_mlp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["classify", str(tmp_path), "--model", str(tiny_mlp)]) != EXIT_OK
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(tmp_path) in err[0] and "no dual-regression maps" in err[0]


def test_a_running_server_classifies_each_run_in_one_request(
    deriv: Path, tiny_mlp: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from servers import rsnflow_serve

    assert main(["classify", str(deriv), "--model", str(tiny_mlp)]) == EXIT_OK
    runs = [run for run, _ in preprocessed_records(deriv)]
    local = {run: pd.read_csv(dr_outputs(deriv, run)["labels"], sep="\t") for run in runs}
    with rsnflow_serve(str(tiny_mlp), tmp_path / "serve.log") as url:
        assert main(["classify", str(deriv), "--model", url]) == EXIT_OK
        assert main(["classify", str(deriv), "--model", url, "--abstain-below", "0.5"]) != EXIT_OK
        assert "applies its own threshold" in capsys.readouterr().err
    for run in runs:  # 100 maps a run, each run one V2 request: the same table as in process
        served = pd.read_csv(dr_outputs(deriv, run)["labels"], sep="\t")
        drop = ["top3_probabilities"]  # text rounded to 4 places: may differ by one in the last
        pd.testing.assert_frame_equal(served.drop(columns=drop), local[run].drop(columns=drop), atol=2e-4)
    assert "Served model at" in group_paths(deriv)["classify_report"].read_text()


def test_group_evidence_is_a_weighted_product_of_experts() -> None:
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(5), size=4).astype(np.float32)
    group = rng.dirichlet(np.ones(5), size=4).astype(np.float32)
    np.testing.assert_allclose(with_group_evidence(probs, group, 0.0), probs, rtol=1e-5)
    # One weight per map: a map whose group map has no say keeps its own probabilities.
    some = with_group_evidence(probs, group, np.array([0.0, 1.0, 0.0, 1.0]))
    np.testing.assert_allclose(some[[0, 2]], probs[[0, 2]], rtol=1e-5)
    np.testing.assert_allclose(some[[1, 3]], with_group_evidence(probs, group, 1.0)[[1, 3]], rtol=1e-6)
    both = with_group_evidence(probs, group, 1.0)
    assert both.dtype == np.float32
    np.testing.assert_allclose(both.sum(1), 1.0, rtol=1e-5)
    expected = probs * group / (probs * group).sum(1, keepdims=True)
    np.testing.assert_allclose(both, expected, rtol=1e-4)
    # A map unsure between two classes takes the one its group map shows; a sure map keeps its own.
    unsure, sure = np.array([[0.45, 0.55, 0.0]]), np.array([[0.02, 0.97, 0.01]])
    says_first = np.array([[0.9, 0.05, 0.05]])
    assert with_group_evidence(unsure, says_first, 0.5).argmax() == 0
    assert with_group_evidence(sure, says_first, 0.5).argmax() == 1
    # A probability of 0 in one expert lowers a class without vetoing it outright.
    assert (with_group_evidence(unsure, says_first, 0.5) > 0).all()
    with pytest.raises(ValueError, match="same shape"):
        with_group_evidence(probs, group[:3], 0.5)
    with pytest.raises(ValueError, match="one per map"):
        with_group_evidence(probs, group, np.ones(3))


@pytest.fixture()
def deriv_with_group(tiny_group, tmp_path: Path) -> Path:
    """The shared cohort's whole derivatives (group maps and dual-regression records too), file by file,
    so that what classify writes lands in this test's folder."""
    src, out = Path(tiny_group["deriv"]), tmp_path / "deriv"
    for f in src.rglob("*"):
        if f.is_file() and "classifier" not in f.name and "classify" not in f.name:
            target = out / f.relative_to(src)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(f)
    return out


def _probabilities(model: torch.nn.Module, path: Path) -> np.ndarray:
    maps = np.moveaxis(np.asarray(nib.load(path).dataobj, dtype=np.float32), -1, 0)
    with torch.no_grad():
        return torch.softmax(model(torch.from_numpy(maps)), 1).numpy()


def _group_maps(deriv: Path) -> np.ndarray:
    return np.moveaxis(np.asarray(nib.load(group_paths(deriv)["maps"]).dataobj, dtype=np.float32), -1, 0)


def _fusion(model_dir: Path, deriv: Path) -> Callable[[object, float], np.ndarray]:
    """A function of a run and a floor: the run's probabilities with its group maps' at weight 0.5, save
    those atypical of their best label (each model answer computed once)."""
    model = load_classifier(model_dir)[0]
    path = group_paths(deriv)["maps"]
    group = _probabilities(model, path)
    maps = _group_maps(deriv)

    @functools.cache
    def weights(floor: float) -> np.ndarray:
        return np.where(withheld(model_dir, maps, group.argmax(1), floor), 0.0, 0.5)

    @functools.cache
    def own(run: object) -> np.ndarray:
        return _probabilities(model, dr_outputs(deriv, run)["maps"])

    return lambda run, floor: with_group_evidence(own(run), group, weights(floor))


def test_each_map_group_map_weighs_in_unless_its_maps_are_of_other_group_maps(
    deriv_with_group: Path, tiny_mlp: Path, caplog: pytest.LogCaptureFixture
) -> None:
    deriv = deriv_with_group
    base = ["classify", str(deriv), "--model", str(tiny_mlp), "--abstain-below", "0", "--atypical-below", "0"]
    base += ["--group-network-below", "0"]  # that gate: the next test
    runs = [run for run, _ in preprocessed_records(deriv)]
    # Another test of the shared cohort leaves one run's dual regression failed (maps without record).
    of_group = [run for run in runs if dr_status(deriv, run).complete]
    assert len(of_group) >= len(runs) - 1
    classes = load_classifier(tiny_mlp)[1]["classes"]
    fusion = _fusion(tiny_mlp, deriv)

    def tables() -> dict[object, pd.DataFrame]:
        return {run: pd.read_csv(dr_outputs(deriv, run)["labels"], sep="\t") for run in runs}

    def as_fused(tables: dict[object, pd.DataFrame], floor: float) -> None:
        for run in of_group:
            expected = fusion(run, floor)
            np.testing.assert_allclose(tables[run]["probability"], expected.max(1), atol=1e-4)
            assert list(tables[run]["label"]) == [classes[i] for i in expected.argmax(1)]
        for run in set(runs) - set(of_group):
            pd.testing.assert_frame_equal(tables[run], alone[run])

    assert main([*base, "--group-weight", "0"]) == EXIT_OK
    alone = tables()
    assert "weighs in" not in group_paths(deriv)["classify_report"].read_text()
    for floor in ("1", "0"):  # only group maps saying Noise have a say; every one has
        assert main([*base, "--group-atypical-below", floor]) == EXIT_OK
        as_fused(tables(), float(floor))
    assert main(base) == EXIT_OK  # the defaults: weight 0.5, group maps typical above 0.3
    fused = tables()
    page = group_paths(deriv)["classify_report"].read_text()
    assert "group map weighs in at weight 0.5, where it is typical of its best label" in page
    as_fused(fused, 0.3)
    first, second = of_group[:2]
    assert not np.allclose(fused[first]["probability"], alone[first]["probability"], atol=1e-3)
    # A run whose maps are not of the group maps now in the folder is labelled alone.
    dr_outputs(deriv, first)["record"].unlink()
    caplog.clear()
    assert main(base) == EXIT_OK
    assert f"{first}: its maps are not from the current group maps: labelled alone" in caplog.text
    assert caplog.text.count("labelled alone") == len(runs) - len(of_group) + 1
    again = tables()
    pd.testing.assert_frame_equal(again[first], alone[first])
    pd.testing.assert_frame_equal(again[second], fused[second])


def test_a_component_whose_group_map_is_like_no_network_gets_no_network_label(
    deriv_with_group: Path, tiny_mlp: Path
) -> None:
    deriv = deriv_with_group
    base = ["classify", str(deriv), "--model", str(tiny_mlp), "--abstain-below", "0", "--atypical-below", "0"]
    runs = [run for run, _ in preprocessed_records(deriv) if dr_status(deriv, run).complete]
    maps = _group_maps(deriv)

    def tables() -> dict[object, pd.DataFrame]:
        return {run: pd.read_csv(dr_outputs(deriv, run)["labels"], sep="\t") for run in runs}

    assert main([*base, "--group-network-below", "0"]) == EXIT_OK
    free = tables()
    assert not any(table["abstained"].any() for table in free.values())
    # Every group map like no network; then the default floor (0.32).
    for flags, floor in ((["--group-network-below", "1"], 1.0), ([], 0.32)):
        assert main([*base, *flags]) == EXIT_OK
        unlike = like_no_network(tiny_mlp, maps, floor)
        assert f"{int(unlike.sum())} group maps correlate less than {floor:g}" in (
            group_paths(deriv)["classify_report"].read_text()
        )
        for run, table in tables().items():
            said_network = ~free[run]["label"].isin(["Noise", "Unknown"]).to_numpy()
            gone = said_network & unlike
            if floor == 1.0:
                assert gone.any() and (gone == said_network).all()
            assert table["abstained"].tolist() == gone.tolist()
            assert (table.loc[gone, ["label", "network"]] == "Unknown").all(axis=None)
            # the probabilities are the fused ones, and every other map keeps its label (Noise too)
            pd.testing.assert_frame_equal(table[~gone], free[run][~gone])
            np.testing.assert_array_equal(table["probability"], free[run]["probability"])


def test_where_the_group_map_weighs_in_it_judges_the_component_not_the_map_gate(
    deriv_with_group: Path, tiny_mlp: Path, tmp_path: Path
) -> None:
    deriv = deriv_with_group
    strict = tmp_path / "strict"  # the model with a typicality floor no map reaches
    shutil.copytree(tiny_mlp, strict)
    meta = json.loads((strict / "model.json").read_text())
    (strict / "model.json").write_text(json.dumps({**meta, "atypical_below": 1.0}))
    base = [
        "classify",
        str(deriv),
        "--model",
        str(strict),
        "--abstain-below",
        "0",
        "--group-network-below",
        "0",
    ]
    runs = [run for run, _ in preprocessed_records(deriv) if dr_status(deriv, run).complete]

    def tables(*flags: str) -> dict[object, pd.DataFrame]:
        assert main([*base, *flags]) == EXIT_OK
        return {run: pd.read_csv(dr_outputs(deriv, run)["labels"], sep="\t") for run in runs}

    def networks(table: pd.DataFrame) -> pd.Series:
        return ~table["top3_labels"].str.split(";").str[0].isin(["Noise", "Unknown"])

    # Labelled alone, the model's floor withholds every network label.
    for table in tables("--group-weight", "0").values():
        assert networks(table).any()
        assert table["abstained"].tolist() == networks(table).tolist()
    # Where the group map weighs in, the model's floor does not apply: as with no floor at all.
    fused = tables()
    page = group_paths(deriv)["classify_report"].read_text()
    assert "Where the group map weighs in, this replaces the typicality gate." in page
    for run, table in tables("--atypical-below", "0").items():
        pd.testing.assert_frame_equal(fused[run], table)
        assert not table["abstained"].any()
    # A floor given is applied to every map.
    for table in tables("--atypical-below", "1").values():
        assert table["abstained"].tolist() == networks(table).tolist()

"""``rsnflow classify``: a trained classifier labels every run's dual-regression maps."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from gate import withheld
from rsnflow.classify import COLUMNS
from rsnflow.cli import EXIT_OK, main
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

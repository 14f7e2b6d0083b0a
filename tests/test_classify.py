"""``rsnflow classify``: a trained classifier labels every run's dual-regression maps."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

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
        assert (table["abstained"] == (table["probability"] < threshold)).all()
        assert ((table["label"] == "Unknown") == table["abstained"]).all()
    # The first run's labels are the model's own, in process.
    maps = np.moveaxis(
        np.asarray(nib.load(dr_outputs(deriv, runs[0])["maps"]).dataobj, dtype=np.float32), -1, 0
    )
    with torch.no_grad():
        probs = torch.softmax(model(torch.from_numpy(maps)), 1).numpy()
    table = pd.read_csv(dr_outputs(deriv, runs[0])["labels"], sep="\t")
    kept = ~table["abstained"].to_numpy()
    assert kept.sum() > 50  # most maps of a cohort like the training one are labelled
    assert list(table["label"][kept]) == [meta["classes"][i] for i in probs.argmax(1)[kept]]
    np.testing.assert_allclose(table["probability"], probs.max(1), atol=1e-4)
    page = group_paths(deriv)["classify_report"].read_text()
    assert str(runs[0]) in page and "abstains below" in page


def test_the_threshold_can_be_given_and_is_checked(
    deriv: Path, tiny_mlp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["classify", str(deriv), "--model", str(tiny_mlp), "--abstain-below", "0"]) == EXIT_OK
    assert " 0 abstained" in capsys.readouterr().out
    assert main(["classify", str(deriv), "--model", str(tiny_mlp), "--abstain-below", "1"]) == EXIT_OK
    capsys.readouterr()
    (run, _), *_ = preprocessed_records(deriv)
    table = pd.read_csv(dr_outputs(deriv, run)["labels"], sep="\t")
    assert table["abstained"].any()
    assert (table.loc[~table["abstained"], "probability"] == 1).all()  # only a float32 1.0 is sure enough
    assert main(["classify", str(deriv), "--model", str(tiny_mlp), "--abstain-below", "2"]) != EXIT_OK
    assert "serve.abstain_below" in capsys.readouterr().err


def test_a_folder_without_maps_is_refused_in_one_line(
    tmp_path: Path, tiny_mlp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["classify", str(tmp_path), "--model", str(tiny_mlp)]) != EXIT_OK
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(tmp_path) in err[0] and "no dual-regression maps" in err[0]

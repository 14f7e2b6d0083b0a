"""Defect 3: completeness is keyed on what made an output, not on the file existing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from probes import one_error, snapshot

from rsnflow.ica import dr_outputs, group_paths
from rsnflow.preprocess import subject_outputs
from rsnflow.records import Record, file_digest


@pytest.fixture
def deriv(small_deriv: Path, tmp_path: Path) -> Path:
    out = tmp_path / "deriv"
    shutil.copytree(small_deriv, out)
    return out


def _dr_status(deriv: Path) -> set[str]:
    return set(pd.read_csv(deriv / "group" / "dual_regression_summary.tsv", sep="\t")["status"])


def test_a_new_group_ica_makes_dual_regression_redo_every_subject(cli, deriv: Path) -> None:
    assert cli("group-ica", deriv, "--order", "10", "--seed", "1")[0] == 0
    assert cli("dual-regression", deriv)[0] == 0
    assert cli("dual-regression", deriv)[0] == 0
    assert _dr_status(deriv) == {"skipped (complete)"}
    assert cli("group-ica", deriv, "--order", "10", "--seed", "2")[0] == 0
    assert cli("dual-regression", deriv)[0] == 0
    assert _dr_status(deriv) == {"ok"}  # redone, not skipped
    maps_digest = file_digest(group_paths(deriv)["maps"])
    for s in ("01", "02", "03"):
        assert Record(dr_outputs(deriv, s)["record"]).inputs()["group_maps"] == maps_digest


def test_no_recompute_names_the_stale_file(cli, deriv: Path) -> None:
    assert cli("group-ica", deriv, "--order", "10", "--seed", "1")[0] == 0
    assert cli("dual-regression", deriv)[0] == 0
    assert cli("group-ica", deriv, "--order", "10", "--seed", "2")[0] == 0
    before = snapshot(deriv)
    code, errors = cli("dual-regression", deriv, "--no-recompute")
    assert code == 1
    one_error(errors, "sub-01_task-rest_space-MNI152NLin2009aSym_res-4mm_desc-dr_components.nii.gz", "stale")
    assert snapshot(deriv) == before


def test_dataset_refuses_maps_and_labels_of_another_group_ica(cli, deriv: Path, tmp_path: Path) -> None:
    assert cli("group-ica", deriv, "--order", "10", "--seed", "1")[0] == 0
    assert cli("dual-regression", deriv)[0] == 0
    assert cli("label", deriv)[0] == 0
    assert cli("group-ica", deriv, "--order", "10", "--seed", "2")[0] == 0
    code, errors = cli("dataset", deriv, tmp_path / "ds")
    assert code == 1
    one_error(errors, "desc-ica_labels.tsv", "stale", "rsnflow label")
    assert cli("label", deriv)[0] == 0
    code, errors = cli("dataset", deriv, tmp_path / "ds")
    assert code == 1
    one_error(errors, "desc-dr_components.nii.gz", "stale", "rsnflow dual-regression")
    assert not (tmp_path / "ds").exists()


def test_a_group_ica_killed_after_its_maps_is_refused(cli, deriv: Path, tmp_path: Path) -> None:
    assert cli("group-ica", deriv, "--order", "10")[0] == 0
    group_paths(deriv)["record"].unlink()  # killed after the maps were written, before the record
    code, errors = cli("dual-regression", deriv)
    assert code == 1
    one_error(errors, "desc-ica_components.nii.gz", "incomplete", "rsnflow group-ica")
    code, errors = cli("label", deriv)
    assert code == 1
    one_error(errors, "incomplete")


@pytest.fixture
def one_subject(tiny_group, tmp_path: Path) -> tuple[Path, Path]:
    bids = tiny_group["cohort"].bids_dir
    deriv = tmp_path / "deriv"
    assert _preprocess(bids, deriv) == {"ok"}
    return bids, deriv


def _preprocess(bids: Path, deriv: Path, *extra: str) -> set[str]:
    from rsnflow.cli import main

    assert main(["preprocess", str(bids), str(deriv), "--participant-label", "01", *extra]) in (0, 1)
    return set(pd.read_csv(deriv / "preprocess_summary.tsv", sep="\t")["status"])


def test_preprocess_redoes_a_run_made_with_other_settings(one_subject, tmp_path: Path) -> None:
    bids, deriv = one_subject
    assert _preprocess(bids, deriv) == {"skipped (complete)"}
    cfg = tmp_path / "fwhm3.yaml"
    cfg.write_text("preprocess:\n  fwhm_mm: 3\n")
    assert _preprocess(bids, deriv, "--config", str(cfg)) == {"ok"}
    sidecar = json.loads(subject_outputs(deriv, "01").sidecar.read_text())
    assert sidecar["SmoothingFWHM"] == 3.0


def test_preprocess_no_recompute_names_the_stale_run(cli, one_subject, tmp_path: Path) -> None:
    bids, deriv = one_subject
    cfg = tmp_path / "fwhm5.yaml"
    cfg.write_text("preprocess:\n  fwhm_mm: 5\n")
    before = snapshot(deriv)
    code, errors = cli(
        "preprocess", bids, deriv, "--participant-label", "01", "--config", cfg, "--no-recompute"
    )
    assert code == 1
    one_error(errors, "sub-01_task-rest_space-MNI152NLin2009aSym_res-4mm_desc-preproc_bold.nii.gz", "stale")
    assert snapshot(deriv) == before


def test_a_truncated_output_is_redone(one_subject) -> None:
    bids, deriv = one_subject
    bold = subject_outputs(deriv, "01").bold
    size = bold.stat().st_size
    with bold.open("r+b") as fh:
        fh.truncate(size // 2)
    assert _preprocess(bids, deriv) == {"ok"}
    assert bold.stat().st_size == size  # whole again (same inputs, same bytes)

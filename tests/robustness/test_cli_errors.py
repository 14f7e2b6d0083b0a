"""Defect 9: raw tracebacks and silent acceptance become one-line errors with exit status 1."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from probes import one_error, snapshot


@pytest.fixture
def bids(tiny_cohort, tmp_path: Path) -> Path:
    """A copy of the tiny cohort's first good subject (the test may break its files)."""
    out = tmp_path / "bids"
    out.mkdir()
    src = tiny_cohort.bids_dir
    for name in ("dataset_description.json", "task-rest_bold.json"):
        if (src / name).exists():
            shutil.copy2(src / name, out / name)
    shutil.copytree(src / "sub-01", out / "sub-01")
    return out


def test_a_non_utf8_expert_label_file(cli, tiny_group, tiny_dataset, tmp_path: Path) -> None:
    bad = tmp_path / "labels.tsv"
    bad.write_bytes("component\tlabel\n0\tR\xe9seau\n".encode("latin-1"))
    before = snapshot(tiny_group["deriv"] / "group")
    code, errors = cli("label", tiny_group["deriv"], "--expert-labels", bad)
    assert code == 1
    one_error(errors, str(bad), "not UTF-8")
    assert snapshot(tiny_group["deriv"] / "group") == before


@pytest.mark.parametrize("action", ["submit", "schedule"])
def test_pipeline_calls_to_an_unreachable_host(cli, tmp_path: Path, action: str) -> None:
    package = tmp_path / "p.yaml"
    package.write_text("{}")
    extra = ["--watch", "s3://cohorts/new"] if action == "schedule" else []
    code, errors = cli("pipeline", action, "--host", "http://127.0.0.1:9", "--package", package, *extra)
    assert code == 1
    one_error(errors, "http://127.0.0.1:9", "cannot reach the KFP API")


def test_an_invalid_dataset_description(cli, bids: Path, tmp_path: Path) -> None:
    (bids / "dataset_description.json").write_text("{'Name': not json")
    code, errors = cli("preprocess", bids, tmp_path / "d")
    assert code == 1
    one_error(errors, "dataset_description.json", "not valid JSON")
    assert not (tmp_path / "d").exists()


def test_a_participant_label_that_does_not_exist(cli, bids: Path, tmp_path: Path) -> None:
    code, errors = cli("preprocess", bids, tmp_path / "d", "--participant-label", "01", "99")
    assert code == 1
    one_error(errors, str(bids), "no such subject", "sub-99")


@pytest.mark.parametrize("inside", [".", "derivatives/rsnflow"])
def test_derivatives_inside_the_raw_dataset(cli, bids: Path, inside: str) -> None:
    before = snapshot(bids)
    description = (bids / "dataset_description.json").read_text()
    code, errors = cli("preprocess", bids, bids / inside)
    assert code == 1
    one_error(errors, "lies inside the raw BIDS dataset")
    assert (bids / "dataset_description.json").read_text() == description
    assert snapshot(bids) == before


@pytest.mark.parametrize(
    ("yaml", "key"),
    [
        ("preprocess:\n  fwhm_mm: .inf\n", "preprocess.fwhm_mm"),
        ("preprocess:\n  highpass_cutoff_s: 0\n", "preprocess.highpass_cutoff_s"),
        ("train:\n  lr: .nan\n", "train.lr"),
        ("ica:\n  tol: -1\n", "ica.tol"),
        ("ica:\n  max_iter: 0\n", "ica.max_iter"),
        ("preprocess:\n  registration_max_scale: 0.8\n", "preprocess.registration_max_scale"),
    ],
)
def test_config_values_out_of_range_name_the_key(cli, tmp_path: Path, yaml: str, key: str) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml)
    code, errors = cli("config", "show", "--config", cfg)
    assert code == 1
    one_error(errors, str(cfg), key)


def test_an_order_above_what_the_runs_hold_names_the_key(cli, small_deriv: Path, tmp_path: Path) -> None:
    deriv = tmp_path / "d"
    shutil.copytree(small_deriv, deriv)
    code, errors = cli("group-ica", deriv, "--order", "400")
    assert code == 1
    one_error(errors, "ica.order 400 needs more data")


def test_complex_bold_fails_its_subject_only(cli, bids: Path, tmp_path: Path) -> None:
    import nibabel as nib
    import numpy as np

    shutil.copytree(bids / "sub-01", bids / "sub-02")
    src = bids / "sub-02" / "func" / "sub-01_task-rest_bold.nii.gz"
    img = nib.load(src)
    data = np.asarray(img.dataobj, dtype=np.float32).astype(np.complex64) * (1 + 1j)
    out = nib.Nifti1Image(data, img.affine)
    out.header.set_zooms(img.header.get_zooms())
    nib.save(out, bids / "sub-02" / "func" / "sub-02_task-rest_bold.nii.gz")
    src.unlink()
    for j in (bids / "sub-02" / "func").glob("sub-01_*"):
        j.rename(j.with_name(j.name.replace("sub-01", "sub-02")))
    code, _ = cli("preprocess", bids, tmp_path / "d")
    assert code == 3  # partial: sub-01 done, sub-02 refused
    summary = (tmp_path / "d" / "preprocess_summary.tsv").read_text()
    assert "complex-valued data (complex64)" in summary
    assert (
        json.loads((tmp_path / "d" / "dataset_description.json").read_text())["DatasetType"] == "derivative"
    )

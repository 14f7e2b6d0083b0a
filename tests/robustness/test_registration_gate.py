"""Defects 5 and 11: a failed registration fails QC; the registration's degrees of freedom are honoured."""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from rsnflow.config import load_config
from rsnflow.errors import PreprocessingError
from rsnflow.preprocess.registration import AffineRegistration
from rsnflow.preprocess.run import check_registration


def _reg(cost: float = 0.3, scales=(1.0, 1.0, 1.0), shears=(0.0, 0.0, 0.0)) -> AffineRegistration:
    params = np.concatenate([np.zeros(6), np.log(scales), shears])
    return AffineRegistration(np.eye(4), cost, params)


@pytest.mark.parametrize(
    ("reg", "says"),
    [
        (_reg(cost=0.67), "cost 0.670 > preprocess.registration_max_cost 0.5"),
        (_reg(scales=(1.0, 1.0, 1.6)), "scales [1.0, 1.0, 1.6] outside 1/1.35-1.35"),
        (_reg(scales=(0.6, 1.0, 1.0)), "(preprocess.registration_max_scale)"),
        (_reg(shears=(0.0, 0.4, 0.0)), "beyond 0.25 (preprocess.registration_max_shear)"),
    ],
)
def test_implausible_registrations_fail_naming_the_threshold(reg, says) -> None:
    with pytest.raises(PreprocessingError, match="registration to MNI failed") as err:
        check_registration("run.nii.gz", reg, load_config().preprocess)
    assert says in str(err.value)


def test_a_plausible_registration_passes() -> None:
    check_registration(
        "run.nii.gz", _reg(0.31, (1.1, 1.05, 0.95), (0.02, -0.01, 0.0)), load_config().preprocess
    )


def test_a_partial_field_of_view_run_fails_with_its_reason(cli, tiny_group, tmp_path: Path) -> None:
    """10 of the 36 slices of a tiny run: the affine can no longer be trusted, and QC says so."""
    src_bids = tiny_group["cohort"].bids_dir
    bids = tmp_path / "bids"
    (bids / "sub-01" / "func").mkdir(parents=True)
    for name in ("dataset_description.json", "task-rest_bold.json"):
        shutil.copy2(src_bids / name, bids / name)
    run = nib.load(src_bids / "sub-01" / "func" / "sub-01_task-rest_bold.nii.gz")
    data = np.asarray(run.dataobj)[:, :, 13:23]
    affine = run.affine.copy()
    affine[:3, 3] += affine[:3, 2] * 13
    nib.save(
        nib.Nifti1Image(data, affine, run.header), bids / "sub-01" / "func" / "sub-01_task-rest_bold.nii.gz"
    )
    code, _ = cli("preprocess", bids, tmp_path / "d")
    assert code == 1
    row = pd.read_csv(tmp_path / "d" / "preprocess_summary.tsv", sep="\t").iloc[0]
    assert row["status"] == "failed"
    assert "registration to MNI failed" in row["reason"] or "field of view" in row["reason"]


@pytest.mark.parametrize("dof", [6, 9])
def test_registration_dof_is_honoured(tiny_group, dof: int) -> None:
    from rsnflow.preprocess.registration import register_to_mni

    run = nib.load(tiny_group["cohort"].bids_dir / "sub-01" / "func" / "sub-01_task-rest_bold.nii.gz")
    mean = np.asarray(run.dataobj, dtype=np.float32).mean(-1)
    reg = register_to_mni(mean, run.affine, dof=dof)
    assert np.all(reg.shears == 0)
    if dof == 6:
        assert np.allclose(reg.scales, 1.0)
    else:
        assert not np.allclose(reg.scales, 1.0)

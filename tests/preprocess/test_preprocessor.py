"""The one-run Preprocessor estimator: the stage's outputs from an image, nothing written."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from estimator_checks import API_CHECKS
from rsnflow.config import load_config
from rsnflow.layout import subject_outputs
from rsnflow.preprocess import Preprocessor, preprocess_subject
from rsnflow.simulate import simulate_cohort


@pytest.mark.parametrize("check", API_CHECKS)
def test_sklearn_estimator_checks(check) -> None:
    check("Preprocessor", Preprocessor())


def test_defaults_are_the_config_defaults() -> None:
    cfg, est = load_config().preprocess, Preprocessor()
    for name, value in est.get_params().items():
        if name != "device":
            assert getattr(cfg, name) == value, name


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"motion_reference": "first"}, "motion_reference"),
        ({"fwhm_mm": -7}, "fwhm_mm"),
        ({"fwhm_mm": float("nan")}, "fwhm_mm"),
        ({"highpass_method": "fft"}, "highpass_method"),
        ({"registration_dof": 7}, "registration_dof"),
        ({"registration_max_scale": 0.9}, "registration_max_scale"),
        ({"device": "tpu"}, "device"),
    ],
)
def test_parameters_are_validated_in_fit(params: dict, message: str) -> None:
    img = nib.Nifti1Image(np.ones((4, 4, 4, 30), np.float32), np.eye(4))
    with pytest.raises(ValueError, match=message):
        Preprocessor(**params).fit(img)


@pytest.mark.slow
def test_fit_transform_gives_the_stage_outputs_without_writing(tmp_path: Path) -> None:
    cohort = simulate_cohort(tmp_path / "bids", profile="tiny", seed=5, n_subjects=1, n_volumes=60)
    bold = cohort.bids_dir / "sub-01" / "func" / "sub-01_task-rest_bold.nii.gz"
    before = {p for p in tmp_path.rglob("*")}
    img, confounds, qc = Preprocessor(device="cpu").fit_transform(nib.load(bold), tr=2.0)
    assert {p for p in tmp_path.rglob("*")} == before  # nothing written
    stage_qc = preprocess_subject(bold, tmp_path / "deriv", "01", load_config().preprocess, device="cpu")
    out = subject_outputs(tmp_path / "deriv", "01")
    np.testing.assert_allclose(img.get_fdata(), nib.load(out.bold).get_fdata(), rtol=1e-5, atol=1e-4)
    assert img.header.get_zooms()[3] == 2.0
    written = pd.read_csv(out.confounds, sep="\t")
    np.testing.assert_allclose(
        confounds["framewise_displacement"], written["framewise_displacement"], atol=1e-5
    )
    for key in ("mean_fd_mm", "registration_cost_corratio", "mask_dice_with_template", "tsnr_median"):
        assert qc[key] == pytest.approx(stage_qc[key], rel=1e-5), key
    assert qc["mask_dice_with_template"] > 0.85  # the run is in MNI, not just written somewhere

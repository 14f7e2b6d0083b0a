from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import pandas as pd

from rsnflow.cli import EXIT_PARTIAL, main
from rsnflow.config import load_config
from rsnflow.preprocess import preprocess_cohort, subject_outputs
from rsnflow.simulate import PROFILES


def test_cohort_with_bad_subjects(tiny_cohort, tmp_path: Path) -> None:
    deriv = tmp_path / "derivatives" / "rsnflow"
    labels = ["01", "02", *tiny_cohort.bad_subjects]
    result = preprocess_cohort(tiny_cohort.bids_dir, deriv, load_config().preprocess, labels, device="cpu")
    assert result.succeeded == ["sub-01_task-rest", "sub-02_task-rest"]
    assert sorted(result.failed) == sorted(f"sub-{s}_task-rest" for s in tiny_cohort.bad_subjects)
    summary = pd.read_csv(deriv / "preprocess_summary.tsv", sep="\t")
    for _, row in summary[summary["status"] == "failed"].iterrows():
        assert row["participant_id"] in row["reason"]
    assert json.loads((deriv / "dataset_description.json").read_text())["DatasetType"] == "derivative"

    out = subject_outputs(deriv, "01")
    assert out.complete()
    bold = nib.load(out.bold)
    assert bold.shape == (45, 54, 45, PROFILES["tiny"].n_volumes)
    assert bold.header.get_zooms()[3] == 2.0
    assert out.bold.name == "sub-01_task-rest_space-MNI152NLin2009aSym_res-4mm_desc-preproc_bold.nii.gz"
    mask = nib.load(out.mask).get_fdata() > 0
    assert mask.sum() > 20_000
    conf = pd.read_csv(out.confounds, sep="\t")
    assert len(conf) == PROFILES["tiny"].n_volumes
    qc = json.loads(out.qc_json.read_text())
    assert qc["mask_dice_with_template"] > 0.9
    assert 0.05 < qc["mean_fd_mm"] < 0.6
    assert "Carpet plot" in out.qc_html.read_text()

    # A rerun skips finished subjects; --force redoes them.
    again = preprocess_cohort(tiny_cohort.bids_dir, deriv, load_config().preprocess, ["01"], device="cpu")
    assert list(again.summary["status"]) == ["skipped (complete)"]
    code = main(["preprocess", str(tiny_cohort.bids_dir), str(deriv), "--participant-label", "01",
                 tiny_cohort.subjects[-1], "--force"])  # fmt: skip
    assert code == EXIT_PARTIAL
    final = pd.read_csv(deriv / "preprocess_summary.tsv", sep="\t")
    assert list(final["status"]) == ["ok", "failed"]


def test_failed_registration_is_reported_not_written(tiny_cohort, tmp_path: Path, monkeypatch) -> None:
    import numpy as np

    from rsnflow.preprocess import run
    from rsnflow.preprocess.registration import AffineRegistration

    def far_away(mean, affine, device="cpu", dof=12):
        m = np.eye(4)
        m[:3, 3] = 400.0  # the whole template lands outside the image
        return AffineRegistration(m, 1.0, np.zeros(12))

    monkeypatch.setattr(run, "register_to_mni", far_away)
    deriv = tmp_path / "deriv"
    result = preprocess_cohort(tiny_cohort.bids_dir, deriv, load_config().preprocess, ["01"], device="cpu")
    assert result.failed == ["sub-01_task-rest"]
    assert "registration to MNI failed" in result.summary["reason"][0]
    assert not subject_outputs(deriv, "01").bold.exists()

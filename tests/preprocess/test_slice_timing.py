"""Slice-timing correction (off by default): against a signal whose value at any time is known."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rsnflow.preprocess.slice_timing import check_slice_timing, shift_slices


def test_every_slice_lands_on_the_reference_time() -> None:
    tr, n, nz = 2.0, 200, 10
    times = np.arange(nz) * tr / nz  # ascending, sequential
    t = np.arange(n) * tr
    data = np.zeros((2, 2, nz, n))
    for s in range(nz):
        data[:, :, s] = np.sin(2 * np.pi * 0.05 * (t + times[s]))
    reference = (times.min() + times.max()) / 2
    want = np.sin(2 * np.pi * 0.05 * (t + reference))
    out = shift_slices(data, times, 2, tr)
    inner = slice(20, -20)  # the ends are mirrored, not known
    assert np.abs(data[0, 0, :, inner] - want[inner]).max() > 0.25  # before: up to 0.28 apart
    assert np.abs(out[0, 0, :, inner] - want[inner]).max() < 1e-3


@pytest.mark.parametrize(
    ("meta", "problem"),
    [
        ({"SliceTiming": [0, 1]}, "2 values for 4 slices"),
        ({"SliceTiming": [0, 0.5, 1, 2.5]}, "must lie in [0, TR=2 s)"),
        ({"SliceTiming": ["a", 0, 0, 0]}, "must be a list of numbers"),
        ({"SliceTiming": [0, 0.5, 1, 1.5], "SliceEncodingDirection": "z"}, "not one of i, j, k"),
    ],
)
def test_bad_slice_timing_is_named(meta, problem) -> None:
    with pytest.raises(ValueError, match=problem.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        check_slice_timing(meta, (3, 3, 4, 10), 2.0)


def test_preprocess_corrects_when_asked_and_refuses_a_bad_sidecar(tiny_cohort, tmp_path: Path) -> None:
    from rsnflow.cli import main

    bids = tmp_path / "bids"
    shutil.copytree(tiny_cohort.bids_dir / "sub-01", bids / "sub-01")
    shutil.copytree(tiny_cohort.bids_dir / "sub-02", bids / "sub-02")
    shutil.copy2(tiny_cohort.bids_dir / "dataset_description.json", bids)
    n_slices = 36  # the tiny profile's 40x48x36 grid
    for label, times in (("01", list(np.arange(n_slices) * 2.0 / n_slices)), ("02", [0.0, 1.0])):
        sidecar = bids / f"sub-{label}" / "func" / f"sub-{label}_task-rest_bold.json"
        sidecar.write_text(json.dumps({**json.loads(sidecar.read_text()), "SliceTiming": times}))
    cfg = tmp_path / "st.yaml"
    cfg.write_text("preprocess:\n  slice_timing: true\n")
    assert main(["preprocess", str(bids), str(tmp_path / "d"), "--config", str(cfg)]) == 3
    summary = pd.read_csv(tmp_path / "d" / "preprocess_summary.tsv", sep="\t").set_index("participant_id")
    assert summary.loc["sub-01", "status"] == "ok"
    reason = summary.loc["sub-02", "reason"]
    assert reason.startswith(str(bids / "sub-02" / "func" / "sub-02_task-rest_bold.json"))
    assert "SliceTiming has 2 values for 36 slices" in reason
    qc = json.loads((tmp_path / "d" / "sub-01" / "func" / "sub-01_task-rest_qc.json").read_text())
    assert qc["slice_timing_corrected"] is True

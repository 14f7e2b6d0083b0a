"""The cohort's QC page: outliers flagged on the bad side of each measure, every run linked."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from rsnflow.preprocess.group_qc import MEASURES, flag_outliers, write_group_qc


def _cohort(n: int = 12) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    table = pd.DataFrame(
        {
            "run": [f"sub-{i:02d}_task-rest" for i in range(n)],
            "subject": [f"sub-{i:02d}" for i in range(n)],
            "mean_fd_mm": rng.uniform(0.1, 0.2, n),
            "mean_std_dvars": rng.uniform(1.0, 1.1, n),
            "registration_cost": rng.uniform(0.28, 0.32, n),
            "tsnr_median": rng.uniform(80, 90, n),
            "fov_coverage": rng.uniform(0.98, 1.0, n),
            "mask_dice": rng.uniform(0.96, 0.98, n),
        }
    )
    return table


def test_outliers_on_the_bad_side_only() -> None:
    table = _cohort()
    table.loc[3, "mean_fd_mm"] = 0.45  # beyond the cohort's fence, under the absolute 0.5 mm
    table.loc[5, "tsnr_median"] = 30.0  # low tSNR is bad
    table.loc[7, "tsnr_median"] = 200.0  # high tSNR is not
    table.loc[8, "fov_coverage"] = 0.85  # under the 0.9 limit
    flagged = flag_outliers(table)
    assert flagged.loc[3, "flags"] == "mean FD (mm)"
    assert flagged.loc[5, "flags"] == "median tSNR"
    assert flagged.loc[8, "flags"] == "FOV coverage"
    assert (flagged.drop(index=[3, 5, 8])["flags"] == "").all()
    # near-identical runs: a trifle below the others is no outlier
    twins = _cohort()
    twins["mask_dice"] = 0.975
    twins.loc[2, "mask_dice"] = 0.973
    assert not flag_outliers(twins)["mask_dice_flag"].any()
    # an absolute limit flags even a cohort that moved alike
    alike = _cohort()
    alike["mean_fd_mm"] = 0.8
    assert flag_outliers(alike)["mean_fd_mm_flag"].all()


def test_the_page_lists_flagged_runs_first_and_links_each_run(tmp_path: Path) -> None:
    table = _cohort(6)
    table.loc[4, "registration_cost"] = 0.6
    for run in table["run"]:
        (tmp_path / f"{run}_qc.html").write_text("<html></html>")
    page = write_group_qc(flag_outliers(table), tmp_path / "qc.html", lambda row: f"{row['run']}_qc.html")
    html = page.read_text()
    links = re.findall(r'<a href="([^"]+)">', html)
    assert links[0] == "sub-04_task-rest_qc.html" and len(links) == 6
    assert all((tmp_path / href).is_file() for href in links)
    assert page.with_suffix(".png").is_file()
    assert all(label in html for _, _, label in MEASURES.values())

"""The cohort's QC at a glance: one row per run, outliers flagged (as MRIQC's group report).

Each preprocessed run's ``*_qc.json`` and confounds give its mean framewise
displacement, median tSNR, mean standardised DVARS, field-of-view coverage of
the template brain, mask overlap and registration cost. A run is flagged on a
measure when it lies beyond Tukey's fences of the cohort (1.5 interquartile
ranges past the quartiles, on the side that is bad for that measure) or past
an absolute limit where the field has one (mean FD 0.5 mm, coverage 0.9); the
spread a fence is built on has a floor per measure (:data:`IQR_FLOOR`), so a
cohort of near-identical runs does not flag trifles. The
page lists the runs with their flags, each linked to its own QC page, and
draws each measure over the cohort with the flagged runs in red.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from rsnflow.layout import preprocessed_records, subject_outputs

__all__ = ["IQR_FLOOR", "MEASURES", "collect_qc", "flag_outliers", "write_group_qc"]

#: Measure -> (which side is bad, an absolute limit on that side or None, label).
MEASURES: dict[str, tuple[str, float | None, str]] = {
    "mean_fd_mm": ("high", 0.5, "mean FD (mm)"),
    "mean_std_dvars": ("high", None, "mean std DVARS"),
    "registration_cost": ("high", None, "registration cost"),
    "tsnr_median": ("low", None, "median tSNR"),
    "fov_coverage": ("low", 0.9, "FOV coverage"),
    "mask_dice": ("low", None, "mask Dice"),
}
#: The smallest spread a fence is built on, per measure: a cohort of near-identical runs
#: (simulated, or few) has an interquartile range of almost nothing, and a run 0.002 below the
#: others' Dice is no outlier. Relative to the median for tSNR.
IQR_FLOOR: dict[str, float] = {
    "mean_fd_mm": 0.05, "mean_std_dvars": 0.05, "registration_cost": 0.02, "tsnr_median": 0.05,
    "fov_coverage": 0.01, "mask_dice": 0.01,
}  # fmt: skip


def collect_qc(deriv_dirs: list[str | os.PathLike[str]]) -> pd.DataFrame:
    """One row per preprocessed run found under the derivatives folders.

    Parameters
    ----------
    deriv_dirs : list of str or os.PathLike
        Derivatives folders (one for a cohort; the pipeline has one per subject task).

    Returns
    -------
    pandas.DataFrame
        ``run``, ``subject``, ``qc_html`` (path) and the :data:`MEASURES`, sorted by run.
    """
    rows = []
    for deriv in deriv_dirs:
        for run, _ in preprocessed_records(deriv):
            out = subject_outputs(deriv, run)
            if not out.qc_json.is_file():
                continue
            qc = json.loads(out.qc_json.read_text())
            dvars = pd.read_csv(out.confounds, sep="\t", usecols=["std_dvars"], na_values="n/a")["std_dvars"]
            rows.append(
                {
                    "run": str(run),
                    "subject": f"sub-{qc['subject']}",
                    "qc_html": str(out.qc_html),
                    "mean_fd_mm": qc["mean_fd_mm"],
                    "mean_std_dvars": float(dvars.mean()),
                    "registration_cost": qc["registration_cost_corratio"],
                    "tsnr_median": qc["tsnr_median"],
                    "fov_coverage": qc["fov_coverage_of_template_mask"],
                    "mask_dice": qc["mask_dice_with_template"],
                }
            )
    columns = ["run", "subject", "qc_html", *MEASURES]
    return pd.DataFrame(rows, columns=columns).sort_values("run", ignore_index=True)


def flag_outliers(table: pd.DataFrame, k: float = 1.5) -> pd.DataFrame:
    """Add a boolean ``<measure>_flag`` column per measure and ``flags`` (the flagged measures' labels).

    Parameters
    ----------
    table : pandas.DataFrame
        As :func:`collect_qc` returns it.
    k : float, default=1.5
        Tukey's factor: flagged beyond ``k`` interquartile ranges past the quartile.

    Returns
    -------
    pandas.DataFrame
        A copy with the flag columns.
    """
    out = table.copy()
    flagged = pd.Series([[] for _ in range(len(out))], index=out.index, dtype=object)
    for name, (bad, limit, label) in MEASURES.items():
        values = out[name].astype(float)
        q1, med, q3 = np.nanpercentile(values, [25, 50, 75]) if len(values) else (np.nan,) * 3
        floor = IQR_FLOOR[name] * (abs(med) if name == "tsnr_median" else 1.0)
        spread = max(q3 - q1, floor)
        fence = q3 + k * spread if bad == "high" else q1 - k * spread
        flag = values > fence if bad == "high" else values < fence
        if limit is not None:
            flag |= values > limit if bad == "high" else values < limit
        out[f"{name}_flag"] = flag
        for i in out.index[flag]:
            flagged[i] = [*flagged[i], label]
    out["flags"] = flagged.map(", ".join)
    return out


def write_group_qc(
    table: pd.DataFrame, path: str | os.PathLike[str], href: Callable[[pd.Series], str]
) -> Path:
    """The group QC page: flagged runs first, every run linked to its QC page, a strip plot per measure.

    Parameters
    ----------
    table : pandas.DataFrame
        As :func:`flag_outliers` returns it.
    path : str or os.PathLike
        The page to write; its figure goes beside it (``<stem>.png``).
    href : callable
        A row to the link of its run's QC page, relative to ``path``.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    from rsnflow.report import Report

    page = Path(path)
    png = _strip_figure(table, page.with_suffix(".png"))
    n_flagged = int((table["flags"] != "").sum())
    report = Report("rsnflow preprocessing QC: the cohort")
    report.text(
        f"{len(table)} runs, {n_flagged} flagged. A run is flagged on a measure beyond Tukey's fences of the "
        "cohort (1.5 IQR past the quartiles, on the bad side) or past mean FD 0.5 mm or FOV coverage 0.9. "
        "Each run links to its own QC page."
    )
    shown = table.sort_values(["flags", "run"], key=lambda c: c == "" if c.name == "flags" else c)
    columns = ["run", "flags", *MEASURES]
    rounded = shown[columns].round(3).rename(columns={k: label for k, (_, _, label) in MEASURES.items()})
    report.table(rounded, links={"run": [href(row) for _, row in shown.iterrows()]})
    report.figure(png, "each measure over the cohort; flagged runs in red")
    return report.write(page)


def _strip_figure(table: pd.DataFrame, path: Path) -> Path:
    import matplotlib.pyplot as plt

    from rsnflow.figures import save_figure

    fig, axes = plt.subplots(1, len(MEASURES), figsize=(2.6 * len(MEASURES), 3.2), layout="constrained")
    jitter = np.random.default_rng(0).uniform(-0.15, 0.15, len(table))
    for ax, (name, (_, limit, label)) in zip(axes, MEASURES.items(), strict=True):
        flag = table[f"{name}_flag"].to_numpy(bool)
        values = table[name].to_numpy(float)
        ax.scatter(jitter[~flag], values[~flag], s=10, color="0.3")
        ax.scatter(jitter[flag], values[flag], s=14, color="red")
        if limit is not None:
            ax.axhline(limit, color="red", ls="--", lw=0.8)
        ax.set_title(label, fontsize=8)
        ax.set_xticks([])
        ax.set_xlim(-0.5, 0.5)
        ax.tick_params(labelsize=7)
    return save_figure(fig, path)

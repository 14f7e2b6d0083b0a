"""The local run behind ``rsnflow run`` / ``make run``: every stage that exists, in order.

Until the Kubeflow pipeline lands (issue #8) this calls the library stages
directly on one machine; the stages still to come are listed in the report
as not available, never faked.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pandas as pd

from rsnflow.config import Config, config_to_dict
from rsnflow.ica import dual_regression_cohort, group_ica, group_paths
from rsnflow.ingest import ingest_cohort
from rsnflow.io import write_json
from rsnflow.log import get_logger
from rsnflow.preprocess import preprocess_cohort, subject_outputs
from rsnflow.provenance import provenance
from rsnflow.report import Report
from rsnflow.simulate import simulate_cohort
from rsnflow.simulate.figures import write_subject_figures

__all__ = ["PENDING_STAGES", "run_local"]

log = get_logger(__name__)

#: Stages of shared/DESIGN.md that later issues add, with the issue number.
PENDING_STAGES = (
    ("label", 6),
    ("dataset", 6),
    ("train", 7),
    ("evaluate", 7),
    ("register / serve", 9),
)


def run_local(work_dir: str | Path, config: Config) -> int:
    """Run the available stages on a simulated cohort under ``work_dir``.

    Returns the CLI exit status: 0, or 3 when some subjects were skipped.
    """
    work = Path(work_dir)
    bids = work / "bids"
    report_dir = work / "report"
    stages: list[dict[str, object]] = []

    t0 = time.perf_counter()
    cohort = simulate_cohort(
        bids, profile=config.simulate.profile, seed=config.seed, n_subjects=config.simulate.subjects
    )
    stages.append(
        {
            "stage": "simulate",
            "status": "done",
            "seconds": round(time.perf_counter() - t0, 1),
            "output": str(bids),
        }
    )

    t0 = time.perf_counter()
    runs = ingest_cohort(bids, summary_tsv=work / "ingest" / "subjects.tsv")
    stages.append(
        {
            "stage": "ingest",
            "status": "done" if not runs.failed else "done, subjects skipped",
            "seconds": round(time.perf_counter() - t0, 1),
            "output": str(work / "ingest"),
        }
    )
    t0 = time.perf_counter()
    deriv = work / "derivatives" / "rsnflow"
    prep = preprocess_cohort(bids, deriv, config.preprocess, device=config.device)
    stages.append(
        {
            "stage": "preprocess",
            "status": "done" if not prep.failed else "done, subjects failed",
            "seconds": round(time.perf_counter() - t0, 1),
            "output": str(deriv),
        }
    )
    t0 = time.perf_counter()
    ica = group_ica(deriv, config.ica, seed=config.seed, device=config.device)
    stages.append(
        {
            "stage": "group-ica",
            "status": f"done, order {ica.order}",
            "seconds": round(time.perf_counter() - t0, 1),
            "output": str(group_paths(deriv)["maps"]),
        }
    )
    t0 = time.perf_counter()
    dr = dual_regression_cohort(deriv, config.dual_regression.des_norm)
    stages.append(
        {
            "stage": "dual-regression",
            "status": "done" if not dr.failed else "done, subjects failed",
            "seconds": round(time.perf_counter() - t0, 1),
            "output": str(deriv),
        }
    )
    stages += [
        {
            "stage": name,
            "status": f"not available yet (issue #{issue})",
            "seconds": None,
            "output": "",
        }
        for name, issue in PENDING_STAGES
    ]

    figures = write_subject_figures(bids, cohort.subjects[0], report_dir / "figures")
    write_json(provenance(config_to_dict(config)), work / "provenance.json")
    report = Report("rsnflow run")
    report.text(
        f"Profile {config.simulate.profile}, seed {config.seed}: {len(cohort.subjects)} simulated subjects, "
        f"{len(runs.runs)} valid runs, TR {runs.tr} s."
    )
    report.heading("Stages").table(pd.DataFrame(stages))
    if runs.failed:
        report.text(f"{len(runs.failed)} subjects were skipped; see the ingest table.", css="warn")
    report.heading("Ingest").table(runs.summary().drop(columns=["path"]))
    report.heading("Preprocessing").table(prep.summary.drop(columns=["source"]))
    for pid in prep.succeeded:
        qc_page = subject_outputs(deriv, pid.removeprefix("sub-")).qc_html
        report.link(os.path.relpath(qc_page, report_dir), f"{pid}: preprocessing QC")
    report.heading("Group ICA").link(
        os.path.relpath(group_paths(deriv)["report"], report_dir), f"montage of the {ica.order} components"
    )
    report.heading(f"Simulated subject sub-{cohort.subjects[0]}")
    for png, caption in zip(
        figures, ("raw EPI, volume 0", "true head motion", "true network maps"), strict=True
    ):
        report.figure(png, caption)
    index = report.write(report_dir / "index.html")

    print(f"\nrsnflow run finished in {work}")
    print(f"  report:       {index}")
    print(f"  cohort:       {bids} (ground truth: {cohort.groundtruth_dir})")
    print(f"  derivatives:  {deriv} (summary: {deriv / 'preprocess_summary.tsv'})")
    print(f"  provenance:   {work / 'provenance.json'}")
    print("  models and MLflow runs: not produced yet (training lands with issue #7)")
    failed = [*prep.failed, *dr.failed]
    skipped = sorted(set(runs.failed) | {p.removeprefix("sub-") for p in failed})
    if skipped:
        print(f"  {len(skipped)} subjects skipped: {', '.join(skipped)}")
        return 3
    return 0

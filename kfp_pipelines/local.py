"""The local run behind ``rsnflow run`` / ``make run``: the KFP pipeline through ``kfp.local``.

The same pipeline definition that is compiled for a cluster
(``kfp_pipelines/rsn_pipeline.py``) runs here with
``kfp.local.SubprocessRunner(use_venv=False)``: every task is a subprocess of
this interpreter, artifacts live under ``WORK/pipeline_root``, MLflow tracks
into ``WORK/mlflow/mlflow.db``. :func:`run_report` writes the run's front page.
"""

from __future__ import annotations

import builtins
import contextlib
import dataclasses
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd

from kfp_pipelines.task_log import task_log
from rsnflow.config import Config, config_to_dict, load_config
from rsnflow.io import write_json
from rsnflow.log import get_logger
from rsnflow.provenance import provenance
from rsnflow.report import Report

__all__ = ["budget_note", "demo_budget", "publish_site", "run_label_local", "run_local", "run_report"]

log = get_logger(__name__)


def demo_budget(config: Config) -> dict[str, int]:
    """The pipeline arguments ``demo_budget`` gives the config's simulated profile (none for the others)."""
    budget = getattr(config.demo_budget, config.simulate.profile, None)
    return dataclasses.asdict(budget) if budget is not None else {}


def _overrides(config: Config) -> dict[str, Any]:
    """The parts of the configuration that differ from the defaults, as pipeline overrides."""
    from rsnflow.config import default_config_dict

    def diff(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in a.items():
            if isinstance(v, dict):
                sub = diff(v, b[k])
                if sub:
                    out[k] = sub
            elif v != b[k]:
                out[k] = v
        return out

    return diff(config_to_dict(config), default_config_dict())


def fit_order_to_profile(config: Config) -> Config:
    """The configuration with an ``ica.order`` that the simulated profile's runs can hold.

    The tiny profile's runs (60 volumes) cannot hold the default order 100 in
    dual regression: left at the default, the order becomes a third of the
    volumes, and the log says so; set by the user, an order that does not fit
    is refused naming ``ica.order``.
    """
    from rsnflow.config import default_config_dict
    from rsnflow.ica.dr_cohort import check_order_fits
    from rsnflow.simulate.cohort import cohort_profile

    sim = config.simulate
    # a varied cohort keeps the run's seconds and draws its TR: the volumes are the drawn ones
    volumes = cohort_profile(sim.profile, sim.volumes or None, sim.vary, config.seed)[0].n_volumes
    order = config.ica.order
    if isinstance(order, int) and volumes <= order + 1 and order == default_config_dict()["ica"]["order"]:
        fitted = volumes // 3
        log.info(
            "the %s profile's %d-volume runs are too short for ica.order %d: using %d (set ica.order)",
            config.simulate.profile, volumes, order, fitted,
        )  # fmt: skip
        return load_config(
            overrides={**_overrides(config), "ica": {**_overrides(config).get("ica", {}), "order": fitted}}
        )
    check_order_fits(order, volumes, f"the {config.simulate.profile} profile's runs")
    return config


def run_local(
    work_dir: str | Path,
    config: Config,
    arguments: dict[str, Any] | None = None,
    cohort_uri: str | None = None,
    verbose: bool = False,
) -> int:
    """Run the KFP pipeline locally on a cohort under ``work_dir``.

    Parameters
    ----------
    work_dir
        Pipeline root, MLflow store and the run summary go here.
    config
        The effective configuration; what differs from the defaults is passed
        to every task as ``overrides``.
    arguments
        Extra pipeline arguments (defaults: the profile's ``demo_budget`` of the configuration).
    cohort_uri
        A BIDS folder (absolute path) or ``s3://bucket/prefix``; default
        ``sim://PROFILE``, a cohort simulated by the first task.
    verbose
        Print kfp.local's whole output (it always goes to ``work_dir/kfp.log``);
        otherwise one line per task.

    Returns
    -------
    int
        0, or 3 when subjects were skipped.
    """
    from kfp_pipelines.rsn_pipeline import rsn_pipeline

    work = Path(work_dir).resolve()
    tracking_uri = _tracking(work, config)
    profile = config.simulate.profile
    if cohort_uri is None:
        cohort_uri = f"sim://{profile}"
        config = fit_order_to_profile(config)
    args: dict[str, Any] = {
        "cohort_uri": cohort_uri,
        "seed": config.seed,
        "overrides": _overrides(config),
        "tracking_uri": tracking_uri,
        "gpu_limit": 0,
        # The demo budget is for simulated cohorts; a real cohort trains with the paper's settings.
        **(demo_budget(config) if cohort_uri.startswith("sim://") else {}),
        **(arguments or {}),
    }
    write_json({**provenance(config_to_dict(config)), "pipeline_arguments": args}, work / "provenance.json")
    log.info("running the rsnflow pipeline with kfp.local on %s under %s", cohort_uri, work)
    task, seconds = _execute(rsn_pipeline, args, work, verbose)
    run_dir = Path(task.output).parents[1]
    page = publish_site(run_dir, work)
    ingest = pd.read_csv(run_dir / "ingest" / "table" / "subjects.tsv", sep="\t", dtype=str)
    skipped = set(ingest.loc[ingest["status"] != "ok", "participant_id"])
    for summary in run_dir.rglob("preprocess_summary.tsv"):
        rows = pd.read_csv(summary, sep="\t", dtype=str)
        skipped |= set(rows.loc[rows["status"] == "failed", "participant_id"])
    skipped_labels = sorted(skipped)
    models = sorted(run_dir.glob("train*/model"))
    print(f"\nrsnflow pipeline (kfp.local) finished in {seconds / 60:.1f} min under {work}")
    print(f"  report:    {page}  (every stage's page under {page.with_suffix('')})")
    print(f"  run:       {run_dir}  (one folder per task)")
    print(f"  log:       {work / 'kfp.log'}  (every task's output; -v prints it)")
    for m in models:
        print(f"  model:     {m}")
    table1 = json.loads((run_dir / "evaluate" / "table" / "metrics.json").read_text())["table1"]
    if budget_note(table1):
        print(f"  budget:    the CNNs trained on the demo budget; converged figures: {CONVERGED_TABLE1}")
    print(f"  MLflow:    {tracking_uri}")
    print(f"             browse: mlflow ui --backend-store-uri {tracking_uri} --host 127.0.0.1")
    if skipped_labels:
        print(f"  {len(skipped_labels)} subjects skipped: {', '.join(skipped_labels)} (see the report)")
        return 3
    return 0


def _tracking(work: Path, config: Config) -> str:
    """The run's MLflow tracking URI: the configured one, else a SQLite store under ``work``."""
    (work / "mlflow").mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    return config.tracking.uri or f"sqlite:///{work / 'mlflow' / 'mlflow.db'}"


def _execute(pipeline: Any, args: dict[str, Any], work: Path, verbose: bool) -> tuple[Any, float]:
    """Run ``pipeline(**args)`` with kfp.local under ``work``; the final task and the seconds it took."""
    from kfp import local

    tmp = work / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    old_tmpdir = os.environ.get("TMPDIR")
    os.environ["TMPDIR"] = str(tmp)  # kfp.local writes its workspace under TMPDIR
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(work / "pipeline_root"))
    t0 = time.perf_counter()
    # kfp.local indents its tasks' output by swapping builtins.print and, with
    # tasks of a ParallelFor, restores the wrong one: every later print of the
    # caller's process came out indented by four spaces.
    original_print = builtins.print
    try:
        with task_log(work / "kfp.log", verbose) as tasks:
            try:
                task = pipeline(**args)
            except Exception:
                _print_tail(tasks.path)
                raise
    finally:
        builtins.print = original_print
        if old_tmpdir is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = old_tmpdir
    return task, time.perf_counter() - t0


def run_label_local(
    work_dir: str | Path,
    config: Config,
    model: str,
    cohort_uri: str | None = None,
    endpoint: str = "",
    verbose: bool = False,
) -> int:
    """Run the label-cohort pipeline locally: a cohort labelled by ``model``, nothing trained.

    Parameters
    ----------
    work_dir
        Pipeline root and the run's provenance go here; a ``models:/`` URI is
        resolved in the configured tracking URI, else ``$MLFLOW_TRACKING_URI``, else
        ``work_dir``'s MLflow store (where ``rsnflow run`` registered its champion).
    config
        The effective configuration; ``ica.order`` is set to the model's number of components.
    model
        A ``models:/`` URI or a model directory (absolute path) with reference maps.
    cohort_uri
        A BIDS folder (absolute path) or ``s3://bucket/prefix``; default
        ``sim://PROFILE``, a cohort simulated by the first task.
    endpoint
        A running server's URL to classify through; empty: in process.
    verbose
        Print kfp.local's whole output.

    Returns
    -------
    int
        0, or 3 when subjects were skipped.
    """
    import tempfile

    from kfp_pipelines.label_pipeline import label_cohort_pipeline
    from rsnflow.reference import check_reference, fetch_reference

    work = Path(work_dir).resolve()
    before = os.environ.get("MLFLOW_TRACKING_URI")
    # A models:/ URI lives in the configured registry, $MLFLOW_TRACKING_URI, or the work dir's own store.
    tracking_uri = config.tracking.uri or before or _tracking(work, config)
    os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
    try:
        with tempfile.TemporaryDirectory() as tmp:  # checked here first: a bad model fails in one line
            order = int(check_reference(fetch_reference(model, tmp))["n_components"])
    finally:
        if before is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = before
    overrides = _overrides(config)
    overrides["ica"] = {**overrides.get("ica", {}), "order": order}
    args: dict[str, Any] = {
        "cohort_uri": cohort_uri or f"sim://{config.simulate.profile}",
        "model_uri": model,
        "endpoint": endpoint,
        "seed": config.seed,
        "overrides": overrides,
        "tracking_uri": tracking_uri,
    }
    write_json({**provenance(config_to_dict(config)), "pipeline_arguments": args}, work / "provenance.json")
    log.info("labelling %s with %s (kfp.local) under %s", args["cohort_uri"], model, work)
    _, seconds = _execute(label_cohort_pipeline, args, work, verbose)
    run_dir = max((work / "pipeline_root").glob("rsnflow-label-cohort-*"), key=lambda p: p.stat().st_mtime)
    site = work / "labels.html"
    shutil.copyfile(run_dir / "classify" / "review", site)
    ingest = pd.read_csv(run_dir / "ingest" / "table" / "subjects.tsv", sep="\t", dtype=str)
    skipped = sorted(set(ingest.loc[ingest["status"] != "ok", "participant_id"]))
    outcome = json.loads((run_dir / "classify" / "executor_output.json").read_text())
    print(f"\nrsnflow label-cohort (kfp.local) finished in {seconds / 60:.1f} min under {work}")
    print(f"  labels:    {outcome.get('parameterValues', {}).get('Output', '')}")
    print(f"  tables:    {run_dir / 'classify' / 'labels'}  (one per run)")
    print(f"  review:    {site}")
    if skipped:
        print(f"  {len(skipped)} subjects skipped: {', '.join(skipped)} (see {run_dir / 'ingest'})")
        return 3
    return 0


def _print_tail(path: Path, lines: int = 25) -> None:
    """The end of the run's log on a failure: the failing task's traceback is there."""
    with contextlib.suppress(OSError):
        tail = path.read_text(errors="replace").splitlines()[-lines:]
        print("\n".join(["", f"the pipeline failed; the end of {path}:", *tail]), file=sys.stderr)


#: The file that marks ``WORK/report/`` as rsnflow's own site (so a rerun may replace it).
_SITE_MARK = ".rsnflow-site"


def publish_site(run_dir: Path, work: Path) -> Path:
    """The run's pages as a folder a browser opens: ``WORK/report.html`` and ``WORK/report/*.html``.

    KFP names an HTML artifact after its output (``report/page``, no
    extension), and a browser shows such a file as source text; its links
    point into other tasks' folders. Here every stage page is copied under a
    ``.html`` name (the evaluation with its TSV and PNG files), and the front
    page is written again with links that resolve from where it is.
    """
    site = work / "report"
    # Only a real folder that carries rsnflow's mark is ever removed (never a link, a file, a user's folder).
    if site.is_symlink() or (site.exists() and not (site.is_dir() and (site / _SITE_MARK).is_file())):
        raise FileExistsError(f"{site}: exists and is not an rsnflow report folder; move it away")
    if site.exists():
        shutil.rmtree(site)
    site.mkdir(parents=True)
    (site / _SITE_MARK).write_text("written by rsnflow run; replaced by the next run\n")
    pages = {"ingest": run_dir / "ingest" / "summary", "group-ica": run_dir / "group-ica" / "report",
             "labels": run_dir / "label" / "review"}  # fmt: skip
    for name, src in pages.items():
        shutil.copyfile(src, site / f"{name}.html")
    table = run_dir / "evaluate" / "table"
    shutil.copytree(table, site / "evaluation", ignore=shutil.ignore_patterns("models"))
    qc_pages, statuses = [], []
    for task in run_dir.glob("for-loop-*/preprocess"):
        subjects = sorted(p.name for p in (task / "derivatives").glob("sub-*"))
        status = json.loads((task / "executor_output.json").read_text())
        statuses.append(str(status.get("parameterValues", {}).get("Output", "ok")))
        if subjects and (task / "qc").exists():
            shutil.copyfile(task / "qc", site / f"qc-{subjects[0]}.html")
            qc_pages.append(str(site / f"qc-{subjects[0]}.html"))
    qc_pages.sort()  # by subject (the tasks' folders sort as iteration-1, -10, -11, ..., -2)
    cohort_qc = _cohort_qc_page(run_dir, site)
    ingest_table = run_dir / "ingest" / "table" / "subjects.tsv"
    return run_report(
        work / "report.html", site / "ingest.html", ingest_table, qc_pages, site / "group-ica.html",
        site / "labels.html", table / "table1.md", site / "evaluation" / "index.html", statuses, cohort_qc,
    )  # fmt: skip


def _cohort_qc_page(run_dir: Path, site: Path) -> Path | None:
    """The cohort's QC page in the site, from every preprocess task's runs; each run links to its page."""
    from rsnflow.preprocess.group_qc import collect_qc, flag_outliers, write_group_qc

    table = collect_qc([task / "derivatives" for task in run_dir.glob("for-loop-*/preprocess")])
    table = table[[(site / f"qc-{s}.html").is_file() for s in table["subject"]]]
    if table.empty:
        return None
    return write_group_qc(
        flag_outliers(table), site / "cohort-qc.html", lambda row: f"qc-{row['subject']}.html"
    )


#: Where the models trained with the paper's settings on the demo split are reported.
CONVERGED_TABLE1 = "docs/benchmarks.md, 'Table 1 converged on the demo split' (python bench/bench_table1.py)"

#: The paper's epochs: a model trained for fewer, or on part of its split, is on a budget.
_PAPER_EPOCHS = 25


def budget_note(rows: list[dict[str, Any]]) -> str:
    """A sentence naming the Table 1 rows trained on a budget (part of the split or < 25 epochs); "" if none.

    Parameters
    ----------
    rows : list of dict
        Table 1's rows (``metrics.json``), with ``model`` and ``trained on`` ("N of M maps, E epochs").

    Returns
    -------
    str
        The sentence, pointing at the converged figures; empty when every row had the paper's budget.
    """
    short = []
    for row in rows:
        found = re.fullmatch(r"(\d+) of (\d+) maps, (\d+) epochs", str(row.get("trained on", "")))
        if found and (int(found[1]) < int(found[2]) or int(found[3]) < _PAPER_EPOCHS):
            short.append(f"{row['model']} ({found[0]})")
    if not short:
        return ""
    return (
        f"Trained on a budget, not to convergence: {'; '.join(short)}. These rows say only that the "
        f"models run; the three models trained with the paper's settings are in {CONVERGED_TABLE1}."
    )


def run_report(
    path: str | Path,
    ingest_summary: str | Path,
    ingest_table: str | Path,
    qc_pages: list[str],
    ica_report: str | Path,
    review: str | Path,
    table1_md: str | Path,
    evaluation: str | Path,
    statuses: list[str],
    cohort_qc: str | Path | None = None,
) -> Path:
    """The front page of a pipeline run: Table 1 and a link to every stage's page.

    ``cohort_qc``, when given, is the cohort's QC page (one row per run,
    outliers flagged), linked before the subjects' own QC pages.
    """
    out = Path(path)
    here = out.parent

    def rel(p: str | Path) -> str:
        return os.path.relpath(p, here)

    report = Report("rsnflow run")
    metrics = json.loads((Path(table1_md).parent / "metrics.json").read_text())
    report.heading("Table 1").text(f"Champion: {metrics['champion']} ({metrics['champion_rule']}).")
    report.table(pd.DataFrame(metrics["table1"]))
    note = budget_note(metrics["table1"])
    if note:
        report.text(note, css="warn")
    report.link(rel(evaluation), "evaluation: confusion matrices, per-class metrics, learning curves")
    failed = [s for s in statuses if s != "ok"]
    report.heading("Stages")
    report.link(rel(ingest_summary), "ingest: validated subjects")
    ingest = pd.read_csv(ingest_table, sep="\t", dtype=str)
    bad = ingest[ingest["status"] != "ok"]
    if len(bad):
        report.text(
            f"{len(bad)} subjects were skipped at ingest: "
            + "; ".join(f"{p}: {r}" for p, r in zip(bad["participant_id"], bad["reason"], strict=True)),
            css="warn",
        )
    if failed:
        report.text(
            f"{len(failed)} subjects failed preprocessing and were skipped: {'; '.join(failed)}",
            css="warn",
        )
    if cohort_qc is not None:
        report.link(rel(cohort_qc), "preprocessing QC: the cohort, one row per run, outliers flagged")
    for i, q in enumerate(qc_pages):
        name = (
            Path(q).stem.removeprefix("qc-")
            if Path(q).name.startswith("qc-")
            else f"{i + 1} of {len(qc_pages)}"
        )
        report.link(rel(q), f"preprocessing QC: {name}")
    report.link(rel(ica_report), "group ICA: component montage")
    report.link(rel(review), "labels: review page")
    return report.write(out)

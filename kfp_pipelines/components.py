"""One KFP v2 component per stage: each imports rsnflow and calls one stage function.

Artifacts are directories: a component writes a derivatives tree (or a
dataset, a model) under its ``Output[...]`` path, and the next one assembles
the trees it needs with :func:`rsnflow.io.link_tree`. Configuration reaches a
component as ``overrides`` (a nested mapping over ``rsnflow/data/defaults.yaml``)
so every task runs with the same validated configuration as the CLI.
No science here: that lives in ``rsnflow``.
"""

from typing import List, NamedTuple

from kfp.dsl import HTML, ClassificationMetrics, Dataset, Input, Markdown, Metrics, Model, Output

from kfp import dsl
from kfp_pipelines.images import PIPELINE_IMAGE, TRAIN_IMAGE

_COMMON = {"base_image": PIPELINE_IMAGE, "install_kfp_package": False}


@dsl.component(**_COMMON)
def resolve_cohort(cohort_uri: str) -> NamedTuple("Cohort", uri=str, watched=str, content_hash=str):  # type: ignore[valid-type]
    """Name the cohort to process and digest its content; never cached.

    A recurring run passes the same ``cohort_uri`` (``s3://bucket/prefix/*``)
    each time; KFP's cache key is a task's inputs, so this task runs every time
    and hands the concrete cohort and its content digest to ``ingest``, whose
    cache then holds for the same data only.
    """
    from collections import namedtuple

    from rsnflow.ingest import resolve_cohort as resolve

    res = resolve(cohort_uri)
    cohort = namedtuple("cohort", ["uri", "watched", "content_hash"])  # KFP reads the fields only
    return cohort(res.uri, res.watched, res.content_hash)


@dsl.component(**_COMMON)
def mark_processed(watched: str, cohort_uri: str) -> str:
    """The run's last task: record the cohort in its watched prefix's processed manifest.

    It runs only when every task before it succeeded, so a failed run leaves
    its cohort to the next recurring run.
    """
    if not watched:
        return f"{cohort_uri}: not from a watched prefix; nothing to record"
    from rsnflow.storage import ObjectStore

    ObjectStore.from_env().mark_processed(watched, cohort_uri)
    return f"{cohort_uri}: recorded as processed under {watched}"


@dsl.component(**_COMMON)
def ingest(
    cohort_uri: str,
    content_hash: str,
    seed: int,
    overrides: dict,
    check_order: bool,
    cohort: Output[Dataset],
    summary: Output[HTML],
    table: Output[Dataset],
) -> List[str]:
    """Fetch (``s3://``), link (a local path) or simulate (``sim://PROFILE``) a cohort; validate its runs.

    ``content_hash`` (from ``resolve_cohort``) is not read: it is part of the
    cache key, so changed data is never served from the cache. Returns the
    valid subjects (the ParallelFor items); the skipped ones are in the summary
    page and in ``cohort.metadata``.
    """
    import os
    from pathlib import Path

    from rsnflow.config import load_config
    from rsnflow.ingest import fetch_cohort, ingest_cohort
    from rsnflow.report import Report

    cfg = load_config(overrides={**overrides, "seed": seed})
    out = Path(cohort.path)
    cohort_uri = fetch_cohort(cohort_uri, out, cfg, seed, n_jobs=min(2, os.cpu_count() or 1))
    runs = ingest_cohort(out, summary_tsv=Path(table.path) / "subjects.tsv")
    if not runs.runs:
        raise RuntimeError(f"{cohort_uri}: no valid run in the cohort: {runs.failed}")
    if check_order:  # the label-cohort pipeline's order is its model's, known after ingest
        from rsnflow.ica.dr_cohort import check_order_fits

        shortest = min(runs.runs, key=lambda r: r.shape[3])
        check_order_fits(cfg.ica.order, shortest.shape[3], f"{shortest.run} (the shortest run)")
    Report("rsnflow ingest").text(
        f"{cohort_uri}: {len(runs.runs)} valid runs of {len(runs.subjects)} subjects, TR {runs.tr} s, "
        f"{len(runs.failed)} skipped."
    ).table(runs.summary()).write(summary.path)
    cohort.metadata.update(
        {
            "uri": cohort_uri,
            "content_hash": content_hash,
            "subjects": len(runs.subjects),
            "runs": len(runs.runs),
            "skipped": sorted(runs.failed),
        }
    )
    return runs.subjects


@dsl.component(**_COMMON)
def preprocess(
    cohort: Input[Dataset], subject: str, overrides: dict, derivatives: Output[Dataset], qc: Output[HTML]
) -> str:
    """Preprocess every run of one subject; a failure is recorded (status returned), never raised."""
    import shutil

    from rsnflow.bids import RunId
    from rsnflow.config import load_config
    from rsnflow.layout import subject_outputs
    from rsnflow.preprocess import preprocess_cohort

    cfg = load_config(overrides=overrides)
    res = preprocess_cohort(cohort.path, derivatives.path, cfg.preprocess, [subject], cfg.device)
    if res.failed and not res.succeeded:
        status = "failed: " + "; ".join(res.summary["reason"].astype(str))
    else:
        status = "ok" if not res.failed else f"ok ({len(res.failed)} runs failed: {', '.join(res.failed)})"
    done = [RunId.parse(r) for r in res.succeeded]
    page = subject_outputs(derivatives.path, done[0]).qc_html if done else None
    if page is not None and page.exists():  # the first run's page (every run's is in the derivatives)
        shutil.copyfile(page, qc.path)
    else:
        from pathlib import Path

        Path(qc.path).write_text(f"<html><body><p>sub-{subject}: {status}</p></body></html>")
    derivatives.metadata.update({"subject": subject, "status": status})
    return status


@dsl.component(**_COMMON)
def group_ica(
    preprocessed: Input[List[Dataset]],
    seed: int,
    overrides: dict,
    derivatives: Output[Dataset],
    report: Output[HTML],
) -> int:
    """Assemble the preprocessed subjects and run group ICA; returns the model order."""
    import shutil

    from kfp_pipelines.fan_in import require_one_ok
    from rsnflow.config import load_config
    from rsnflow.ica import group_ica as run_group_ica
    from rsnflow.io import link_tree
    from rsnflow.layout import group_paths

    cfg = load_config(overrides={**overrides, "seed": seed})
    require_one_ok(preprocessed, "preprocessing", "decompose")
    for part in preprocessed:
        link_tree(part.path, derivatives.path)
    res = run_group_ica(derivatives.path, cfg.ica, seed=seed, device=cfg.device)
    shutil.copyfile(group_paths(derivatives.path)["report"], report.path)
    derivatives.metadata.update({"order": res.order, "subjects": len(res.subjects)})
    return res.order


@dsl.component(**_COMMON)
def dual_regression(group: Input[Dataset], subject: str, overrides: dict, maps: Output[Dataset]) -> str:
    """Dual regression of one subject against the group maps (skipped when it was not preprocessed)."""
    import tempfile
    from pathlib import Path

    from rsnflow.config import load_config
    from rsnflow.ica import dual_regression_cohort, preprocessed_runs
    from rsnflow.io import link_tree
    from rsnflow.layout import dr_outputs, group_paths, subject_dir

    cfg = load_config(overrides=overrides)
    src = Path(group.path)
    if not subject_dir(src, subject).exists():
        maps.metadata.update({"subject": subject, "status": "skipped: not preprocessed"})
        return "skipped: not preprocessed"
    with tempfile.TemporaryDirectory() as work:
        link_tree(group_paths(src)["dir"], group_paths(work)["dir"])
        link_tree(subject_dir(src, subject), subject_dir(work, subject))
        res = dual_regression_cohort(work, cfg.dual_regression.des_norm)
        for run in preprocessed_runs(work):  # every session and run of the subject
            for path in dr_outputs(work, run).values():
                if path.exists():
                    target = Path(maps.path) / path.relative_to(work)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    path.replace(target)
    if res.failed and len(res.failed) == len(res.summary):
        status = "failed: " + "; ".join(res.summary["reason"].astype(str))
    else:
        status = "ok" if not res.failed else f"ok ({len(res.failed)} runs failed: {', '.join(res.failed)})"
    maps.metadata.update({"subject": subject, "status": status})
    return status


@dsl.component(**_COMMON)
def label(
    group: Input[Dataset],
    maps: Input[List[Dataset]],
    expert_labels: str,
    overrides: dict,
    labels: Output[Dataset],
    review: Output[HTML],
) -> int:
    """Label the group components (expert TSV when ``expert_labels`` is a path); returns the network count."""
    import shutil
    import tempfile
    from pathlib import Path

    from kfp_pipelines.fan_in import require_one_ok
    from rsnflow.atlas import NOISE, UNKNOWN
    from rsnflow.config import load_config
    from rsnflow.io import link_tree
    from rsnflow.labeling import label_components, labels_path, labels_record
    from rsnflow.layout import group_paths

    cfg = load_config(overrides=overrides)
    require_one_ok(maps, "dual regression", "label")
    with tempfile.TemporaryDirectory() as work:
        link_tree(group.path, work)
        for part in maps:
            link_tree(part.path, work)
        table = label_components(work, cfg.labeling, expert_labels or None)
        Path(labels.path).mkdir(parents=True, exist_ok=True)
        for path in (labels_path(work), labels_record(work).path):
            shutil.copyfile(path, Path(labels.path) / path.name)
        shutil.copyfile(group_paths(work)["labels_report"], review.path)
    n_networks = int((~table["label"].isin([NOISE, UNKNOWN])).sum())
    labels.metadata.update({"networks": n_networks, "source": str(table["source"].iloc[0])})
    return n_networks


@dsl.component(**_COMMON)
def dataset(
    group: Input[Dataset],
    maps: Input[List[Dataset]],
    labels: Input[Dataset],
    seed: int,
    overrides: dict,
    data: Output[Dataset],
) -> int:
    """Build the classification dataset; returns the number of maps."""
    import tempfile

    from rsnflow.config import load_config
    from rsnflow.dataset import build_dataset
    from rsnflow.io import link_tree
    from rsnflow.layout import group_paths

    cfg = load_config(overrides={**overrides, "seed": seed})
    with tempfile.TemporaryDirectory() as work:
        link_tree(group.path, work)
        for part in maps:
            link_tree(part.path, work)
        link_tree(labels.path, group_paths(work)["dir"])
        # The output artifact is this task's own: a retried task replaces what it half-built.
        manifest = build_dataset(work, data.path, cfg.dataset, seed=seed, overwrite=True)
    data.metadata.update({"samples": manifest["n_samples"], "sha256": manifest["sha256"]["dataset"]})
    return int(manifest["n_samples"])


@dsl.component(base_image=TRAIN_IMAGE, install_kfp_package=False)
def train(
    data: Input[Dataset],
    arch: str,
    epochs: int,
    max_train_samples: int,
    seed: int,
    tracking_uri: str,
    overrides: dict,
    model: Output[Model],
    metrics: Output[Metrics],
) -> float:
    """Train one classifier (``max_train_samples`` 0: the whole split); returns validation accuracy."""
    from rsnflow.config import load_config
    from rsnflow.train import train_classifier

    cfg = load_config(
        overrides={**overrides, "seed": seed, "train": {**overrides.get("train", {}), "epochs": epochs}}
    )
    meta = train_classifier(
        data.path,
        model.path,
        arch,
        cfg.train,
        seed=seed,
        device=cfg.device,
        tracking=cfg.tracking,
        tracking_uri=tracking_uri or None,
        max_train_samples=max_train_samples or None,
        resume=True,  # a retried task (preempted node) continues from the last epoch's checkpoint
    )
    metrics.log_metric("val_accuracy", float(meta["val_accuracy"]))
    metrics.log_metric("train_seconds", float(meta["train_seconds"]))
    model.metadata.update(
        {
            "arch": arch,
            "mlflow_run_id": meta["mlflow"]["run_id"] or "",
            "mlflow_version": meta["mlflow"]["version"] or "",
        }
    )
    return float(meta["val_accuracy"])


@dsl.component(**_COMMON)
def evaluate(
    data: Input[Dataset],
    mlp: Input[Model],
    resnet2p5d: Input[Model],
    r3d18: Input[Model],
    max_maps: int,
    seed: int,
    tracking_uri: str,
    pipeline_run: str,
    overrides: dict,
    report: Output[HTML],
    table: Output[Dataset],
    metrics: Output[Metrics],
    table1: Output[Markdown],
    mlp_confusion: Output[ClassificationMetrics],
    resnet2p5d_confusion: Output[ClassificationMetrics],
    r3d18_confusion: Output[ClassificationMetrics],
) -> NamedTuple("EvaluateOutputs", champion=str, champion_test_accuracy=float):  # type: ignore[valid-type]
    """Table 1 of the three models, logged to MLflow as an evaluation run; the champion (no alias here).

    The KFP UI shows the test metrics, Table 1 and each model's confusion matrix
    on the test split; the alias waits for ``register_champion``'s gate.
    """
    import dataclasses
    import shutil
    from collections import namedtuple
    from pathlib import Path

    import pandas as pd

    from rsnflow.config import load_config
    from rsnflow.evaluate import evaluate_models

    over = {
        **overrides,
        "seed": seed,
        "evaluate": {**overrides.get("evaluate", {}), "max_maps_per_split": max_maps or None},
    }
    cfg = load_config(overrides=over)
    named = Path(table.path) / "models"
    for name, art in (("mlp", mlp), ("resnet2p5d", resnet2p5d), ("r3d18", r3d18)):
        shutil.copytree(art.path, named / name)  # the report names models by directory
    summary = evaluate_models(
        data.path,
        [named / n for n in ("mlp", "resnet2p5d", "r3d18")],
        table.path,
        cfg.evaluate,
        tracking=dataclasses.replace(cfg.tracking, uri=tracking_uri or cfg.tracking.uri),
        device=cfg.device,
        seed=seed,
        set_alias=False,
        pipeline_run=pipeline_run,
    )
    shutil.copyfile(Path(table.path) / "index.html", report.path)
    Path(table1.path).write_text((Path(table.path) / "table1.md").read_text())
    for name, r in summary["models"].items():
        for key in ("test_accuracy", "test_macro_f1", "test_ece", "val_macro_f1"):
            metrics.log_metric(f"{name}_{key}", float(r[key]))
    for name, art in (
        ("mlp", mlp_confusion),
        ("resnet2p5d", resnet2p5d_confusion),
        ("r3d18", r3d18_confusion),
    ):
        cm = pd.read_csv(Path(table.path) / f"confusion_{name}.tsv", sep="\t", index_col=0)
        art.log_confusion_matrix([str(c) for c in cm.columns], cm.to_numpy().tolist())
    champion = summary["champion"]
    result = namedtuple("result", ["champion", "champion_test_accuracy"])  # KFP reads the fields only
    return result(champion, float(summary["models"][champion]["test_accuracy"]))


@dsl.component(**_COMMON)
def register_champion(
    table: Input[Dataset],
    champion: str,
    champion_test_accuracy: float,
    accuracy_threshold: float,
    tracking_uri: str,
    inference_service: str,
    overrides: dict,
) -> str:
    """Point the registry alias ``champion`` at the chosen model's version if it passes the threshold.

    Then roll the InferenceService ``inference_service`` (empty: none) so that
    its predictor loads the new champion; a local run has no cluster and skips it.
    """
    import json
    from pathlib import Path

    from rsnflow.config import load_config
    from rsnflow.serve.rollout import roll_inference_service
    from rsnflow.tracking import Tracker

    if champion_test_accuracy < accuracy_threshold:
        return f"not registered: {champion} test accuracy {champion_test_accuracy:.4f} < {accuracy_threshold}"
    cfg = load_config(overrides=overrides)
    meta = json.loads((Path(table.path) / "models" / champion / "model.json").read_text())
    uri = tracking_uri or meta["mlflow"]["tracking_uri"]
    version = meta["mlflow"]["version"]
    if not uri or not version:
        return "not registered: the model was trained without tracking"
    Tracker(uri, cfg.tracking.experiment, cfg.tracking.registered_model).set_champion(version)
    rolled = roll_inference_service(inference_service, None, version)
    return f"{cfg.tracking.registered_model}@champion -> version {version}; {rolled}"


@dsl.component(**_COMMON)
def report(
    ingest_summary: Input[HTML],
    ingest_table: Input[Dataset],
    qc: Input[List[HTML]],
    ica_report: Input[HTML],
    review: Input[HTML],
    table: Input[Dataset],
    evaluation: Input[HTML],
    statuses: list,
    page: Output[HTML],
) -> str:
    """The run's front page: Table 1 and links to every stage's page; returns its path."""
    from pathlib import Path

    from kfp_pipelines.local import run_report

    run_report(
        page.path,
        ingest_summary.path,
        Path(ingest_table.path) / "subjects.tsv",
        [q.path for q in qc],
        ica_report.path,
        review.path,
        Path(table.path) / "table1.md",
        evaluation.path,
        statuses,
    )
    return page.path


@dsl.component(**_COMMON)
def reference_maps(
    preprocessed: Input[List[Dataset]], model_uri: str, tracking_uri: str, derivatives: Output[Dataset]
) -> str:
    """Assemble the preprocessed subjects; the model's reference maps become their group maps.

    Returns the model pinned (``models:/NAME@champion`` as ``models:/NAME/VERSION``), which the
    classify task then uses: a champion registered in between cannot label these maps.
    """
    import os
    import tempfile

    from kfp_pipelines.fan_in import require_one_ok
    from rsnflow.io import link_tree
    from rsnflow.reference import check_reference, fetch_reference, import_reference, pin_model

    require_one_ok(preprocessed, "preprocessing", "label")
    for part in preprocessed:
        link_tree(part.path, derivatives.path)
    if tracking_uri:
        os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
    pinned = pin_model(model_uri)
    with tempfile.TemporaryDirectory() as tmp:
        ref = fetch_reference(pinned, tmp)
        import_reference(derivatives.path, ref)
        n_components = int(check_reference(ref)["n_components"])
    derivatives.metadata.update({"model": pinned, "order": n_components})
    return pinned


@dsl.component(**_COMMON)
def classify(
    group: Input[Dataset],
    maps: Input[List[Dataset]],
    model_uri: str,
    endpoint: str,
    tracking_uri: str,
    overrides: dict,
    labels: Output[Dataset],
    review: Output[HTML],
) -> str:
    """Label every run's maps through ``endpoint`` (an InferenceService URL) or, without one, in process."""
    import os
    import shutil
    import tempfile
    from pathlib import Path

    from kfp_pipelines.fan_in import require_one_ok
    from rsnflow.classify import classify_runs
    from rsnflow.config import load_config
    from rsnflow.io import link_tree
    from rsnflow.layout import group_paths

    cfg = load_config(overrides=overrides)
    require_one_ok(maps, "dual regression", "classify")
    if tracking_uri:
        os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
    model = endpoint or model_uri
    with tempfile.TemporaryDirectory() as work:
        link_tree(group.path, work)
        for part in maps:
            link_tree(part.path, work)
        summary = classify_runs(
            work,
            model,
            None if endpoint else cfg.serve.abstain_below,
            cfg.device,
            atypical_below=None if endpoint else cfg.serve.atypical_below,  # a server applies its own
            group_weight=cfg.serve.group_weight,
            group_atypical_below=cfg.serve.group_atypical_below,
            group_network_below=cfg.serve.group_network_below,
        )
        for table in summary["table"]:
            target = Path(labels.path) / Path(table).relative_to(work)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(table, target)
        shutil.copyfile(group_paths(work)["classify_report"], review.path)
    totals = {k: int(summary[k].sum()) for k in ("components", "networks", "noise", "abstained")}
    labels.metadata.update({"runs": len(summary), "model": model, **totals})
    return (
        f"{len(summary)} runs, {totals['components']} components: {totals['networks']} networks, "
        f"{totals['noise']} Noise, {totals['abstained']} abstained"
    )

"""The evaluate stage: every model on every split, Table 1, figures, champion.

Writes into ``REPORT_DIR``: ``table1.md`` and ``index.html`` (the paper's
Table 1 plus macro-F1, network accuracy, calibration and the cross-cohort
figure), ``metrics.json``, ``per_class_<arch>.tsv``, ``confusion_<arch>.png``
and ``confusion_<arch>.tsv`` (test split; truth in rows), ``learning_curves.png`` (from the
models' ``history.tsv``).
The champion is the model with the best ``evaluate.champion_metric`` (by
default validation macro-F1: the test split stays a report, not a choice),
ties broken by the faster inference; its registered MLflow version gets the
``champion`` alias.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from numpy.typing import NDArray

from rsnflow.atlas import UNKNOWN, load_taxonomy
from rsnflow.config import EvaluateConfig, TrackingConfig
from rsnflow.dataset import MapDataset, make_loader
from rsnflow.evaluate.metrics import abstain, per_class_table, summary_metrics
from rsnflow.io import write_json, write_text
from rsnflow.log import get_logger, progress
from rsnflow.models import RSNClassifier, load_classifier
from rsnflow.resample import pick_device

__all__ = ["evaluate_models", "predict_split"]

log = get_logger(__name__)

SPLIT_NAMES = ("train", "val", "test")


def predict_split(
    model: RSNClassifier,
    dataset_dir: str | Path,
    split: str,
    device: torch.device,
    batch_size: int = 32,
    max_maps: int | None = None,
    seed: int = 0,
) -> tuple[NDArray[np.float32], NDArray[np.int64], float]:
    """Class probabilities of a split (optionally a seeded sample of ``max_maps``), truth and seconds.

    Parameters
    ----------
    model : RSNClassifier
        The classifier, already on ``device``.
    dataset_dir : str or Path
        Written by ``rsnflow dataset``.
    split : str
        ``"train"``, ``"val"``, ``"test"`` or ``"all"``.
    device : torch.device
        Where the maps are sent for inference.
    batch_size : int, default=32
        Maps per batch.
    max_maps : int or None, default=None
        Classify a random sample of this many maps of the split; None classifies all.
    seed : int, default=0
        Seed of the sample when ``max_maps`` is set.

    Returns
    -------
    probs : ndarray of shape (n_maps, n_classes)
        Softmax class probabilities.
    y : ndarray of shape (n_maps,)
        True class indices of the same maps.
    seconds : float
        Wall-clock time of inference (data loading included).
    """
    ds: Any = MapDataset(dataset_dir, split, "volume")
    y_all = ds.targets.numpy()
    rows = np.arange(len(ds))
    if max_maps is not None and max_maps < len(ds):
        rows = np.sort(np.random.default_rng(seed).choice(len(ds), max_maps, replace=False))
        ds = torch.utils.data.Subset(ds, rows.tolist())
    probs = []
    t0 = time.perf_counter()
    with torch.inference_mode():
        for x, _ in progress(make_loader(ds, batch_size), f"{model.arch} {split}", unit="batch"):
            probs.append(torch.softmax(model(x[:, 0].to(device)).float(), 1).cpu().numpy())
    seconds = time.perf_counter() - t0
    return np.concatenate(probs), y_all[rows], seconds


def _evaluate_one(
    model_dir: str | Path,
    dataset_dir: str | Path,
    out: Path,
    config: EvaluateConfig,
    dev: Any,
    cross_dataset: str | Path | None,
    seed: int,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """One model on every split (and the cross-cohort dataset): its metrics, per-class table and confusion."""
    from rsnflow.figures import confusion_figure

    taxonomy = load_taxonomy()
    parents = [taxonomy.parent(lab) for lab in taxonomy.labels]
    model, meta = load_classifier(model_dir, dev)
    name = Path(model_dir).name
    res: dict[str, Any] = {"arch": meta["arch"], "model_dir": str(Path(model_dir).resolve())}
    splits = [(s, dataset_dir) for s in SPLIT_NAMES]
    if cross_dataset is not None:
        splits.append(("cross", cross_dataset))
    for split, ds_dir in splits:
        probs, y, seconds = predict_split(
            model, ds_dir, "all" if split == "cross" else split, dev,
            max_maps=config.max_maps_per_split, seed=seed,
        )  # fmt: skip
        res.update({f"{split}_{k}": v for k, v in summary_metrics(probs, y, parents).items()})
        res[f"{split}_n"] = len(y)
        if split != "test":
            continue
        res["test_inference_seconds"] = seconds
        res["inference_ms_per_map"] = 1000.0 * seconds / len(y)
        pred = probs.argmax(1)
        table = per_class_table(pred, y, taxonomy.labels)
        write_text(table.to_csv(sep="\t", index=False, float_format="%.4f"), out / f"per_class_{name}.tsv")
        confusion_figure(y, pred, taxonomy.labels, f"{name}: test split", out / f"confusion_{name}.png")
        write_text(_confusion_table(y, pred, taxonomy.labels).to_csv(sep="\t"), out / f"confusion_{name}.tsv")
        if config.abstain_threshold > 0:
            kept = probs.max(1) >= config.abstain_threshold
            abst = abstain(probs, config.abstain_threshold, taxonomy.index(UNKNOWN))
            res["test_abstain_coverage"] = float(kept.mean())
            res["test_abstain_accuracy_kept"] = float((pred[kept] == y[kept]).mean()) if kept.any() else 0.0
            res["test_abstain_accuracy"] = float((abst == y).mean())
    res["train_seconds"] = meta.get("train_seconds")
    p = meta.get("params", {})
    res["trained_on"] = (
        f"{p.get('n_train')} of {p.get('n_train_available')} maps, {meta.get('epochs_run')} epochs"
    )
    return res, meta


def evaluate_models(
    dataset_dir: str | Path,
    model_dirs: list[str | Path],
    out_dir: str | Path,
    config: EvaluateConfig,
    tracking: TrackingConfig | None = None,
    device: str = "auto",
    cross_dataset: str | Path | None = None,
    seed: int = 0,
    set_alias: bool = True,
    pipeline_run: str | None = None,
) -> dict[str, Any]:
    """Evaluate trained classifiers; write Table 1 and figures; set the champion alias.

    Parameters
    ----------
    dataset_dir
        The dataset the models were trained on (its train/val/test splits).
    model_dirs
        Directories written by ``rsnflow train``.
    out_dir
        Report directory.
    config
        Abstention threshold, champion metric, optional cap on maps per split.
    tracking
        When given, logs an evaluation run (every model's metrics, Table 1, the
        confusion matrices and per-class tables as artifacts), tags each model's
        registered version with its figures and role, and sets the alias on the
        champion's (at the tracking URI each model was trained with).
    device
        ``"auto"``, ``"cpu"`` or ``"cuda"``.
    cross_dataset
        A dataset of an independently simulated and decomposed cohort: every
        map of it is classified (the honest figure for a new cohort).
    seed
        Seed of the sample of maps when ``config.max_maps_per_split`` is set.
    set_alias
        False leaves the alias to a later gate (the pipeline's
        ``register_champion`` task, which checks a test-accuracy threshold).
    pipeline_run
        The pipeline run's name, tagged on the versions and the evaluation run.

    Returns
    -------
    dict
        ``models`` (metrics per model), ``champion`` and the table rows.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dev = pick_device(device)
    results: dict[str, dict[str, Any]] = {}
    metas: dict[str, dict[str, Any]] = {}
    for d in model_dirs:
        name = Path(d).name
        results[name], metas[name] = _evaluate_one(d, dataset_dir, out, config, dev, cross_dataset, seed)

    metric = config.champion_metric
    champion = max(results, key=lambda n: (results[n][metric], -results[n]["inference_ms_per_map"]))
    rows = _table1(results)
    md = _markdown(rows, champion, metric, config)
    write_text(md, out / "table1.md")
    summary = {
        "models": results,
        "champion": champion,
        "champion_rule": f"max {metric}, ties: faster inference",
        "table1": rows,
    }
    write_json(summary, out / "metrics.json")
    curves = _learning_curves(model_dirs, out)
    _html(out, rows, results, champion, metric, cross_dataset is not None, curves)
    if tracking is not None:
        _track(tracking, results, metas, champion, out, set_alias, pipeline_run)
    log.info("champion: %s (%s %.4f)", champion, metric, results[champion][metric])
    return summary


def _learning_curves(model_dirs: list[str | Path], out: Path) -> Path | None:
    """``learning_curves.png`` from the models' ``history.tsv`` (None when no model has one)."""
    from rsnflow.figures import learning_curves_figure

    histories = {
        Path(d).name: pd.read_csv(Path(d) / "history.tsv", sep="\t")
        for d in model_dirs
        if (Path(d) / "history.tsv").is_file()
    }
    if not histories:
        return None
    return learning_curves_figure(histories, out / "learning_curves.png")


def _confusion_table(y: NDArray[np.int64], pred: NDArray[np.int64], labels: list[str]) -> pd.DataFrame:
    """Counts of (truth row, prediction column) over the labels that occur in either (of 58, most are 0)."""
    present = np.union1d(y, pred)
    index = {k: i for i, k in enumerate(present)}
    counts = np.zeros((len(present), len(present)), dtype=np.int64)
    np.add.at(counts, ([index[k] for k in y], [index[k] for k in pred]), 1)
    names = [labels[k] for k in present]
    return pd.DataFrame(counts, index=pd.Index(names, name="truth"), columns=names)


def _minutes(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.1f} s"


def _table1(results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for name, r in results.items():
        row = {
            "model": name,
            "train acc": round(r["train_accuracy"], 4),
            "val acc": round(r["val_accuracy"], 4),
            "test acc": round(r["test_accuracy"], 4),
            "test macro-F1": round(r["test_macro_f1"], 4),
            "test network acc": round(r["test_network_accuracy"], 4),
            "test ECE": round(r["test_ece"], 4),
            "training time": _minutes(r["train_seconds"]),
            "inference time (test split)": f"{r['test_inference_seconds']:.2f} s",
            "ms per map": round(r["inference_ms_per_map"], 2),
            "trained on": r["trained_on"],
        }
        if "cross_accuracy" in r:
            row["cross-cohort acc"] = round(r["cross_accuracy"], 4)
            row["cross-cohort macro-F1"] = round(r["cross_macro_f1"], 4)
        rows.append(row)
    return rows


def _markdown(rows: list[dict[str, Any]], champion: str, metric: str, config: EvaluateConfig) -> str:
    frame = pd.DataFrame(rows)
    head = "| " + " | ".join(frame.columns) + " |\n|" + "---|" * len(frame.columns) + "\n"
    body = "".join("| " + " | ".join(str(v) for v in row) + " |\n" for row in frame.itertuples(index=False))
    cap = f", at most {config.max_maps_per_split} maps per split" if config.max_maps_per_split else ""
    return (
        f"# Table 1: classifier comparison\n\nChampion: **{champion}** (rule: max {metric}, ties: faster "
        f"inference){cap}.\n\n{head}{body}"
    )


def _html(
    out: Path,
    rows: list[dict[str, Any]],
    results: dict[str, dict[str, Any]],
    champion: str,
    metric: str,
    cross: bool,
    curves: Path | None,
) -> None:
    from rsnflow.report import Report

    report = Report("rsnflow classifier comparison (Table 1)")
    report.text(f"Champion: {champion} (max {metric}; ties broken by faster inference).")
    report.table(pd.DataFrame(rows))
    if cross:
        report.text(
            "Cross-cohort: an independently simulated cohort with its own group ICA and automatic labels, "
            "classified by the same models; the honest figure for a new cohort."
        )
    if curves is not None:
        report.heading("Learning curves").figure(curves, "accuracy and loss per epoch")
    for name in results:
        report.heading(f"{name}: confusion matrix (test split)").figure(out / f"confusion_{name}.png", name)
        report.link(f"per_class_{name}.tsv", f"{name}: per-class precision, recall, F1")
        report.link(f"confusion_{name}.tsv", f"{name}: confusion counts (truth in rows)")
    report.write(out / "index.html")


def _track(
    tracking: TrackingConfig,
    results: dict[str, dict[str, Any]],
    metas: dict[str, dict[str, Any]],
    champion: str,
    out: Path,
    set_alias: bool,
    pipeline_run: str | None,
) -> None:
    from rsnflow.tracking import Tracker

    uri = tracking.uri or metas[champion]["mlflow"]["tracking_uri"]
    if uri is None:
        log.warning("the champion was trained without tracking; no evaluation run, no alias")
        return
    tracker = Tracker(uri, tracking.experiment, tracking.registered_model)
    run_tags = {
        "stage": "evaluate",
        "champion": champion,
        **({"pipeline_run": pipeline_run} if pipeline_run else {}),
    }
    with tracker.run("evaluate", tags=run_tags) as run_id:
        for name, r in results.items():
            tracker.log_metrics({f"{name}.{k}": v for k, v in r.items() if _is_number(v)})
        tracker.log_params({"champion": champion, "models": list(results)})
        tracker.log_artifacts([p for p in sorted(out.iterdir()) if p.is_file()], "evaluation")
    for name, r in results.items():
        version = metas[name]["mlflow"]["version"]
        if version is None:
            continue
        tracker.tag_version(
            version,
            {
                "arch": r["arch"],
                "test_accuracy": float(r["test_accuracy"]),
                "test_macro_f1": float(r["test_macro_f1"]),
                "val_macro_f1": float(r["val_macro_f1"]),
                "dataset_sha256": metas[name]["params"].get("dataset_sha256", "unknown"),
                "code_version": metas[name].get("code_version", "unknown"),
                "evaluation_run_id": run_id,
                "pipeline_run": pipeline_run or "none",
                # Only the champion gets the alias; the others say why they are in the registry.
                "role": "champion-candidate" if name == champion else "challenger",
            },
        )
    version = metas[champion]["mlflow"]["version"]
    if set_alias and version is not None:
        tracker.set_champion(version)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)

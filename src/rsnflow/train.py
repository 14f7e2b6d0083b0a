"""The train stage: one classifier on the dataset's training split, tracked in MLflow.

Writes into ``MODEL_DIR``: ``weights.pt`` and ``model.json`` (the deployable
:class:`~rsnflow.models.RSNClassifier`, best validation epoch), ``history.tsv``
(per-epoch loss and accuracy), ``config.yaml`` and ``reference/`` (the group
maps the dataset's maps come from: :mod:`rsnflow.reference`). With tracking
on, the run logs parameters, per-epoch metrics, durations, the dataset hash,
code and package versions, the reference maps, and the model (registered as
a new version).
"""

from __future__ import annotations

import copy
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import yaml
from numpy.typing import NDArray
from torch import nn
from torch.utils.data import ConcatDataset, Subset

from rsnflow.atlas import NOISE
from rsnflow.config import TrackingConfig, TrainConfig
from rsnflow.dataset import MapDataset, load_manifest, make_loader, verify_dataset
from rsnflow.dataset.noise_maps import NoiseMapDataset
from rsnflow.dataset.verify import Verify
from rsnflow.dataset.whole_networks import WholeNetworkDataset
from rsnflow.errors import TrainingError
from rsnflow.io import atomic_path, write_text
from rsnflow.log import get_logger, progress
from rsnflow.models import VIEWS, RSNClassifier, build_network, load_pretrained, save_classifier
from rsnflow.models.prototypes import PROTOTYPES_FILE
from rsnflow.provenance import provenance
from rsnflow.reference import REFERENCE_DIR, check_reference
from rsnflow.resample import pick_device

__all__ = ["CHECKPOINT", "TrainingError", "train_classifier"]

log = get_logger(__name__)

#: Written into the model directory after every epoch; ``resume`` continues from it.
CHECKPOINT = "checkpoint.pt"


def _seed_everything(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _epoch(
    net: nn.Module,
    loader: Any,
    loss_fn: nn.Module,
    device: torch.device,
    optimizer: torch.optim.Optimizer | None,
    precision: torch.dtype | None,
    scaler: torch.amp.GradScaler | None,
    desc: str,
    collect: list[tuple[NDArray[np.float32], NDArray[np.int64]]] | None = None,
) -> tuple[float, float]:
    """One pass over ``loader``; trains when ``optimizer`` is given. Returns (mean loss, accuracy).

    ``collect`` receives each batch's (logits, labels): the validation pass's, for calibration.
    ``precision`` is the autocast dtype (float16 on a GPU, bfloat16 on a CPU with BF16 units), with
    inputs in the channels-last format; None: float32 as stored.
    """
    net.train(optimizer is not None)
    total_loss, correct, seen = 0.0, 0, 0
    memory = torch.channels_last_3d if precision is not None else None
    with torch.set_grad_enabled(optimizer is not None):
        for x, y in progress(loader, desc, unit="batch"):
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if memory is not None:
                x = x.contiguous(memory_format=torch.channels_last if x.ndim == 4 else memory)
            with torch.autocast(device.type, dtype=precision or torch.float32, enabled=precision is not None):
                logits = net(x)
                loss = loss_fn(logits.float(), y)
            if not torch.isfinite(loss):
                raise TrainingError(
                    f"{desc}: the loss is {loss.item()} after {seen} maps (non-finite maps in the dataset, "
                    "or train.lr too large); stopped, no weights saved"
                )
            if optimizer is not None:
                optimizer.zero_grad(set_to_none=True)
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    loss.backward()
                    optimizer.step()
            total_loss += float(loss.detach()) * len(y)
            if collect is not None:
                collect.append((logits.detach().float().cpu().numpy(), y.cpu().numpy()))
            correct += int((logits.argmax(1) == y).sum())
            seen += len(y)
    return total_loss / max(seen, 1), correct / max(seen, 1)


def _get_rng(loader: Any) -> dict[str, Any]:
    """Every random state training draws from: dropout, shuffling, numpy and Python."""
    import random

    rng: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
        "loader": loader.generator.get_state() if loader.generator is not None else None,
    }
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    return rng


def _set_rng(rng: dict[str, Any], loader: Any) -> None:
    import random

    torch.set_rng_state(rng["torch"])
    np.random.set_state(rng["numpy"])
    random.setstate(rng["python"])
    if rng.get("loader") is not None and loader.generator is not None:
        loader.generator.set_state(rng["loader"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])


def train_classifier(
    dataset_dir: str | Path,
    model_dir: str | Path,
    arch: str,
    config: TrainConfig,
    seed: int = 0,
    device: str = "auto",
    tracking: TrackingConfig | None = None,
    tracking_uri: str | None = None,
    max_train_samples: int | None = None,
    weights: str | Path | None = None,
    verify: Verify = "fast",
    resume: bool = False,
) -> dict[str, Any]:
    """Train ``arch`` on the dataset's training split; keep the best validation epoch.

    Parameters
    ----------
    dataset_dir
        Written by ``rsnflow dataset``.
    model_dir
        Output directory of the model.
    arch
        ``mlp``, ``resnet2p5d`` or ``r3d18``.
    config
        Optimiser, epochs, batch size, loss weighting, early stopping.
    seed
        Seed of initialisation, dropout and shuffling.
    device
        ``"auto"``, ``"cpu"`` or ``"cuda"`` (:func:`rsnflow.resample.pick_device`).
    tracking, tracking_uri
        MLflow experiment settings and the resolved URI; no tracking when ``tracking`` is None.
        Without ``tracking_uri`` the URI comes from :func:`rsnflow.tracking.resolve_uri`
        (a local store in the parent of ``model_dir`` when none is configured).
    max_train_samples
        Train on a seeded random subset of this many training maps (the demo's
        CNN budget); the model's metadata and the MLflow run record it.
    weights
        Optional local file of pretrained weights (:func:`rsnflow.models.load_pretrained`).
    verify
        Check the dataset against its manifest first (:func:`rsnflow.dataset.verify_dataset`).
    resume
        Continue from the model directory's checkpoint (written after every
        epoch) when one of the same run exists: a killed training resumes at
        the next epoch and ends with the weights of an uninterrupted run.

    Returns
    -------
    dict
        The model's metadata as written to ``model.json``.
    """
    t_start = time.perf_counter()
    manifest = load_manifest(dataset_dir)
    verify_dataset(dataset_dir, manifest, verify)
    _seed_everything(seed)
    run = _prepare(dataset_dir, model_dir, arch, config, seed, pick_device(device), manifest,
                   max_train_samples, weights)  # fmt: skip
    if tracking is not None:
        from rsnflow.tracking import Tracker, resolve_uri

        uri = tracking_uri or resolve_uri(tracking, run.out.parent)
        run.tracker = Tracker(uri, tracking.experiment, tracking.registered_model)
    if run.tracker is None:
        return _finish(run, *_fit(run, resume), None, t_start)
    with run.tracker.run(f"train-{arch}", tags={"arch": arch, "stage": "train"}) as run_id:
        run.tracker.log_params(run.params)
        return _finish(run, *_fit(run, resume), run_id, t_start)


@dataclass
class _Run:
    """Everything one training run works with, prepared once."""

    arch: str
    config: TrainConfig
    seed: int
    dataset_dir: Path
    out: Path
    manifest: dict[str, Any]
    mask: NDArray[np.bool_]
    net: nn.Module
    optimizer: torch.optim.Optimizer
    loss_fn: nn.Module
    scaler: Any
    precision: torch.dtype | None  # autocast dtype (None: float32)
    dev: torch.device
    train_loader: Any
    val_loader: Any
    params: dict[str, Any]
    run_key: dict[str, Any]  # what a checkpoint must share with this run to be resumed
    tracker: Any = None

    @property
    def checkpoint(self) -> Path:
        return self.out / CHECKPOINT


def _cpu_precision(arch: str, setting: str) -> torch.dtype | None:
    """bfloat16 for a CNN on a CPU with BF16 units (``auto``) or when asked; None (float32) otherwise.

    On a CPU with AVX-512 BF16 or AMX, bfloat16 autocast with channels-last
    inputs trains r3d_18 4x and the 2.5D ResNet-50 3x faster than float32
    (``bench/bench_r3d.py``); on one without, bfloat16 is emulated and slower.
    The MLP stays in float32: its time is reading the maps, not arithmetic.
    """
    if arch == "mlp" or setting == "float32":
        return None
    if setting == "bfloat16" or cpu_has_bf16():
        return torch.bfloat16
    return None


def cpu_has_bf16() -> bool:
    """Whether this CPU has BF16 arithmetic units (AVX-512 BF16 or AMX) that oneDNN uses.

    oneDNN's own check (``_is_mkldnn_bf16_supported``) is also true on
    AVX-512 CPUs without them (Skylake, Cascade Lake), where bfloat16 is
    emulated and slower than float32: the CPU's flags decide first.

    Returns
    -------
    bool
        True on a Linux CPU flagged ``avx512_bf16`` or ``amx_bf16`` whose torch build supports it.
    """
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return False
    if not flags & {"avx512_bf16", "amx_bf16"}:
        return False
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN
        return False


def _prepare(
    dataset_dir: str | Path,
    model_dir: str | Path,
    arch: str,
    config: TrainConfig,
    seed: int,
    dev: torch.device,
    manifest: dict[str, Any],
    max_train_samples: int | None,
    weights: str | Path | None,
) -> _Run:
    """Data loaders, network (pretrained weights when given), loss and optimiser, the run's parameters."""
    mask = np.load(Path(dataset_dir) / "mask.npy")
    view = VIEWS[arch]
    train_ds: Any = MapDataset(dataset_dir, "train", view)
    n_train_total = len(train_ds)
    if max_train_samples is not None and max_train_samples < len(train_ds):
        pick = np.sort(np.random.default_rng(seed).choice(len(train_ds), max_train_samples, replace=False))
        train_ds = Subset(train_ds, pick.tolist())
    train_ds, n_noise, n_whole = _augmented(train_ds, Path(dataset_dir), config, manifest, seed, view)
    val_ds = MapDataset(dataset_dir, "val", view)
    net = build_network(arch, len(manifest["classes"]), tuple(config.mlp_hidden), config.mlp_dropout, mask)
    left = load_pretrained(net, weights) if weights is not None else None
    if left is not None:
        log.info("pretrained weights from %s; %d tensors left at random init", weights, len(left))
    net = net.to(dev)
    amp = dev.type == "cuda"
    precision = (
        torch.float16 if amp else _cpu_precision(arch, config.cpu_precision) if dev.type == "cpu" else None
    )
    if precision is not None:
        net = net.to(memory_format=torch.channels_last if arch == "resnet2p5d" else torch.channels_last_3d)
    class_weight = torch.tensor(manifest["class_weights"], dtype=torch.float32, device=dev)
    optimizer: torch.optim.Optimizer = (
        torch.optim.SGD(net.parameters(), lr=config.lr, momentum=config.momentum)
        if config.optimizer == "sgd"
        else torch.optim.Adam(net.parameters(), lr=config.lr)
    )
    params = {
        "arch": arch, "view": view, "epochs": config.epochs, "batch_size": config.batch_size,
        "lr": config.lr, "momentum": config.momentum, "optimizer": config.optimizer,
        "weighted_loss": config.weighted_loss, "early_stopping_patience": config.early_stopping_patience,
        "seed": seed, "device": str(dev), "n_train": len(train_ds) - n_noise - n_whole,
        "n_train_available": n_train_total, "n_noise_maps": n_noise,
        "n_whole_network_maps": n_whole, "n_val": len(val_ds),
        "dataset_sha256": manifest["sha256"]["dataset"],
        "taxonomy_version": manifest["taxonomy_version"],
        "pretrained_weights": str(weights) if weights else "none", "mixed_precision": amp,
        "precision": str(precision or torch.float32).removeprefix("torch."),
    }  # fmt: skip
    out = Path(model_dir)
    out.mkdir(parents=True, exist_ok=True)
    return _Run(
        arch=arch, config=config, seed=seed, dataset_dir=Path(dataset_dir), out=out, manifest=manifest,
        mask=mask, net=net, optimizer=optimizer,
        loss_fn=nn.CrossEntropyLoss(weight=class_weight if config.weighted_loss else None),
        scaler=torch.amp.GradScaler("cuda") if amp else None, precision=precision, dev=dev,
        train_loader=make_loader(train_ds, config.batch_size, True, config.num_workers, seed),
        val_loader=make_loader(val_ds, config.batch_size, False, config.num_workers, seed),
        params=params,
        run_key={**params, "config": asdict(config), "max_train_samples": max_train_samples},
    )  # fmt: skip


def _augmented(
    train_ds: Any, dataset_dir: Path, config: TrainConfig, manifest: dict[str, Any], seed: int, view: str
) -> tuple[Any, int, int]:
    """The training maps with the synthetic ones the config asks for; how many of each kind."""
    mask = np.load(dataset_dir / "mask.npy")
    classes = list(manifest["classes"])
    size = int(manifest["projection_size"])
    n_real = len(train_ds)
    parts = [train_ds]
    n_noise = round(config.noise_maps * n_real) if NOISE in classes else 0
    if n_noise:  # maps of nothing widen what Noise means (rsnflow.dataset.noise_maps)
        parts.append(NoiseMapDataset(mask, n_noise, classes.index(NOISE), seed, view, size))
    n_whole = round(config.whole_networks * n_real)
    if n_whole:  # networks as a lower order leaves them, whole (rsnflow.dataset.whole_networks)
        index = pd.read_csv(dataset_dir / "index.tsv", sep="\t", dtype={"subject": str})
        whole = WholeNetworkDataset(
            dataset_dir, index[index["split"] == "train"], classes, mask, n_whole, seed, view, size
        )
        n_whole = len(whole)
        parts.append(whole)
    return (ConcatDataset(parts) if len(parts) > 1 else train_ds), n_noise, n_whole


def _resume(run: _Run) -> tuple[dict[str, Any], int] | None:
    """The saved state and the next epoch, when the checkpoint belongs to this run."""
    if not run.checkpoint.exists():
        return None
    saved = torch.load(run.checkpoint, map_location="cpu", weights_only=False)
    if saved.get("run_key") != run.run_key:
        log.warning(
            "%s: %s belongs to another run (data or settings differ): starting afresh",
            run.arch,
            run.checkpoint,
        )
        return None
    run.net.load_state_dict(saved["net"])
    run.optimizer.load_state_dict(saved["optimizer"])
    if run.scaler is not None and saved.get("scaler"):
        run.scaler.load_state_dict(saved["scaler"])
    _set_rng(saved["rng"], run.train_loader)
    log.info("%s: resuming from %s after epoch %d", run.arch, run.checkpoint, saved["epoch"])
    return saved["state"], saved["epoch"] + 1


def _fit(run: _Run, resume: bool) -> tuple[list[dict[str, float]], dict[str, Any], int, Any]:
    """The epochs, a checkpoint after each; the history, the best validation state, its epoch and
    its validation (logits, labels)."""
    state: dict[str, Any] = {"history": [], "best_state": None, "best_key": (-1.0, 0.0), "best_epoch": 0}
    state["stale"] = 0
    start = 1
    resumed = _resume(run) if resume else None
    if resumed is not None:
        state, start = resumed
    arch, config = run.arch, run.config
    for epoch in range(start, config.epochs + 1):
        t0 = time.perf_counter()
        tr_loss, tr_acc = _epoch(
            run.net, run.train_loader, run.loss_fn, run.dev, run.optimizer, run.precision, run.scaler,
            f"{arch} epoch {epoch}",
        )  # fmt: skip
        val_out: list[tuple[NDArray[np.float32], NDArray[np.int64]]] = []
        va_loss, va_acc = _epoch(
            run.net,
            run.val_loader,
            run.loss_fn,
            run.dev,
            None,
            run.precision,
            None,
            f"{arch} validation",
            val_out,
        )
        row = {
            "epoch": epoch, "train_loss": tr_loss, "train_accuracy": tr_acc, "val_loss": va_loss,
            "val_accuracy": va_acc, "epoch_seconds": time.perf_counter() - t0,
        }  # fmt: skip
        state["history"].append(row)
        log.info(
            "%s epoch %d/%d: train loss %.4f acc %.3f, val loss %.4f acc %.3f (%.1f s)",
            arch, epoch, config.epochs, tr_loss, tr_acc, va_loss, va_acc, row["epoch_seconds"],
        )  # fmt: skip
        if run.tracker is not None:
            run.tracker.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=epoch)
        key = (va_acc, -va_loss)
        stop = False
        if key > state["best_key"]:
            state.update(
                best_state=copy.deepcopy(run.net.state_dict()), best_key=key, best_epoch=epoch, stale=0,
                # the best epoch's validation logits: calibration needs no second pass
                best_val=tuple(np.concatenate(a) for a in zip(*val_out, strict=True)) if val_out else None,
            )  # fmt: skip
        else:
            state["stale"] += 1
            if config.early_stopping_patience and state["stale"] >= config.early_stopping_patience:
                log.info("early stopping after epoch %d (best %d)", epoch, state["best_epoch"])
                stop = True
        saved = {
            "run_key": run.run_key, "epoch": epoch, "net": run.net.state_dict(),
            "optimizer": run.optimizer.state_dict(),
            "scaler": run.scaler.state_dict() if run.scaler is not None else None,
            "rng": _get_rng(run.train_loader), "state": state,
        }  # fmt: skip
        with atomic_path(run.checkpoint) as tmp:
            torch.save(saved, tmp)
        if stop:
            break
    assert state["best_state"] is not None
    return state["history"], state["best_state"], state["best_epoch"], state.get("best_val")


def _calibrate(model: RSNClassifier, val: Any) -> dict[str, float]:
    """Fit the model's temperature and its abstention threshold on the validation split.

    ``val`` is the best epoch's validation (logits, labels), or None without a validation
    split. Sets ``model.temperature`` and ``model.abstain_below`` (the served default);
    returns both with the validation ECE before and after.
    """
    from rsnflow.evaluate.metrics import expected_calibration_error
    from rsnflow.models.calibration import abstain_threshold, fit_temperature, scaled_probabilities

    if val is None:  # no validation split: nothing to calibrate on
        return {"temperature": 1.0, "abstain_below": 0.0}
    z, y = val
    model.temperature = round(fit_temperature(z, y), 6)
    probs = scaled_probabilities(z, model.temperature)
    model.abstain_below = round(abstain_threshold(probs, y), 6)
    return {
        "temperature": model.temperature,
        "abstain_below": model.abstain_below,
        "val_ece_uncalibrated": expected_calibration_error(scaled_probabilities(z, 1.0), y),
        "val_ece": expected_calibration_error(probs, y),
    }


def _prototypes(run: _Run, model: RSNClassifier, val: Any) -> dict[str, float]:
    """The training split's class prototypes saved with the model; the typicality gate set on validation.

    Sets ``model.atypical_below`` (:mod:`rsnflow.models.prototypes`; 0 without a validation split).
    """
    from rsnflow.models.prototypes import atypical_threshold, class_prototypes, save_prototypes, typicality

    maps = np.load(run.dataset_dir / "maps.npy", mmap_mode="r")
    index = pd.read_csv(run.dataset_dir / "index.tsv", sep="\t", dtype={"subject": str})
    train = index[index["split"] == "train"]
    classes = model.classes
    protos = class_prototypes(
        maps, train["sample"].to_numpy(), train["class_index"].to_numpy(), len(classes), run.mask
    )
    save_prototypes(run.out / PROTOTYPES_FILE, run.mask, protos, classes)
    rows = index.loc[index["split"] == "val", "sample"].to_numpy()
    if val is None or len(rows) != len(val[0]):
        model.atypical_below = 0.0
    else:  # the validation loader is unshuffled: its logits are in the index's order
        sim = np.concatenate(
            [
                typicality(np.asarray(maps[rows[i : i + 256]]), run.mask, protos)
                for i in range(0, len(rows), 256)
            ]
        )
        model.atypical_below = round(atypical_threshold(sim, val[0], val[1], classes), 6)
    return {"atypical_below": model.atypical_below}


def _keep_reference(dataset_dir: Path, out: Path) -> Path | None:
    """The dataset's reference maps copied into the model directory (None for a dataset without them)."""
    src = dataset_dir / REFERENCE_DIR
    if not src.is_dir():
        log.warning(
            "%s has no reference maps (built before rsnflow kept them): nor has the model", dataset_dir
        )
        return None
    check_reference(src)
    dest = out / REFERENCE_DIR
    shutil.copytree(src, dest, dirs_exist_ok=True)  # its own files replaced, nothing else touched
    return dest


def _finish(
    run: _Run,
    history: list[dict[str, float]],
    best_state: dict[str, Any],
    best_epoch: int,
    best_val: Any,
    run_id: str | None,
    t_start: float,
) -> dict[str, Any]:
    """The best epoch's weights checked and saved with the history, config and metadata (and in MLflow)."""
    net, out, tracker = run.net, run.out, run.tracker
    net.load_state_dict(best_state)
    bad = [
        name for name, t in net.state_dict().items() if t.is_floating_point() and not torch.isfinite(t).all()
    ]
    if bad:
        raise TrainingError(f"{run.arch}: non-finite weights in {', '.join(bad[:3])}; not saved")
    classes = list(run.manifest["classes"])
    model = RSNClassifier(
        run.arch, classes, run.mask, int(run.manifest["projection_size"]), net.float().cpu()
    )
    calibration = {**_calibrate(model, best_val), **_prototypes(run, model, best_val)}
    train_seconds = time.perf_counter() - t_start
    best = history[best_epoch - 1]
    meta = {
        "params": run.params,
        "best_epoch": best_epoch,
        "val_accuracy": best["val_accuracy"],
        **calibration,
        "train_accuracy_last": history[-1]["train_accuracy"],
        "epochs_run": len(history),
        "train_seconds": round(train_seconds, 2),
        "dataset": str(run.dataset_dir.resolve()),
        "mlflow": {
            "tracking_uri": tracker.uri if tracker else None,
            "run_id": run_id,
            "registered_model": tracker.registered_model if tracker else None,
            "version": None,
        },
        **provenance(asdict(run.config)),
    }
    write_text(pd.DataFrame(history).to_csv(sep="\t", index=False, float_format="%.6g"), out / "history.tsv")
    reference = _keep_reference(run.dataset_dir, out)
    write_text(yaml.safe_dump(asdict(run.config), sort_keys=False), out / "config.yaml")
    if tracker is not None:
        tracker.log_metrics(
            {
                "train_seconds": train_seconds,
                "best_epoch": best_epoch,
                "best_val_accuracy": best["val_accuracy"],
                **{f"calibration_{k}": v for k, v in calibration.items()},
            }
        )
        tracker.log_artifacts([out / "history.tsv", out / "config.yaml"])
        tracker.log_artifacts([out / PROTOTYPES_FILE], "prototypes")
        if reference is not None:
            tracker.log_artifacts(sorted(reference.iterdir()), REFERENCE_DIR)
        # Two maps, not one: MLflow's pt2 export would fix a batch of one into the graph.
        example = np.zeros((2, *run.mask.shape), dtype=np.float32)
        example[:, run.mask] = np.random.default_rng(run.seed).standard_normal(
            (2, int(run.mask.sum())), dtype=np.float32
        )
        meta["mlflow"]["version"] = tracker.log_model(model, example)
    save_classifier(model, out, meta)
    run.checkpoint.unlink(missing_ok=True)  # the run is complete: nothing left to resume
    if tracker is not None:
        tracker.log_artifacts([out / "model.json"])
    return meta

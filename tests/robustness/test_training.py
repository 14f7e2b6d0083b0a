"""Defects 7 and 13: corrupted or non-finite datasets never train silently; a killed training resumes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from probes import one_error

from rsnflow.dataset.verify import block_digests
from rsnflow.io import sha256_file


@pytest.fixture
def dataset_copy(tiny_dataset: Path, tmp_path: Path) -> Path:
    out = tmp_path / "ds"
    shutil.copytree(tiny_dataset, out)
    return out


def _flip(path: Path, offset: int) -> None:
    with path.open("r+b") as fh:
        fh.seek(offset)
        byte = fh.read(1)
        fh.seek(offset)
        fh.write(bytes([byte[0] ^ 0xFF]))


def test_flipped_bytes_are_caught_before_training(cli, dataset_copy: Path, tmp_path: Path) -> None:
    maps = dataset_copy / "maps.npy"
    _flip(maps, maps.stat().st_size - 1000)
    code, errors = cli(
        "train", dataset_copy, tmp_path / "m", "--arch", "mlp", "--epochs", "1", "--no-tracking"
    )
    assert code == 1
    one_error(errors, str(maps), "differ from the manifest")
    assert not (tmp_path / "m" / "weights.pt").exists()


def test_the_full_check_catches_a_flip_the_fast_check_samples_past(dataset_copy: Path, monkeypatch) -> None:
    import rsnflow.dataset.verify as verify
    from rsnflow.dataset import load_manifest
    from rsnflow.io import InvalidInputError

    monkeypatch.setattr(verify, "BLOCK", 1 << 20)  # 1 MiB blocks: the tiny dataset has ~170 of them
    maps = dataset_copy / "maps.npy"
    manifest = load_manifest(dataset_copy)
    manifest["maps_block_sha256"] = verify.block_digests(maps)
    n = len(manifest["maps_block_sha256"])
    sampled = {int(i) for i in np.linspace(0, n - 1, verify.FAST_BLOCKS).round()}
    skipped = min(set(range(n)) - sampled)
    _flip(maps, skipped * verify.BLOCK + 5)
    verify.verify_dataset(dataset_copy, manifest, "fast")  # samples past it, as documented
    with pytest.raises(InvalidInputError, match="differ from the manifest"):
        verify.verify_dataset(dataset_copy, manifest, "full")


def _poison(dataset: Path) -> None:
    """NaN in the maps, with the manifest's hashes made to match (so only the loss can tell)."""
    import pandas as pd

    index = pd.read_csv(dataset / "index.tsv", sep="\t")
    train = index.loc[index["split"] == "train", "sample"].to_numpy()
    maps = np.load(dataset / "maps.npy", mmap_mode="r+")
    maps[train[:5]] = np.nan
    maps.flush()
    del maps
    manifest = json.loads((dataset / "manifest.json").read_text())
    manifest["sha256"]["maps.npy"] = sha256_file(dataset / "maps.npy")
    manifest["maps_block_sha256"] = block_digests(dataset / "maps.npy")
    (dataset / "manifest.json").write_text(json.dumps(manifest))


def test_nan_maps_stop_training_without_weights(cli, dataset_copy: Path, tmp_path: Path) -> None:
    _poison(dataset_copy)
    out = tmp_path / "m"
    code, errors = cli("train", dataset_copy, out, "--arch", "mlp", "--epochs", "2", "--no-tracking")
    assert code == 1
    one_error(errors, "mlp epoch 1", "the loss is nan", "no weights saved")
    assert not (out / "weights.pt").exists() and not (out / "model.json").exists()


def test_non_finite_weights_are_never_served(tiny_mlp: Path, tmp_path: Path) -> None:
    from rsnflow.io import InvalidInputError
    from rsnflow.models import load_classifier

    bad = tmp_path / "bad"
    shutil.copytree(tiny_mlp, bad)
    state = torch.load(bad / "weights.pt", weights_only=True)
    name = next(k for k, t in state.items() if t.is_floating_point() and t.ndim == 2)
    state[name][0, 0] = float("nan")
    torch.save(state, bad / "weights.pt")
    with pytest.raises(InvalidInputError, match="non-finite weights"):
        load_classifier(bad)


def _train(dataset: Path, out: Path, *extra: str) -> None:
    from rsnflow.cli import main

    argv = ["train", str(dataset), str(out), "--arch", "mlp", "--epochs", "4", "--no-tracking", "--seed", "2"]
    assert main([*argv, *extra]) == 0


def test_a_killed_training_resumes_to_the_same_weights(
    tiny_dataset: Path, tmp_path: Path, monkeypatch
) -> None:
    import rsnflow.train as train

    _train(tiny_dataset, tmp_path / "whole")
    real, calls = train._epoch, {"n": 0}

    def dies_in_epoch_3(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:  # training pass of epoch 3 (each epoch: train, then validation)
            raise KeyboardInterrupt("preempted")
        return real(*args, **kwargs)

    monkeypatch.setattr(train, "_epoch", dies_in_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        train.train_classifier(
            tiny_dataset, tmp_path / "resumed", "mlp", _config(4), seed=2, device="cpu", resume=True
        )
    monkeypatch.setattr(train, "_epoch", real)
    saved = torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=False)
    assert saved["epoch"] == 2
    _train(tiny_dataset, tmp_path / "resumed", "--resume")
    a = torch.load(tmp_path / "whole" / "weights.pt", weights_only=True)
    b = torch.load(tmp_path / "resumed" / "weights.pt", weights_only=True)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    history = (tmp_path / "resumed" / "history.tsv").read_text().splitlines()
    assert len(history) == 5  # header + 4 epochs, the first two from the checkpoint
    assert not (tmp_path / "resumed" / "checkpoint.pt").exists()


def _config(epochs: int):
    from rsnflow.config import load_config

    return load_config(overrides={"train": {"epochs": epochs}}).train

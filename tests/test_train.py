from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from rsnflow.cli import EXIT_ERROR, EXIT_OK, main
from rsnflow.dataset import MapDataset
from rsnflow.evaluate import predict_split
from rsnflow.models import build_network, load_classifier


def test_mlp_learns_on_the_tiny_cohort(tiny_mlp: Path, tiny_dataset: Path) -> None:
    model, meta = load_classifier(tiny_mlp)
    probs, y, _ = predict_split(model, tiny_dataset, "test", torch.device("cpu"))
    accuracy = float((probs.argmax(1) == y).mean())
    # Chance is 1/58 (and 0.4 for always guessing the largest class, Noise).
    assert accuracy >= 0.7, accuracy
    history = pd.read_csv(tiny_mlp / "history.tsv", sep="\t")
    assert len(history) == 30 and history["train_loss"].iloc[-1] < history["train_loss"].iloc[0]
    assert meta["val_accuracy"] == pytest.approx(history["val_accuracy"].max())
    assert meta["params"]["n_train"] == len(MapDataset(tiny_dataset, "train"))
    assert "code_version" in meta and "torch" in meta["packages"]
    # Calibrated on the validation split: a temperature, a threshold, and a smaller ECE.
    assert meta["temperature"] > 0 and 0 <= meta["abstain_below"] < 1
    assert meta["val_ece"] <= meta["val_ece_uncalibrated"] + 1e-9
    assert (
        model.temperature == meta["temperature"] and model.header()["abstain_below"] == meta["abstain_below"]
    )


def test_training_is_reproducible(tiny_dataset: Path, tmp_path: Path) -> None:
    for name in ("a", "b"):
        argv = [
            "train",
            str(tiny_dataset),
            str(tmp_path / name),
            "--arch",
            "mlp",
            "--epochs",
            "2",
            "--seed",
            "4",
            "--no-tracking",
        ]
        assert main(argv) == EXIT_OK
    wa = torch.load(tmp_path / "a" / "weights.pt", weights_only=True)
    wb = torch.load(tmp_path / "b" / "weights.pt", weights_only=True)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_cnns_train_through_the_cli(tiny_dataset: Path, tmp_path: Path) -> None:
    # r3d18 trains through the same function in the KFP test (tests/kfp/test_pipeline.py) and fits a
    # batch below; its validation pass over the whole split here cost a minute of make test.
    for arch, n in (("resnet2p5d", 32),):
        argv = [
            "train",
            str(tiny_dataset),
            str(tmp_path / arch),
            "--arch",
            arch,
            "--epochs",
            "1",
            "--max-train-samples",
            str(n),
            "--no-tracking",
        ]
        assert main(argv) == EXIT_OK
        meta = json.loads((tmp_path / arch / "model.json").read_text())
        assert meta["params"]["n_train"] == n and meta["arch"] == arch
        # On a CPU with BF16 units the CNNs train in bfloat16 autocast (the saved weights stay float32).
        from rsnflow.train import cpu_has_bf16

        bf16 = cpu_has_bf16()
        assert meta["params"]["precision"] == ("bfloat16" if bf16 else "float32")
        weights = torch.load(tmp_path / arch / "weights.pt", map_location="cpu", weights_only=True)
        assert {t.dtype for t in weights.values() if t.is_floating_point()} == {torch.float32}


def test_cpu_precision_setting() -> None:
    from rsnflow.train import _cpu_precision, cpu_has_bf16

    assert _cpu_precision("mlp", "bfloat16") is None  # the MLP always trains in float32
    assert _cpu_precision("r3d18", "float32") is None
    assert _cpu_precision("r3d18", "bfloat16") is torch.bfloat16
    auto = torch.bfloat16 if cpu_has_bf16() else None
    assert _cpu_precision("resnet2p5d", "auto") is auto


@pytest.mark.parametrize(("arch", "shape"), [("resnet2p5d", (4, 3, 64, 64)), ("r3d18", (2, 1, 45, 54, 45))])
def test_cnn_can_fit_a_batch(arch: str, shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    net = build_network(arch, 58)
    x = torch.rand(*shape) * (255 if arch == "resnet2p5d" else 1)
    y = torch.arange(shape[0])
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    losses = []
    for _ in range(4):
        loss = torch.nn.functional.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0]


def test_train_on_a_missing_dataset(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    assert (
        main(["train", str(tmp_path / "none"), str(tmp_path / "m"), "--arch", "mlp", "--no-tracking"])
        == EXIT_ERROR
    )
    assert "manifest.json" in capfd.readouterr().err
    assert not np.any([p.name == "weights.pt" for p in tmp_path.rglob("*")])


def test_synthetic_noise_maps_join_the_training_split(tiny_dataset: Path, tmp_path: Path) -> None:
    (tmp_path / "noise.yaml").write_text("train:\n  noise_maps: 0.4\n")
    argv = ["train", str(tiny_dataset), str(tmp_path / "m"), "--arch", "mlp", "--epochs", "1"]
    assert main([*argv, "--no-tracking", "--config", str(tmp_path / "noise.yaml")]) == EXIT_OK
    params = json.loads((tmp_path / "m" / "model.json").read_text())["params"]
    assert params["n_noise_maps"] == round(0.4 * params["n_train"]) > 0  # recorded beside the real maps
    (tmp_path / "bad.yaml").write_text("train:\n  noise_maps: -1\n")
    assert main([*argv, "--no-tracking", "--config", str(tmp_path / "bad.yaml")]) != EXIT_OK

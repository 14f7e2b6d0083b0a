from __future__ import annotations

from pathlib import Path

import pytest

from rsnflow.atlas import load_taxonomy
from rsnflow.config import ConfigError, config_to_dict, default_config_dict, load_config


def test_defaults_are_the_papers() -> None:
    c = load_config()
    assert c.preprocess.fwhm_mm == 7.0
    assert c.preprocess.highpass_cutoff_s == 100.0
    assert c.ica.order == 100
    assert c.dataset.split == [0.7, 0.1, 0.2]
    assert (c.train.optimizer, c.train.lr, c.train.batch_size, c.train.epochs) == (
        "sgd",
        0.001,
        32,
        25,
    )
    assert c.train.mlp_hidden == [200, 200, 200]
    assert c.train.mlp_dropout == 0.66
    assert len(load_taxonomy().labels) == 58  # the classes: 56 networks, Noise, Unknown


def test_every_default_round_trips() -> None:
    assert config_to_dict(load_config()) == default_config_dict()


def test_user_file_overrides(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("train:\n  lr: 1e-2\n  epochs: 3\nica:\n  order: auto\n")
    c = load_config(f)
    assert c.train.lr == 0.01
    assert c.train.epochs == 3
    assert c.ica.order == "auto"
    assert c.train.batch_size == 32  # untouched default


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("train:\n  lrr: 0.1\n", "train.lrr"),
        ("bogus: 1\n", "bogus"),
        ("train:\n  epochs: ten\n", "train.epochs"),
        ("train:\n  epochs: 2.5\n", "train.epochs"),
        ("preprocess:\n  fwhm_mm: [7]\n", "preprocess.fwhm_mm"),
        ("device: gpu\n", "device"),
        ("dataset:\n  split: [0.5, 0.5, 0.5]\n", "dataset.split"),
        ("train: 3\n", "train"),
        ("train:\n  weighted_loss: 1\n", "train.weighted_loss"),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, text: str, key: str) -> None:
    f = tmp_path / "c.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.").replace("[", r"\[")) as info:
        load_config(f)
    assert str(f) in str(info.value)


def test_unreadable_and_invalid_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_overrides_are_validated() -> None:
    assert load_config(overrides={"seed": 5}).seed == 5
    with pytest.raises(ConfigError, match="seed"):
        load_config(overrides={"seed": "five"})

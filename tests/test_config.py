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


@pytest.mark.parametrize(
    ("section", "change", "key"),
    [
        ("ica", {"order": 1}, "ica.order"),
        ("ica", {"tol": float("nan")}, "ica.tol"),
        ("train", {"lr": 0.0}, "train.lr"),
        ("dataset", {"split": [0.5, 0.5, 0.5]}, "dataset.split"),
        ("preprocess", {"registration_max_scale": 0.9}, "preprocess.registration_max_scale"),
        ("serve", {"abstain_below": 2.0}, "serve.abstain_below"),
    ],
)
def test_a_section_changed_in_code_is_checked_too(section: str, change: dict, key: str) -> None:
    """``dataclasses.replace`` builds the section again: no way around the checks of a config file."""
    import dataclasses

    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        dataclasses.replace(getattr(load_config(), section), **change)


def test_the_estimators_defaults_are_the_config_defaults() -> None:
    """One source for each default: the estimators' parameters come from defaults.yaml."""
    from rsnflow.ica import GroupICA
    from rsnflow.models.estimator import MapClassifier
    from rsnflow.preprocess import Preprocessor

    c = load_config()
    ica = GroupICA().get_params()
    assert (ica["n_components"], ica["migp_dim"], ica["subject_dim"], ica["fun"], ica["tol"]) == (
        c.ica.order, c.ica.migp_dim, c.ica.subject_dim, c.ica.nonlinearity, c.ica.tol,
    )  # fmt: skip
    assert ica["smoothness_fwhm_mm"] == Preprocessor().fwhm_mm == c.preprocess.fwhm_mm
    clf = MapClassifier().get_params()
    assert (clf["epochs"], list(clf["mlp_hidden"]), clf["mlp_dropout"]) == (
        c.train.epochs, c.train.mlp_hidden, c.train.mlp_dropout,
    )  # fmt: skip
    # from_config: a section in, the same parameters out
    assert GroupICA.from_config(c.ica, random_state=3).get_params() == {**ica, "random_state": 3}
    assert MapClassifier.from_config(c.train, arch="r3d18").get_params() == {**clf, "arch": "r3d18"}
    assert Preprocessor.from_config(c.preprocess).get_params() == Preprocessor().get_params()

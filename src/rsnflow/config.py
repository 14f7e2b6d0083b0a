"""Run configuration: the paper's defaults, user overrides and their validation.

The values live in one file, ``rsnflow/data/defaults.yaml``; this module only
declares their types. A user file given with ``--config`` is merged over the
defaults key by key; an unknown key or a value of the wrong type is an error
that names the key (``train.lr``), so a typo never silently falls back to a
default.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import math
import types
import typing
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

import yaml

__all__ = [
    "Config",
    "ConfigError",
    "build_section",
    "config_to_dict",
    "default_section",
    "load_config",
]


#: The three classifiers of the paper (Table 1), in its order.
ARCHS: tuple[str, ...] = ("mlp", "resnet2p5d", "r3d18")


class ConfigError(ValueError):
    """A configuration file or value is invalid."""


class _Section:
    """A configuration section that checks its values whenever one is built.

    The checks run in ``__post_init__``, so a section made by
    :func:`load_config`, by hand or by ``dataclasses.replace(config.ica,
    order=1)`` is refused alike: no path around validation. The estimators
    take a section as their parameters (``GroupICA.from_config(config.ica)``).
    """

    KEY: ClassVar[str]

    def __post_init__(self) -> None:
        _check_finite(self, f"{self.KEY}.")
        self._check()

    def _check(self) -> None:
        """Range checks of this section's values (none by default)."""


S = TypeVar("S", bound=_Section)


@dataclass(frozen=True)
class SimulateConfig(_Section):
    profile: Literal["tiny", "demo", "beijing", "multiband"]
    subjects: int | None
    volumes: int | None
    bad_subjects: list[str]
    vary: bool

    KEY: ClassVar[str] = "simulate"


@dataclass(frozen=True)
class PreprocessConfig(_Section):
    motion_reference: Literal["middle", "mean"]
    fwhm_mm: float
    highpass_cutoff_s: float
    highpass_method: Literal["fsl", "butterworth", "cosine"]
    slice_timing: bool
    registration_dof: Literal[6, 9, 12]
    registration_max_cost: float
    registration_max_scale: float
    registration_max_shear: float
    n_jobs: int

    KEY: ClassVar[str] = "preprocess"

    def _check(self) -> None:
        _at_least(0.0, ("preprocess.fwhm_mm", self.fwhm_mm))
        _above(
            0.0,
            ("preprocess.highpass_cutoff_s", self.highpass_cutoff_s),
            ("preprocess.registration_max_cost", self.registration_max_cost),
            ("preprocess.registration_max_shear", self.registration_max_shear),
        )
        _above(1.0, ("preprocess.registration_max_scale", self.registration_max_scale))
        _at_least(1, ("preprocess.n_jobs", self.n_jobs))


@dataclass(frozen=True)
class IcaConfig(_Section):
    order: int | Literal["auto"]
    migp_dim: int
    subject_dim: int | None
    migp_precision: Literal["auto", "float32", "bfloat16"]
    max_iter: int
    tol: float
    nonlinearity: Literal["logcosh", "exp", "cube"]
    n_restarts: int

    KEY: ClassVar[str] = "ica"

    def _check(self) -> None:
        _above(0.0, ("ica.tol", self.tol))
        _at_least(1, ("ica.max_iter", self.max_iter), ("ica.n_restarts", self.n_restarts))
        if isinstance(self.order, int) and self.order < 2:
            raise ConfigError(f"ica.order: must be at least 2 or 'auto', got {self.order}")
        if isinstance(self.order, int) and self.migp_dim < self.order + 2:
            raise ConfigError(
                f"ica.migp_dim: must exceed ica.order + 1 ({self.order + 1}), got {self.migp_dim}"
            )
        if self.subject_dim is not None and self.subject_dim < 1:
            raise ConfigError(f"ica.subject_dim: must be at least 1 or null, got {self.subject_dim}")


@dataclass(frozen=True)
class DualRegressionConfig(_Section):
    des_norm: bool

    KEY: ClassVar[str] = "dual_regression"


@dataclass(frozen=True)
class LabelingConfig(_Section):
    network_threshold: float
    noise_hfc: float
    noise_motion_r: float
    noise_csf_fraction: float
    noise_edge_fraction: float
    noise_wm_fraction: float
    noise_spread: float

    KEY: ClassVar[str] = "labeling"

    def _check(self) -> None:
        _within(
            0.0,
            1.0,
            *((f"labeling.{f.name}", getattr(self, f.name)) for f in dataclasses.fields(self)),
        )


@dataclass(frozen=True)
class DatasetConfig(_Section):
    split: list[float]
    dtype: Literal["float16", "float32"]
    projection_size: int

    KEY: ClassVar[str] = "dataset"

    def _check(self) -> None:
        split = self.split
        if len(split) != 3 or any(f <= 0 for f in split) or abs(sum(split) - 1.0) > 1e-6:
            raise ConfigError(f"dataset.split: expected three positive fractions summing to 1, got {split}")
        _at_least(1, ("dataset.projection_size", self.projection_size))


@dataclass(frozen=True)
class TrainConfig(_Section):
    optimizer: Literal["sgd", "adam"]
    lr: float
    momentum: float
    batch_size: int
    epochs: int
    weighted_loss: bool
    early_stopping_patience: int
    mlp_hidden: list[int]
    mlp_dropout: float
    num_workers: int
    cpu_precision: Literal["auto", "float32", "bfloat16"]
    noise_maps: float
    whole_networks: float

    KEY: ClassVar[str] = "train"

    def _check(self) -> None:
        _above(0.0, ("train.lr", self.lr))
        _at_least(1, ("train.batch_size", self.batch_size), ("train.epochs", self.epochs))
        _at_least(
            0,
            ("train.early_stopping_patience", self.early_stopping_patience),
            ("train.num_workers", self.num_workers),
        )
        if not 0.0 <= self.mlp_dropout < 1.0:
            raise ConfigError(f"train.mlp_dropout: must be in [0, 1), got {self.mlp_dropout}")
        if not 0.0 <= self.momentum < 1.0:
            raise ConfigError(f"train.momentum: must be in [0, 1), got {self.momentum}")
        for key in ("noise_maps", "whole_networks"):
            if not 0.0 <= getattr(self, key) <= 5.0:
                raise ConfigError(
                    f"train.{key}: must be in [0, 5] (a share of the training maps), got {getattr(self, key)}"
                )
        if any(h < 1 for h in self.mlp_hidden) or not self.mlp_hidden:
            raise ConfigError(
                f"train.mlp_hidden: expected one or more layer widths >= 1, got {self.mlp_hidden}"
            )


@dataclass(frozen=True)
class EvaluateConfig(_Section):
    abstain_threshold: float
    champion_metric: str
    max_maps_per_split: int | None

    KEY: ClassVar[str] = "evaluate"

    def _check(self) -> None:
        _within(0.0, 1.0, ("evaluate.abstain_threshold", self.abstain_threshold))


@dataclass(frozen=True)
class TrackingConfig(_Section):
    uri: str | None
    experiment: str
    registered_model: str

    KEY: ClassVar[str] = "tracking"


@dataclass(frozen=True)
class ServeConfig(_Section):
    name: str
    host: str
    port: int
    max_request_mb: float
    max_batch: int
    abstain_below: float | None
    atypical_below: float | None
    group_weight: float
    group_atypical_below: float
    group_network_below: float

    KEY: ClassVar[str] = "serve"

    def _check(self) -> None:
        _above(0.0, ("serve.max_request_mb", self.max_request_mb))
        _at_least(1, ("serve.max_batch", self.max_batch), ("serve.port", self.port))
        if self.abstain_below is not None:
            _within(0.0, 1.0, ("serve.abstain_below", self.abstain_below))
        if self.atypical_below is not None:
            _within(0.0, 1.0, ("serve.atypical_below", self.atypical_below))
        _within(0.0, 5.0, ("serve.group_weight", self.group_weight))
        _within(
            0.0,
            1.0,
            ("serve.group_atypical_below", self.group_atypical_below),
            ("serve.group_network_below", self.group_network_below),
        )


@dataclass(frozen=True)
class BudgetConfig:
    """What ``make run`` gives the models on one simulated profile (pipeline arguments)."""

    mlp_epochs: int
    resnet_epochs: int
    resnet_max_train_samples: int
    r3d_epochs: int
    r3d_max_train_samples: int
    eval_max_maps: int


@dataclass(frozen=True)
class DemoBudgetConfig(_Section):
    tiny: BudgetConfig
    demo: BudgetConfig

    KEY: ClassVar[str] = "demo_budget"

    def _check(self) -> None:
        for profile in dataclasses.fields(self):
            budget = dataclasses.asdict(getattr(self, profile.name))
            _at_least(1, *((f"demo_budget.{profile.name}.{k}", v) for k, v in budget.items()))


@dataclass(frozen=True)
class Config:
    """The effective configuration of a run (defaults merged with overrides).

    Attributes
    ----------
    seed : int
        Seed every random step derives its generator from (at least 0).
    device : {"auto", "cpu", "cuda"}
        Where torch computes; ``auto`` takes CUDA when present.
    simulate : SimulateConfig
        The simulated cohort (``sim://`` inputs).
    preprocess : PreprocessConfig
        Motion correction, smoothing, temporal filter and registration.
    ica : IcaConfig
        Group ICA: model order, MIGP and FastICA settings.
    dual_regression : DualRegressionConfig
        Dual regression of the group maps onto each subject.
    labeling : LabelingConfig
        Thresholds of the automatic component labels.
    dataset : DatasetConfig
        Train/validation/test split and storage of the maps.
    train : TrainConfig
        Classifier training.
    evaluate : EvaluateConfig
        Evaluation and the choice of the champion model.
    tracking : TrackingConfig
        MLflow tracking and model registry.
    serve : ServeConfig
        The model server.
    demo_budget : DemoBudgetConfig
        Training budgets of ``make run`` on the ``tiny`` and ``demo`` profiles.
    """

    seed: int
    device: Literal["auto", "cpu", "cuda"]
    simulate: SimulateConfig
    preprocess: PreprocessConfig
    ica: IcaConfig
    dual_regression: DualRegressionConfig
    labeling: LabelingConfig
    dataset: DatasetConfig
    train: TrainConfig
    evaluate: EvaluateConfig
    tracking: TrackingConfig
    serve: ServeConfig
    demo_budget: DemoBudgetConfig

    def __post_init__(self) -> None:
        # Each section checked itself when it was built; the top-level seed is the one value here.
        _at_least(0, ("seed", self.seed))


def _check_finite(node: Any, prefix: str) -> None:
    """Refuse NaN and infinities anywhere (YAML reads ``.inf`` and ``.nan`` as floats), naming the key."""
    for f in dataclasses.fields(node):
        value = getattr(node, f.name)
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            _check_finite(value, f"{key}.")
        for v in value if isinstance(value, list) else [value]:
            if isinstance(v, float) and not math.isfinite(v):
                raise ConfigError(f"{key}: must be a finite number, got {value}")


def _above(low: float, *pairs: tuple[str, float]) -> None:
    for key, value in pairs:
        if not value > low:
            raise ConfigError(f"{key}: must be greater than {low:g}, got {value}")


def _at_least(low: float, *pairs: tuple[str, float]) -> None:
    for key, value in pairs:
        if value < low:
            raise ConfigError(f"{key}: must be at least {low:g}, got {value}")


def _within(low: float, high: float, *pairs: tuple[str, float]) -> None:
    for key, value in pairs:
        if not low <= value <= high:
            raise ConfigError(f"{key}: must be in [{low:g}, {high:g}], got {value}")


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Return ``value`` checked against the type ``tp``; raise naming ``key``."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        if isinstance(value, float) and value.is_integer() and int(value) in typing.get_args(tp):
            value = int(value)
        if value in typing.get_args(tp) and type(value) in {type(a) for a in typing.get_args(tp)}:
            return value
    elif origin in (typing.Union, types.UnionType):
        for option in typing.get_args(tp):
            try:
                return _coerce(value, option, key)
            except ConfigError:
                continue
    elif origin is list:
        if isinstance(value, list):
            (item_type,) = typing.get_args(tp)
            return [_coerce(v, item_type, f"{key}[{i}]") for i, v in enumerate(value)]
    elif tp is type(None):
        if value is None:
            return None
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        # JSON/protobuf transports (KFP parameters) carry every number as a double.
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        # PyYAML (YAML 1.1) reads `lr: 1e-3` as the string "1e-3": take it as meant.
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, str):
            return value
    elif dataclasses.is_dataclass(tp):
        return _build(tp, value, key)
    raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r} ({type(value).__name__})")


def _build(cls: Any, data: Any, prefix: str) -> Any:
    if not isinstance(data, dict):
        where = prefix or "config"
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in names:
            full = f"{prefix}.{key}" if prefix else str(key)
            raise ConfigError(f"{full}: unknown key (valid keys: {', '.join(names)})")
    kwargs = {}
    for name in names:
        full = f"{prefix}.{name}" if prefix else name
        if name not in data:
            raise ConfigError(f"{full}: missing")
        kwargs[name] = _coerce(data[name], hints[name], full)
    return cls(**kwargs)


def _merge(base: dict[str, Any], override: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        full = f"{prefix}.{key}" if prefix else str(key)
        if key not in base:
            raise ConfigError(f"{full}: unknown key (valid keys: {', '.join(base)})")
        if isinstance(base[key], dict):
            if not isinstance(value, dict):
                raise ConfigError(f"{full}: expected a mapping, got {value!r}")
            merged[key] = _merge(base[key], value, full)
        else:
            merged[key] = value
    return merged


def default_config_dict() -> dict[str, Any]:
    """The defaults file as a plain dictionary (a fresh copy: callers may change it)."""
    return copy.deepcopy(_defaults_text_parsed())


@functools.cache
def _defaults_text_parsed() -> dict[str, Any]:
    text = resources.files("rsnflow.data").joinpath("defaults.yaml").read_text()
    data: dict[str, Any] = yaml.safe_load(text)
    return data


def _read_user_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file ({exc.strerror})") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Build the effective configuration.

    Parameters
    ----------
    path
        Optional YAML file whose keys override the defaults.
    overrides
        Optional nested mapping applied last (command-line options).

    Returns
    -------
    Config
        The validated configuration.

    Raises
    ------
    ConfigError
        For an unreadable file, an unknown key or a value of the wrong type;
        the message names the file or the dotted key.
    """
    data = default_config_dict()
    if path is not None:
        p = Path(path)
        try:
            data = _merge(data, _read_user_file(p))
            _build(Config, data, "")  # validate here so errors name the file
        except ConfigError as exc:
            msg = str(exc)
            raise ConfigError(msg if msg.startswith(str(p)) else f"{p}: {msg}") from None
    if overrides:
        data = _merge(data, overrides)
    return _build(Config, data, "")


def default_section(cls: type[S]) -> S:
    """The section ``cls`` with the values of ``defaults.yaml`` (the estimators' defaults).

    ``cls`` is a section class, such as :class:`PreprocessConfig`.

    Returns
    -------
    S
        The section, validated.
    """
    return build_section(cls, default_config_dict()[cls.KEY])


def build_section(cls: type[S], values: dict[str, Any]) -> S:
    """A section from plain values, each checked for its type and range.

    ``cls`` is the section class, such as :class:`TrainConfig`.

    Parameters
    ----------
    values
        Every field of the section.

    Returns
    -------
    S
        The section.

    Raises
    ------
    ConfigError
        For a missing or unknown field, a wrong type or a value out of range;
        the message names the dotted key (``train.lr``).
    """
    section: S = _build(cls, values, cls.KEY)
    return section


def config_to_dict(config: Config) -> dict[str, Any]:
    """The configuration as plain data (for YAML, JSON, MLflow params).

    Parameters
    ----------
    config : Config
        The configuration.

    Returns
    -------
    dict
        Nested dictionaries of the sections and their values (``dataclasses.asdict``).
    """
    return dataclasses.asdict(config)

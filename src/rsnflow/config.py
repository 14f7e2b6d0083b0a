"""Run configuration: the paper's defaults, user overrides and their validation.

The values live in one file, ``rsnflow/data/defaults.yaml``; this module only
declares their types. A user file given with ``--config`` is merged over the
defaults key by key; an unknown key or a value of the wrong type is an error
that names the key (``train.lr``), so a typo never silently falls back to a
default.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml

__all__ = [
    "Config",
    "ConfigError",
    "config_to_dict",
    "load_config",
]


#: The three classifiers of the paper (Table 1), in its order.
ARCHS: tuple[str, ...] = ("mlp", "resnet2p5d", "r3d18")


class ConfigError(ValueError):
    """A configuration file or value is invalid."""


@dataclass(frozen=True)
class SimulateConfig:
    profile: Literal["tiny", "demo", "beijing", "multiband"]
    subjects: int | None
    volumes: int | None
    bad_subjects: list[str]


@dataclass(frozen=True)
class PreprocessConfig:
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


@dataclass(frozen=True)
class IcaConfig:
    order: int | Literal["auto"]
    migp_dim: int
    subject_dim: int | None
    max_iter: int
    tol: float
    nonlinearity: Literal["logcosh", "exp", "cube"]
    n_restarts: int


@dataclass(frozen=True)
class DualRegressionConfig:
    des_norm: bool


@dataclass(frozen=True)
class LabelingConfig:
    network_threshold: float
    noise_hfc: float
    noise_motion_r: float
    noise_csf_fraction: float
    noise_edge_fraction: float
    noise_wm_fraction: float
    noise_spread: float


@dataclass(frozen=True)
class DatasetConfig:
    split: list[float]
    dtype: Literal["float16", "float32"]
    projection_size: int


@dataclass(frozen=True)
class TrainConfig:
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


@dataclass(frozen=True)
class EvaluateConfig:
    abstain_threshold: float
    champion_metric: str
    max_maps_per_split: int | None


@dataclass(frozen=True)
class TrackingConfig:
    uri: str | None
    experiment: str
    registered_model: str


@dataclass(frozen=True)
class ServeConfig:
    name: str
    host: str
    port: int
    max_request_mb: float
    max_batch: int
    abstain_below: float


@dataclass(frozen=True)
class Config:
    """The effective configuration of a run (defaults merged with overrides)."""

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

    def __post_init__(self) -> None:
        _check_finite(self, "")
        split = self.dataset.split
        if len(split) != 3 or any(f <= 0 for f in split) or abs(sum(split) - 1.0) > 1e-6:
            raise ConfigError(f"dataset.split: expected three positive fractions summing to 1, got {split}")
        p, ica, t = self.preprocess, self.ica, self.train
        _at_least(0.0, ("preprocess.fwhm_mm", p.fwhm_mm))
        _above(
            0.0,
            ("preprocess.highpass_cutoff_s", p.highpass_cutoff_s),
            ("preprocess.registration_max_cost", p.registration_max_cost),
            ("preprocess.registration_max_shear", p.registration_max_shear),
            ("train.lr", t.lr),
            ("ica.tol", ica.tol),
            ("serve.max_request_mb", self.serve.max_request_mb),
        )
        _above(1.0, ("preprocess.registration_max_scale", p.registration_max_scale))
        _at_least(
            1,
            ("train.batch_size", t.batch_size),
            ("train.epochs", t.epochs),
            ("preprocess.n_jobs", p.n_jobs),
            ("ica.max_iter", ica.max_iter),
            ("ica.n_restarts", ica.n_restarts),
            ("serve.max_batch", self.serve.max_batch),
            ("serve.port", self.serve.port),
            ("dataset.projection_size", self.dataset.projection_size),
        )
        _at_least(
            0,
            ("train.early_stopping_patience", t.early_stopping_patience),
            ("train.num_workers", t.num_workers),
        )
        if isinstance(ica.order, int) and ica.order < 2:
            raise ConfigError(f"ica.order: must be at least 2 or 'auto', got {ica.order}")
        if isinstance(ica.order, int) and ica.migp_dim < ica.order + 2:
            raise ConfigError(
                f"ica.migp_dim: must exceed ica.order + 1 ({ica.order + 1}), got {ica.migp_dim}"
            )
        if ica.subject_dim is not None and ica.subject_dim < 1:
            raise ConfigError(f"ica.subject_dim: must be at least 1 or null, got {ica.subject_dim}")
        lab = self.labeling
        _within(
            0.0,
            1.0,
            ("serve.abstain_below", self.serve.abstain_below),
            ("evaluate.abstain_threshold", self.evaluate.abstain_threshold),
            ("labeling.network_threshold", lab.network_threshold),
            ("labeling.noise_hfc", lab.noise_hfc),
            ("labeling.noise_motion_r", lab.noise_motion_r),
            ("labeling.noise_csf_fraction", lab.noise_csf_fraction),
            ("labeling.noise_edge_fraction", lab.noise_edge_fraction),
            ("labeling.noise_wm_fraction", lab.noise_wm_fraction),
            ("labeling.noise_spread", lab.noise_spread),
        )
        if not 0.0 <= t.mlp_dropout < 1.0:
            raise ConfigError(f"train.mlp_dropout: must be in [0, 1), got {t.mlp_dropout}")
        if not 0.0 <= t.momentum < 1.0:
            raise ConfigError(f"train.momentum: must be in [0, 1), got {t.momentum}")
        if any(h < 1 for h in t.mlp_hidden) or not t.mlp_hidden:
            raise ConfigError(f"train.mlp_hidden: expected one or more layer widths >= 1, got {t.mlp_hidden}")


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
    """The defaults file as a plain dictionary."""
    text = resources.files("rsnflow.data").joinpath("defaults.yaml").read_text()
    return yaml.safe_load(text)


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


def config_to_dict(config: Config) -> dict[str, Any]:
    """The configuration as plain data (for YAML, JSON, MLflow params)."""
    return dataclasses.asdict(config)

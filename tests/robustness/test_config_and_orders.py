"""Defects 11 and 12: every config key does something; a model order the data cannot hold is refused."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from rsnflow.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[2]


def _leaves(node: dict, prefix: str = "") -> list[str]:
    out = []
    for key, value in node.items():
        out += _leaves(value, f"{prefix}{key}.") if isinstance(value, dict) else [f"{prefix}{key}"]
    return out


def test_every_key_in_the_defaults_is_read_by_the_code() -> None:
    defaults = yaml.safe_load((ROOT / "src/rsnflow/data/defaults.yaml").read_text())
    code = "\n".join(
        p.read_text()
        for base in ("src/rsnflow", "kfp_pipelines")
        for p in (ROOT / base).rglob("*.py")
        if p.name != "config.py"
    )
    # demo_budget's keys are the pipeline's parameters (run_local passes them by name).
    pipeline = (ROOT / "kfp_pipelines/rsn_pipeline.py").read_text()
    unread = [
        key
        for key in _leaves(defaults)
        if not re.search(rf"\.{key.split('.')[-1]}\b", code)
        and not (key.startswith("demo_budget.") and re.search(rf"\b{key.split('.')[-1]}: int\b", pipeline))
    ]
    assert unread == [], f"keys in defaults.yaml that no code reads: {unread}"


def test_the_removed_do_nothing_keys_are_refused(tmp_path: Path) -> None:
    for text, key in (
        ("preprocess:\n  registration_cost: nmi\n", "preprocess.registration_cost"),
        ("space:\n  resolution_mm: 4\n", "space"),
        ("labeling:\n  n_classes: 58\n", "labeling.n_classes"),
    ):
        f = tmp_path / "c.yaml"
        f.write_text(text)
        with pytest.raises(ConfigError, match=re.escape(key) + ": unknown key"):
            load_config(f)


def test_the_tiny_profile_gets_an_order_its_runs_hold(caplog) -> None:
    from kfp_pipelines.local import fit_order_to_profile

    with caplog.at_level("INFO", logger="rsnflow"):
        config = fit_order_to_profile(load_config(overrides={"simulate": {"profile": "tiny"}}))
    assert config.ica.order == 20  # 60 volumes: a third
    assert "too short for ica.order 100: using 20" in caplog.text
    demo = load_config(overrides={"simulate": {"profile": "demo"}})
    assert fit_order_to_profile(demo) is demo


def test_an_order_the_tiny_runs_cannot_hold_is_refused_at_the_start() -> None:
    from kfp_pipelines.local import fit_order_to_profile

    config = load_config(overrides={"simulate": {"profile": "tiny"}, "ica": {"order": 70}})
    with pytest.raises(ConfigError, match=r"^ica\.order: 70 components need runs of more than 71 volumes"):
        fit_order_to_profile(config)


def test_a_varied_cohort_is_checked_against_the_volumes_its_drawn_tr_gives() -> None:
    from kfp_pipelines.local import fit_order_to_profile

    # demo runs of 120 volumes at TR 2 s (240 s): seed 3 draws a TR that gives 94, seed 4 one that gives 202
    sim = {"profile": "demo", "volumes": 120, "vary": True}
    ok = load_config(overrides={"simulate": sim, "ica": {"order": 95}, "seed": 4})
    assert fit_order_to_profile(ok) is ok
    short = load_config(overrides={"simulate": sim, "ica": {"order": 95}, "seed": 3})
    with pytest.raises(ConfigError, match=r"^ica\.order: 95 components need runs of more than 96 volumes"):
        fit_order_to_profile(short)


def _artifact(path: Path, **metadata: str):
    from kfp.dsl import Dataset

    art = Dataset(uri=str(path), metadata=dict(metadata))
    return art


def test_the_pipeline_stops_where_every_subject_failed(tmp_path: Path) -> None:
    from kfp_pipelines import components as c

    parts = [
        _artifact(
            tmp_path / "a", subject="01", status="failed: sub-01: 60 volumes: dual regression needs more"
        ),
        _artifact(tmp_path / "b", subject="02", status="skipped: not preprocessed"),
    ]
    with pytest.raises(
        RuntimeError, match=r"dual regression failed for every subject.*sub-01: failed: .*60 volumes"
    ):
        c.label.python_func(group=_artifact(tmp_path / "g"), maps=parts, expert_labels="", overrides={},
                            labels=_artifact(tmp_path / "l"), review=_artifact(tmp_path / "r"))  # fmt: skip
    pre = [_artifact(tmp_path / "p", subject="01", status="failed: field of view too small")]
    with pytest.raises(RuntimeError, match=r"preprocessing failed for every subject.*field of view"):
        c.group_ica.python_func(preprocessed=pre, seed=0, overrides={}, derivatives=_artifact(tmp_path / "d"),
                                report=_artifact(tmp_path / "rep"))  # fmt: skip

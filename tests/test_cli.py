from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rsnflow import __version__
from rsnflow.cli import EXIT_ERROR, build_parser, main

DESIGN_FORMS = [
    "simulate",
    "preprocess",
    "group-ica",
    "dual-regression",
    "label",
    "dataset",
    "train",
    "evaluate",
    "serve",
    "pipeline",
    "run",
    "config",
]


def test_help_lists_every_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for name in DESIGN_FORMS:
        assert name in out


def test_console_script_version() -> None:
    out = subprocess.run([sys.executable, "-m", "rsnflow.cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0
    assert __version__ in out.stdout


def test_design_forms_parse() -> None:
    p = build_parser()
    forms = [
        "simulate out --profile tiny --seed 3 --subjects 2",
        "preprocess bids deriv --participant-label 01 02",
        "group-ica deriv --order 100",
        "dual-regression deriv",
        "label deriv --expert-labels x.tsv",
        "dataset deriv ds",
        "train ds m --arch mlp --epochs 2",
        "evaluate ds m1 m2 --out rep",
        "serve models:/x@champion --port 8081 --host 127.0.0.1",
        "pipeline compile out.yaml",
        "run --profile demo --config c.yaml --work-dir w",
        "config show",
    ]
    for form in forms:
        p.parse_args(form.split())


def test_common_options_before_or_after_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--seed", "9", "config", "show"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["seed"] == 9
    assert main(["config", "show", "--seed", "11", "--device", "cpu"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert (shown["seed"], shown["device"]) == (11, "cpu")


def test_bad_config_file_exits_nonzero(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("train:\n  epochz: 1\n")
    assert main(["config", "show", "--config", str(f)]) == EXIT_ERROR
    assert "train.epochz" in capfd.readouterr().err


def test_simulate_command_writes_a_cohort(tmp_path: Path) -> None:
    out = tmp_path / "bids"
    assert (
        main(
            [
                "simulate",
                str(out),
                "--profile",
                "tiny",
                "--subjects",
                "1",
                "--seed",
                "1",
                "--figures",
                str(tmp_path / "fig"),
            ]
        )
        == 0
    )
    assert (out / "sub-01" / "func" / "sub-01_task-rest_bold.nii.gz").exists()
    assert sorted(p.name for p in (tmp_path / "fig").iterdir()) == [
        "sim_motion.png",
        "sim_networks.png",
        "sim_raw_slice.png",
    ]

"""The local run's helpers (the run itself: tests/kfp/test_pipeline.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kfp_pipelines.local import _overrides, demo_budget, run_report
from rsnflow.config import load_config


def test_overrides_are_the_differences_from_the_defaults(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("ica:\n  order: 20\nsimulate:\n  subjects: 4\n")
    config = load_config(f, {"seed": 5})
    assert _overrides(config) == {"seed": 5, "ica": {"order": 20}, "simulate": {"subjects": 4}}
    assert _overrides(load_config()) == {}


def test_demo_budget_comes_from_the_configuration(tmp_path: Path) -> None:
    demo = demo_budget(load_config())
    assert demo["r3d_max_train_samples"] > 0
    # the MLP trains on the whole split, longer than the paper's 25 epochs (a smaller split)
    assert "mlp_max_train_samples" not in demo and demo["mlp_epochs"] == 50
    # the real-size profiles train with the paper's settings; a user file can change the budget
    assert demo_budget(load_config(overrides={"simulate": {"profile": "beijing"}})) == {}
    f = tmp_path / "c.yaml"
    f.write_text("demo_budget:\n  demo:\n    r3d_epochs: 4\n")
    assert demo_budget(load_config(f))["r3d_epochs"] == 4


def test_run_report_links_every_stage_and_says_what_was_skipped(tmp_path: Path) -> None:
    pages = {}
    for name in ("ingest.html", "qc1.html", "qc2.html", "ica.html", "review.html", "eval.html"):
        pages[name] = tmp_path / "stages" / name
        pages[name].parent.mkdir(exist_ok=True)
        pages[name].write_text("<html></html>")
    (tmp_path / "table").mkdir()
    (tmp_path / "table" / "table1.md").write_text("# Table 1\n")
    rows = [{"model": "mlp", "test acc": 0.96, "trained on": "1100 of 1100 maps, 50 epochs"},
            {"model": "r3d18", "test acc": 0.01, "trained on": "32 of 1100 maps, 1 epochs"}]  # fmt: skip
    metrics = {"champion": "mlp", "champion_rule": "max val_macro_f1", "table1": rows}
    (tmp_path / "table" / "metrics.json").write_text(json.dumps(metrics))
    ingest = tmp_path / "subjects.tsv"
    ingest.write_text("participant_id\tstatus\treason\nsub-01\tok\t\nsub-02\tfailed\tNaN values\n")
    out = run_report(
        tmp_path / "report" / "page.html", pages["ingest.html"], ingest, [str(pages["qc1.html"]),
        str(pages["qc2.html"])], pages["ica.html"], pages["review.html"], tmp_path / "table" / "table1.md",
        pages["eval.html"], ["ok", "failed: too short"],
    )  # fmt: skip
    text = out.read_text()
    assert "Table 1" in text and "0.96" in text
    for name in pages:
        assert f"../stages/{name}" in text
    assert "sub-02: NaN values" in text and "failed: too short" in text
    # the budget rows are named, and where the converged figures are
    assert "Trained on a budget" in text and "r3d18 (32 of 1100 maps, 1 epochs)" in text
    assert "mlp (1100 of 1100" not in text and "bench_table1.py" in text


def test_budget_note_only_for_rows_short_of_the_papers_settings() -> None:
    from kfp_pipelines.local import budget_note

    full = {"model": "resnet2p5d", "trained on": "1100 of 1100 maps, 25 epochs"}
    assert budget_note([full]) == ""
    short = {**full, "trained on": "1100 of 1100 maps, 10 epochs"}
    assert "resnet2p5d (1100 of 1100 maps, 10 epochs)" in budget_note([short])
    assert budget_note([{"model": "x", "trained on": "n/a"}]) == ""  # an older metrics.json: nothing said


def test_label_only_refuses_a_model_without_reference_maps_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from rsnflow.cli import EXIT_ERROR, main

    model = tmp_path / "old-model"
    model.mkdir()
    (model / "model.json").write_text("{}")
    work = tmp_path / "work"
    assert main(["run", "--label-only", str(model), "--work-dir", str(work)]) == EXIT_ERROR
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "old-model: no reference maps in the model" in err[0]
    assert not (work / "pipeline_root").exists()  # refused before any task ran
    assert main(["run", "--endpoint", "http://127.0.0.1:9", "--work-dir", str(work)]) == EXIT_ERROR
    assert "--endpoint: only with --label-only" in capsys.readouterr().err

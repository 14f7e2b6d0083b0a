from __future__ import annotations

import json
from pathlib import Path

from rsnflow.cli import main


def test_run_executes_the_available_stages(tmp_path: Path, capsys) -> None:
    work = tmp_path / "work"
    cfg = tmp_path / "small.yaml"
    cfg.write_text("ica:\n  order: 20\n")  # 2 tiny subjects hold 120 time points, too few for 100
    argv = [
        "run",
        "--profile",
        "tiny",
        "--subjects",
        "2",
        "--seed",
        "3",
        "--work-dir",
        str(work),
        "--config",
        str(cfg),
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    index = work / "report" / "index.html"
    assert str(index) in out
    page = index.read_text()
    assert "simulate" in page and "ingest" in page
    assert "preprocess" in page
    assert "not available yet (issue #6)" in page
    assert "montage of the 20 components" in page
    assert "sub-01: preprocessing QC" in page
    assert (work / "derivatives" / "rsnflow" / "preprocess_summary.tsv").exists()
    assert page.count("data:image/png;base64") == 3
    prov = json.loads((work / "provenance.json").read_text())
    assert prov["parameters"]["seed"] == 3
    assert prov["packages"]["torch"].startswith("2.14.1")
    assert (work / "ingest" / "subjects.tsv").exists()

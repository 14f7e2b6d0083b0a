"""One line per task on the terminal, everything in the log file (kfp.local's own message formats)."""

from __future__ import annotations

import io
import logging
import sys
import warnings
from pathlib import Path

from kfp.local import logging_utils, status

from kfp import dsl
from kfp_pipelines.task_log import task_log


def _kfp_task(name: str, ok: bool, outputs: dict) -> None:
    """What kfp.local's task dispatcher logs and prints for one task, with its own helpers."""
    with logging_utils.local_logger_context():
        shown = logging_utils.format_task_name(name)
        logging.info(f"Executing task {shown}")
        with logging_utils.indented_print():
            print('{"executor": "input JSON, many lines"}')
        result = status.Status.SUCCESS if ok else status.Status.FAILURE
        logging.info(f"Task {shown} finished with status {logging_utils.format_status(result)}")
        if ok:
            logging.info(
                "\n".join([f"Task {shown} outputs:", *logging_utils.make_log_lines_for_outputs(outputs)])
            )


def _artifact(**metadata: str) -> dsl.Dataset:
    art = dsl.Dataset(name="derivatives", uri="/tmp/x", metadata=metadata)
    return art


def test_one_line_per_task_and_the_whole_output_in_the_file(tmp_path: Path, monkeypatch) -> None:
    terminal = io.StringIO()
    monkeypatch.setattr(sys, "stdout", terminal)
    log = tmp_path / "kfp.log"
    with task_log(log) as tasks:
        warnings.warn("Task 'ingest': settings ['cpu_request'] have no effect", UserWarning, stacklevel=1)
        _kfp_task("ingest", True, {"Output": ["01", "02"]})
        _kfp_task("preprocess", True, {"derivatives": _artifact(subject="01", status="ok"), "Output": "ok"})
        _kfp_task("preprocess", True, {"derivatives": _artifact(subject="02", status="failed: NaN values")})
        _kfp_task("train-2", True, {"model": _artifact(arch="r3d18", mlflow_version="3")})
        _kfp_task("group-ica", False, {})
    assert sys.stdout is terminal
    lines = terminal.getvalue().splitlines()
    assert len(lines) == 5 and tasks.total == 16  # 2 x (preprocess, dual regression) and 12 more
    assert lines[0].startswith("[ 1/16] ingest ") and lines[0].endswith("s  ok")
    assert "preprocess sub-01" in lines[1] and lines[1].endswith(" ok")
    assert "preprocess sub-02" in lines[2] and lines[2].endswith("failed: NaN values")
    assert "train r3d18" in lines[3] and lines[3].endswith(" ok")
    assert "group-ica" in lines[4] and lines[4].endswith("FAILED")
    text = log.read_text()
    assert "have no effect" in text and "have no effect" not in terminal.getvalue()
    assert "executor" in text and "'group-ica'" in text and "\x1b[" in text  # kept as printed


def test_verbose_keeps_everything_on_the_terminal(tmp_path: Path, monkeypatch) -> None:
    terminal = io.StringIO()
    monkeypatch.setattr(sys, "stdout", terminal)
    with task_log(tmp_path / "kfp.log", verbose=True):
        _kfp_task("ingest", True, {"Output": ["01"]})
    assert "executor" in terminal.getvalue() and "[1/" not in terminal.getvalue()

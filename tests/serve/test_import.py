"""Importing rsnflow.serve (kserve) from a command whose arguments are rsnflow's."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    "argv", [["--config", "c.yaml", "run"], ["run", "--label-only", "m", "--config", "c.yaml"]]
)
def test_kserve_does_not_read_rsnflow_arguments(argv: list[str]) -> None:
    # kserve parses sys.argv when first imported, and took ``--config`` for its ``--configure_logging``:
    # ``rsnflow --config FILE run --label-only MODEL`` exited with kserve's usage.
    code = "import sys; import rsnflow.serve; print(sys.argv[1:])"
    done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-400:]
    assert done.stdout.strip() == str(argv)  # and the arguments are left as they were

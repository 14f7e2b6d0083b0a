"""docs/python.md's example runs as written (in a temporary folder) and prints what it says."""

from __future__ import annotations

import contextlib
import io
import os
import re
from pathlib import Path

import pytest

DOC = Path(__file__).parents[1] / "docs" / "python.md"


@pytest.mark.slow
def test_python_page_example_runs(tmp_path: Path) -> None:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) == 1
    out = io.StringIO()
    cwd = Path.cwd()
    os.chdir(tmp_path)
    try:
        with contextlib.redirect_stdout(out):
            exec(compile(blocks[0], str(DOC), "exec"), {"__name__": "docs_example"})
    finally:
        os.chdir(cwd)
    lines = out.getvalue().splitlines()
    assert re.match(r"\(45, 54, 45, 80\) \['trans_x', 'trans_y', 'trans_z'\] 0\.9\d", lines[0]), lines[0]
    assert lines[1] == "(45, 54, 45, 10)"
    assert re.match(r"\(80, 10\) \(10, \d+\)", lines[3])
    assert (tmp_path / "rsnflow-example" / "derivatives" / "rsnflow" / "preprocess_summary.tsv").exists()

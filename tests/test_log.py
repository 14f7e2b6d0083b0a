"""Progress bars: on a terminal only."""

from __future__ import annotations

import io
import logging
import sys

import pytest

from rsnflow.log import progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("stream", "setting", "drawn"),
    [
        (io.StringIO(), "", False),  # a CI log or a pod's stderr: no redraws
        (_Terminal(), "", True),
        (_Terminal(), "0", False),
        (io.StringIO(), "1", True),
    ],
)
def test_bars_only_where_asked_or_on_a_terminal(
    monkeypatch: pytest.MonkeyPatch, stream: io.StringIO, setting: str, drawn: bool
) -> None:
    monkeypatch.setattr(logging.getLogger("rsnflow"), "level", logging.INFO)
    monkeypatch.setattr(sys, "stderr", stream)
    monkeypatch.setenv("RSNFLOW_PROGRESS", setting)
    assert list(progress(range(3), desc="subjects")) == [0, 1, 2]
    assert ("subjects" in stream.getvalue()) is drawn

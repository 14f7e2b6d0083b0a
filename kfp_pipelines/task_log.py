"""A readable local run: kfp.local's output to a log file, one line per task on the terminal.

kfp.local prints its executor input and output JSON, each task's streamed
output and its artifacts' metadata: thousands of lines for the demo, 2% of
them rsnflow's own. :func:`task_log` sends all of it to ``WORK/kfp.log`` and
prints one line per finished task instead::

    [ 3/41] preprocess sub-02          5.1 s  ok
    [ 4/41] preprocess sub-01          5.6 s  failed: NaN values
    ...

The task count is known once ingest has listed the subjects (a subject is one
preprocess and one dual-regression task). Python warnings raised while the
pipeline runs (kfp.local warns twice per task that the local runner ignores
resource requests and the image) go to the log file too. ``verbose`` keeps
everything on the terminal as well.
"""

from __future__ import annotations

import ast
import contextlib
import io
import re
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TextIO

__all__ = ["TaskLog", "task_log"]

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_START = re.compile(r"Executing task '([^']+)'")
_FINISH = re.compile(r"Task '([^']+)' finished with status (\w+)")
_OUTPUTS = re.compile(r"Task '([^']+)' (outputs:|has no outputs)")
_META = re.compile(r"metadata=(\{.*?\}) \)")
_SUBJECTS = re.compile(r"^\s+Output: (\[.*\])\s*$", re.M)
#: Tasks besides the two per subject: resolve-cohort, ingest, group ICA, label, dataset, three trainings,
#: evaluate, register, report, mark-processed.
_FIXED_TASKS = 12


class TaskLog(io.TextIOBase):
    """A text stream that keeps everything in a file and reports each task's end in one line.

    Parameters
    ----------
    path
        The log file (written from the start; kept after the run).
    terminal
        Where the one-line summaries go.
    verbose
        Also copy everything to ``terminal``.
    """

    def __init__(self, path: Path, terminal: IO[str], verbose: bool = False) -> None:
        super().__init__()
        self.path = path
        self._file = path.open("w", buffering=1)
        self._terminal = terminal
        self._verbose = verbose
        self._lock = threading.Lock()
        # Iterations of a ParallelFor share their task's name: starts queue per name, and a
        # task's duration is taken from the oldest start still open (approximate when they overlap).
        self._started: dict[str, list[float]] = {}
        self._failed: set[str] = set()
        self._seconds: dict[str, float] = {}
        self.done = 0
        self.total: int | None = None

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        """Log ``text``; a task's start, end or outputs in it update the terminal.

        Parameters
        ----------
        text
            What kfp.local printed (one logging record or one line of a task's output).

        Returns
        -------
        int
            The characters written.
        """
        with self._lock:
            self._file.write(text)
            if self._verbose:
                self._terminal.write(text)
            self._parse(_ANSI.sub("", text))
        return len(text)

    def log_only(self, text: str) -> None:
        """Write ``text`` to the log file alone (kfp.local's warnings: two per task, the same each time).

        Parameters
        ----------
        text
            The text, with its line ends.
        """
        with self._lock:
            self._file.write(text)
            if self._verbose:
                self._terminal.write(text)

    def flush(self) -> None:
        if not self._file.closed:
            self._file.flush()
        self._terminal.flush()

    def close(self) -> None:
        super().close()  # flushes first
        self._file.close()

    def _parse(self, text: str) -> None:
        now = time.monotonic()
        for name in _START.findall(text):
            self._started.setdefault(name, []).append(now)
        for name, status in _FINISH.findall(text):
            starts = self._started.get(name) or [now]
            self._seconds[name] = now - starts.pop(0)
            if status != "SUCCESS":
                self._failed.add(name)
                self._report(name, "FAILED", "")
        found = _OUTPUTS.search(text)
        if found and found.group(1) not in self._failed:
            name = found.group(1)
            if name == "ingest" and (listed := _SUBJECTS.search(text)):
                self.total = _FIXED_TASKS + 2 * len(ast.literal_eval(listed.group(1)))
            self._report(name, *_subject_and_status(text))

    def _report(self, name: str, status: str, subject: str) -> None:
        self.done += 1
        total = "?" if self.total is None else str(self.total)
        stage = re.sub(r"-iteration-\d+$|-\d+$", "", name)
        label = f"{stage} {subject}".strip()
        counter = f"[{self.done:>{len(total)}}/{total}]"
        if not self._verbose:
            self._terminal.write(f"{counter} {label:<32} {self._seconds.get(name, 0.0):7.1f} s  {status}\n")
            self._terminal.flush()


def _subject_and_status(outputs: str) -> tuple[str, str]:
    """A task's status and what it worked on, from its artifacts' metadata.

    ``{'subject': '03', 'status': 'ok'}`` (preprocess, dual regression) or
    ``{'arch': 'mlp', ...}`` (the three trainings share the task name ``train``).
    """
    for text in _META.findall(outputs):
        try:
            meta = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            continue
        if isinstance(meta, dict) and "subject" in meta:
            return str(meta.get("status", "ok")), f"sub-{meta['subject']}"
        if isinstance(meta, dict) and "arch" in meta:
            return "ok", str(meta["arch"])
    return "ok", ""


@contextlib.contextmanager
def task_log(path: Path, verbose: bool = False) -> Iterator[TaskLog]:
    """Route what kfp.local prints through a :class:`TaskLog` while the pipeline runs.

    Parameters
    ----------
    path
        The log file.
    verbose
        Also copy everything to the terminal.

    Yields
    ------
    TaskLog
        The stream (``done`` and ``total`` tasks).
    """
    terminal = sys.stdout
    stream = TaskLog(path, terminal, verbose)

    def to_log(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: TextIO | None = None,
        line: str | None = None,
    ) -> None:
        stream.log_only(warnings.formatwarning(message, category, filename, lineno, line))

    sys.stdout = stream  # kfp.local's log handler and its print of each task's output read sys.stdout
    try:
        with warnings.catch_warnings():
            warnings.showwarning = to_log
            yield stream
    finally:
        sys.stdout = terminal
        stream.close()

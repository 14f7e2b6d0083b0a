"""Running a participant-level step over a cohort: one bad subject never sinks the rest.

Every participant-level stage (preprocessing, dual regression, ...) turns each
subject into one summary row through :func:`guarded`, and runs the subjects
serially or in worker processes through :func:`map_subjects`.
"""

from __future__ import annotations

import multiprocessing
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any, TypeVar

from rsnflow.io import InvalidInputError
from rsnflow.log import get_logger, progress

__all__ = ["guarded", "map_subjects", "skipped"]

log = get_logger(__name__)

J = TypeVar("J")
R = TypeVar("R")


def skipped(row: dict[str, Any]) -> dict[str, Any]:
    """The summary row of a subject whose outputs are already complete."""
    return {**row, "status": "skipped (complete)", "reason": "", "seconds": 0.0}


def guarded(
    subject: str,
    work: Callable[[], dict[str, Any] | None],
    row: dict[str, Any],
    expected: tuple[type[Exception], ...] = (InvalidInputError,),
) -> dict[str, Any]:
    """Run one subject's work and return its summary row, never raising.

    ``expected`` failures (bad input, an implausible result) are logged with
    their message; anything else also with its traceback. The row gets
    ``status`` (ok|failed), ``reason``, ``seconds`` and whatever ``work`` returns.
    """
    t0 = time.perf_counter()
    try:
        extra = work() or {}
    except expected as exc:
        log.error("sub-%s failed: %s", subject, exc)
        return {**row, "status": "failed", "reason": str(exc), "seconds": round(time.perf_counter() - t0, 2)}
    except Exception as exc:  # one subject must not sink the cohort
        log.error("sub-%s failed: %s\n%s", subject, exc, traceback.format_exc())
        reason = f"{type(exc).__name__}: {exc}"
        return {**row, "status": "failed", "reason": reason, "seconds": round(time.perf_counter() - t0, 2)}
    return {**row, "status": "ok", "reason": "", "seconds": round(time.perf_counter() - t0, 2), **extra}


def map_subjects(fn: Callable[[J], R], jobs: Sequence[J], n_jobs: int, desc: str) -> list[R]:
    """``fn`` over ``jobs`` in order, in ``n_jobs`` worker processes when more than one."""
    if max(1, min(n_jobs, len(jobs))) > 1:
        # spawn, not fork: a process that already ran torch (OpenMP pools) can
        # deadlock in forked children.
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=min(n_jobs, len(jobs)), mp_context=ctx) as pool:
            return list(progress(pool.map(fn, jobs), desc, total=len(jobs), unit="subject"))
    return [fn(j) for j in progress(jobs, desc, unit="subject")]

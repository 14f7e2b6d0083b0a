"""Running a participant-level step over a cohort: one bad subject never sinks the rest.

Every participant-level stage (preprocessing, dual regression, ...) turns each
subject into one summary row through :func:`guarded`, and runs the subjects
serially or in worker processes through :func:`map_subjects`.
"""

from __future__ import annotations

import multiprocessing
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from rsnflow.io import InvalidInputError
from rsnflow.log import get_logger, progress

__all__ = ["KILLED", "failed_row", "guarded", "map_subjects", "skipped"]

log = get_logger(__name__)

J = TypeVar("J")
R = TypeVar("R")


def skipped(row: dict[str, Any]) -> dict[str, Any]:
    """The summary row of a subject whose outputs are already complete.

    Parameters
    ----------
    row : dict
        The subject's identifying columns (``participant_id``, ...).

    Returns
    -------
    dict
        A copy of ``row`` with ``status`` ``"skipped (complete)"``, an empty ``reason``
        and ``seconds`` 0.
    """
    return {**row, "status": "skipped (complete)", "reason": "", "seconds": 0.0}


def failed_row(row: dict[str, Any], reason: str) -> dict[str, Any]:
    """The summary row of a subject that failed for ``reason``.

    Parameters
    ----------
    row : dict
        The subject's identifying columns (``participant_id``, ...).
    reason : str
        Why it failed.

    Returns
    -------
    dict
        A copy of ``row`` with ``status`` ``"failed"``, ``reason`` and ``seconds`` 0.
    """
    return {**row, "status": "failed", "reason": reason, "seconds": 0.0}


def guarded(
    name: str,
    work: Callable[[], dict[str, Any] | None],
    row: dict[str, Any],
    expected: tuple[type[Exception], ...] = (InvalidInputError,),
) -> dict[str, Any]:
    """Run one subject's work and return its summary row, never raising.

    ``expected`` failures (bad input, an implausible result) are logged with
    their message; anything else also with its traceback. The row gets
    ``status`` (ok|failed), ``reason``, ``seconds`` and whatever ``work`` returns.

    Parameters
    ----------
    name : str
        The subject as named in log messages.
    work : callable
        Does the subject's work; returns extra summary columns, or None.
    row : dict
        The subject's identifying columns (``participant_id``, ...).
    expected : tuple of type, default=(InvalidInputError,)
        Exception types logged without their traceback; their message is the reason.
        Any other ``Exception`` is caught too, its reason prefixed with its type name.

    Returns
    -------
    dict
        A copy of ``row`` with ``status``, ``reason``, ``seconds`` (wall time, rounded
        to 0.01 s) and, on success, the columns returned by ``work``.
    """
    t0 = time.perf_counter()
    try:
        extra = work() or {}
    except expected as exc:
        log.error("%s failed: %s", name, exc)
        return {**row, "status": "failed", "reason": str(exc), "seconds": round(time.perf_counter() - t0, 2)}
    except Exception as exc:  # one subject must not sink the cohort
        log.error("%s failed: %s\n%s", name, exc, traceback.format_exc())
        reason = f"{type(exc).__name__}: {exc}"
        return {**row, "status": "failed", "reason": reason, "seconds": round(time.perf_counter() - t0, 2)}
    return {**row, "status": "ok", "reason": "", "seconds": round(time.perf_counter() - t0, 2), **extra}


#: The reason given for a subject whose worker process died without a word.
KILLED = "worker process was killed (out of memory? the OOM killer sends SIGKILL)"


def map_subjects(
    fn: Callable[[J], R],
    jobs: Sequence[J],
    n_jobs: int,
    desc: str,
    on_killed: Callable[[J, str], R] | None = None,
) -> list[R]:
    """``fn`` over ``jobs`` in order, in ``n_jobs`` worker processes when more than one.

    A worker that dies (SIGKILL from the out-of-memory killer, a segfault)
    breaks the whole process pool. The jobs it took down are then run again
    one at a time, each in a pool of its own, so the one that kills its worker
    again is known: it becomes ``on_killed(job, reason)`` and the others finish.
    Without ``on_killed`` the :class:`~concurrent.futures.process.BrokenProcessPool` is raised.

    Parameters
    ----------
    fn : callable
        Work of one job; with worker processes (started with ``spawn``) it and the jobs
        must be picklable.
    jobs : sequence
        One item per subject.
    n_jobs : int
        Worker processes; 1 or less runs the jobs serially in this process.
    desc : str
        Label of the progress bar and log messages.
    on_killed : callable, optional
        ``on_killed(job, reason)`` gives the result of a job whose worker dies again when
        the job runs alone.

    Returns
    -------
    list
        ``fn(job)`` (or ``on_killed(job, reason)``) for each job, in the order of ``jobs``.

    Raises
    ------
    BrokenProcessPool
        A job killed its worker again and ``on_killed`` is None.
    """
    if max(1, min(n_jobs, len(jobs))) <= 1:
        return [fn(j) for j in progress(jobs, desc, unit="subject")]
    results: dict[int, R] = {}
    broken = _pool_map(fn, jobs, range(len(jobs)), min(n_jobs, len(jobs)), results, desc)
    if broken:
        log.warning("%s: a worker process died; running %d subjects again one at a time", desc, len(broken))
    for i in broken:
        if _pool_map(fn, jobs, [i], 1, results, desc):
            if on_killed is None:
                raise BrokenProcessPool(f"{desc}: {KILLED}")
            log.error("%s: %s", desc, KILLED)
            results[i] = on_killed(jobs[i], KILLED)
    return [results[i] for i in range(len(jobs))]


def _pool_map(
    fn: Callable[[J], R],
    jobs: Sequence[J],
    picks: Iterable[int],
    workers: int,
    results: dict[int, R],
    desc: str,
) -> list[int]:
    """``jobs[i]`` for ``i`` in ``picks`` in a fresh pool into ``results``; returns those lost to a death."""
    # spawn, not fork: a process that already ran torch (OpenMP pools) can deadlock in forked children.
    ctx = multiprocessing.get_context("spawn")
    lost = []
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        futures = {pool.submit(fn, jobs[i]): i for i in picks}
        for fut in progress(as_completed(futures), desc, total=len(futures), unit="subject"):
            try:
                results[futures[fut]] = fut.result()
            except BrokenProcessPool:
                lost.append(futures[fut])
    return sorted(lost)

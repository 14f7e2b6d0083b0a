"""Logging and progress bars, set up once for the CLI, the pipeline and notebooks."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm.auto import tqdm

__all__ = ["get_logger", "progress", "setup_logging"]

T = TypeVar("T")

_LOGGER_NAME = "rsnflow"
_configured = False


def get_logger(name: str) -> logging.Logger:
    """A child of the ``rsnflow`` logger (``rsnflow.<module>``).

    Parameters
    ----------
    name : str
        Logger name, usually ``__name__``; used as is when it already starts with
        ``rsnflow``, else prefixed with ``rsnflow.``.

    Returns
    -------
    logging.Logger
        The logger.
    """
    if name.startswith(_LOGGER_NAME):
        return logging.getLogger(name)
    return logging.getLogger(f"{_LOGGER_NAME}.{name}")


def setup_logging(verbosity: int = 0) -> None:
    """Configure the ``rsnflow`` logger once.

    Parameters
    ----------
    verbosity
        0 is INFO, 1 or more is DEBUG, -1 is WARNING, -2 or less is ERROR.
        ``RSNFLOW_LOG_LEVEL`` (a level name) overrides it.
    """
    global _configured
    level = {-2: logging.ERROR, -1: logging.WARNING, 0: logging.INFO}.get(
        max(min(verbosity, 1), -2), logging.DEBUG
    )
    env_level = os.environ.get("RSNFLOW_LOG_LEVEL")
    if env_level:
        level = logging.getLevelName(env_level.upper())
        if not isinstance(level, int):
            level = logging.INFO
    logger = logging.getLogger(_LOGGER_NAME)
    logger.setLevel(level)
    if not _configured:
        handler = _StderrHandler()
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")
        )
        logger.addHandler(handler)
        logger.propagate = False
        _configured = True


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (test capture, redirected streams)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value: object) -> None:
        pass


def progress(iterable: Iterable[T], desc: str, total: int | None = None, unit: str = "it") -> Iterator[T]:
    """Wrap long loops in a tqdm bar on stderr when stderr is a terminal.

    Silent when logging is above INFO, when stderr is a file or a pipe (CI
    logs, KFP pods: a bar's redraws would be thousands of lines there), and
    with ``RSNFLOW_PROGRESS=0``; ``RSNFLOW_PROGRESS=1`` forces bars on.

    Parameters
    ----------
    iterable : iterable
        The items to loop over.
    desc : str
        Label shown before the bar.
    total : int, optional
        Number of items, when ``iterable`` has no length.
    unit : str, default="it"
        Name of one item in the rate (``subject``, ``run``).

    Yields
    ------
    object
        The items of ``iterable``, unchanged.
    """
    quiet = logging.getLogger(_LOGGER_NAME).getEffectiveLevel() > logging.INFO
    setting = os.environ.get("RSNFLOW_PROGRESS", "")
    disabled = quiet or setting == "0" or (setting != "1" and not sys.stderr.isatty())
    yield from tqdm(iterable, desc=desc, total=total, unit=unit, disable=disabled, leave=False)

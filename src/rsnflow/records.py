"""Completeness records: an output is complete when it was made from what it would be made from now.

Every stage writes, after its outputs, a small JSON record beside them::

    {"format": "rsnflow-record/1", "stage": "preprocess",
     "inputs": {"bold": "<sha256>", ...},      # identity of every input
     "config": "<sha256>",                      # identity of the config section that shaped the outputs
     "outputs": {"sub-01_..._bold.nii.gz": {"size": 123, "sha256": "..."}, ...}}

A rerun of the stage computes the identities its outputs would be made from
and compares (:meth:`Record.status`): outputs whose inputs or config changed
are *stale* and are redone (or, with ``--no-recompute``, refused with a
message naming the stale file); an output whose size differs from the record
(truncated, replaced) is *incomplete*. Downstream stages identify an upstream
output by the SHA-256 its record holds, so nothing large is hashed twice.
Output names are relative to the record's folder: a tree assembled from links
(KFP components) keeps its records valid.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rsnflow.io import InvalidInputError, sha256_file, write_json

__all__ = [
    "RECORD_FORMAT",
    "Record",
    "RecordStatus",
    "StaleOutputError",
    "config_digest",
    "file_digest",
]

RECORD_FORMAT = "rsnflow-record/1"


class StaleOutputError(InvalidInputError):
    """An existing output was made from other inputs or settings, and recomputing is not allowed.

    Parameters
    ----------
    path : str or os.PathLike
        The stale output.
    problem : str
        Why it is stale and what to do about it.
    """


def config_digest(section: Any, exclude: Iterable[str] = ()) -> str:
    """SHA-256 of a config section (a dataclass or mapping), leaving out keys that do not shape outputs.

    Parameters
    ----------
    section : dataclass instance or Mapping
        The config section; its fields or keys are serialised as JSON with sorted keys (other values
        as their ``str``).
    exclude : iterable of str, default=()
        Top-level keys left out.

    Returns
    -------
    str
        The hexadecimal digest.
    """
    is_instance = dataclasses.is_dataclass(section) and not isinstance(section, type)
    data = dataclasses.asdict(section) if is_instance else dict(section)
    for key in exclude:
        data.pop(key, None)
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


_DIGESTS: dict[tuple[str, int, int], str] = {}


def file_digest(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file's content, remembered per (path, size, mtime) within the process.

    Parameters
    ----------
    path : str or os.PathLike
        The file.

    Returns
    -------
    str
        The hexadecimal digest.
    """
    p = Path(path)
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        _DIGESTS[key] = sha256_file(p)
    return _DIGESTS[key]


@dataclass(frozen=True)
class RecordStatus:
    """The outcome of :meth:`Record.status`: ``complete``, ``missing``, ``incomplete`` or ``stale``.

    Attributes
    ----------
    state : str
        ``"complete"``, ``"missing"`` (no record), ``"incomplete"`` (an output is gone or has
        another size than recorded) or ``"stale"`` (made from other inputs or settings).
    reason : str, default=""
        Why the state is not ``complete``, for messages.
    path : pathlib.Path or None, default=None
        The output (or record) the reason is about.
    """

    state: str
    reason: str = ""
    path: Path | None = None  # the output (or record) the reason is about

    @property
    def complete(self) -> bool:
        """Whether ``state`` is ``"complete"``."""
        return self.state == "complete"

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}" if self.path else self.reason or self.state


@dataclass(frozen=True)
class Record:
    """The completeness record at ``path`` (a JSON file beside the outputs it describes).

    Attributes
    ----------
    path : pathlib.Path
        The record's JSON file; the output names it lists are relative to its folder.
    """

    path: Path

    def read(self) -> dict[str, Any] | None:
        """The record's content, or None when it is missing or unreadable (a crash before it was written).

        Returns
        -------
        dict or None
            The parsed record, or ``None`` when the file is missing, not valid JSON, not a
            record of format :data:`RECORD_FORMAT`, or without its outputs and their sizes.
        """
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict) or data.get("format") != RECORD_FORMAT:
            return None
        # A record of the right format that lost its outputs or inputs (edited by hand, say) is not
        # one: the output it names is then rebuilt, never trusted.
        outputs = data.get("outputs")
        if not isinstance(outputs, dict) or not all(
            isinstance(m, dict) and "size" in m for m in outputs.values()
        ):
            return None
        return data

    def write(self, stage: str, inputs: Mapping[str, str], config: str, outputs: Iterable[Path]) -> None:
        """Record ``outputs`` (written; the first is the main one) as made from ``inputs``; write it last.

        Each output's size and SHA-256 are recorded, under its path relative to the record's folder.
        The record is written atomically.

        Parameters
        ----------
        stage : str
            The stage that made the outputs (``"preprocess"``, say).
        inputs : Mapping of str to str
            Identity (SHA-256) of every input, by name.
        config : str
            Identity of the config section that shaped the outputs (:func:`config_digest`).
        outputs : iterable of pathlib.Path
            The written outputs; the first is the main one, named in messages.
        """
        entries = {}
        for out in outputs:
            rel = os.path.relpath(out, self.path.parent)
            entries[rel] = {"size": out.stat().st_size, "sha256": file_digest(out)}
        record = {
            "format": RECORD_FORMAT,
            "stage": stage,
            "inputs": dict(sorted(inputs.items())),
            "config": config,
            "outputs": entries,
            "primary": next(iter(entries), ""),  # the main output, named in messages
        }
        write_json(record, self.path)

    def intact(self) -> RecordStatus:
        """Whether the record exists and every output it lists has the recorded size.

        Returns
        -------
        RecordStatus
            ``complete``; ``missing`` when there is no readable record; ``incomplete`` naming the
            first output that is gone or has another size.
        """
        return self._intact(self.read())

    def _intact(self, data: dict[str, Any] | None) -> RecordStatus:
        if data is None:
            return RecordStatus("missing", "no completeness record (never finished)", self.path)
        for rel, meta in data["outputs"].items():
            out = self.path.parent / rel
            if not out.exists():
                return RecordStatus("incomplete", "missing", out)
            if out.stat().st_size != meta["size"]:
                size = out.stat().st_size
                return RecordStatus("incomplete", f"{size} bytes, recorded {meta['size']} (truncated?)", out)
        return RecordStatus("complete")

    def status(self, inputs: Mapping[str, str], config: str) -> RecordStatus:
        """Complete when intact and made from exactly ``inputs`` under ``config``; else why not.

        Parameters
        ----------
        inputs : Mapping of str to str
            Identities of the inputs the outputs would be made from now, by name.
        config : str
            Identity of the config section that would shape them now (:func:`config_digest`).

        Returns
        -------
        RecordStatus
            As :meth:`intact`, or ``stale`` (naming the main output) when the config or any input
            differs from the record's.
        """
        data = self.read()
        state = self._intact(data)
        if not state.complete:
            return state
        assert data is not None
        # The main output (the first the record was given) is the file a message names.
        primary = self.path.parent / (data.get("primary") or next(iter(data["outputs"]), ""))
        if data["config"] != config:
            return RecordStatus("stale", "made with other settings", primary)
        recorded = data["inputs"]
        for name in sorted(set(recorded) | set(inputs)):
            if recorded.get(name) != inputs.get(name):
                return RecordStatus("stale", f"made from another {name}", primary)
        return RecordStatus("complete")

    def digest(self, output: str | os.PathLike[str]) -> str:
        """The recorded SHA-256 of one output (by path), the output's identity for downstream stages.

        Parameters
        ----------
        output : str or os.PathLike
            The output file.

        Returns
        -------
        str
            The SHA-256 the record holds for it (the file is not hashed again).

        Raises
        ------
        InvalidInputError
            The record is missing or does not list ``output``.
        """
        data = self.read()
        rel = os.path.relpath(output, self.path.parent)
        if data is None or rel not in data["outputs"]:
            raise InvalidInputError(output, f"not recorded as complete in {self.path.name} (rerun its stage)")
        return str(data["outputs"][rel]["sha256"])

    def inputs(self) -> dict[str, str]:
        """The input identities the outputs were made from (empty when there is no record).

        Returns
        -------
        dict of str to str
            Input name to identity, as recorded by :meth:`write`.
        """
        data = self.read()
        return dict(data["inputs"]) if data else {}

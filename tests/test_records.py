"""Completeness records: a record that lost its outputs is no record (rebuilt, never a crash)."""

from __future__ import annotations

import json
from pathlib import Path

from rsnflow.records import RECORD_FORMAT, Record


def test_a_record_without_its_outputs_is_missing_not_a_crash(tmp_path: Path) -> None:
    out = tmp_path / "maps.nii.gz"
    out.write_bytes(b"maps")
    record = Record(tmp_path / "x_record.json")
    record.write("group-ica", {"runs": "abc"}, "cfg", [out])
    assert record.intact().state == "complete"
    for broken in ({"format": RECORD_FORMAT}, {"format": RECORD_FORMAT, "outputs": {"maps.nii.gz": {}}}):
        record.path.write_text(json.dumps(broken))
        assert record.read() is None
        assert record.intact().state == "missing"

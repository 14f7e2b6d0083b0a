"""Defect 10: what a killed rsnflow process left behind is removed by the next run of that stage."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd

from rsnflow.io import remove_leftovers


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_leftovers_of_dead_writers_go_and_nothing_else(tmp_path: Path) -> None:
    import os

    dead, alive = _dead_pid(), os.getpid()
    func = tmp_path / "sub-01" / "func"
    func.mkdir(parents=True)
    gone = [
        func / f".sub-01_bold.nii.rsnflow-tmp-{dead}-abc.tmp.nii.gz",
        tmp_path / f".dataset.rsnflow-tmp-{dead}-xyz",
    ]
    kept = [
        func / f".sub-01_bold.nii.rsnflow-tmp-{alive}-def.tmp.nii.gz",  # a live writer's
        func / ".hidden_notes.tmp",  # the user's
        func / "sub-01_task-rest_bold.nii.gz",
    ]
    gone[0].write_bytes(b"x" * 100)
    gone[1].mkdir()
    (gone[1] / "maps.npy").write_bytes(b"x" * 1000)
    for p in kept:
        p.write_bytes(b"y")
    assert remove_leftovers(tmp_path) == 2
    assert not any(p.exists() for p in gone)
    assert all(p.exists() for p in kept)


def test_preprocess_cleans_its_subject_folder(tiny_group, tmp_path: Path) -> None:
    from rsnflow.cli import main

    deriv = tmp_path / "deriv"
    shutil.copytree(
        tiny_group["deriv"] / "sub-01", deriv / "sub-01", ignore=shutil.ignore_patterns("*desc-dr*")
    )
    leftover = deriv / "sub-01" / "func" / f".sub-01_x.nii.rsnflow-tmp-{_dead_pid()}-q.tmp.nii.gz"
    leftover.write_bytes(b"half a NIfTI")
    bids = tiny_group["cohort"].bids_dir
    assert main(["preprocess", str(bids), str(deriv), "--participant-label", "01"]) == 0
    assert not leftover.exists()
    assert set(pd.read_csv(deriv / "preprocess_summary.tsv", sep="\t")["status"]) == {"skipped (complete)"}


def test_dataset_cleans_a_killed_build_beside_it(tiny_group, tiny_dataset, tmp_path: Path) -> None:
    from rsnflow.cli import main

    killed = tmp_path / f".ds.rsnflow-tmp-{_dead_pid()}-k"
    killed.mkdir()
    (killed / "maps.npy").write_bytes(b"\0" * 4096)
    assert main(["dataset", str(tiny_group["deriv"]), str(tmp_path / "ds")]) == 0
    assert not killed.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["ds"]

"""The derivatives layout: one module names every output, with every entity of its run."""

from __future__ import annotations

from pathlib import Path

from rsnflow.bids import RunId
from rsnflow.layout import (
    dr_outputs,
    group_paths,
    preprocess_summary_path,
    preprocessed_records,
    subject_dir,
    subject_outputs,
)


def test_run_outputs_keep_entities_and_live_in_the_run_folder(tmp_path: Path) -> None:
    run = RunId("01", session="2", run="3", acquisition="mb")
    outs = subject_outputs(tmp_path, run)
    paths = [*outs.files(), outs.record, outs.figure("carpet"), *dr_outputs(tmp_path, run).values()]
    for path in paths:
        assert path.name.startswith("sub-01_ses-2_task-rest_acq-mb_run-3_"), path
        assert subject_dir(tmp_path, "01") in path.parents
        assert tmp_path / "sub-01" / "ses-2" / "func" in path.parents
    assert len({p.name for p in paths}) == len(paths)  # no two outputs share a name
    assert outs.figure("carpet").parent == outs.qc_html.parent / "figures"
    plain = subject_outputs(tmp_path, "01").bold
    assert (
        plain
        == tmp_path / "sub-01/func/sub-01_task-rest_space-MNI152NLin2009aSym_res-4mm_desc-preproc_bold.nii.gz"
    )


def test_group_paths_are_distinct_and_under_group(tmp_path: Path) -> None:
    paths = group_paths(tmp_path)
    assert len(set(paths.values())) == len(paths)
    assert all(p == paths["dir"] or paths["dir"] in p.parents for p in paths.values())
    assert preprocess_summary_path(tmp_path).parent == tmp_path


def test_preprocessed_records_finds_sessions_and_skips_foreign_names(tmp_path: Path) -> None:
    runs = [RunId("01"), RunId("02", session="a", run="1"), RunId("02", session="b", run="1")]
    for run in runs:
        record = subject_outputs(tmp_path, run).record
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text("{}")
    (tmp_path / "sub-01" / "func" / "notes_desc-preproc_record.json").write_text("{}")  # not a run's
    found = [run for run, _ in preprocessed_records(tmp_path)]
    assert sorted(found) == sorted(runs)

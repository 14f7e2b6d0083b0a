"""Real BIDS cohorts: every session and run, entities kept in every derivative name (issue 18)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from rsnflow.bids import RunId, find_runs, read_filter_file
from rsnflow.io import InvalidInputError
from rsnflow.layout import derivative_path

RAW = [
    "sub-01/ses-1/func/sub-01_ses-1_task-rest_run-1_bold.nii.gz",
    "sub-01/ses-1/func/sub-01_ses-1_task-rest_run-2_bold.nii.gz",
    "sub-01/ses-2/func/sub-01_ses-2_task-rest_acq-mb_run-1_bold.nii.gz",
    "sub-01/ses-2/func/sub-01_ses-2_task-motor_bold.nii.gz",
    "sub-02/func/sub-02_task-rest_bold.nii.gz",
    "sub-02/func/sub-02_task-rest_dir-AP_run-10_bold.nii.gz",
    "sub-02/func/sub-02_task-rest_dir-AP_run-2_bold.nii.gz",
    "sub-02/func/sub-02_task-rest_echo-1_bold.nii",
    "sub-03/func/sub-03_task-motor_bold.nii.gz",
    "sub-04/anat/sub-04_T1w.nii.gz",
]


@pytest.fixture
def layout(tmp_path: Path) -> Path:
    root = tmp_path / "bids"
    for rel in RAW:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"")
        (root / rel.split(".nii")[0]).with_suffix(".json").write_text("{}")
    (root / "sub-01/ses-1/func/sub-01_ses-1_task-rest_run-1_events.tsv").write_text("onset\n")
    (root / "dataset_description.json").write_text(json.dumps({"Name": "t", "BIDSVersion": "1.9.0"}))
    return root


def _pybids(root: Path, **query) -> set[str]:
    from bids import BIDSLayout

    lay = BIDSLayout(root, validate=False)
    files = lay.get(suffix="bold", extension=[".nii", ".nii.gz"], return_type="filename", **query)
    return {str(Path(f).relative_to(root)) for f in files}


def _ours(root: Path, **kw) -> set[str]:
    return {str(p.relative_to(root)) for _, p in find_runs(root, **kw)[0]}


def test_every_session_and_run_is_found_as_pybids_finds_it(layout: Path) -> None:
    from bids.layout import Query

    assert _ours(layout) == _pybids(layout, task="rest")
    assert len(_ours(layout)) == 7
    assert _ours(layout, session_label=["2"]) == _pybids(layout, task="rest", session="2")
    assert _ours(layout, task="motor") == _pybids(layout, task="motor")
    assert _ours(layout, participant_label=["sub-02"]) == _pybids(layout, task="rest", subject="02")
    no_acq = {"acquisition": None, "echo": None}
    assert _ours(layout, bids_filter=no_acq) == _pybids(
        layout, task="rest", acquisition=Query.NONE, echo=Query.NONE
    )
    assert _ours(layout, bids_filter={"run": [1, 10]}) == _pybids(layout, task="rest", run=[1, 10])


def test_runs_are_ordered_and_subjects_without_a_run_say_why(layout: Path) -> None:
    runs, unmatched = find_runs(layout)
    names = [str(r) for r, _ in runs]
    assert names[:3] == ["sub-01_ses-1_task-rest_run-1", "sub-01_ses-1_task-rest_run-2",
                         "sub-01_ses-2_task-rest_acq-mb_run-1"]  # fmt: skip
    assert names.index("sub-02_task-rest_dir-AP_run-2") < names.index("sub-02_task-rest_dir-AP_run-10")
    assert unmatched == {
        "sub-03": "no task-rest run (tasks: motor)",
        "sub-04": "no BOLD run (no func/*_bold.nii[.gz])",
    }


def test_labels_that_match_nothing_are_errors(layout: Path, tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="no such subject in the dataset: sub-09"):
        find_runs(layout, participant_label=["01", "09"])
    with pytest.raises(InvalidInputError, match="no such session in the dataset: ses-7"):
        find_runs(layout, session_label=["7"])
    bad = tmp_path / "filter.json"
    bad.write_text(json.dumps({"bold": {"sesion": "1"}}))
    with pytest.raises(InvalidInputError, match="unknown entity 'sesion'"):
        read_filter_file(bad)
    bad.write_text(json.dumps({"bold": {"session": "9", "bogus": 2}}))  # after a mismatch too
    with pytest.raises(InvalidInputError, match="unknown entity 'bogus'"):
        read_filter_file(bad)
    # a number against a label that is not one is no match, not a crash
    assert not RunId.parse("sub-01_task-rest_run-a1").matches({"run": 1, "task": 1})
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"bold": {"session": "1", "run": 2}}))
    assert _ours(layout, bids_filter=read_filter_file(good)) == {RAW[1]}


def test_derivative_names_keep_the_entities_and_pybids_reads_them_back() -> None:
    from bids.layout import parse_file_entities

    run = RunId("01", session="2", acquisition="mb", direction="AP", run="1", echo="2")
    path = derivative_path("/d", run, "bold", space="MNI152NLin2009aSym", res=4, desc="preproc")
    assert path == Path(
        "/d/sub-01/ses-2/func/sub-01_ses-2_task-rest_acq-mb_dir-AP_run-1_echo-2_space-MNI152NLin2009aSym_"
        "res-4mm_desc-preproc_bold.nii.gz"
    )
    ents = parse_file_entities(str(path))
    assert {k: str(v) for k, v in ents.items()}.items() >= {
        "subject": "01", "session": "2", "task": "rest", "acquisition": "mb", "direction": "AP", "run": "1",
        "echo": "2", "space": "MNI152NLin2009aSym", "res": "4mm", "desc": "preproc", "suffix": "bold",
    }.items()  # fmt: skip
    assert RunId.parse(str(run)) == run and RunId.of("sub-01") == RunId("01")
    assert derivative_path("/d", "01", "mask", desc="brain") == Path(
        "/d/sub-01/func/sub-01_task-rest_desc-brain_mask.nii.gz"
    )


# ----------------------------------------------------------------------------- a cohort of sessions and runs

#: (target name in the new dataset) <- simulated subject of the tiny_group cohort
SESSIONS_AND_RUNS = {
    "sub-A/ses-1/func/sub-A_ses-1_task-rest_run-1_bold.nii.gz": "01",
    "sub-A/ses-1/func/sub-A_ses-1_task-rest_run-2_bold.nii.gz": "02",
    "sub-A/ses-2/func/sub-A_ses-2_task-rest_run-1_bold.nii.gz": "03",
    "sub-B/func/sub-B_task-rest_run-1_bold.nii.gz": "04",
    "sub-B/func/sub-B_task-rest_run-2_bold.nii.gz": "05",
    "sub-C/func/sub-C_task-rest_bold.nii.gz": "06",
    "sub-D/func/sub-D_task-rest_bold.nii.gz": "07",
}


@pytest.fixture(scope="module")
def sessions_cohort(tiny_group, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Seven simulated runs laid out as four subjects with sessions and runs, preprocessed to labels."""
    from rsnflow.cli import main

    src = tiny_group["cohort"].bids_dir
    root = tmp_path_factory.mktemp("sessions")
    bids = root / "bids"
    for name in ("dataset_description.json", "task-rest_bold.json"):
        (bids / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src / name, bids / name)
    for target, label in SESSIONS_AND_RUNS.items():
        (bids / target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src / f"sub-{label}/func/sub-{label}_task-rest_bold.nii.gz", bids / target)
    deriv = root / "deriv"
    assert main(["preprocess", str(bids), str(deriv), "--n-jobs", "2"]) == 0
    assert main(["group-ica", str(deriv), "--order", "10"]) == 0
    assert main(["dual-regression", str(deriv)]) == 0
    assert main(["label", str(deriv)]) == 0
    assert main(["dataset", str(deriv), str(root / "dataset"), "--seed", "1"]) == 0
    return deriv, root / "dataset"


def test_one_derivative_set_and_summary_row_per_run(sessions_cohort) -> None:
    deriv, _ = sessions_cohort
    summary = pd.read_csv(deriv / "preprocess_summary.tsv", sep="\t")
    expected = sorted(t.split("/")[-1].removesuffix("_bold.nii.gz") for t in SESSIONS_AND_RUNS)
    assert sorted(summary["run"]) == expected and set(summary["status"]) == {"ok"}
    for prefix in expected:
        run = RunId.parse(prefix)
        for suffix, desc in (
            ("bold", "preproc"),
            ("mask", "brain"),
            ("components", "dr"),
            ("components", "drz"),
        ):
            assert derivative_path(deriv, run, suffix, desc=desc, space="MNI152NLin2009aSym", res=4).exists()
    conf = pd.read_csv(derivative_path(deriv, RunId.parse(expected[0]), "timeseries", desc="confounds",
                                       extension=".tsv"), sep="\t")  # fmt: skip
    assert {"global_signal", "csf", "white_matter", "std_dvars", "rmsd"} <= set(conf)
    dr = pd.read_csv(deriv / "group" / "dual_regression_summary.tsv", sep="\t")
    assert sorted(dr["run"]) == expected
    meta = json.loads((deriv / "group" / "group_task-rest_desc-ica_components.json").read_text())
    assert sorted(meta["runs"]) == expected and meta["subjects"] == ["A", "B", "C", "D"]


def test_the_dataset_indexes_runs_and_splits_by_subject(sessions_cohort) -> None:
    _, dataset = sessions_cohort
    index = pd.read_csv(dataset / "index.tsv", sep="\t", dtype={"subject": str, "session": str})
    assert len(index) == 7 * 10
    assert index.groupby("subject")["run"].nunique().to_dict() == {"A": 3, "B": 2, "C": 1, "D": 1}
    assert index.groupby("subject")["split"].nunique().max() == 1  # no subject on both sides
    manifest = json.loads((dataset / "manifest.json").read_text())
    assert (manifest["n_subjects"], manifest["n_runs"]) == (4, 7)


def test_pybids_indexes_every_output_as_a_derivative(sessions_cohort) -> None:
    from bids import BIDSLayout

    deriv, _ = sessions_cohort
    lay = BIDSLayout(deriv, validate=False, is_derivative=True)
    preproc = lay.get(desc="preproc", suffix="bold", extension=".nii.gz")
    assert len(preproc) == 7
    for f in preproc:
        ents = f.get_entities()
        assert ents["space"] == "MNI152NLin2009aSym" and ents["task"] == "rest"
    sessions = {f.get_entities().get("session") for f in preproc}
    assert sessions == {"1", "2", None}
    assert len(lay.get(desc="dr", suffix="components")) == 7


def test_the_bids_apps_entry_point(tiny_group, tmp_path: Path) -> None:
    """``rsnflow bids BIDS_DIR OUTPUT_DIR participant|group``, as fMRIPrep users call it."""
    from rsnflow.cli import main

    bids = tiny_group["cohort"].bids_dir
    out = tmp_path / "out"
    labels = ["--participant-label", "01", "02", "03"]
    assert main(["bids", str(bids), str(out), "participant", *labels, "--nprocs", "2"]) == 0
    assert sorted(pd.read_csv(out / "preprocess_summary.tsv", sep="\t")["participant_id"]) == [
        "sub-01", "sub-02", "sub-03"
    ]  # fmt: skip
    assert main(["bids", str(bids), str(out), "group", "--order", "10"]) == 0
    assert (out / "group" / "group_task-rest_desc-ica_labels.tsv").exists()
    assert len(pd.read_csv(out / "group" / "dual_regression_summary.tsv", sep="\t")) == 3
    assert json.loads((out / "dataset_description.json").read_text())["DatasetType"] == "derivative"

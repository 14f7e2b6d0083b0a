"""Defect 2: ``rsnflow dataset`` replaces only an rsnflow dataset, only with --overwrite, never an input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from probes import one_error, snapshot


@pytest.fixture(scope="module")
def deriv(tiny_group, tiny_dataset: Path) -> Path:
    return tiny_group["deriv"]  # labelled by the tiny_dataset fixture


def test_a_folder_of_other_files_is_kept(cli, deriv: Path, tmp_path: Path) -> None:
    out = tmp_path / "thesis"
    out.mkdir()
    (out / "chapter1.tex").write_text("years of work")
    before = snapshot(out)
    code, errors = cli("dataset", deriv, out)
    assert code == 1
    one_error(errors, str(out), "not an rsnflow dataset", "refusing")
    assert snapshot(out) == before


def test_dataset_into_its_own_derivatives_is_refused(cli, deriv: Path) -> None:
    before = snapshot(deriv)
    code, errors = cli("dataset", deriv, deriv, "--overwrite")
    assert code == 1
    one_error(errors, str(deriv), "overlaps the input derivatives")
    assert snapshot(deriv) == before


def test_dataset_inside_the_derivatives_is_refused(cli, deriv: Path) -> None:
    code, errors = cli("dataset", deriv, deriv / "group" / "ds")
    assert code == 1
    one_error(errors, "overlaps the input derivatives")
    assert not (deriv / "group" / "ds").exists()


def test_a_symlinked_output_is_a_clear_error(cli, deriv: Path, tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    code, errors = cli("dataset", deriv, tmp_path / "link")
    assert code == 1
    one_error(errors, "link", "symbolic link")
    assert list(real.iterdir()) == []


def test_a_file_is_not_replaced(cli, deriv: Path, tmp_path: Path) -> None:
    f = tmp_path / "notes.txt"
    f.write_text("keep me")
    code, errors = cli("dataset", deriv, f)
    assert code == 1
    one_error(errors, "notes.txt", "not a folder")
    assert f.read_text() == "keep me"


def test_an_existing_dataset_needs_overwrite(cli, deriv: Path, tiny_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "ds"
    assert cli("dataset", deriv, out, "--seed", "3")[0] == 0
    before = snapshot(out)
    code, errors = cli("dataset", deriv, out, "--seed", "4")
    assert code == 1
    one_error(errors, str(out), "--overwrite")
    assert snapshot(out) == before
    assert cli("dataset", deriv, out, "--seed", "4", "--overwrite")[0] == 0
    assert json.loads((out / "manifest.json").read_text())["split"]["seed"] == 4
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary left


def test_the_run_report_folder_replaces_only_its_own(tmp_path: Path) -> None:
    """WORK/report/ is rewritten only when it carries rsnflow's mark: never a user's folder or a link."""
    from kfp_pipelines.local import publish_site

    work = tmp_path / "work"
    mine = work / "report"
    mine.mkdir(parents=True)
    (mine / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not an rsnflow report folder"):
        publish_site(tmp_path / "no-run", work)
    assert (mine / "notes.txt").read_text() == "mine"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / ".rsnflow-site").write_text("")
    (elsewhere / "keep.txt").write_text("keep")
    mine.rename(tmp_path / "moved")
    mine.symlink_to(elsewhere)
    with pytest.raises(FileExistsError, match="not an rsnflow report folder"):
        publish_site(tmp_path / "no-run", work)
    assert (elsewhere / "keep.txt").read_text() == "keep"

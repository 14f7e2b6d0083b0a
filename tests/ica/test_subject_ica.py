"""Single-run ICA: each run's own components, scored against the simulator's truth, then classified."""

from __future__ import annotations

import hashlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from cohorts import preprocessed_only
from rsnflow.atlas import load_taxonomy
from rsnflow.cli import EXIT_ERROR, EXIT_OK, main
from rsnflow.ica.matching import spatial_correlation
from rsnflow.ica.subject_ica import SicaSettings, sica_status
from rsnflow.layout import group_paths, sica_outputs
from rsnflow.simulate.truth import true_network_maps


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def sica(tiny_group: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Two tiny runs (150 volumes) decomposed on their own, each at its own estimated order."""
    deriv, runs = preprocessed_only(tiny_group, tmp_path_factory.mktemp("sica"))
    assert main(["subject-ica", str(deriv), "--seed", "0"]) == EXIT_OK
    return {"deriv": deriv, "runs": runs, "bids": tiny_group["cohort"].bids_dir}


def test_each_run_gets_its_own_components_with_time_courses(sica: dict) -> None:
    summary = pd.read_csv(group_paths(sica["deriv"])["sica_summary"], sep="\t")
    assert list(summary["status"]) == ["ok", "ok"] and summary["converged"].all()
    # each run's own order (BIC): the simulator's 56 networks and 8 noise sources, not the 148 that the
    # run's numerically null directions once gave (bic_order)
    assert summary["components"].between(35, 80).all(), summary
    for run, k in zip(sica["runs"], summary["components"], strict=True):
        out = sica_outputs(sica["deriv"], run)
        assert nib.load(out["maps"]).shape == (45, 54, 45, k)
        tcs = pd.read_csv(out["timeseries"], sep="\t")
        assert tcs.shape == (150, k) and list(tcs.columns[:2]) == ["ic000", "ic001"]
        assert sica_status(sica["deriv"], run, SicaSettings(seed=0)).complete


def test_the_components_are_the_subjects_true_networks(sica: dict) -> None:
    """Each run's maps, against that subject's own true network maps (smoothed as the data)."""
    for run in sica["runs"]:
        maps = np.asarray(nib.load(sica_outputs(sica["deriv"], run)["maps"]).dataobj)
        mask = np.abs(maps).sum(-1) > 0
        truth, _ = true_network_maps(sica["bids"], mask, subject=run.subject)
        r = spatial_correlation(maps[mask].T, truth)  # (components, true networks)
        best = r.max(0)  # signed: a network comes out with a positive tail (MELODIC's sign convention)
        # measured: medians 0.72 and 0.60, 43 and 35 of 56 networks at r >= 0.5 (150 volumes each)
        assert np.median(best) >= 0.5, np.round(np.sort(best), 2)
        assert (best >= 0.5).mean() >= 0.5, np.round(np.sort(best), 2)


def test_a_rerun_is_skipped_a_changed_order_is_redone_the_same_seed_gives_the_same_maps(
    sica: dict, capsys: pytest.CaptureFixture[str]
) -> None:
    deriv, run = sica["deriv"], sica["runs"][0]
    maps = sica_outputs(deriv, run)["maps"]
    before = _sha(maps)
    assert main(["subject-ica", str(deriv), "--seed", "0"]) == EXIT_OK
    summary = pd.read_csv(group_paths(deriv)["sica_summary"], sep="\t")
    assert set(summary["status"]) == {"skipped (complete)"} and _sha(maps) == before
    assert main(["subject-ica", str(deriv), "--seed", "0", "--force"]) == EXIT_OK
    assert _sha(maps) == before  # same run, settings and seed: the same bytes
    assert main(["subject-ica", str(deriv), "--order", "20", "--seed", "0"]) == EXIT_OK
    assert nib.load(maps).shape[3] == 20
    assert not sica_status(deriv, run, SicaSettings(seed=0)).complete
    capsys.readouterr()
    assert main(["subject-ica", str(deriv), "--seed", "0"]) == EXIT_OK  # back for the other tests
    assert _sha(maps) == before


def test_the_classifier_labels_each_runs_own_components(sica: dict, tiny_mlp: Path) -> None:
    """``classify --maps sica``: one table per run; the components that are a true network get its network."""
    deriv = sica["deriv"]
    assert main(["classify", str(deriv), "--model", str(tiny_mlp), "--maps", "sica"]) == EXIT_OK
    taxonomy = load_taxonomy()
    right, total = 0, 0
    for run in sica["runs"]:
        table = pd.read_csv(sica_outputs(deriv, run)["labels"], sep="\t")
        maps = np.asarray(nib.load(sica_outputs(deriv, run)["maps"]).dataobj)
        assert list(table["component"]) == list(range(maps.shape[3]))
        mask = np.abs(maps).sum(-1) > 0
        truth, labels = true_network_maps(sica["bids"], mask, subject=run.subject)
        r = spatial_correlation(maps[mask].T, truth)
        is_network = r.max(1) >= 0.5
        true_net = np.array([taxonomy.parent(lab) for lab in labels[r.argmax(1)]])
        said = table["network"].to_numpy()
        right += int((said[is_network] == true_net[is_network]).sum())
        total += int(is_network.sum())
    assert total >= 40
    assert right / total >= 0.8, (right, total)
    page = group_paths(deriv)["sica_classify_report"]
    assert page.is_file() and not group_paths(deriv)["classify_report"].exists()


def test_bad_orders_and_folders_fail_in_one_line(
    sica: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["subject-ica", str(sica["deriv"]), "--order", "0"]) == EXIT_ERROR
    err = capsys.readouterr().err.strip()
    assert "--order" in err and len(err.splitlines()) == 1
    # 150 volumes cannot give 200 components: every run fails, named; the earlier outputs stay intact
    before = {run: _sha(sica_outputs(sica["deriv"], run)["maps"]) for run in sica["runs"]}
    assert main(["subject-ica", str(sica["deriv"]), "--order", "200"]) == EXIT_ERROR
    assert "failed: sub-" in capsys.readouterr().err
    summary = pd.read_csv(group_paths(sica["deriv"])["sica_summary"], sep="\t")
    assert set(summary["status"]) == {"failed"} and summary["reason"].str.contains("150 volumes").all()
    for run in sica["runs"]:
        assert sica_status(sica["deriv"], run, SicaSettings(seed=0)).complete
        assert _sha(sica_outputs(sica["deriv"], run)["maps"]) == before[run]
    assert main(["subject-ica", str(tmp_path)]) == EXIT_ERROR
    err = capsys.readouterr().err.strip()
    assert "no preprocessed run" in err and len(err.splitlines()) == 1


def test_classify_takes_no_maps_without_their_record(sica: dict, tiny_mlp: Path, tmp_path: Path) -> None:
    """A decomposition killed before its record: its maps are not labelled as if they were complete."""
    import shutil

    deriv = tmp_path / "deriv"
    shutil.copytree(sica["deriv"], deriv)
    first, second = sica["runs"]
    for run in (first, second):
        sica_outputs(deriv, run)["labels"].unlink(missing_ok=True)
    sica_outputs(deriv, first)["record"].unlink()
    assert main(["classify", str(deriv), "--model", str(tiny_mlp), "--maps", "sica"]) == EXIT_OK
    assert not sica_outputs(deriv, first)["labels"].exists()
    assert sica_outputs(deriv, second)["labels"].exists()

"""Reference maps travel with a model; a new cohort is regressed onto them and classified."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from cohorts import preprocessed_only
from rsnflow.cli import EXIT_ERROR, EXIT_OK, main
from rsnflow.io import InvalidInputError
from rsnflow.layout import dr_outputs, group_paths
from rsnflow.reference import REFERENCE_FILES, check_reference, fetch_reference


def _digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_the_model_keeps_the_maps_it_was_trained_on(
    tiny_group: dict, tiny_dataset: Path, tiny_mlp: Path
) -> None:
    meta = check_reference(tiny_mlp / "reference")
    assert meta["n_components"] == 100
    group = group_paths(tiny_group["deriv"])
    for role in ("maps", "mask"):  # the group ICA's own files (other tests may relabel the shared cohort)
        assert (tiny_mlp / "reference" / REFERENCE_FILES[role]).read_bytes() == group[role].read_bytes()
    for name in REFERENCE_FILES.values():  # the dataset's, as it was built
        assert (tiny_mlp / "reference" / name).read_bytes() == (
            tiny_dataset / "reference" / name
        ).read_bytes()


def test_a_new_cohort_regressed_onto_the_reference_maps_and_classified(
    tiny_group: dict,
    tiny_mlp: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    deriv, runs = preprocessed_only(tiny_group, tmp_path)
    assert main(["dual-regression", str(deriv), "--group-maps", str(tiny_mlp)]) == EXIT_OK
    assert "(imported)" in capsys.readouterr().out
    for run in runs:  # the training cohort's components, in its order: the same maps as there
        ours = nib.load(dr_outputs(deriv, run)["maps"]).get_fdata()
        theirs = nib.load(dr_outputs(tiny_group["deriv"], run)["maps"]).get_fdata()
        assert ours.shape[3] == 100
        np.testing.assert_allclose(ours, theirs, atol=1e-5)
    before = _digests(deriv)
    assert main(["dual-regression", str(deriv), "--group-maps", str(tiny_mlp)]) == EXIT_OK
    assert "(already there)" in capsys.readouterr().out
    after = _digests(deriv)
    summary = "group/dual_regression_summary.tsv"  # rewritten: each run now "skipped (complete)"
    assert after.pop(summary) != before.pop(summary) and after == before  # nothing redone
    assert main(["classify", str(deriv), "--model", str(tiny_mlp)]) == EXIT_OK
    assert len(list(deriv.rglob("*_desc-classifier_labels.tsv"))) == len(runs)
    # the reference maps are this cohort's group maps: each run's maps are labelled with them
    assert "labelled alone" not in caplog.text
    assert "group map weighs in" in group_paths(deriv)["classify_report"].read_text()


def test_a_folder_with_its_own_group_ica_is_refused_untouched(
    tiny_group: dict, tiny_mlp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    group = Path(tiny_group["deriv"]) / "group"
    before = _digests(group)
    assert main(["dual-regression", str(tiny_group["deriv"]), "--group-maps", str(tiny_mlp)]) == EXIT_ERROR
    err = capsys.readouterr().err
    assert "already has group outputs (from group ICA)" in err and "desc-ica_components.nii.gz" in err
    assert _digests(group) == before


def test_a_changed_or_missing_reference_is_refused(tiny_mlp: Path, tmp_path: Path) -> None:
    model = tmp_path / "model"
    shutil.copytree(tiny_mlp, model)
    maps = model / "reference" / "components.nii.gz"
    maps.write_bytes(maps.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(InvalidInputError, match="changed since the model was trained"):
        fetch_reference(str(model))
    shutil.rmtree(model / "reference")
    with pytest.raises(InvalidInputError, match="no reference maps in the model"):
        fetch_reference(str(model))
    with pytest.raises(InvalidInputError, match="not a model directory"):
        fetch_reference(str(tmp_path))


def test_other_labels_make_another_reference_and_a_lost_record_is_repaired(
    tiny_group: dict, tiny_mlp: Path, tmp_path: Path
) -> None:
    from rsnflow.labeling.stage import check_labels_current
    from rsnflow.reference import import_reference

    deriv, _ = preprocessed_only(tiny_group, tmp_path, n=1)
    with pytest.raises(InvalidInputError, match="no preprocessed runs"):
        import_reference(tmp_path / "empty", tiny_mlp / "reference")
    assert not (tmp_path / "empty").exists()  # nothing written into a folder that is not a cohort
    assert import_reference(deriv, tiny_mlp / "reference")
    # The same maps relabelled (an expert's labels): another reference, imported again.
    relabelled = tmp_path / "relabelled"
    shutil.copytree(tiny_mlp / "reference", relabelled)
    table = relabelled / "labels.tsv"
    table.write_text(table.read_text().replace("Noise", "Unknown"))
    meta = json.loads((relabelled / "reference.json").read_text())
    meta["sha256"]["labels.tsv"] = hashlib.sha256(table.read_bytes()).hexdigest()
    (relabelled / "reference.json").write_text(json.dumps(meta))
    assert import_reference(deriv, relabelled)
    assert group_paths(deriv)["labels"].read_bytes() == table.read_bytes()
    assert not import_reference(deriv, relabelled)
    # Killed between the two records: the labels' record is missing, and the next import writes it.
    group_paths(deriv)["labels_record"].unlink()
    assert import_reference(deriv, relabelled)
    check_labels_current(deriv)

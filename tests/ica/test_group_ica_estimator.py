"""GroupICA as a scikit-learn estimator: images or arrays in, the stage's maps out, no files written."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from estimator_checks import API_CHECKS
from rsnflow.config import load_config
from rsnflow.ica import GroupICA, common_mask, group_ica, preprocessed_runs
from rsnflow.layout import subject_outputs
from rsnflow.simulate.truth import network_recovery


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("check", API_CHECKS)
def test_sklearn_estimator_checks(check) -> None:
    """The scikit-learn conventions that hold without fitting on sklearn's toy tables."""
    check("GroupICA", GroupICA())


def test_defaults_are_the_config_defaults() -> None:
    ica, est = load_config().ica, GroupICA()
    assert (est.n_components, est.migp_dim, est.subject_dim) == (ica.order, ica.migp_dim, ica.subject_dim)
    assert est.migp_precision == ica.migp_precision == "auto"
    assert (est.fun, est.max_iter, est.tol, est.n_restarts) == (
        ica.nonlinearity, ica.max_iter, ica.tol, ica.n_restarts,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"n_components": 0}, "n_components"),
        ({"n_components": "many"}, "n_components"),
        ({"n_components": 30, "migp_dim": 20}, "migp_dim"),
        ({"subject_dim": -1}, "subject_dim"),
        ({"migp_precision": "float16"}, "migp_precision"),
        ({"fun": "tanh"}, "fun"),
        ({"tol": 0}, "tol"),
        ({"max_iter": 2.5}, "max_iter"),
        ({"n_restarts": 0}, "n_restarts"),
        ({"random_state": "seven"}, "random_state"),
        ({"device": "tpu"}, "device"),
    ],
)
def test_parameters_are_validated_in_fit(params: dict, message: str) -> None:
    est = GroupICA(**params)  # the constructor stores, as scikit-learn requires
    rng = np.random.default_rng(0)
    run = rng.standard_normal((6, 6, 6, 40)).astype(np.float32)
    with pytest.raises(ValueError, match=message):
        est.fit([run])


def test_unfitted_transform_and_bad_runs() -> None:
    with pytest.raises(NotFittedError):
        GroupICA().transform(np.zeros((4, 4, 4, 10)))
    with pytest.raises(ValueError, match="4D"):
        GroupICA(n_components=2, migp_dim=5).fit([np.zeros((4, 4, 4))])
    with pytest.raises(ValueError, match="at least one run"):
        GroupICA().fit([])
    with pytest.raises(TypeError, match="NIfTI image, a path or a 4D array"):
        GroupICA().fit([42])


def test_fit_on_arrays_gives_the_stage_maps_without_writing(tiny_group, tmp_path: Path) -> None:
    """The estimator on the preprocessed runs as in-memory arrays = the stage on the folder (same seed)."""
    deriv = tiny_group["deriv"]
    for sub in deriv.glob("sub-*"):  # a view, so the fixture's order-100 outputs stay in place
        (tmp_path / sub.name).symlink_to(sub)
    cfg = dataclasses.replace(tiny_group["config"].ica, order=20)
    stage = group_ica(tmp_path, cfg, seed=3, device="cpu", report=False)

    runs = preprocessed_runs(deriv)
    arrays = [np.asarray(nib.load(subject_outputs(deriv, r).bold).dataobj, dtype=np.float32) for r in runs]
    before = _files(deriv)
    est = GroupICA(n_components=20, migp_dim=cfg.migp_dim, subject_dim=cfg.subject_dim, random_state=3)
    est.set_params(device="cpu").fit(arrays, mask=common_mask(deriv, runs))
    assert _files(deriv) == before  # nothing written
    np.testing.assert_allclose(est.components_, stage.zmaps, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(est.mixing_, stage.mixing, rtol=1e-4, atol=1e-4)
    assert est.n_components_ == 20 and est.converged_ and est.n_iter_ >= 1
    assert est.components_img_.shape == (*est.mask_.shape, 20)
    np.testing.assert_array_equal(est.components_img_.get_fdata()[est.mask_].T, est.components_)
    # The maps are the simulator's networks, not noise, even at order 20 for 56 networks (most merge;
    # recorded: 4 at |r| > 0.8, where the stage's own test shows all of them at order 100).
    rec = network_recovery(tiny_group["cohort"].bids_dir, est.components_, est.mask_)
    assert int((rec["r"] > 0.8).sum()) >= 3


def test_images_and_paths_give_the_same_fit_and_transform_is_dual_regression(tiny_group) -> None:
    deriv = tiny_group["deriv"]
    runs = preprocessed_runs(deriv)[:4]
    paths = [subject_outputs(deriv, r).bold for r in runs]
    mask = common_mask(deriv, runs)
    kwargs = {"n_components": 8, "migp_dim": 100, "subject_dim": 30, "random_state": 1, "device": "cpu"}
    by_path = GroupICA(**kwargs).fit([os.fspath(p) for p in paths], mask=mask)
    by_image = clone(GroupICA(**kwargs)).fit([nib.load(p) for p in paths], mask=nib.Nifti1Image(
        mask.astype(np.uint8), nib.load(paths[0]).affine))  # fmt: skip
    np.testing.assert_array_equal(by_path.components_, by_image.components_)
    np.testing.assert_allclose(by_path.affine_, nib.load(paths[0]).affine)
    results = by_path.transform(paths[:2])
    assert len(results) == 2
    n_t = nib.load(paths[0]).shape[-1]
    assert results[0].timecourses.shape == (n_t, 8)
    assert results[0].zmaps.shape == (8, int(mask.sum()))
    # Stage 1 of dual regression recovers each group map's time course: a run regressed onto the maps
    # and back explains its own data better than a shuffled assignment of time courses would.
    data = np.asarray(nib.load(paths[0]).dataobj, dtype=np.float32)[mask].T
    fit = results[0].timecourses @ by_path.components_
    fit_r = np.corrcoef(fit.ravel(), (data - data.mean(1, keepdims=True)).ravel())[0, 1]
    assert fit_r > 0.1


def test_default_mask_is_voxels_with_signal_in_every_run() -> None:
    rng = np.random.default_rng(4)
    runs = [rng.standard_normal((5, 5, 5, 30)).astype(np.float32) for _ in range(3)]
    runs[1][0, 0, 0] = 1.0  # no variance in one run: left out
    est = GroupICA(n_components=3, migp_dim=20, subject_dim=None, random_state=0, device="cpu").fit(runs)
    assert not est.mask_[0, 0, 0] and est.mask_.sum() == 124
    assert est.components_.shape == (3, 124)
    again = GroupICA(n_components=3, migp_dim=20, subject_dim=None, random_state=0, device="cpu").fit(runs)
    np.testing.assert_array_equal(est.components_, again.components_)

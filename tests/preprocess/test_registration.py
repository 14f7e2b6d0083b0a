from __future__ import annotations

import numpy as np
import torch

from rsnflow.preprocess.motion import apply_motion_mean, estimate_motion
from rsnflow.preprocess.registration import register_to_mni
from rsnflow.preprocess.to_mni import dice, epi_brain_mask, mask_to_mni, resample_run_to_mni
from rsnflow.resample import affine_points, grid_points
from rsnflow.simulate import PROFILES, simulate_subject
from rsnflow.space import MNI4_AFFINE, load_brain_mask
from rsnflow.transforms import rigid_matrix


def test_registration_and_mask_against_truth() -> None:
    sub = simulate_subject(PROFILES["tiny"], 5, 2)
    est = estimate_motion(sub.bold, sub.affine, show_progress=False)
    mean = apply_motion_mean(sub.bold, sub.affine, est.params, est.centre, torch.device("cpu"))
    reg = register_to_mni(mean, sub.affine)
    # MNI -> reference-volume frame, from the truth: R_ref M^-1.
    truth = rigid_matrix(sub.motion[est.reference_index]) @ np.linalg.inv(sub.native_to_mni)
    template = load_brain_mask().get_fdata() > 0
    pts = affine_points(MNI4_AFFINE, grid_points(template.shape)[template.reshape(-1)])
    err = np.linalg.norm(affine_points(reg.mni_to_epi, pts) - affine_points(truth, pts), axis=1)
    assert err.mean() < 2.0, err.mean()
    assert reg.cost < 0.5

    _, coverage = resample_run_to_mni(
        sub.bold[..., :4], sub.affine, est.matrices()[:4], reg.mni_to_epi, "cpu"
    )
    native_mask = epi_brain_mask(mean)
    mapped = mask_to_mni(native_mask, sub.affine, reg.mni_to_epi)
    assert dice(mapped & coverage, template & coverage) > 0.9


def test_single_resampling_puts_truth_in_place() -> None:
    # A static head: the mean EPI resampled with the TRUE transforms matches the
    # one resampled with the estimated ones.
    sub = simulate_subject(PROFILES["tiny"], 5, 3, fluctuations=False)
    est = estimate_motion(sub.bold, sub.affine, show_progress=False)
    mean = apply_motion_mean(sub.bold, sub.affine, est.params, est.centre, torch.device("cpu"))
    reg = register_to_mni(mean, sub.affine)
    truth_motion = rigid_matrix(sub.motion) @ np.linalg.inv(rigid_matrix(sub.motion[est.reference_index]))
    truth_reg = rigid_matrix(sub.motion[est.reference_index]) @ np.linalg.inv(sub.native_to_mni)
    est_img, cov = resample_run_to_mni(sub.bold, sub.affine, est.matrices(), reg.mni_to_epi, "cpu")
    true_img, _ = resample_run_to_mni(sub.bold, sub.affine, truth_motion, truth_reg, "cpu")
    m = cov & (load_brain_mask().get_fdata() > 0)
    r = np.corrcoef(est_img.mean(-1)[m], true_img.mean(-1)[m])[0, 1]
    assert r > 0.97


def test_template_outside_the_image_is_not_a_good_fit() -> None:
    from rsnflow.preprocess.registration import _correlation_ratio

    values = torch.rand(1000, dtype=torch.float64)
    bins = torch.randint(0, 8, (1000,))
    none_valid = torch.zeros(1000, dtype=torch.bool)
    assert float(_correlation_ratio(values, none_valid, bins, 8)) == 1.0
    # Values that are a function of the bins fit perfectly where they are seen.
    exact = bins.double() * 10
    half = torch.arange(1000) < 500
    assert float(_correlation_ratio(exact, torch.ones(1000, dtype=torch.bool), bins, 8)) < 1e-9
    assert abs(float(_correlation_ratio(exact, half, bins, 8)) - 0.5) < 1e-9

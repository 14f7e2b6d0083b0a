from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from rsnflow.atlas import load_taxonomy
from rsnflow.simulate import simulate_cohort
from rsnflow.simulate.profiles import get_profile
from rsnflow.simulate.subject import simulate_subject
from rsnflow.simulate.variation import (
    NODE_SHIFT_MM,
    TR_RANGE,
    VOXEL_FACTOR,
    aliased_physiology,
    ar1_in_time,
    node_offsets,
    vary_cohort,
    vary_subject,
)


def test_varied_acquisitions_keep_the_field_of_view_and_run_length() -> None:
    prof = get_profile("demo")
    fov = np.asarray(prof.shape) * np.asarray(prof.voxel_mm)
    draws = [vary_cohort(prof, seed) for seed in range(40)]
    trs = np.array([d.profile.tr for d in draws])
    assert TR_RANGE[0] <= trs.min() and trs.max() <= TR_RANGE[1]
    assert trs.max() - trs.min() > 1.2  # the range is used, not one value
    for d in draws:
        p = d.profile
        assert p.name == "demo-varied"
        assert abs(p.n_volumes * p.tr - prof.n_volumes * prof.tr) <= p.tr  # 300 s, to a volume
        factor = np.asarray(p.voxel_mm) / np.asarray(prof.voxel_mm)
        assert np.all((factor >= VOXEL_FACTOR[0] - 1e-3) & (factor <= VOXEL_FACTOR[1] + 1e-3))
        np.testing.assert_allclose(
            np.asarray(p.shape) * np.asarray(p.voxel_mm), fov, atol=2 * max(p.voxel_mm)
        )
    # some cohorts keep every network split, most make one or more whole; never a one-label network
    tax = load_taxonomy()
    parents = {tax.parent(lab) for lab in tax.network_labels}
    assert all(set(d.whole) <= parents for d in draws)
    assert 0.1 < np.mean([len(d.whole) / len(parents) for d in draws]) < 0.5
    assert vary_cohort(prof, 3) == vary_cohort(prof, 3)


def test_subject_draws_are_seeded_and_in_range() -> None:
    a, b = vary_subject(0, 4, 8), vary_subject(0, 5, 8)
    assert a == vary_subject(0, 4, 8) and a != b
    assert 0.01 <= a.network_amplitude <= 0.03 and 0.0 <= a.thermal_ar <= 0.5
    assert len(a.noise_gain) == 8 and all(0.5 <= g <= 2.0 for g in a.noise_gain)


def test_ar1_noise_has_the_asked_autocorrelation_and_variance() -> None:
    noise = np.random.default_rng(0).standard_normal((30, 20, 400), dtype=np.float32)
    noise = np.asfortranarray(noise)
    ar1_in_time(noise, 0.4)
    x = noise.reshape(-1, 400)
    lag1 = np.mean([np.corrcoef(r[:-1], r[1:])[0, 1] for r in x[:200]])
    assert lag1 == pytest.approx(0.4, abs=0.03)
    assert x[:, 1:].std() == pytest.approx(1.0, abs=0.02)
    white = np.random.default_rng(0).standard_normal((4, 50), dtype=np.float32)
    before = white.copy()
    ar1_in_time(white, 0.0)
    np.testing.assert_array_equal(white, before)


def test_physiological_cycles_alias_where_the_tr_folds_them() -> None:
    """A 1.1 Hz heart rate seen at TR 2 s appears at |1.1 - 2 * 0.5| = 0.1 Hz, at TR 0.7 s at 0.33 Hz."""
    for tr, expected in ((2.0, 0.1), (0.7, 1 / 0.7 - 1.1)):
        rng = np.random.default_rng(1)
        sig = aliased_physiology(rng, 600, tr, 1.1, 0.03)  # breathing slow enough to sit far below
        spec = np.abs(np.fft.rfft(sig)) ** 2
        freqs = np.fft.rfftfreq(600, tr)
        band = freqs > 0.07  # above the breathing line and its harmonic
        peak = freqs[band][np.argmax(spec[band])]
        assert peak == pytest.approx(expected, abs=0.02)
        assert sig.std() == pytest.approx(1.0) and abs(sig.mean()) < 1e-9


def test_varied_subject_moves_whole_networks_as_one() -> None:
    prof = get_profile("tiny")
    tax = load_taxonomy()
    sub = simulate_subject(prof, 3, 0, vary=True, whole=("DMN",))
    tcs = sub.timecourses.T
    dmn = [i for i, lab in enumerate(tax.network_labels) if tax.parent(lab) == "DMN"]
    other = [i for i, lab in enumerate(tax.network_labels) if tax.parent(lab) == "VISUAL"]
    assert np.corrcoef(tcs[dmn]).min() > 0.999
    assert np.corrcoef(tcs[other]).min() < 0.9
    amp = np.abs(tcs[: len(tax.network_labels)]).max()
    assert amp / 4 <= sub.info["variation"]["network_amplitude"] <= amp  # peaks of a unit-variance course
    assert sub.info["whole_networks"] == ["DMN"]


def test_varied_cohort_writes_its_acquisition(tmp_path: Path) -> None:
    res = simulate_cohort(tmp_path / "bids", profile="tiny", seed=2, n_subjects=1, vary=True)
    varied = vary_cohort(get_profile("tiny"), 2)
    assert res.profile == varied.profile
    img = nib.load(res.bids_dir / "sub-01" / "func" / "sub-01_task-rest_bold.nii.gz")
    assert img.shape == (*varied.profile.shape, varied.profile.n_volumes)
    np.testing.assert_allclose(
        img.header.get_zooms(), (*varied.profile.voxel_mm, varied.profile.tr), rtol=1e-5
    )
    sidecar = json.loads((res.bids_dir / "sub-01" / "func" / "sub-01_task-rest_bold.json").read_text())
    assert sidecar["RepetitionTime"] == varied.profile.tr
    record = json.loads((res.groundtruth_dir / "variation.json").read_text())
    assert record["tr"] == varied.profile.tr and record["whole_networks"] == list(varied.whole)
    assert record["node_shift_mm"] == node_offsets(2)[0]
    xfm = json.loads((res.groundtruth_dir / "sub-01" / "sub-01_xfm.json").read_text())
    assert xfm["variation"] == json.loads(
        json.dumps(vary_subject(2, 0, len(xfm["variation"]["noise_gain"])).__dict__)
    )
    assert pd.read_csv(res.bids_dir / "participants.tsv", sep="\t").shape[0] == 1
    # simulated over without --vary: the record of the varied acquisition goes with it
    simulate_cohort(tmp_path / "bids", profile="tiny", seed=2, n_subjects=1, n_volumes=20)
    assert not (res.groundtruth_dir / "variation.json").exists()


def test_a_varied_cohort_moves_its_nodes_the_drawn_distance() -> None:
    tax = load_taxonomy()
    distances = []
    for seed in range(6):
        distance, offsets = node_offsets(seed)
        assert NODE_SHIFT_MM[0] <= distance <= NODE_SHIFT_MM[1]
        assert set(offsets) == set(tax.network_labels)
        for label, off in offsets.items():
            assert off.shape == tax.nodes(label).shape
            np.testing.assert_allclose(np.linalg.norm(off, axis=1), distance, atol=1e-9)
        distances.append(distance)
        assert node_offsets(seed)[0] == distance  # seeded
    assert len(set(distances)) == 6
    # the subject's maps move with the nodes: the varied subject's peak of a small network is off
    # the unvaried one's by about the drawn distance (the same seed and index: the same other draws)
    prof = get_profile("tiny")
    label = "AUDITORY-LEFT"
    k = tax.network_labels.index(label)
    seed = int(np.argmax(distances))
    peaks = []
    for vary in (False, True):
        sub = simulate_subject(prof, seed, 0, vary=vary, fluctuations=False)
        m = sub.sources_mni[..., k]
        peaks.append(np.array(np.unravel_index(np.argmax(m), m.shape), float))
    moved_mm = 4.0 * np.linalg.norm(peaks[1] - peaks[0])
    assert 0.5 * distances[seed] <= moved_mm <= distances[seed] + 8.0

"""A second cohort generator that differs from ``rsnflow.simulate`` on purpose.

rsnflow's classifiers are trained on rsnflow's own simulator; scoring them on
that simulator's cohorts only says they learned it. This generator shares no
code with ``rsnflow.simulate`` (only the taxonomy's node coordinates, so its
truth speaks the same 58 labels) and changes every model on purpose:

=================  ==================================  ======================================
                   rsnflow.simulate                    this generator
=================  ==================================  ======================================
anatomy            MNI tissue mixture, affine head     nilearn's MNI152 T1, inverted to EPI
                                                       contrast, plus a smooth nonlinear warp
                                                       per subject (3 mm) that no affine
                                                       registration undoes
network shape      Gaussian nodes x grey matter        soft-edged ellipsoids of random
                                                       axes, a node dropped at times
granularity        every sub-network its own source    per cohort, some networks whole (their
                                                       sub-networks share one time course)
time courses       band-limited 0.01-0.1 Hz            1/f (pink) noise, AR-filtered
noise              8 structured sources, Rician        physiological (cardiac 1.1 Hz and
                                                       respiration 0.3 Hz, aliased), white-
                                                       matter and CSF drifts, slice-wise
                                                       artefacts, spikes, AR(1) Gaussian
                                                       thermal noise (no structure at all)
acquisition        64x64x33, 3.125x3.125x3.6 mm,       56x66x46, 3.3 mm isotropic, TR 1.0 s,
                   TR 2.0 s, 150 volumes               240 volumes, oblique head, LPS affine
=================  ==================================  ======================================

It writes BIDS with ground truth in the layout ``rsnflow.simulate.truth`` reads
(``derivatives/groundtruth/sources.tsv`` and per-subject source maps on the
MNI 4 mm grid), so the truth is scored the same way.

    python bench/second_simulator.py OUT [--subjects 12] [--seed 7] [--node-shift MM]

``--node-shift MM`` moves every node that far from the taxonomy's coordinate,
in a random direction per node (per cohort): networks that do not sit where
the atlas, and so the template labeller and the training cohorts, put them.
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from numpy.typing import NDArray
from scipy import ndimage, signal

SHAPE = (56, 66, 46)
VOXEL_MM = 3.3
TR = 1.0
N_VOLUMES = 240
NETWORK_AMPLITUDE = 0.03
MNI4_SHAPE = (45, 54, 45)
MNI4_AFFINE = np.array([[4.0, 0, 0, -90], [0, 4, 0, -126], [0, 0, 4, -72], [0, 0, 0, 1]])
#: Noise sources of this generator: name and spatial model.
NOISE = (
    ("physio-cardiac", "vessels"),
    ("physio-respiration", "ventricles"),
    ("wm-drift", "wm"),
    ("csf-drift", "csf"),
    ("global", "brain"),
)


class Head:
    """The template head on nilearn's 2 mm MNI152 grid: EPI-like intensity and tissue weights."""

    def __init__(self) -> None:
        from nilearn.datasets import load_mni152_brain_mask, load_mni152_template

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t1 = load_mni152_template(resolution=2)
            brain = load_mni152_brain_mask(resolution=2).get_fdata() > 0.5
        self.affine = t1.affine
        self.shape = t1.shape
        x = t1.get_fdata().astype(np.float32)
        x /= np.percentile(x[brain], 99)
        # T1 -> T2*-like: CSF bright, white matter darkest; the scalp faint.
        self.wm = np.clip((x - 0.55) / 0.3, 0, 1) * brain
        self.csf = np.clip((0.35 - x) / 0.25, 0, 1) * brain
        self.gm = np.clip(1 - self.wm - self.csf, 0, 1) * brain
        head = ndimage.binary_dilation(brain, iterations=4)
        self.epi = (700 * self.gm + 520 * self.wm + 1300 * self.csf + 90 * (head & ~brain)).astype(np.float32)
        self.brain = brain
        ijk = np.indices(self.shape).reshape(3, -1).T
        self.xyz = (ijk @ self.affine[:3, :3].T + self.affine[:3, 3]).reshape(*self.shape, 3)
        centre = np.array([0.0, -18.0, 10.0])
        d = self.xyz - centre
        # Large draining veins: the sinuses near the midline back and top, and the circle at the base.
        sinus = np.exp(-(d[..., 0] ** 2) / 30) * np.clip((np.linalg.norm(d, axis=-1) - 55) / 15, 0, 1)
        base = np.exp(-((d[..., 2] + 40) ** 2) / 80) * np.exp(-(d[..., 0] ** 2 + (d[..., 1] + 5) ** 2) / 900)
        self.vessels = ((sinus + base) * head).astype(np.float32)
        self.ventricles = (self.csf * (np.linalg.norm(d / [25, 40, 25], axis=-1) < 1)).astype(np.float32)


def _ellipsoid_network(
    rng: np.random.Generator, xyz: NDArray[np.float64], nodes: NDArray[np.float64], extent: float
) -> NDArray[np.float32]:
    out = np.zeros(xyz.shape[:3], dtype=np.float32)
    keep = np.ones(len(nodes), bool)
    if len(nodes) > 2 and rng.random() < 0.25:
        keep[rng.integers(len(nodes))] = False
    for node in nodes[keep]:
        radii = extent * 1.5 * rng.uniform(0.7, 1.4, 3)
        rot = np.linalg.qr(rng.normal(size=(3, 3)))[0]
        d = ((xyz - node - rng.normal(0, 2.0, 3)) @ rot) / radii
        r = np.sqrt((d**2).sum(-1))
        out = np.maximum(out, (1 / (1 + np.exp((r - 1) * 8))).astype(np.float32) * rng.uniform(0.6, 1.0))
    return out


def _pink(rng: np.random.Generator, n: int, k: int = 1) -> NDArray[np.float64]:
    """1/f noise, AR-smoothed, z-scored: the network time courses."""
    spec = rng.normal(size=(k, n // 2 + 1)) + 1j * rng.normal(size=(k, n // 2 + 1))
    f = np.fft.rfftfreq(n, TR)
    spec *= np.where(f > 0.004, 1 / np.sqrt(np.maximum(f, 1e-3)), 0) * (f < 0.15)
    x = np.fft.irfft(spec, n)
    x = signal.lfilter([1.0], [1.0, -0.4], x, axis=1)
    return (x - x.mean(1, keepdims=True)) / x.std(1, keepdims=True)


def _physio(rng: np.random.Generator, n: int, f0: float) -> NDArray[np.float64]:
    """A quasi-periodic rhythm of ``f0`` Hz (drifting rate) sampled every TR: aliased."""
    fine = np.arange(n * 20) * TR / 20
    rate = f0 * (1 + 0.05 * np.cumsum(rng.normal(0, 0.02, fine.size)) / np.sqrt(fine.size))
    phase = 2 * np.pi * np.cumsum(rate) * (TR / 20)
    wave = np.cos(phase) + 0.4 * np.cos(2 * phase + 0.3)
    return wave[::20] / wave[::20].std()


def _warp(rng: np.random.Generator, shape: tuple[int, ...]) -> NDArray[np.float32]:
    """A smooth random displacement field (voxels of 2 mm), about 1.5 voxels at its largest."""
    field = np.stack([ndimage.gaussian_filter(rng.normal(size=shape), 8.0) for _ in range(3)])
    return (field / np.abs(field).max() * 1.5).astype(np.float32)


def _cohort_design(rng: np.random.Generator) -> tuple[list[str], list[str], dict[str, bool]]:
    from rsnflow.atlas import load_taxonomy

    tax = load_taxonomy()
    labels = list(tax.network_labels)
    parents = [tax.parent(lab) for lab in labels]
    whole = {p: bool(rng.random() < 0.4) for p in sorted(set(parents))}
    return labels, parents, whole


def _node_shifts(seed: int, labels: list[str], node_shift_mm: float) -> dict[str, NDArray[np.float64]]:
    """Per cohort, every node of every network moved ``node_shift_mm`` in a random direction.

    A population whose networks do not sit where the atlas puts them; drawn from
    its own stream, so a cohort without shifts is the same as before they existed.
    """
    from rsnflow.atlas import load_taxonomy

    tax = load_taxonomy()
    rng = np.random.default_rng([seed, 1_000_003])
    out = {}
    for lab in labels:
        v = rng.normal(size=(len(tax.nodes(lab)), 3))
        out[lab] = node_shift_mm * v / np.linalg.norm(v, axis=1, keepdims=True)
    return out


def simulate_subject(
    head: Head, seed: int, index: int, out: Path, label: str, node_shift_mm: float = 0.0
) -> None:
    """One subject: BOLD in native space and its truth, written under ``out``."""
    from rsnflow.atlas import load_taxonomy

    tax = load_taxonomy()
    labels, parents, whole = _cohort_design(np.random.default_rng(seed))
    rng = np.random.default_rng([seed, index])
    shift = _node_shifts(seed, labels, node_shift_mm)
    maps = [
        _ellipsoid_network(rng, head.xyz, tax.nodes(lab) + shift[lab], tax.extent(lab)) * head.gm
        for lab in labels
    ]
    noise_maps = [getattr(head, kind).astype(np.float32) for _, kind in NOISE]
    # Time courses: one per network that is whole this cohort, one per sub-network otherwise.
    parent_tc = dict(zip(sorted(set(parents)), _pink(rng, N_VOLUMES, len(set(parents))), strict=True))
    own = _pink(rng, N_VOLUMES, len(labels))
    tc = np.stack([parent_tc[p] if whole[p] else 0.4 * parent_tc[p] + own[i] for i, p in enumerate(parents)])
    tc = (tc - tc.mean(1, keepdims=True)) / tc.std(1, keepdims=True) * NETWORK_AMPLITUDE
    amps = rng.uniform(0.6, 1.4, len(labels))[:, None]
    t = np.linspace(0, 1, N_VOLUMES)
    noise_tc = np.stack(
        [
            0.02 * _physio(rng, N_VOLUMES, rng.uniform(1.0, 1.25)),
            0.02 * _physio(rng, N_VOLUMES, rng.uniform(0.25, 0.35)),
            0.01 * _pink(rng, N_VOLUMES)[0],
            0.015 * (_pink(rng, N_VOLUMES)[0] + rng.normal() * (t - 0.5)),
            0.005 * _pink(rng, N_VOLUMES)[0],
        ]
    )
    weights = np.stack([m[head.brain] for m in maps + noise_maps], axis=1)  # (V, S)
    coeffs = np.concatenate([tc * amps, noise_tc])  # (S, T)

    # Native grid: 3.3 mm isotropic, LPS-ordered (x flipped), tilted and shifted head, slow motion.
    aff = np.diag([-VOXEL_MM, VOXEL_MM, VOXEL_MM, 1.0])
    aff[:3, 3] = -np.diag(aff)[:3] * (np.array(SHAPE) - 1) / 2
    angles = rng.normal(0, [0.08, 0.05, 0.05])
    shift = np.array([0.0, -15.0, 12.0]) + rng.normal(0, 3, 3)
    drift = np.cumsum(rng.normal(0, 0.02, (N_VOLUMES, 6)), axis=0) * [1, 1, 1, 0.01, 0.01, 0.01]
    jumps = rng.choice(N_VOLUMES, 2, replace=False)
    drift[jumps.min() :] += rng.normal(0, [0.4, 0.4, 0.4, 0.004, 0.004, 0.004])
    warp = _warp(rng, head.shape)
    ijk = np.indices(SHAPE).reshape(3, -1).T
    native_mm = ijk @ aff[:3, :3].T + aff[:3, 3]
    inv_template = np.linalg.inv(head.affine)
    vol = np.zeros(head.shape, np.float32)
    bold = np.empty((*SHAPE, N_VOLUMES), np.float32)
    slice_gain = 1 + (rng.random((N_VOLUMES, SHAPE[2])) < 0.004) * rng.normal(0, 0.04, (N_VOLUMES, SHAPE[2]))
    for v in range(N_VOLUMES):
        vol[head.brain] = head.epi[head.brain] * (1 + weights @ coeffs[:, v])
        vol[~head.brain] = head.epi[~head.brain]
        rot = _rotation(angles + drift[v, 3:])
        mni = (native_mm @ rot.T) + shift + drift[v, :3]
        vox = mni @ inv_template[:3, :3].T + inv_template[:3, 3]
        disp = np.stack([ndimage.map_coordinates(w, vox.T, order=1) for w in warp], axis=1)
        img = ndimage.map_coordinates(vol, (vox + disp).T, order=1, cval=0.0).reshape(SHAPE)
        bold[..., v] = img * slice_gain[v][None, None, :]
    # AR(1) thermal noise, Gaussian, spatially white: components of nothing at high order.
    sigma = float(rng.uniform(6.0, 10.0))
    noise = rng.normal(0, sigma, bold.shape).astype(np.float32)
    noise = signal.lfilter([1.0], [1.0, -0.3], noise, axis=-1).astype(np.float32)
    bold += noise
    spikes = rng.choice(N_VOLUMES, 2, replace=False)
    bold[..., spikes] *= 1.03
    to_mni = np.eye(4)
    to_mni[:3, :3] = _rotation(angles)
    to_mni[:3, 3] = shift
    _write(out, label, bold, aff, maps + noise_maps, head, to_mni)


def _rotation(a: NDArray[np.float64]) -> NDArray[np.float64]:
    cx, cy, cz = np.cos(a)
    sx, sy, sz = np.sin(a)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def _write(
    out: Path,
    label: str,
    bold: NDArray[np.float32],
    aff: NDArray[np.float64],
    maps: list[NDArray[np.float32]],
    head: Head,
    to_mni: NDArray[np.float64],
) -> None:
    func = out / f"sub-{label}" / "func"
    func.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(np.clip(bold, 0, 32767).astype(np.int16), aff)
    img.header.set_xyzt_units("mm", "sec")
    img.header.set_zooms((VOXEL_MM, VOXEL_MM, VOXEL_MM, TR))
    nib.save(img, func / f"sub-{label}_task-rest_bold.nii.gz")
    (func / f"sub-{label}_task-rest_bold.json").write_text(json.dumps({"RepetitionTime": TR}))
    # Truth on the MNI 4 mm grid: every 4 mm point is a 2 mm template point.
    ijk4 = np.indices(MNI4_SHAPE).reshape(3, -1).T
    world = ijk4 @ MNI4_AFFINE[:3, :3].T + MNI4_AFFINE[:3, 3]
    ijk2 = np.rint((world - head.affine[:3, 3]) @ np.linalg.inv(head.affine[:3, :3]).T).astype(int)
    ok = np.all((ijk2 >= 0) & (ijk2 < np.array(head.shape)), axis=1)
    truth = np.zeros((ijk4.shape[0], len(maps)), np.float32)
    for k, m in enumerate(maps):
        truth[ok, k] = (m * head.brain)[tuple(ijk2[ok].T)]
    gt = out / "derivatives" / "groundtruth" / f"sub-{label}"
    gt.mkdir(parents=True, exist_ok=True)
    nib.save(
        nib.Nifti1Image(truth.reshape(*MNI4_SHAPE, -1), MNI4_AFFINE),
        gt / f"sub-{label}_space-MNI152NLin2009aSym_res-4mm_desc-sources_components.nii.gz",
    )
    (gt / f"sub-{label}_xfm.json").write_text(json.dumps({"native_to_mni": to_mni.tolist()}))


def _one(args: tuple[int, int, Path, str, float]) -> str:
    seed, index, out, label, node_shift_mm = args
    # the transform is written last: a subject that has it is whole (a rerun after a kill skips it)
    if not (out / "derivatives" / "groundtruth" / f"sub-{label}" / f"sub-{label}_xfm.json").exists():
        simulate_subject(_head(), seed, index, out, label, node_shift_mm)
    return label


_HEAD: list[Head] = []


def _head() -> Head:
    if not _HEAD:  # once per process
        _HEAD.append(Head())
    return _HEAD[0]


def simulate(out: Path, n_subjects: int, seed: int, n_jobs: int = 1, node_shift_mm: float = 0.0) -> None:
    """A cohort of ``n_subjects`` written as BIDS under ``out`` with its ground truth.

    ``node_shift_mm`` moves every network node that far from the taxonomy's
    coordinate (per cohort, a random direction per node).
    """
    from rsnflow.atlas import load_taxonomy

    tax = load_taxonomy()
    out.mkdir(parents=True, exist_ok=True)
    (out / "dataset_description.json").write_text(
        json.dumps({"Name": f"second generator, seed {seed}", "BIDSVersion": "1.8.0", "DatasetType": "raw"})
    )
    (out / "task-rest_bold.json").write_text(json.dumps({"TaskName": "rest"}))
    labels = [f"{i + 1:02d}" for i in range(n_subjects)]
    gt = out / "derivatives" / "groundtruth"
    gt.mkdir(parents=True, exist_ok=True)
    (gt / "dataset_description.json").write_text(
        json.dumps({"Name": "second generator truth", "BIDSVersion": "1.8.0", "DatasetType": "derivative"})
    )
    nets, parents, whole = _cohort_design(np.random.default_rng(seed))
    rows = [(lab, lab, p, "network") for lab, p in zip(nets, parents, strict=True)]
    rows += [(name, "Noise", "NOISE", "noise") for name, _ in NOISE]
    table = pd.DataFrame(rows, columns=["name", "label", "network", "kind"])
    table.insert(0, "index", np.arange(len(table)))
    table.to_csv(gt / "sources.tsv", sep="\t", index=False)
    design = {"whole_networks": sorted(p for p, w in whole.items() if w), "node_shift_mm": node_shift_mm}
    (gt / "design.json").write_text(json.dumps(design))
    assert len(nets) == len(tax.network_labels)
    jobs = [(seed, i, out, label, node_shift_mm) for i, label in enumerate(labels)]
    if n_jobs == 1:
        done = map(_one, jobs)
    else:
        from multiprocessing import get_context

        done = get_context("spawn").Pool(n_jobs).imap(_one, jobs)
    for label in done:
        print(f"sub-{label} written", flush=True)
    # last: a cohort with participants.tsv is whole (the bench resimulates one killed half-way)
    pd.DataFrame({"participant_id": [f"sub-{x}" for x in labels]}).to_csv(
        out / "participants.tsv", sep="\t", index=False
    )


def main() -> None:
    """``python bench/second_simulator.py OUT [--subjects N] [--seed S] [--node-shift MM]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--subjects", type=int, default=12)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--n-jobs", type=int, default=1)
    parser.add_argument(
        "--node-shift", type=float, default=0.0, metavar="MM",
        help="move every network node this far from the atlas coordinate (per cohort, random directions)",
    )  # fmt: skip
    args = parser.parse_args()
    simulate(args.out, args.subjects, args.seed, args.n_jobs, args.node_shift)


if __name__ == "__main__":
    main()

"""PNG figures of one simulated subject: a raw slice, motion traces, network maps."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from rsnflow.figures import motion_plot, save_figure
from rsnflow.io import open_nifti
from rsnflow.space import SPACE_NAME, grid_data, load_template

__all__ = ["write_subject_figures"]

_SHOWN_NETWORKS = (
    "DMN-PCC-MID",
    "VISUAL-PRIMARY-MID",
    "SENSORY-DORSAL-HAND-LEFT",
    "AUDITORY-RIGHT",
)


def write_subject_figures(bids_dir: str | Path, label: str, out_dir: str | Path) -> list[Path]:
    """Write ``sim_raw_slice.png``, ``sim_motion.png`` and ``sim_networks.png``.

    Parameters
    ----------
    bids_dir
        A cohort written by :func:`rsnflow.simulate.simulate_cohort`.
    label
        Participant label (``"01"``).
    out_dir
        Folder for the PNG files.

    Returns
    -------
    list of Path
        The three PNG files written.
    """
    bids, out = Path(bids_dir), Path(out_dir)
    gt = bids / "derivatives" / "groundtruth" / f"sub-{label}"
    bold = open_nifti(bids / f"sub-{label}" / "func" / f"sub-{label}_task-rest_bold.nii.gz")
    vol0 = np.asarray(bold.dataobj[..., 0], dtype=np.float32)
    written = []

    fig, axes = plt.subplots(1, 3, figsize=(10, 3.6))
    mid = [s // 2 for s in vol0.shape]
    dx, dy, dz = (float(z) for z in bold.header.get_zooms()[:3])
    views = (
        (vol0[:, :, mid[2]].T, "axial", dy / dx),
        (vol0[:, mid[1], :].T, "coronal", dz / dx),
        (vol0[mid[0], :, :].T, "sagittal", dz / dy),
    )
    for ax, (img, title, aspect) in zip(axes, views, strict=True):
        ax.imshow(img, cmap="gray", origin="lower", aspect=aspect)
        ax.set_title(f"sub-{label} volume 0, {title}")
        ax.axis("off")
    written.append(save_figure(fig, out / "sim_raw_slice.png"))

    motion = pd.read_csv(gt / f"sub-{label}_motion.tsv", sep="\t")
    median_fd = motion["framewise_displacement"][1:].median()
    title = f"sub-{label}: true head motion (median FD {median_fd:.2f} mm)"
    written.append(motion_plot(motion, title, out / "sim_motion.png"))

    sources = pd.read_csv(bids / "derivatives" / "groundtruth" / "sources.tsv", sep="\t")
    maps = open_nifti(gt / f"sub-{label}_space-{SPACE_NAME}_res-4mm_desc-sources_components.nii.gz")
    data = grid_data(maps)
    template = load_template().get_fdata()
    fig, axes = plt.subplots(1, len(_SHOWN_NETWORKS), figsize=(3.2 * len(_SHOWN_NETWORKS), 3.4))
    for ax, name in zip(axes, _SHOWN_NETWORKS, strict=True):
        k = int(sources.index[sources["name"] == name][0])
        m = data[..., k]
        z = int(np.argmax(m.max(axis=(0, 1))))
        ax.imshow(template[:, :, z].T, cmap="gray", origin="lower")
        ax.imshow(np.ma.masked_less(m[:, :, z].T, 0.1), cmap="hot", origin="lower", vmin=0, vmax=1.3)
        ax.set_title(f"{name}\nMNI z = {4 * z - 72} mm", fontsize=9)
        # The grid's x axis runs from right to left (affine -4): radiological view.
        ax.text(0.02, 0.02, "R", transform=ax.transAxes, color="w")
        ax.text(0.93, 0.02, "L", transform=ax.transAxes, color="w")
        ax.axis("off")
    written.append(save_figure(fig, out / "sim_networks.png"))
    return written

"""Figures shared by the simulator, QC pages and reports (PNG, written atomically)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from numpy.typing import NDArray

from rsnflow.io import atomic_path

__all__ = ["carpet_plot", "motion_plot", "registration_plot", "save_figure"]


def save_figure(fig: plt.Figure, path: str | Path) -> Path:
    """Save a figure as PNG atomically and close it."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)
    return Path(path)


def motion_plot(table: pd.DataFrame, title: str, path: str | Path, fd_threshold: float | None = None) -> Path:
    """Translations (mm), rotations (degrees) and framewise displacement over volumes."""
    fig, axes = plt.subplots(3, 1, figsize=(9, 6), sharex=True)
    for c in ("trans_x", "trans_y", "trans_z"):
        axes[0].plot(table[c].to_numpy(), label=c)
    for c in ("rot_x", "rot_y", "rot_z"):
        axes[1].plot(np.rad2deg(table[c].to_numpy()), label=c)
    axes[2].plot(table["framewise_displacement"].to_numpy(), color="k")
    if fd_threshold is not None:
        axes[2].axhline(fd_threshold, color="r", ls="--", lw=0.8)
    axes[0].set_ylabel("mm")
    axes[1].set_ylabel("degrees")
    axes[2].set_ylabel("FD (mm)")
    axes[2].set_xlabel("volume")
    axes[0].legend(ncol=3, fontsize=8)
    axes[1].legend(ncol=3, fontsize=8)
    axes[0].set_title(title)
    return save_figure(fig, path)


def registration_plot(
    epi: NDArray[np.floating], template_mask: NDArray[np.bool_], title: str, path: str | Path
) -> Path:
    """Mean EPI in MNI space with the template's brain outline (FSL's registration check)."""
    shape = epi.shape
    cuts = [("axial", 2, k) for k in np.linspace(shape[2] * 0.3, shape[2] * 0.75, 3).astype(int)]
    cuts += [("coronal", 1, shape[1] // 2), ("sagittal", 0, shape[0] // 2)]
    fig, axes = plt.subplots(1, len(cuts), figsize=(3 * len(cuts), 3.3))
    vmax = float(np.percentile(epi[template_mask], 99)) if template_mask.any() else float(epi.max())
    for ax, (name, axis, k) in zip(axes, cuts, strict=True):
        img = np.take(epi, k, axis=axis).T
        outline = np.take(template_mask, k, axis=axis).T.astype(float)
        ax.imshow(img, cmap="gray", origin="lower", vmin=0, vmax=vmax)
        ax.contour(outline, levels=[0.5], colors="r", linewidths=0.8)
        ax.set_title(f"{name} {k}", fontsize=9)
        ax.axis("off")
    fig.suptitle(title)
    return save_figure(fig, path)


def carpet_plot(
    data: NDArray[np.floating],
    mask: NDArray[np.bool_],
    fd: NDArray[np.floating],
    title: str,
    path: str | Path,
) -> Path:
    """Voxel time series in the mask (z-scored, rows) over volumes, with FD above."""
    ts = np.asarray(data, dtype=np.float32)[mask]
    ts = (ts - ts.mean(1, keepdims=True)) / np.maximum(ts.std(1, keepdims=True), 1e-6)
    step = max(1, len(ts) // 1500)
    fig, (a0, a1) = plt.subplots(2, 1, figsize=(9, 5), sharex=True, gridspec_kw={"height_ratios": [1, 4]})
    a0.plot(fd, color="k")
    a0.set_ylabel("FD (mm)")
    a1.imshow(ts[::step], aspect="auto", cmap="gray", vmin=-2, vmax=2, interpolation="nearest")
    a1.set_ylabel("voxels")
    a1.set_xlabel("volume")
    a0.set_title(title)
    return save_figure(fig, path)

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

__all__ = [
    "carpet_plot",
    "component_montage",
    "confusion_figure",
    "learning_curves_figure",
    "montage_anchor",
    "motion_plot",
    "registration_plot",
    "save_figure",
]


def save_figure(fig: plt.Figure, path: str | Path) -> Path:
    """Save a figure as PNG atomically and close it.

    Parameters
    ----------
    fig : matplotlib.figure.Figure
        The figure; it is closed afterwards.
    path : str or Path
        Output PNG file (110 dpi).

    Returns
    -------
    Path
        ``path``.
    """
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)
    return Path(path)


def motion_plot(table: pd.DataFrame, title: str, path: str | Path, fd_threshold: float | None = None) -> Path:
    """Translations (mm), rotations (degrees) and framewise displacement over volumes.

    Parameters
    ----------
    table : pandas.DataFrame
        Motion parameters per volume: ``trans_x``, ``trans_y``, ``trans_z`` (mm),
        ``rot_x``, ``rot_y``, ``rot_z`` (radians) and ``framewise_displacement`` (mm).
    title : str
        Title of the figure.
    path : str or Path
        Output PNG file.
    fd_threshold : float or None, default=None
        When given, drawn as a dashed line on the FD panel (mm).

    Returns
    -------
    Path
        ``path``.
    """
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
    epi: NDArray[np.floating],
    template_mask: NDArray[np.bool_],
    title: str,
    path: str | Path,
    white_matter: NDArray[np.bool_] | None = None,
) -> Path:
    """Mean EPI in MNI space with the template's brain outline (FSL's registration check).

    Three axial slices, one coronal and one sagittal.

    Parameters
    ----------
    epi : ndarray of shape (X, Y, Z)
        Mean EPI volume on the template's grid.
    template_mask : ndarray of bool, shape (X, Y, Z)
        The template's brain mask; its outline is drawn in red.
    title : str
        Title of the figure.
    path : str or Path
        Output PNG file.
    white_matter : ndarray of bool, shape (X, Y, Z), optional
        The template's white matter, outlined in yellow: its boundary inside the
        brain shows a misregistration the brain's outline alone can hide (as
        FSL's BBR check draws it).

    Returns
    -------
    Path
        ``path``.
    """
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
        if white_matter is not None and np.take(white_matter, k, axis=axis).any():
            wm = np.take(white_matter, k, axis=axis).T.astype(float)
            ax.contour(wm, levels=[0.5], colors="y", linewidths=0.6)
        ax.set_title(f"{name} {k}", fontsize=9)
        ax.axis("off")
    fig.suptitle(title)
    return save_figure(fig, path)


def carpet_plot(
    data: NDArray[np.floating],
    mask: NDArray[np.bool_],
    traces: dict[str, tuple[NDArray[np.floating], float | None]],
    title: str,
    path: str | Path,
    tissues: dict[str, NDArray[np.bool_]] | None = None,
) -> Path:
    """Voxel time series (z-scored rows) over volumes, grouped by tissue, with traces above.

    As fMRIPrep's and MRIQC's carpet plots: the rows are split into grey
    matter, white matter and CSF (in that order, labelled and separated), and
    above them each trace (framewise displacement, standardised DVARS, the
    global signal) is drawn with its threshold, the volumes past it marked.
    At most about 1500 voxel rows are drawn (every n-th voxel of each tissue).

    Parameters
    ----------
    data : ndarray of shape (X, Y, Z, T)
        The BOLD series.
    mask : ndarray of bool, shape (X, Y, Z)
        Voxels to draw.
    traces : dict of str to (ndarray of shape (T,), float or None)
        Label to values per volume and a threshold (None: none), drawn top to bottom.
    title : str
        Title of the figure.
    path : str or Path
        Output PNG file.
    tissues : dict of str to ndarray of bool, optional
        Label to voxels of the tissue (within ``mask``), in drawing order; None: one block.

    Returns
    -------
    Path
        ``path``.
    """
    blocks = tissues if tissues else {"brain": mask}
    series, edges = [], []
    budget = max(1, int(mask.sum()) // 1500)
    for name, where in blocks.items():
        ts = np.asarray(data, dtype=np.float32)[where & mask][::budget]
        if len(ts) == 0:
            continue
        series.append((ts - ts.mean(1, keepdims=True)) / np.maximum(ts.std(1, keepdims=True), 1e-6))
        edges.append((name, sum(len(s) for s in series)))
    rows = np.concatenate(series) if series else np.zeros((1, data.shape[-1]), np.float32)
    n = len(traces)
    fig, axes = plt.subplots(
        n + 1, 1, figsize=(9, 2.2 + 1.1 * n + 3.5), sharex=True, gridspec_kw={"height_ratios": [1] * n + [4]}
    )
    for ax, (label, (values, threshold)) in zip(axes[:n], traces.items(), strict=True):
        v = np.asarray(values, dtype=float)
        ax.plot(v, color="k", lw=0.8)
        if threshold is not None:
            over = np.flatnonzero(v > threshold)
            ax.axhline(threshold, color="r", ls="--", lw=0.8)
            ax.plot(over, v[over], "r.", ms=4)
            label = f"{label}\n{len(over)} > {threshold:g}"
        ax.set_ylabel(label, fontsize=8)
        ax.tick_params(labelsize=7)
    carpet = axes[n]
    carpet.imshow(rows, aspect="auto", cmap="gray", vmin=-2, vmax=2, interpolation="nearest")
    start = 0
    for name, end in edges:
        carpet.axhline(end - 0.5, color="c", lw=0.8)
        carpet.text(-0.01, (start + end) / 2, name, transform=carpet.get_yaxis_transform(), ha="right",
                    va="center", fontsize=8, color="c")  # fmt: skip
        start = end
    carpet.set_yticks([])
    carpet.set_xlabel("volume")
    axes[0].set_title(title)
    return save_figure(fig, path)


#: The colour scale's end of the component maps: one scale for every page.
_ZMAX = 10.0


def montage_anchor(component: int, per_page: int = 10) -> str:
    """The HTML id of the montage figure that shows ``component`` (tables link to it).

    Parameters
    ----------
    component : int
        The component's index.
    per_page : int, default=10
        Components per montage PNG, as given to :func:`component_montage`.

    Returns
    -------
    str
        ``components-SSS``, ``SSS`` the first component of the figure.
    """
    return f"components-{per_page * (component // per_page):03d}"


def component_montage(
    maps: NDArray[np.floating],
    template: NDArray[np.floating],
    titles: list[str],
    stem: str | Path,
    spectra: tuple[NDArray[np.floating], NDArray[np.floating]] | None = None,
    per_page: int = 10,
    threshold: float = 3.0,
    affine: NDArray[np.floating] | None = None,
    timecourses: tuple[NDArray[np.floating], NDArray[np.floating]] | None = None,
) -> list[tuple[Path, str]]:
    """Signed maps in orthogonal slices through each component's peak, ten to a PNG.

    Positive values are red, negative blue (a diverging scale symmetric about
    zero, with a colorbar); the title gives the peak's MNI coordinates when
    ``affine`` is given. Optional panels: the time course of one run and the
    power spectrum (median over runs with the 25-75% band when several).

    Parameters
    ----------
    maps
        ``(X, Y, Z, K)`` statistic maps on the grid of ``template``.
    template
        ``(X, Y, Z)`` background image.
    titles
        One title per component.
    stem
        PNGs are written as ``{stem}_{first:03d}.png``.
    spectra
        Optional ``(freqs (F,), power)``: power ``(K, F)`` of one run or ``(R, K, F)`` of
        ``R`` runs.
    per_page
        Components per PNG (one row each).
    threshold
        Values with ``|z|`` below this are not drawn over the template; the colour scale
        runs from -10 to 10 on every page (beyond, saturated), so pages compare.
    affine
        Voxel-to-MNI affine of the grid, for the peak's coordinates in mm.
    timecourses
        Optional ``(times (T,), courses (K, T))`` of one run.

    Returns
    -------
    list of (path, caption)
        One PNG per page and its caption (``components 0-9``).
    """
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    k_total = maps.shape[-1]
    pages = []
    extra = [p for p in (timecourses, spectra) if p is not None]
    for start in range(0, k_total, per_page):
        ks = range(start, min(start + per_page, k_total))
        ncol = 3 + len(extra)
        fig, axes = plt.subplots(len(ks), ncol, figsize=(2.75 * ncol + 0.6, 2.2 * len(ks)), squeeze=False)
        vmax = _ZMAX
        for row, k in enumerate(ks):
            m = maps[..., k]
            peak = np.unravel_index(np.argmax(np.abs(m)), m.shape)
            _signed_slices(axes[row, :3], template, m, peak, threshold, vmax)
            where = ""
            if affine is not None:
                x, y, z = (affine @ np.array([*peak, 1.0]))[:3]
                where = f"  peak ({x:.0f}, {y:.0f}, {z:.0f}) mm, z {m[peak]:+.1f}"
            axes[row, 0].set_title(titles[k] + where, fontsize=8, loc="left")
            col = 3
            if timecourses is not None:
                _timecourse_panel(axes[row, col], *timecourses, k)
                col += 1
            if spectra is not None:
                _spectrum_panel(axes[row, col], *spectra, k)
        fig.colorbar(
            ScalarMappable(Normalize(-vmax, vmax), "RdBu_r"), ax=axes[-1, :3].tolist(), location="bottom",
            fraction=0.08, pad=0.04, label=f"z (|z| < {threshold:g} not shown; beyond ±{vmax:g} saturated)",
        )  # fmt: skip
        png = save_figure(fig, f"{stem}_{start:03d}.png")
        pages.append((png, f"components {start}-{ks[-1]}"))
    return pages


def _signed_slices(
    axes: NDArray[np.object_],
    template: NDArray[np.floating],
    m: NDArray[np.floating],
    peak: tuple[np.intp, ...],
    threshold: float,
    vmax: float,
) -> None:
    """Axial, coronal and sagittal slices through ``peak``: the map over the template, signed."""
    i, j, z = peak
    views = (
        (template[:, :, z].T, m[:, :, z].T),
        (template[:, j, :].T, m[:, j, :].T),
        (template[i, :, :].T, m[i, :, :].T),
    )
    for ax, (bg, over) in zip(axes, views, strict=True):
        ax.imshow(bg, cmap="gray", origin="lower")
        shown = np.ma.masked_where(np.abs(over) < threshold, over)
        ax.imshow(shown, cmap="RdBu_r", origin="lower", vmin=-vmax, vmax=vmax)
        ax.axis("off")


def _timecourse_panel(
    ax: plt.Axes, times: NDArray[np.floating], courses: NDArray[np.floating], k: int
) -> None:
    ax.plot(times, courses[k] - courses[k].mean(), lw=0.6, color="k")
    ax.set_xlabel("s", fontsize=7)
    ax.tick_params(labelsize=6)


def _spectrum_panel(ax: plt.Axes, freqs: NDArray[np.floating], power: NDArray[np.floating], k: int) -> None:
    if power.ndim == 3:  # several runs: median and the 25-75% band
        lo, med, hi = np.percentile(power[:, k, 1:], [25, 50, 75], axis=0)
        ax.fill_between(freqs[1:], lo, hi, alpha=0.3, lw=0)
        ax.plot(freqs[1:], med, lw=0.8)
    else:
        ax.plot(freqs[1:], power[k, 1:], lw=0.8)
    ax.set_xlabel("Hz", fontsize=7)
    ax.tick_params(labelsize=6)


def confusion_figure(
    y: NDArray[np.integer], pred: NDArray[np.integer], classes: list[str], title: str, path: str | Path
) -> Path:
    """Row-normalised confusion matrix over the classes present in truth or prediction.

    Parameters
    ----------
    y, pred : ndarray of shape (n_maps,)
        True and predicted class indices.
    classes : list of str
        Class labels, indexed by class index.
    title : str
        Title of the figure; the accuracy is appended.
    path : str or Path
        Output PNG file.

    Returns
    -------
    Path
        ``path``.
    """
    present = np.union1d(np.unique(y), np.unique(pred))
    pos = {c: i for i, c in enumerate(present)}
    counts = np.zeros((len(present), len(present)))
    np.add.at(counts, ([pos[c] for c in y], [pos[c] for c in pred]), 1)
    norm = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    side = max(5.0, 0.17 * len(present) + 2)
    fig, ax = plt.subplots(figsize=(side + 1, side))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    names = [classes[c] for c in present]
    ax.set_xticks(range(len(present)), names, rotation=90, fontsize=6)
    ax.set_yticks(range(len(present)), names, fontsize=6)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{title} (accuracy {np.mean(np.asarray(y) == np.asarray(pred)):.3f})")
    fig.colorbar(im, ax=ax, fraction=0.03)
    return save_figure(fig, path)


def learning_curves_figure(histories: dict[str, pd.DataFrame], path: str | Path) -> Path:
    """Training and validation accuracy and loss per epoch, one colour per model.

    Parameters
    ----------
    histories : dict of str to pandas.DataFrame
        Per model, its ``history.tsv`` as written by ``rsnflow train``: columns
        ``epoch``, ``train_accuracy``, ``val_accuracy``, ``train_loss``, ``val_loss``.
    path : str or Path
        Output PNG file.

    Returns
    -------
    Path
        ``path``.
    """
    fig, (acc, loss) = plt.subplots(1, 2, figsize=(11, 4))
    for i, (name, h) in enumerate(histories.items()):
        colour = f"C{i}"
        for ax, what in ((acc, "accuracy"), (loss, "loss")):
            ax.plot(h["epoch"], h[f"train_{what}"], color=colour, label=f"{name} train")
            ax.plot(h["epoch"], h[f"val_{what}"], color=colour, ls="--", label=f"{name} validation")
    acc.set_ylim(0, 1.02)
    acc.set_ylabel("accuracy")
    loss.set_ylabel("loss (weighted cross-entropy)")
    for ax in (acc, loss):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    acc.legend(fontsize=7)
    fig.suptitle("Learning curves (dashed: validation)")
    return save_figure(fig, path)

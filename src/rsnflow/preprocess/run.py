"""The preprocessing of one run in memory: native 4D array in, MNI 4 mm arrays and confounds out.

Order of operations. The paper (with FSL) does motion correction, smoothing,
temporal filtering, then registration. rsnflow estimates motion, then the
registration (on the motion-corrected mean), then resamples the run ONCE into
the MNI 4 mm grid through the composed transforms, and only then smooths
(7 mm, inside the brain mask) and high-pass filters. Smoothing and filtering
are linear and commute with each other; doing them after the single
resampling avoids a second interpolation (and its extra blur) of data that
would otherwise be resampled once for motion and again for registration.

Nothing here reads or writes a file: the ``preprocess`` stage
(:mod:`rsnflow.preprocess.participant`) and the
:class:`~rsnflow.preprocess.estimator.Preprocessor` estimator both call
:func:`preprocess_run`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
from numpy.typing import NDArray

from rsnflow.config import PreprocessConfig
from rsnflow.errors import PreprocessingError
from rsnflow.preprocess.confounds import (
    confounds_table,
    dvars,
    non_steady_state_volumes,
    std_dvars,
    tissue_signals,
)
from rsnflow.preprocess.motion import MotionEstimate, apply_motion_mean, estimate_motion
from rsnflow.preprocess.registration import AffineRegistration, register_to_mni
from rsnflow.preprocess.smoothing import smooth_in_mask
from rsnflow.preprocess.temporal import highpass
from rsnflow.preprocess.to_mni import dice, epi_brain_mask, mask_to_mni, resample_run_to_mni
from rsnflow.resample import pick_device
from rsnflow.space import MNI4_AFFINE, load_brain_mask, load_tissue_probabilities

__all__ = [
    "MIN_COVERAGE",
    "AlignedRun",
    "PreprocessedRun",
    "Timer",
    "align_run",
    "check_field_of_view",
    "check_registration",
    "clean_run",
    "mni_image",
    "preprocess_run",
]

#: A registration that leaves less of the template brain than this inside the
#: field of view has failed (a 119 mm slab still covers about 85%).
MIN_COVERAGE = 0.5


@dataclass
class Timer:
    """Seconds per step, lap by lap.

    Attributes
    ----------
    seconds : dict of str to float
        Seconds of each step, by step name, rounded to the millisecond.
    _t : float
        ``time.perf_counter()`` at the end of the last lap (or at creation).
    """

    seconds: dict[str, float] = field(default_factory=dict)
    _t: float = field(default_factory=time.perf_counter)

    def lap(self, name: str) -> None:
        """Record the seconds since the last lap under ``name`` and start the next lap.

        Parameters
        ----------
        name : str
            The step that just ended.
        """
        now = time.perf_counter()
        self.seconds[name] = round(now - self._t, 3)
        self._t = now


@dataclass(frozen=True)
class PreprocessedRun:
    """One run preprocessed into the MNI 4 mm grid, with what it took to get there.

    ``bold`` is smoothed and high-pass filtered (0 outside ``mask``); ``mean``
    the mean before smoothing (the registration check's image).

    Attributes
    ----------
    bold : numpy.ndarray
        ``(45, 54, 45, T)`` float32 preprocessed run.
    mask : numpy.ndarray
        ``(45, 54, 45)`` template brain inside the field of view.
    mean : numpy.ndarray
        ``(45, 54, 45)`` mean of the resampled run before smoothing and filtering.
    confounds : pandas.DataFrame
        One row per volume (:func:`~rsnflow.preprocess.confounds.confounds_table`).
    motion : MotionEstimate
        The head motion estimate.
    registration : AffineRegistration
        The registration to MNI.
    coverage : numpy.ndarray
        Voxels inside the native field of view in every volume.
    template_mask : numpy.ndarray
        The template brain mask.
    epi_mask : numpy.ndarray
        The EPI's own brain mask, brought into MNI.
    tsnr : numpy.ndarray
        Temporal SNR of every voxel of ``mask`` (before smoothing; quadratic trend removed).
    n_non_steady : int
        Leading non-steady-state volumes (flagged in ``confounds``, not dropped).
    seconds : dict of str to float
        Seconds per step (:class:`Timer`).
    """

    bold: NDArray[np.float32]  # (45, 54, 45, T)
    mask: NDArray[np.bool_]  # template brain inside the field of view
    mean: NDArray[np.float32]
    confounds: pd.DataFrame
    motion: MotionEstimate
    registration: AffineRegistration
    coverage: NDArray[np.bool_]  # inside the native field of view in every volume
    template_mask: NDArray[np.bool_]
    epi_mask: NDArray[np.bool_]  # the EPI's own brain mask, in MNI
    tsnr: NDArray[np.float64]
    n_non_steady: int
    seconds: dict[str, float]

    def qc(self) -> dict[str, Any]:
        """Motion, registration, mask and tSNR figures of the run.

        Returns
        -------
        dict
            Framewise displacement summaries (mm), largest translation (mm) and rotation (degrees),
            registration cost, scales, shears and matrix, Dice of the EPI mask with ``mask``,
            the fraction of the template brain in the field of view, and the median tSNR.
        """
        fd = self.confounds["framewise_displacement"].to_numpy()
        params, reg = self.motion.params, self.registration
        return {
            "mean_fd_mm": float(np.nanmean(fd)),
            "max_fd_mm": float(np.nanmax(fd)),
            "n_fd_over_0_5mm": int(np.nansum(fd > 0.5)),
            "max_translation_mm": float(np.abs(params[:, :3]).max()),
            "max_rotation_deg": float(np.rad2deg(np.abs(params[:, 3:]).max())),
            "registration_cost_corratio": reg.cost,
            "registration_scales": reg.scales,
            "registration_shears": reg.shears,
            "mni_to_epi": reg.mni_to_epi,
            "mask_dice_with_template": dice(self.epi_mask & self.coverage, self.mask),
            "fov_coverage_of_template_mask": float(self.mask.sum() / self.template_mask.sum()),
            "tsnr_median": float(np.median(self.tsnr)),
        }


def mni_image(bold: NDArray[np.float32], tr: float) -> nib.Nifti1Image:
    """A preprocessed run as a 4D image on the MNI 4 mm grid, with its TR in the header.

    Parameters
    ----------
    bold : numpy.ndarray
        ``(45, 54, 45, T)`` data.
    tr : float
        Repetition time (s).

    Returns
    -------
    nibabel.Nifti1Image
        The image, spatial units mm and time units seconds.
    """
    img = nib.Nifti1Image(bold, MNI4_AFFINE)
    img.header.set_xyzt_units("mm", "sec")
    img.header.set_zooms((*np.abs(np.diag(MNI4_AFFINE)[:3]), tr))
    return img


def check_field_of_view(where: object, shape: tuple[int, ...], affine: NDArray[np.float64]) -> None:
    """Refuse a run whose field of view cannot hold :data:`MIN_COVERAGE` of the template brain.

    Checked before motion correction: a 10x10x18-voxel crop (nitime's
    ``fmri1.nii.gz``) or a 3-slice slab cannot be registered to a whole-brain
    template, and motion correction of a handful of voxels is ill-posed.

    Parameters
    ----------
    where : object
        Names the run in the error message.
    shape : tuple of int
        Shape of the native run.
    affine : numpy.ndarray
        Its voxel-to-world affine.

    Raises
    ------
    PreprocessingError
        The field of view's volume is under :data:`MIN_COVERAGE` of the template brain's.
    """
    zooms = np.sqrt((affine[:3, :3] ** 2).sum(0))
    extent = zooms * np.asarray(shape[:3])
    brain_ml = (
        float(load_brain_mask().get_fdata().sum()) * float(np.prod(np.abs(np.diag(MNI4_AFFINE)[:3]))) / 1000
    )
    fov_ml = float(np.prod(extent)) / 1000
    if fov_ml < MIN_COVERAGE * brain_ml:
        dims = "x".join(f"{e:.0f}" for e in extent)
        raise PreprocessingError(
            f"{where}: field of view {dims} mm ({fov_ml:.0f} ml) cannot hold {MIN_COVERAGE:.0%} of a "
            f"brain ({brain_ml:.0f} ml in the template): rsnflow needs whole-brain runs"
        )


def check_registration(where: object, reg: AffineRegistration, config: PreprocessConfig) -> None:
    """Refuse a registration whose cost or affine is implausible (thresholds in the ``preprocess`` config).

    A partial field of view lets the 12-DOF fit stretch the template to fill
    it (seen: z scaled by 1.6 at cost 0.67, against about 0.30 for good runs).

    Parameters
    ----------
    where : object
        Names the run in the error message.
    reg : AffineRegistration
        The registration to check.
    config : PreprocessConfig
        Gives ``registration_max_cost``, ``registration_max_scale`` and ``registration_max_shear``.

    Raises
    ------
    PreprocessingError
        Listing every limit the registration exceeds.
    """
    scale = reg.scales
    problems = []
    if reg.cost > config.registration_max_cost:
        problems.append(
            f"cost {reg.cost:.3f} > preprocess.registration_max_cost {config.registration_max_cost}"
        )
    limit = config.registration_max_scale
    if np.any(scale > limit) or np.any(scale < 1 / limit):
        problems.append(
            f"scales {np.round(scale, 2).tolist()} outside 1/{limit}-{limit} "
            "(preprocess.registration_max_scale)"
        )
    if np.any(np.abs(reg.shears) > config.registration_max_shear):
        problems.append(
            f"shears {np.round(reg.shears, 2).tolist()} beyond {config.registration_max_shear} "
            "(preprocess.registration_max_shear)"
        )
    if problems:
        raise PreprocessingError(f"{where}: registration to MNI failed: {'; '.join(problems)}")


@dataclass(frozen=True)
class AlignedRun:
    """A run resampled into the MNI 4 mm grid, with the transforms that took it there.

    Attributes
    ----------
    bold : numpy.ndarray
        ``(45, 54, 45, T)`` float32 run, not yet smoothed or filtered.
    mask : numpy.ndarray
        Template brain inside the field of view.
    coverage : numpy.ndarray
        Voxels inside the native field of view in every volume.
    template_mask : numpy.ndarray
        The template brain mask.
    motion : MotionEstimate
        The head motion estimate.
    registration : AffineRegistration
        The registration to MNI.
    epi_mask : numpy.ndarray
        The EPI's own brain mask, brought into MNI.
    n_non_steady : int
        Leading non-steady-state volumes.
    """

    bold: NDArray[np.float32]  # (45, 54, 45, T), not yet smoothed or filtered
    mask: NDArray[np.bool_]
    coverage: NDArray[np.bool_]
    template_mask: NDArray[np.bool_]
    motion: MotionEstimate
    registration: AffineRegistration
    epi_mask: NDArray[np.bool_]
    n_non_steady: int


def preprocess_run(
    data: NDArray[np.generic],
    affine: NDArray[np.float64],
    tr: float,
    config: PreprocessConfig,
    device: str = "auto",
    where: object = "run",
    timer: Timer | None = None,
) -> PreprocessedRun:
    """Preprocess one native 4D run into the MNI 4 mm grid (no file read or written).

    Parameters
    ----------
    data
        ``(X, Y, Z, T)`` native run in any real dtype: it is read in float32 a chunk of
        volumes at a time, never copied whole (keep an int16 run int16).
    affine
        Its voxel-to-world affine.
    tr
        Repetition time in seconds.
    config
        The ``preprocess`` settings (slice timing is the caller's: it needs the sidecar).
    device
        ``auto``, ``cpu`` or ``cuda``.
    where
        Names the run in error messages (its path).
    timer
        Collects seconds per step (a new one by default).

    Returns
    -------
    PreprocessedRun
        The smoothed, filtered run on the MNI 4 mm grid with its confounds, masks and transforms.

    Raises
    ------
    PreprocessingError
        A field of view too small, motion correction or registration failing.
    """
    timer = timer or Timer()
    return clean_run(align_run(data, affine, config, device, where, timer), tr, config, timer)


def align_run(
    data: NDArray[np.generic],
    affine: NDArray[np.float64],
    config: PreprocessConfig,
    device: str = "auto",
    where: object = "run",
    timer: Timer | None = None,
) -> AlignedRun:
    """Motion, registration of the motion-corrected mean, one resampling of every volume into MNI.

    The first half of :func:`preprocess_run`: the only one that needs the native
    run (a caller short of memory drops it before :func:`clean_run`).

    Parameters
    ----------
    data : numpy.ndarray
        ``(X, Y, Z, T)`` native run in any real dtype.
    affine : numpy.ndarray
        Its voxel-to-world affine.
    config : PreprocessConfig
        The ``preprocess`` settings.
    device : str, default="auto"
        ``auto``, ``cpu`` or ``cuda``.
    where : object, default="run"
        Names the run in error messages.
    timer : Timer, optional
        Collects seconds per step (a new one by default).

    Returns
    -------
    AlignedRun
        The resampled run, its masks and transforms.

    Raises
    ------
    PreprocessingError
        A field of view too small, motion correction failing, an implausible registration,
        or less than :data:`MIN_COVERAGE` of the template brain covered.
    """
    timer = timer or Timer()
    dev = pick_device(device)
    check_field_of_view(where, data.shape, affine)
    n_non_steady = non_steady_state_volumes(data)
    try:
        motion = estimate_motion(
            data, affine, reference=config.motion_reference, device=dev, show_progress=False
        )
    except RuntimeError as exc:  # torch.linalg errors on degenerate data
        raise PreprocessingError(f"{where}: motion correction failed ({str(exc).splitlines()[0]})") from exc
    timer.lap("motion")
    mean_native = apply_motion_mean(data, affine, motion.params, motion.centre, dev)
    reg = register_to_mni(mean_native, affine, device=dev, dof=config.registration_dof)
    check_registration(where, reg, config)
    timer.lap("registration")
    bold, coverage = resample_run_to_mni(data, affine, motion.matrices(), reg.mni_to_epi, dev)
    template_mask = load_brain_mask().get_fdata() > 0
    mask = template_mask & coverage
    covered = mask.sum() / template_mask.sum()
    if covered < MIN_COVERAGE:
        raise PreprocessingError(
            f"{where}: registration to MNI failed: only {covered:.0%} of the template brain falls "
            f"inside the field of view (correlation-ratio cost {reg.cost:.3f})"
        )
    epi_mask = mask_to_mni(epi_brain_mask(mean_native), affine, reg.mni_to_epi)
    timer.lap("resample")
    return AlignedRun(bold, mask, coverage, template_mask, motion, reg, epi_mask, n_non_steady)


def clean_run(
    aligned: AlignedRun, tr: float, config: PreprocessConfig, timer: Timer | None = None
) -> PreprocessedRun:
    """Confounds, then smoothing in the mask and the high-pass filter, on the MNI grid only.

    The second half of :func:`preprocess_run`.

    Parameters
    ----------
    aligned : AlignedRun
        The output of :func:`align_run`.
    tr : float
        Repetition time (s).
    config : PreprocessConfig
        ``fwhm_mm`` (mm), ``highpass_cutoff_s`` and ``highpass_method``.
    timer : Timer, optional
        Collects seconds per step (a new one by default).

    Returns
    -------
    PreprocessedRun
        The run smoothed and filtered inside ``mask`` (0 outside), with its confounds and tSNR.
    """
    timer = timer or Timer()
    bold, mask, motion = aligned.bold, aligned.mask, aligned.motion
    conf = confounds_table(
        motion.params,
        dvars(bold, mask),
        centre=motion.centre,
        std_dvars_values=std_dvars(bold, mask),
        signals=tissue_signals(bold, mask, load_tissue_probabilities()),
        n_non_steady=aligned.n_non_steady,
    )
    mean = bold.mean(-1).astype(np.float32)
    tsnr = _tsnr(bold[mask])
    bold = smooth_in_mask(bold, mask, np.abs(np.diag(MNI4_AFFINE)[:3]), config.fwhm_mm)
    timer.lap("smoothing")
    # Filter the brain's time series only (a third of the grid); outside stays 0.
    bold[mask] = highpass(bold[mask], tr, config.highpass_cutoff_s, config.highpass_method)
    bold[~mask] = 0
    timer.lap("highpass")
    return PreprocessedRun(
        bold, mask, mean, conf, motion, aligned.registration, aligned.coverage, aligned.template_mask,
        aligned.epi_mask, tsnr, aligned.n_non_steady, timer.seconds,
    )  # fmt: skip


def _tsnr(ts: NDArray[np.floating]) -> NDArray[np.float64]:
    """Temporal SNR per voxel: mean over the residual std after a quadratic trend."""
    t = np.linspace(-1, 1, ts.shape[1])
    x = np.column_stack([np.ones_like(t), t, t * t])
    beta = np.linalg.lstsq(x, ts.T, rcond=None)[0]
    resid = ts.T - x @ beta
    return np.asarray(ts.mean(1) / np.maximum(resid.std(0), 1e-6), dtype=np.float64)

"""Preprocessing of one participant's run, start to finish, with its outputs and QC.

Order of operations. The paper (with FSL) does motion correction, smoothing,
temporal filtering, then registration. rsnflow estimates motion, then the
registration (on the motion-corrected mean), then resamples the run ONCE into
the MNI 4 mm grid through the composed transforms, and only then smooths
(7 mm, inside the brain mask) and high-pass filters. Smoothing and filtering
are linear and commute with each other; doing them after the single
resampling avoids a second interpolation (and its extra blur) of data that
would otherwise be resampled once for motion and again for registration.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from numpy.typing import NDArray

from rsnflow.bids import RunId
from rsnflow.config import PreprocessConfig
from rsnflow.errors import PreprocessingError
from rsnflow.figures import carpet_plot, motion_plot, registration_plot
from rsnflow.io import (
    load_bold,
    read_sidecar,
    save_nifti,
    sidecar_metadata,
    write_json,
    write_text,
)
from rsnflow.layout import SubjectOutputs, subject_outputs
from rsnflow.log import get_logger
from rsnflow.preprocess.confounds import (
    confounds_table,
    dvars,
    non_steady_state_volumes,
    std_dvars,
    tissue_signals,
)
from rsnflow.preprocess.motion import MotionEstimate, apply_motion_mean, estimate_motion
from rsnflow.preprocess.registration import AffineRegistration, register_to_mni
from rsnflow.preprocess.slice_timing import check_slice_timing, shift_slices
from rsnflow.preprocess.smoothing import smooth_in_mask
from rsnflow.preprocess.temporal import highpass
from rsnflow.preprocess.to_mni import dice, epi_brain_mask, mask_to_mni, resample_run_to_mni
from rsnflow.records import Record, config_digest, file_digest
from rsnflow.report import Report
from rsnflow.resample import pick_device
from rsnflow.space import MNI4_AFFINE, load_brain_mask, load_tissue_probabilities

__all__ = [
    "MIN_VOLUMES",
    "PreprocessingError",
    "check_field_of_view",
    "check_registration",
    "preprocess_identity",
    "preprocess_subject",
]

log = get_logger(__name__)

#: Fewer volumes than this cannot be motion-corrected and filtered meaningfully.
MIN_VOLUMES = 20
#: A registration that leaves less of the template brain than this inside the
#: field of view has failed (a 119 mm slab still covers about 85%).
MIN_COVERAGE = 0.5


def preprocess_identity(bold_path: str | Path, config: PreprocessConfig) -> tuple[dict[str, str], str]:
    """What a run's preprocessing outputs are made from: input digests and the config digest.

    The raw run by content and its merged sidecar metadata (which may set the TR); the
    ``preprocess`` settings except ``n_jobs``, which does not change a result.
    """
    meta = sidecar_metadata(bold_path)
    inputs = {"bold": file_digest(bold_path), "sidecar": config_digest(meta) if meta else ""}
    return inputs, config_digest(config, exclude=("n_jobs",))


def _correct_slice_timing(
    bold_path: str | Path, data: NDArray[np.generic], tr: float
) -> tuple[NDArray[np.generic], bool]:
    """Slice-timing correction when the sidecar has ``SliceTiming`` (a note in the log when it has none)."""
    meta = read_sidecar(bold_path)
    if "SliceTiming" not in meta:
        log.info("%s: no SliceTiming in the sidecar: slice timing not corrected", bold_path)
        return data, False
    try:
        times, axis = check_slice_timing({key: value for key, (value, _) in meta.items()}, data.shape, tr)
    except ValueError as exc:
        raise PreprocessingError(f"{meta['SliceTiming'][1]}: {exc}") from exc
    return shift_slices(data, times, axis, tr), True


def check_field_of_view(bold_path: str | Path, img: nib.Nifti1Image) -> None:
    """Refuse a run whose field of view cannot hold :data:`MIN_COVERAGE` of the template brain.

    Checked before motion correction: a 10x10x18-voxel crop (nitime's
    ``fmri1.nii.gz``) or a 3-slice slab cannot be registered to a whole-brain
    template, and motion correction of a handful of voxels is ill-posed.
    """
    zooms = np.sqrt((img.affine[:3, :3] ** 2).sum(0))
    extent = zooms * np.asarray(img.shape[:3])
    brain_ml = (
        float(load_brain_mask().get_fdata().sum()) * float(np.prod(np.abs(np.diag(MNI4_AFFINE)[:3]))) / 1000
    )
    fov_ml = float(np.prod(extent)) / 1000
    if fov_ml < MIN_COVERAGE * brain_ml:
        dims = "x".join(f"{e:.0f}" for e in extent)
        raise PreprocessingError(
            f"{bold_path}: field of view {dims} mm ({fov_ml:.0f} ml) cannot hold {MIN_COVERAGE:.0%} of a "
            f"brain ({brain_ml:.0f} ml in the template): rsnflow needs whole-brain runs"
        )


def check_registration(bold_path: str | Path, reg: AffineRegistration, config: PreprocessConfig) -> None:
    """Refuse a registration whose cost or affine is implausible (thresholds in the ``preprocess`` config).

    A partial field of view lets the 12-DOF fit stretch the template to fill
    it (seen: z scaled by 1.6 at cost 0.67, against about 0.30 for good runs).
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
        raise PreprocessingError(f"{bold_path}: registration to MNI failed: {'; '.join(problems)}")


@dataclass
class _Timer:
    seconds: dict[str, float] = field(default_factory=dict)
    _t: float = field(default_factory=time.perf_counter)

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = round(now - self._t, 3)
        self._t = now


def preprocess_subject(
    bold_path: str | Path,
    deriv_dir: str | Path,
    subject: RunId | str,
    config: PreprocessConfig,
    device: str = "auto",
) -> dict[str, Any]:
    """Preprocess one run into the MNI 4 mm grid and write its outputs and QC.

    Parameters
    ----------
    bold_path
        Native 4D BOLD run (validated here: a bad file raises
        :class:`~rsnflow.io.InvalidInputError` naming it).
    deriv_dir
        ``derivatives/rsnflow`` root (paths from :func:`rsnflow.layout.subject_outputs`).
    subject
        The run's :class:`~rsnflow.bids.RunId`, or a participant label for its plain run.
    config
        The ``preprocess`` section of the configuration.
    device
        ``auto``, ``cpu`` or ``cuda``.

    Returns
    -------
    dict
        The QC record (also written as JSON).
    """
    timer = _Timer()
    out = subject_outputs(deriv_dir, subject)
    out.record.unlink(missing_ok=True)  # outputs being replaced are not complete until the new record
    run = load_bold(bold_path, min_volumes=MIN_VOLUMES)
    check_field_of_view(bold_path, run.img)
    # The run stays in its file's dtype (int16 for most scanners: half of float32); every
    # step reads it in float32 a chunk of volumes at a time, so a 104x104x72x1200 multiband
    # run is held once (1.9 GB) and never copied whole.
    data = np.asanyarray(run.img.dataobj)
    affine, tr, n_volumes = run.img.affine, run.tr, run.n_volumes
    del run  # the image held the same array: nothing else may keep the run alive below
    timer.lap("load")
    n_non_steady = non_steady_state_volumes(data)
    slice_timed = False
    if config.slice_timing:
        data, slice_timed = _correct_slice_timing(bold_path, data, tr)
    aligned = _align_to_mni(bold_path, data, affine, config, pick_device(device), timer)
    del data  # the native run is no longer needed: only the 4 mm grid from here
    bold_mni, mask = aligned.bold, aligned.mask
    conf = confounds_table(
        aligned.motion.params,
        dvars(bold_mni, mask),
        centre=aligned.motion.centre,
        std_dvars_values=std_dvars(bold_mni, mask),
        signals=tissue_signals(bold_mni, mask, load_tissue_probabilities()),
        n_non_steady=n_non_steady,
    )
    mean_mni = bold_mni.mean(-1)
    tsnr = _tsnr(bold_mni[mask])
    bold_mni = smooth_in_mask(bold_mni, mask, np.abs(np.diag(MNI4_AFFINE)[:3]), config.fwhm_mm)
    timer.lap("smoothing")
    # Filter the brain's time series only (a third of the grid); outside stays 0.
    bold_mni[mask] = highpass(bold_mni[mask], tr, config.highpass_cutoff_s, config.highpass_method)
    bold_mni[~mask] = 0
    timer.lap("highpass")
    _write_run(out, bold_path, bold_mni, mask, mean_mni, conf, tr, config, slice_timed)
    epi_mask = mask_to_mni(epi_brain_mask(aligned.mean_native), affine, aligned.registration.mni_to_epi)
    run_info = {"repetition_time": tr, "n_volumes": n_volumes, "n_non_steady_state": n_non_steady,
                "slice_timing_corrected": slice_timed}  # fmt: skip
    qc = _qc_record(subject, bold_path, run_info, aligned, conf, epi_mask, tsnr, config, timer.seconds)
    _qc_page(out, subject, conf, mean_mni, aligned.template_mask, bold_mni, mask, qc)
    timer.lap("outputs")
    qc["seconds"] = timer.seconds
    write_json(qc, out.qc_json)
    inputs, cfg_digest = preprocess_identity(bold_path, config)
    Record(out.record).write("preprocess", inputs, cfg_digest, out.files())  # last: marks the run complete
    log.info(
        "%s: mean FD %.3f mm, registration cost %.3f, mask Dice %.3f, %.1f s",
        RunId.of(subject), qc["mean_fd_mm"], qc["registration_cost_corratio"], qc["mask_dice_with_template"],
        sum(timer.seconds.values()),
    )  # fmt: skip
    return qc


@dataclass(frozen=True)
class _Aligned:
    """A run in the MNI 4 mm grid, with the transforms that took it there."""

    bold: NDArray[np.float32]  # (45, 54, 45, T)
    mask: NDArray[np.bool_]  # template brain inside the field of view
    coverage: NDArray[np.bool_]  # inside the native field of view in every volume
    template_mask: NDArray[np.bool_]
    motion: MotionEstimate
    registration: AffineRegistration
    mean_native: NDArray[np.float32]


def _align_to_mni(
    bold_path: str | Path,
    data: NDArray[np.generic],
    affine: NDArray[np.float64],
    config: PreprocessConfig,
    dev: Any,
    timer: _Timer,
) -> _Aligned:
    """Motion, registration of the motion-corrected mean, then one resampling of every volume into MNI."""
    try:
        motion = estimate_motion(
            data, affine, reference=config.motion_reference, device=dev, show_progress=False
        )
    except RuntimeError as exc:  # torch.linalg errors on degenerate data
        raise PreprocessingError(
            f"{bold_path}: motion correction failed ({str(exc).splitlines()[0]})"
        ) from exc
    timer.lap("motion")
    mean_native = apply_motion_mean(data, affine, motion.params, motion.centre, dev)
    reg = register_to_mni(mean_native, affine, device=dev, dof=config.registration_dof)
    check_registration(bold_path, reg, config)
    timer.lap("registration")
    bold_mni, coverage = resample_run_to_mni(data, affine, motion.matrices(), reg.mni_to_epi, dev)
    template_mask = load_brain_mask().get_fdata() > 0
    mask = template_mask & coverage
    covered = mask.sum() / template_mask.sum()
    if covered < MIN_COVERAGE:
        raise PreprocessingError(
            f"{bold_path}: registration to MNI failed: only {covered:.0%} of the template brain falls "
            f"inside the field of view (correlation-ratio cost {reg.cost:.3f})"
        )
    timer.lap("resample")
    return _Aligned(bold_mni, mask, coverage, template_mask, motion, reg, mean_native)


def _qc_record(
    subject: RunId | str,
    bold_path: str | Path,
    run_info: dict[str, Any],
    aligned: _Aligned,
    conf: Any,
    epi_mask: NDArray[np.bool_],
    tsnr: NDArray[np.floating],
    config: PreprocessConfig,
    seconds: dict[str, float],
) -> dict[str, Any]:
    """The run's QC record: the run (``run_info``), motion, registration, masks and tSNR."""
    fd = conf["framewise_displacement"].to_numpy()
    motion, reg, mask = aligned.motion, aligned.registration, aligned.mask
    return {
        "subject": RunId.of(subject).subject,
        "run_name": str(RunId.of(subject)),  # not "run": pybids reads this JSON as the page's sidecar
        "source": str(bold_path),
        **run_info,
        "motion_reference": config.motion_reference,
        "mean_fd_mm": float(np.nanmean(fd)),
        "max_fd_mm": float(np.nanmax(fd)),
        "n_fd_over_0_5mm": int(np.nansum(fd > 0.5)),
        "max_translation_mm": float(np.abs(motion.params[:, :3]).max()),
        "max_rotation_deg": float(np.rad2deg(np.abs(motion.params[:, 3:]).max())),
        "registration_cost_corratio": reg.cost,
        "registration_scales": reg.scales,
        "registration_shears": reg.shears,
        "mni_to_epi": reg.mni_to_epi,
        "mask_dice_with_template": dice(epi_mask & aligned.coverage, mask),
        "fov_coverage_of_template_mask": float(mask.sum() / aligned.template_mask.sum()),
        "tsnr_median": float(np.median(tsnr)),
        "seconds": seconds,
    }


def _write_run(
    out: SubjectOutputs,
    bold_path: str | Path,
    bold_mni: NDArray[np.float32],
    mask: NDArray[np.bool_],
    mean_mni: NDArray[np.floating],
    conf: Any,
    tr: float,
    config: PreprocessConfig,
    slice_timed: bool,
) -> None:
    """The preprocessed run, its sidecar, brain mask, mean and confounds."""
    img = nib.Nifti1Image(bold_mni, MNI4_AFFINE)
    img.header.set_xyzt_units("mm", "sec")
    img.header.set_zooms((*np.abs(np.diag(MNI4_AFFINE)[:3]), tr))
    save_nifti(img, out.bold)
    save_nifti(nib.Nifti1Image(mask.astype(np.uint8), MNI4_AFFINE), out.mask)
    save_nifti(nib.Nifti1Image(mean_mni.astype(np.float32), MNI4_AFFINE), out.mean)
    write_json(
        {"RepetitionTime": tr, "SkullStripped": False, "Sources": [str(bold_path)],
         "SmoothingFWHM": config.fwhm_mm, "HighpassCutoff": config.highpass_cutoff_s,
         "SliceTimingCorrected": slice_timed,
         "HighpassMethod": config.highpass_method},
        out.sidecar,
    )  # fmt: skip
    write_text(conf.to_csv(sep="\t", index=False, na_rep="n/a", float_format="%.6g"), out.confounds)


def _tsnr(ts: np.ndarray) -> np.ndarray:
    t = np.linspace(-1, 1, ts.shape[1])
    x = np.column_stack([np.ones_like(t), t, t * t])
    beta = np.linalg.lstsq(x, ts.T, rcond=None)[0]
    resid = ts.T - x @ beta
    return ts.mean(1) / np.maximum(resid.std(0), 1e-6)


def _qc_page(
    out: SubjectOutputs,
    subject: RunId | str,
    conf: Any,
    mean_mni: np.ndarray,
    template_mask: np.ndarray,
    bold: np.ndarray,
    mask: np.ndarray,
    qc: dict[str, Any],
) -> None:
    name = str(RunId.of(subject))
    motion_png = motion_plot(conf, f"{name}: estimated motion", out.figure("motion"), fd_threshold=0.5)
    reg_png = registration_plot(
        mean_mni,
        template_mask,
        f"{name}: mean EPI in MNI, template outline",
        out.figure("reg"),
    )
    fd = conf["framewise_displacement"].fillna(0).to_numpy()
    carpet_png = carpet_plot(bold, mask, fd, f"{name}: preprocessed BOLD", out.figure("carpet"))
    report = Report(f"rsnflow preprocessing QC: {name}")
    summary = {k: v for k, v in qc.items() if k not in ("mni_to_epi", "seconds")}
    report.heading("Summary").items(
        [f"{k}: {v:.4g}" if isinstance(v, float) else f"{k}: {v}" for k, v in summary.items()]
    )
    report.heading("Head motion").figure(motion_png, "translations, rotations and framewise displacement")
    report.heading("Registration").figure(
        reg_png, "mean EPI resampled into MNI 4 mm; red: template brain outline"
    )
    report.heading("Carpet plot").figure(carpet_png, "z-scored voxel time series inside the brain mask")
    report.heading("Timing (s)").items([f"{k}: {v}" for k, v in qc["seconds"].items()])
    report.text(json.dumps({"mni_to_epi": np.asarray(qc["mni_to_epi"]).round(4).tolist()}))
    report.write(out.qc_html)

"""The preprocess stage for one run: read it, preprocess it in memory, write its outputs and QC page.

The computation is :func:`rsnflow.preprocess.run.preprocess_run` (no files);
this module reads the run and its sidecar, writes the derivatives where
:func:`rsnflow.layout.subject_outputs` says, the QC page, and the completeness
record last.
"""

from __future__ import annotations

import json
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
from rsnflow.preprocess.run import Timer, align_run, clean_run, mni_image
from rsnflow.preprocess.slice_timing import check_slice_timing, shift_slices
from rsnflow.records import Record, config_digest, file_digest
from rsnflow.report import Report
from rsnflow.space import MNI4_AFFINE, load_tissue_probabilities

__all__ = [
    "MIN_VOLUMES",
    "PreprocessingError",
    "preprocess_identity",
    "preprocess_subject",
]

log = get_logger(__name__)

#: Fewer volumes than this cannot be motion-corrected and filtered meaningfully.
MIN_VOLUMES = 20


def preprocess_identity(bold_path: str | Path, config: PreprocessConfig) -> tuple[dict[str, str], str]:
    """What a run's preprocessing outputs are made from: input digests and the config digest.

    The raw run by content and its merged sidecar metadata (which may set the TR); the
    ``preprocess`` settings except ``n_jobs``, which does not change a result.

    Parameters
    ----------
    bold_path : str or pathlib.Path
        The raw BOLD run.
    config : PreprocessConfig
        The ``preprocess`` settings.

    Returns
    -------
    inputs : dict of str to str
        ``bold``: digest of the file's content; ``sidecar``: digest of its merged
        sidecar metadata (empty when there is none).
    config_digest : str
        Digest of ``config`` without ``n_jobs``.
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
    timer = Timer()
    out = subject_outputs(deriv_dir, subject)
    out.record.unlink(missing_ok=True)  # outputs being replaced are not complete until the new record
    run = load_bold(bold_path, min_volumes=MIN_VOLUMES)
    # The run stays in its file's dtype (int16 for most scanners: half of float32); every
    # step reads it in float32 a chunk of volumes at a time, so a 104x104x72x1200 multiband
    # run is held once (1.9 GB) and never copied whole.
    data = np.asanyarray(run.img.dataobj)
    affine, tr, n_volumes = run.img.affine, run.tr, run.n_volumes
    del run  # the image held the same array: nothing else may keep the run alive below
    timer.lap("load")
    slice_timed = False
    if config.slice_timing:
        data, slice_timed = _correct_slice_timing(bold_path, data, tr)
    aligned = align_run(data, affine, config, device, where=bold_path, timer=timer)
    del data  # the native run is no longer needed: only the 4 mm grid from here
    res = clean_run(aligned, tr, config, timer)
    del aligned
    _write_run(out, bold_path, res.bold, res.mask, res.mean, res.confounds, tr, config, slice_timed)
    qc: dict[str, Any] = {
        "subject": RunId.of(subject).subject,
        "run_name": str(RunId.of(subject)),  # not "run": pybids reads this JSON as the page's sidecar
        "source": str(bold_path),
        "repetition_time": tr,
        "n_volumes": n_volumes,
        "n_non_steady_state": res.n_non_steady,
        "slice_timing_corrected": slice_timed,
        "motion_reference": config.motion_reference,
        **res.qc(),
        "seconds": timer.seconds,
    }
    _qc_page(out, subject, res.confounds, res.mean, res.template_mask, res.bold, res.mask, qc)
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
    save_nifti(mni_image(bold_mni, tr), out.bold)
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


#: Volumes flagged on the QC page, fMRIPrep's defaults (Power et al. 2014: FD 0.5 mm, std DVARS 1.5).
FD_THRESHOLD_MM = 0.5
DVARS_THRESHOLD = 1.5


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
    motion_png = motion_plot(
        conf, f"{name}: estimated motion", out.figure("motion"), fd_threshold=FD_THRESHOLD_MM
    )
    # The tissue a voxel most probably is (GM, WM, CSF), as fMRIPrep splits its carpet.
    prob = load_tissue_probabilities()
    stack = np.stack([prob["gm"], prob["wm"], prob["csf"]])
    best = np.argmax(stack, axis=0)
    tissues = {label: mask & (best == i) & (stack.max(0) > 0) for i, label in enumerate(("GM", "WM", "CSF"))}
    traces = {
        "FD (mm)": (conf["framewise_displacement"].fillna(0).to_numpy(), FD_THRESHOLD_MM),
        "std DVARS": (conf["std_dvars"].fillna(0).to_numpy(), DVARS_THRESHOLD),
        "global signal": (conf["global_signal"].to_numpy(), None),
    }
    carpet_png = carpet_plot(bold, mask, traces, f"{name}: preprocessed BOLD", out.figure("carpet"), tissues)
    reg_png = registration_plot(
        mean_mni,
        template_mask,
        f"{name}: mean EPI in MNI; template brain (red) and white matter (yellow) outlines",
        out.figure("reg"),
        white_matter=prob["wm"] > 0.5,
    )
    report = Report(f"rsnflow preprocessing QC: {name}")
    summary = {k: v for k, v in qc.items() if k not in ("mni_to_epi", "seconds")}
    report.heading("Summary").items(
        [f"{k}: {v:.4g}" if isinstance(v, float) else f"{k}: {v}" for k, v in summary.items()]
    )
    report.heading("Head motion").figure(motion_png, "translations, rotations and framewise displacement")
    report.heading("Registration").figure(
        reg_png, "mean EPI resampled into MNI 4 mm; red: template brain outline; yellow: its white matter"
    )
    report.heading("Carpet plot").figure(
        carpet_png,
        f"z-scored voxel time series by tissue (grey matter, white matter, CSF); above: FD (flagged over "
        f"{FD_THRESHOLD_MM} mm), standardised DVARS (over {DVARS_THRESHOLD}) and the global signal",
    )
    report.heading("Timing (s)").items([f"{k}: {v}" for k, v in qc["seconds"].items()])
    report.text(json.dumps({"mni_to_epi": np.asarray(qc["mni_to_epi"]).round(4).tolist()}))
    report.write(out.qc_html)

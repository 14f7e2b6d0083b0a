"""Preprocessing of one run as a scikit-learn style estimator: an image in, MNI 4 mm outputs back, no files.

``Preprocessor(fwhm_mm=7).fit_transform(img)`` returns the preprocessed image,
its confounds and its QC figures; the ``preprocess`` stage runs the same
computation (:func:`rsnflow.preprocess.run.preprocess_run`) and writes the
derivatives.
"""

from __future__ import annotations

import math
import os
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from rsnflow.config import PreprocessConfig, build_section, default_section
from rsnflow.preprocess.run import mni_image, preprocess_run
from rsnflow.resample import check_device
from rsnflow.space import MNI4_AFFINE

__all__ = ["Preprocessor"]

#: The parameters' defaults: the ``preprocess`` section of ``defaults.yaml``.
_DEFAULTS = default_section(PreprocessConfig)
#: The section's fields that are this estimator's parameters.
_PARAMS = (
    "motion_reference", "fwhm_mm", "highpass_cutoff_s", "highpass_method", "registration_dof",
    "registration_max_cost", "registration_max_scale", "registration_max_shear",
)  # fmt: skip


class Preprocessor(BaseEstimator):
    """Motion correction, registration to MNI 4 mm, smoothing (7 mm default) and high-pass filter of a run.

    Parameters
    ----------
    motion_reference
        ``"middle"`` volume (as MCFLIRT) or ``"mean"`` of the aligned run.
    fwhm_mm
        Gaussian smoothing inside the brain mask.
    highpass_cutoff_s, highpass_method
        High-pass filter: FSL's running line (``"fsl"``), ``"butterworth"`` or ``"cosine"``.
    registration_dof
        6, 9 or 12 degrees of freedom of the registration to the template.
    registration_max_cost, registration_max_scale, registration_max_shear
        A registration past any of these fails the run with the reason.
    device
        ``"auto"``, ``"cpu"`` or ``"cuda"``.

    Attributes
    ----------
    mask_img_ : nibabel.Nifti1Image
        The template brain inside the run's field of view.
    mean_img_ : nibabel.Nifti1Image
        The mean of the run in MNI before smoothing.
    confounds_ : pandas.DataFrame
        fMRIPrep's columns, one row per volume.
    qc_ : dict
        Motion, registration, mask and tSNR figures.
    motion_params_ : ndarray of shape (n_volumes, 6)
        Head pose per volume (mm, rad) relative to the reference.
    mni_to_epi_ : ndarray of shape (4, 4)
        The registration (MNI mm to the EPI reference frame).
    bold_ : ndarray of shape (45, 54, 45, n_volumes)
        The preprocessed run's data (see ``preprocessed_img_``).
    tr_ : float
        Repetition time used (s).

    Examples
    --------
    >>> bold, confounds, qc = Preprocessor().fit_transform("sub-01_task-rest_bold.nii.gz")  # doctest: +SKIP
    """

    def __init__(
        self,
        motion_reference: str = _DEFAULTS.motion_reference,
        fwhm_mm: float = _DEFAULTS.fwhm_mm,
        highpass_cutoff_s: float = _DEFAULTS.highpass_cutoff_s,
        highpass_method: str = _DEFAULTS.highpass_method,
        registration_dof: int = _DEFAULTS.registration_dof,
        registration_max_cost: float = _DEFAULTS.registration_max_cost,
        registration_max_scale: float = _DEFAULTS.registration_max_scale,
        registration_max_shear: float = _DEFAULTS.registration_max_shear,
        device: str = "auto",
    ) -> None:
        self.motion_reference = motion_reference
        self.fwhm_mm = fwhm_mm
        self.highpass_cutoff_s = highpass_cutoff_s
        self.highpass_method = highpass_method
        self.registration_dof = registration_dof
        self.registration_max_cost = registration_max_cost
        self.registration_max_scale = registration_max_scale
        self.registration_max_shear = registration_max_shear
        self.device = device

    @classmethod
    def from_config(cls, config: PreprocessConfig, device: str = "auto") -> Preprocessor:
        """The estimator a ``preprocess`` configuration section describes.

        Parameters
        ----------
        config
            The section (``load_config().preprocess``); its ``slice_timing`` and
            ``n_jobs`` belong to the cohort stage and are not used here.
        device
            ``"auto"``, ``"cpu"`` or ``"cuda"``.

        Returns
        -------
        Preprocessor
            An unfitted estimator.
        """
        return cls(**{name: getattr(config, name) for name in _PARAMS}, device=device)

    def fit(self, img: Any, y: Any = None, tr: float | None = None) -> Preprocessor:
        """Preprocess ``img`` (a 4D NIfTI image or a path to one) and keep the results.

        Parameters
        ----------
        img
            The native run.
        y
            Ignored (scikit-learn's signature).
        tr
            Repetition time in seconds; default the BIDS sidecar's (paths) or the header's.

        Returns
        -------
        Preprocessor
            ``self``, fitted.
        """
        config = self._config()
        if isinstance(img, str | os.PathLike):
            from rsnflow.io import load_bold

            run = load_bold(img)
            image: nib.spatialimages.SpatialImage = run.img
            where, tr = str(img), tr or run.tr
        elif isinstance(img, nib.spatialimages.SpatialImage):
            image, where = img, "image"
            tr = tr or _header_tr(img)
        else:
            raise TypeError(f"img must be a 4D NIfTI image or a path, got {type(img).__name__}")
        if len(image.shape) != 4:
            raise ValueError(f"img must be 4D, got shape {image.shape}")
        if not tr or not math.isfinite(tr) or tr <= 0:
            raise ValueError("no repetition time: give tr= (the header's is 0)")
        res = preprocess_run(
            np.asanyarray(image.dataobj), image.affine, float(tr), config, self.device, where
        )
        self.bold_ = res.bold
        self.tr_ = float(tr)
        self.mask_img_ = nib.Nifti1Image(res.mask.astype(np.uint8), MNI4_AFFINE)
        self.mean_img_ = nib.Nifti1Image(res.mean, MNI4_AFFINE)
        self.confounds_: pd.DataFrame = res.confounds
        self.qc_ = {"n_non_steady_state": res.n_non_steady, **res.qc(), "seconds": res.seconds}
        self.motion_params_ = res.motion.params
        self.mni_to_epi_ = res.registration.mni_to_epi
        return self

    def fit_transform(
        self, img: Any, y: Any = None, tr: float | None = None
    ) -> tuple[nib.Nifti1Image, pd.DataFrame, dict[str, Any]]:
        """Preprocess ``img``: the preprocessed image, its confounds and its QC figures.

        Parameters
        ----------
        img
            The native run: a 4D NIfTI image or a path to one.
        y
            Ignored (scikit-learn's signature).
        tr
            Repetition time in seconds; default the BIDS sidecar's (paths) or the header's.

        Returns
        -------
        preprocessed_img : nibabel.Nifti1Image
            The preprocessed run on the MNI 4 mm grid.
        confounds : pandas.DataFrame
            ``confounds_``.
        qc : dict
            ``qc_``.
        """
        self.fit(img, tr=tr)
        return self.preprocessed_img_, self.confounds_, self.qc_

    @property
    def preprocessed_img_(self) -> nib.Nifti1Image:
        """The preprocessed run on the MNI 4 mm grid (TR in the header)."""
        check_is_fitted(self, "bold_")
        return mni_image(self.bold_, self.tr_)

    def _config(self) -> PreprocessConfig:
        """The parameters as the stage's configuration section, checked as a config file's are."""
        check_device(self.device)
        values = {name: getattr(self, name) for name in _PARAMS}
        return build_section(PreprocessConfig, {**values, "slice_timing": False, "n_jobs": 1})


def _header_tr(img: nib.spatialimages.SpatialImage) -> float | None:
    """The TR in seconds from a 4D header (pixdim[4] in its time units), None when absent."""
    zooms = img.header.get_zooms()
    if len(zooms) < 4 or not zooms[3]:
        return None
    unit = img.header.get_xyzt_units()[1] if hasattr(img.header, "get_xyzt_units") else "sec"
    return float(zooms[3]) * {"msec": 1e-3, "usec": 1e-6}.get(unit, 1.0)

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

from rsnflow.config import PreprocessConfig
from rsnflow.preprocess.run import mni_image, preprocess_run
from rsnflow.resample import check_device
from rsnflow.space import MNI4_AFFINE

__all__ = ["Preprocessor"]


class Preprocessor(BaseEstimator):
    """Motion correction, registration to MNI 4 mm, 7 mm smoothing and high-pass filter of one run.

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

    Examples
    --------
    >>> bold, confounds, qc = Preprocessor().fit_transform("sub-01_task-rest_bold.nii.gz")  # doctest: +SKIP
    """

    def __init__(
        self,
        motion_reference: str = "middle",
        fwhm_mm: float = 7.0,
        highpass_cutoff_s: float = 100.0,
        highpass_method: str = "fsl",
        registration_dof: int = 12,
        registration_max_cost: float = 0.5,
        registration_max_scale: float = 1.35,
        registration_max_shear: float = 0.25,
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
        """Preprocess ``img``: the preprocessed image, its confounds and its QC figures."""
        self.fit(img, tr=tr)
        return self.preprocessed_img_, self.confounds_, self.qc_

    @property
    def preprocessed_img_(self) -> nib.Nifti1Image:
        """The preprocessed run on the MNI 4 mm grid (TR in the header)."""
        check_is_fitted(self, "bold_")
        return mni_image(self.bold_, self.tr_)

    def _config(self) -> PreprocessConfig:
        """The parameters, validated, as the stage's configuration section."""
        if self.motion_reference not in ("middle", "mean"):
            raise ValueError(f"motion_reference must be 'middle' or 'mean', got {self.motion_reference!r}")
        for name in ("fwhm_mm", "highpass_cutoff_s", "registration_max_cost", "registration_max_scale"):
            value = getattr(self, name)
            if isinstance(value, bool) or not (
                isinstance(value, int | float) and math.isfinite(value) and value > 0
            ):
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        shear = self.registration_max_shear
        if not (isinstance(shear, int | float) and shear >= 0):
            raise ValueError(f"registration_max_shear must be >= 0, got {shear!r}")
        if self.registration_max_scale <= 1:
            raise ValueError(f"registration_max_scale must be above 1, got {self.registration_max_scale!r}")
        if self.highpass_method not in ("fsl", "butterworth", "cosine"):
            raise ValueError(
                f"highpass_method must be fsl, butterworth or cosine, got {self.highpass_method!r}"
            )
        if self.registration_dof not in (6, 9, 12):
            raise ValueError(f"registration_dof must be 6, 9 or 12, got {self.registration_dof!r}")
        check_device(self.device)
        return PreprocessConfig(
            motion_reference=self.motion_reference,  # type: ignore[arg-type]  # checked above
            fwhm_mm=float(self.fwhm_mm),
            highpass_cutoff_s=float(self.highpass_cutoff_s),
            highpass_method=self.highpass_method,  # type: ignore[arg-type]
            slice_timing=False,
            registration_dof=self.registration_dof,  # type: ignore[arg-type]
            registration_max_cost=float(self.registration_max_cost),
            registration_max_scale=float(self.registration_max_scale),
            registration_max_shear=float(self.registration_max_shear),
            n_jobs=1,
        )


def _header_tr(img: nib.spatialimages.SpatialImage) -> float | None:
    """The TR in seconds from a 4D header (pixdim[4] in its time units), None when absent."""
    zooms = img.header.get_zooms()
    if len(zooms) < 4 or not zooms[3]:
        return None
    unit = img.header.get_xyzt_units()[1] if hasattr(img.header, "get_xyzt_units") else "sec"
    return float(zooms[3]) * {"msec": 1e-3, "usec": 1e-6}.get(unit, 1.0)

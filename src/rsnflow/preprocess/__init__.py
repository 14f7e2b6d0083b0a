"""Preprocessing: motion correction, registration to MNI 4 mm, smoothing, high-pass filter."""

from rsnflow.layout import subject_outputs
from rsnflow.preprocess.cohort import CohortPreprocessing, preprocess_cohort
from rsnflow.preprocess.motion import MotionEstimate, estimate_motion
from rsnflow.preprocess.participant import preprocess_subject
from rsnflow.preprocess.registration import AffineRegistration, register_to_mni
from rsnflow.preprocess.smoothing import fwhm_to_sigma, smooth_in_mask
from rsnflow.preprocess.temporal import highpass

__all__ = [
    "AffineRegistration",
    "CohortPreprocessing",
    "MotionEstimate",
    "estimate_motion",
    "fwhm_to_sigma",
    "highpass",
    "preprocess_cohort",
    "preprocess_subject",
    "register_to_mni",
    "smooth_in_mask",
    "subject_outputs",
]

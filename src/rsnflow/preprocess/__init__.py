"""Preprocessing: motion correction, registration to MNI 4 mm, smoothing, high-pass filter."""

from rsnflow.layout import subject_outputs
from rsnflow.preprocess.cohort import CohortPreprocessing, preprocess_cohort
from rsnflow.preprocess.estimator import Preprocessor
from rsnflow.preprocess.motion import MotionEstimate, estimate_motion
from rsnflow.preprocess.participant import preprocess_subject
from rsnflow.preprocess.registration import AffineRegistration, register_to_mni
from rsnflow.preprocess.run import PreprocessedRun, preprocess_run
from rsnflow.preprocess.smoothing import fwhm_to_sigma, smooth_in_mask
from rsnflow.preprocess.temporal import highpass

__all__ = [
    "AffineRegistration",
    "CohortPreprocessing",
    "MotionEstimate",
    "PreprocessedRun",
    "Preprocessor",
    "estimate_motion",
    "fwhm_to_sigma",
    "highpass",
    "preprocess_cohort",
    "preprocess_run",
    "preprocess_subject",
    "register_to_mni",
    "smooth_in_mask",
    "subject_outputs",
]

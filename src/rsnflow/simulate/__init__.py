"""Simulated resting-state fMRI cohorts with ground truth (BIDS raw + derivatives/groundtruth)."""

from rsnflow.simulate.cohort import BAD_KINDS, CohortResult, simulate_cohort
from rsnflow.simulate.profiles import PROFILES, Profile, get_profile
from rsnflow.simulate.subject import SimulatedSubject, simulate_subject, source_table

__all__ = [
    "BAD_KINDS",
    "PROFILES",
    "CohortResult",
    "Profile",
    "SimulatedSubject",
    "get_profile",
    "simulate_cohort",
    "simulate_subject",
    "source_table",
]

"""Group ICA (MIGP + FastICA) and dual regression."""

from rsnflow.ica.decomposition import (
    FastICAResult,
    GroupPCA,
    bic_order,
    fastica,
    migp,
    migp_precision,
    normalise_subject,
    regress_maps,
    subject_pca,
)
from rsnflow.ica.dr_cohort import DualRegressionCohort, dr_status, dual_regression_cohort
from rsnflow.ica.dual_regression import DualRegression, dual_regression, t_to_z
from rsnflow.ica.estimator import GroupICA, run_rows
from rsnflow.ica.group import (
    GroupICAResult,
    common_mask,
    group_ica,
    group_migp,
    group_record,
    migp_rows,
    preprocessed_runs,
)
from rsnflow.ica.matching import ComponentMatch, match_components, spatial_correlation
from rsnflow.layout import dr_outputs, group_paths

__all__ = [
    "ComponentMatch",
    "DualRegression",
    "DualRegressionCohort",
    "FastICAResult",
    "GroupICA",
    "GroupICAResult",
    "GroupPCA",
    "bic_order",
    "common_mask",
    "dr_outputs",
    "dr_status",
    "dual_regression",
    "dual_regression_cohort",
    "fastica",
    "group_ica",
    "group_migp",
    "group_paths",
    "group_record",
    "match_components",
    "migp",
    "migp_precision",
    "migp_rows",
    "normalise_subject",
    "preprocessed_runs",
    "regress_maps",
    "run_rows",
    "spatial_correlation",
    "subject_pca",
    "t_to_z",
]

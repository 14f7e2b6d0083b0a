"""The scikit-learn estimator checks that apply without fitting on sklearn's toy tables.

rsnflow's estimators take 4D images, not the small 2D tables ``check_estimator``
fits on, so (as nilearn does) the tests run the checks of the API contract:
parameters stored by the constructor untouched, every parameter defaulted,
``get_params``/``set_params`` round trips.
"""

from __future__ import annotations

from sklearn.utils.estimator_checks import (
    check_get_params_invariance,
    check_no_attributes_set_in_init,
    check_parameters_default_constructible,
    check_set_params,
)

API_CHECKS = [
    check_no_attributes_set_in_init,
    check_parameters_default_constructible,
    check_get_params_invariance,
    check_set_params,
]

"""Automatic labels: reference-map matching for networks, AROMA/FIX-style rules for noise."""

from __future__ import annotations

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from rsnflow.atlas import NOISE, UNKNOWN, Taxonomy, reference_maps
from rsnflow.config import LabelingConfig
from rsnflow.ica.matching import spatial_correlation

__all__ = ["auto_labels", "noise_criteria", "reference_scores"]


def reference_scores(
    zmaps: NDArray[np.floating], mask: NDArray[np.bool_], taxonomy: Taxonomy
) -> pd.DataFrame:
    """Spatial correlation of every component ``(K, V)`` with every network's reference map.

    Maps follow MELODIC's sign convention (positive skew), so the signed
    correlation is used: an anti-correlated network is not a match.

    Parameters
    ----------
    zmaps : numpy.ndarray
        ``(K, V)`` component z maps, the voxels of ``mask`` in order.
    mask : numpy.ndarray
        ``(45, 54, 45)`` boolean mask on the MNI 4 mm grid that ``zmaps`` were taken from.
    taxonomy : Taxonomy
        Gives the network labels and the rows of their reference maps.

    Returns
    -------
    pandas.DataFrame
        ``(K, 56)``, columns the network labels.
    """
    refs = reference_maps()[[taxonomy.index(lab) for lab in taxonomy.network_labels]][:, mask]
    return pd.DataFrame(spatial_correlation(zmaps, refs), columns=taxonomy.network_labels)


def noise_criteria(features: pd.DataFrame, config: LabelingConfig) -> pd.DataFrame:
    """Which noise rule each component meets (boolean columns, one per rule).

    Parameters
    ----------
    features : pandas.DataFrame
        One row per component with the columns ``hfc, motion_r, csf_fraction,
        edge_fraction, wm_fraction, spread`` (:mod:`rsnflow.labeling.features`).
    config : LabelingConfig
        The ``noise_*`` thresholds; a rule fires when its feature exceeds its threshold.

    Returns
    -------
    pandas.DataFrame
        Boolean columns ``high_frequency, motion, csf, edge, white_matter, diffuse``,
        one row per component (a NaN feature never fires).
    """
    return pd.DataFrame(
        {
            "high_frequency": features["hfc"] > config.noise_hfc,
            "motion": features["motion_r"] > config.noise_motion_r,
            "csf": features["csf_fraction"] > config.noise_csf_fraction,
            "edge": features["edge_fraction"] > config.noise_edge_fraction,
            "white_matter": features["wm_fraction"] > config.noise_wm_fraction,
            "diffuse": features["spread"] > config.noise_spread,
        }
    )


def auto_labels(scores: pd.DataFrame, features: pd.DataFrame, config: LabelingConfig) -> pd.DataFrame:
    """One label per component from its reference scores and noise features.

    Rule, in order: a best reference correlation of at least
    ``network_threshold`` gives that network (a clear network map is kept even
    when a noise feature fires: the expert's choice in the paper); otherwise any
    noise criterion gives ``Noise``; otherwise ``Unknown``.

    Parameters
    ----------
    scores : pandas.DataFrame
        ``(K, n_networks)`` reference correlations (:func:`reference_scores`).
    features : pandas.DataFrame
        Noise features of the same components (:func:`noise_criteria`).
    config : LabelingConfig
        ``network_threshold`` and the noise thresholds.

    Returns
    -------
    pandas.DataFrame
        ``label, score, runner_up, runner_up_score, reason``. ``score`` is the
        reference correlation for a network or ``Unknown``, the fraction of
        noise rules met for ``Noise``; ``runner_up`` is the second network for
        a network label, the best network otherwise.
    """
    values = scores.to_numpy()
    order = np.argsort(-values, axis=1)
    names = np.asarray(scores.columns)
    best, second = order[:, 0], order[:, 1]
    rows = np.arange(len(values))
    best_score, second_score = values[rows, best], values[rows, second]
    crit = noise_criteria(features, config)
    out = []
    for k in rows:
        fired = [c for c in crit.columns if crit.at[k, c]]
        if best_score[k] >= config.network_threshold:
            out.append(
                (
                    names[best[k]],
                    best_score[k],
                    names[second[k]],
                    second_score[k],
                    f"reference r={best_score[k]:.2f}",
                )
            )
        elif fired:
            out.append(
                (
                    NOISE,
                    len(fired) / crit.shape[1],
                    names[best[k]],
                    best_score[k],
                    "noise: " + ", ".join(fired),
                )
            )
        else:
            out.append(
                (
                    UNKNOWN,
                    best_score[k],
                    names[best[k]],
                    best_score[k],
                    f"reference r={best_score[k]:.2f} < {config.network_threshold}, no noise rule",
                )
            )
    return pd.DataFrame(out, columns=["label", "score", "runner_up", "runner_up_score", "reason"])

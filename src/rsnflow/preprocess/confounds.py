"""Confounds of a run: motion parameters, framewise displacement, DVARS."""

from __future__ import annotations

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from rsnflow.transforms import MOTION_COLUMNS, framewise_displacement

__all__ = ["confounds_table", "dvars"]


def dvars(data: NDArray[np.floating], mask: NDArray[np.bool_]) -> NDArray[np.float64]:
    """Power's DVARS: RMS over the mask of the volume-to-volume change; NaN for volume 0."""
    ts = np.asarray(data, dtype=np.float64)[mask]
    d = np.sqrt(np.mean(np.diff(ts, axis=1) ** 2, axis=0))
    return np.concatenate([[np.nan], d])


def confounds_table(params: NDArray[np.float64], dvars_values: NDArray[np.float64]) -> pd.DataFrame:
    """fMRIPrep-style columns: trans/rot, framewise_displacement, dvars (n/a at volume 0)."""
    table = pd.DataFrame(params, columns=list(MOTION_COLUMNS))
    fd = framewise_displacement(params)
    fd[0] = np.nan
    table["framewise_displacement"] = fd
    table["dvars"] = dvars_values
    return table

"""The 58-class resting-state network taxonomy: labels, hierarchy and defining nodes.

The taxonomy is a versioned data file, ``rsnflow/data/rsn_taxonomy.tsv``: one
row per class with its index, label (``NETWORK-REGION[-SUBREGION][-SIDE]``),
parent network, the MNI nodes that define it and their extent. 56 rows are
networks; the last two are ``Noise`` and ``Unknown``, which have no nodes.

The node coordinates are not typed by hand: :func:`build_taxonomy` selects them
from the Seitzman et al. (2018) 300-ROI set that nilearn ships inside its
package (``nilearn.datasets.fetch_coords_seitzman_2018``, no download), using
the human-authored selectors in ``rsn_taxonomy_selectors.tsv`` (Seitzman
networks, anatomical region class and an MNI box per label). ``make taxonomy``
rebuilds the file; a test checks that the shipped file equals the rebuild.
"""

from __future__ import annotations

import functools
import io
from dataclasses import dataclass
from importlib import resources

import numpy as np
import pandas as pd
from numpy.typing import NDArray

__all__ = [
    "NOISE",
    "TAXONOMY_VERSION",
    "UNKNOWN",
    "Taxonomy",
    "build_taxonomy",
    "load_taxonomy",
]

#: Version of the taxonomy file; recorded in datasets, models and reports.
TAXONOMY_VERSION = "1.0"
NOISE = "Noise"
UNKNOWN = "Unknown"
_SOURCE = "Seitzman2018 (nilearn fetch_coords_seitzman_2018, shipped offline)"


def _read_data(name: str) -> str:
    return resources.files("rsnflow.data").joinpath(name).read_text()


def build_taxonomy() -> pd.DataFrame:
    """Build the taxonomy table from the selectors and nilearn's Seitzman ROIs.

    Returns
    -------
    pandas.DataFrame
        Columns ``index, label, network, n_nodes, nodes_mni, extent_mm,
        source``; ``nodes_mni`` is ``"x,y,z;x,y,z;..."`` in mm.

    Raises
    ------
    ValueError
        When a selector matches no ROI (the selectors file is wrong).
    """
    from nilearn.datasets import fetch_coords_seitzman_2018

    rois = fetch_coords_seitzman_2018()
    coords = rois.rois[["x", "y", "z"]].to_numpy(float)
    networks = np.asarray(rois.networks)
    regions = np.asarray(rois.regions)
    sel = pd.read_csv(io.StringIO(_read_data("rsn_taxonomy_selectors.tsv")), sep="\t")
    rows = []
    for i, s in enumerate(sel.itertuples(index=False)):
        nets = set(str(s.seitzman_networks).split(","))
        region_ok = np.zeros(len(regions), bool)
        for r in str(s.regions).split(","):
            region_ok |= np.char.startswith(regions.astype(str), r)
        x, y, z = coords.T
        keep = (
            np.isin(networks, list(nets))
            & region_ok
            & (x >= s.x_min) & (x <= s.x_max)
            & (y >= s.y_min) & (y <= s.y_max)
            & (z >= s.z_min) & (z <= s.z_max)
            & (np.abs(x) >= s.abs_x_min)
        )  # fmt: skip
        nodes = coords[keep]
        if len(nodes) == 0:
            raise ValueError(f"rsn_taxonomy_selectors.tsv: selector of {s.label} matches no ROI")
        order = np.lexsort((nodes[:, 2], nodes[:, 1], nodes[:, 0]))
        text = ";".join(f"{a:.2f},{b:.2f},{c:.2f}" for a, b, c in nodes[order])
        rows.append((i, s.label, s.network, len(nodes), text, float(s.extent_mm), _SOURCE))
    n = len(rows)
    rows.append((n, NOISE, "NOISE", 0, "", 0.0, "rsnflow"))
    rows.append((n + 1, UNKNOWN, "UNKNOWN", 0, "", 0.0, "rsnflow"))
    return pd.DataFrame(
        rows, columns=["index", "label", "network", "n_nodes", "nodes_mni", "extent_mm", "source"]
    )


@dataclass(frozen=True)
class Taxonomy:
    """The class list with its hierarchy; built by :func:`load_taxonomy`.

    Attributes
    ----------
    table : pandas.DataFrame
        One row per class, in index order, with the columns of :func:`build_taxonomy`.
    version : str
        Version of the taxonomy file (:data:`TAXONOMY_VERSION`).
    """

    table: pd.DataFrame
    version: str = TAXONOMY_VERSION

    @property
    def labels(self) -> list[str]:
        """All class labels in index order (56 networks, then Noise, Unknown)."""
        return list(self.table["label"])

    @property
    def network_labels(self) -> list[str]:
        """The labels that are networks (not Noise or Unknown)."""
        return [lab for lab in self.labels if lab not in (NOISE, UNKNOWN)]

    @property
    def networks(self) -> list[str]:
        """Parent networks in order of first appearance."""
        return list(dict.fromkeys(self.table["network"]))

    def __len__(self) -> int:
        return len(self.table)

    def index(self, label: str) -> int:
        """Class index of ``label``; ``KeyError`` lists the closest labels.

        Parameters
        ----------
        label : str
            A class label, spelled exactly (case-sensitive).

        Returns
        -------
        int
            Row of ``label`` in :attr:`table`.

        Raises
        ------
        KeyError
            ``label`` is not a class of the taxonomy.
        """
        matches = np.flatnonzero(self.table["label"].to_numpy() == label)
        if len(matches) == 0:
            raise KeyError(f"unknown label {label!r}; closest: {', '.join(self.closest(label))}")
        return int(matches[0])

    def parent(self, label: str) -> str:
        """The parent network of ``label`` (``DMN`` for ``DMN-PCC-MID``).

        Parameters
        ----------
        label : str
            A class label.

        Returns
        -------
        str
            The ``network`` column of its row (``NOISE`` and ``UNKNOWN`` for the two non-networks).
        """
        return str(self.table["network"].iloc[self.index(label)])

    def closest(self, label: str, n: int = 3) -> list[str]:
        """The ``n`` valid labels closest in spelling to ``label``.

        Parameters
        ----------
        label : str
            Any text; compared case-insensitively.
        n : int, default=3
            Number of labels to return.

        Returns
        -------
        list of str
            Up to ``n`` labels, closest first (``difflib`` similarity, no cutoff).
        """
        import difflib

        found = difflib.get_close_matches(label.upper(), [lab.upper() for lab in self.labels], n, 0.0)
        upper = {lab.upper(): lab for lab in self.labels}
        return [upper[f] for f in found]

    def nodes(self, label: str) -> NDArray[np.float64]:
        """The defining MNI nodes (mm) of ``label`` as an ``(n, 3)`` array.

        Parameters
        ----------
        label : str
            A class label.

        Returns
        -------
        numpy.ndarray
            ``(n_nodes, 3)`` MNI coordinates in mm; ``(0, 3)`` for ``Noise`` and ``Unknown``.
        """
        text = str(self.table["nodes_mni"].iloc[self.index(label)])
        if not text or text == "nan":
            return np.zeros((0, 3))
        return np.array([[float(v) for v in node.split(",")] for node in text.split(";")])

    def extent(self, label: str) -> float:
        """Gaussian width (sigma, mm) of the nodes of ``label``.

        Parameters
        ----------
        label : str
            A class label.

        Returns
        -------
        float
            Sigma in mm (0 for ``Noise`` and ``Unknown``).
        """
        return float(self.table["extent_mm"].iloc[self.index(label)])

    def reference_map(self, label: str) -> NDArray[np.float32]:
        """The reference spatial map of a network label on the MNI 4 mm grid.

        Parameters
        ----------
        label : str
            A class label.

        Returns
        -------
        numpy.ndarray
            ``(45, 54, 45)`` read-only map from :func:`rsnflow.atlas.reference_maps`
            (all zeros for ``Noise`` and ``Unknown``).
        """
        from rsnflow.atlas.maps import reference_maps

        return reference_maps()[self.index(label)]


@functools.cache
def load_taxonomy() -> Taxonomy:
    """The shipped taxonomy (``rsnflow/data/rsn_taxonomy.tsv``).

    Returns
    -------
    Taxonomy
        The taxonomy read from the file, cached after the first call.
    """
    table = pd.read_csv(io.StringIO(_read_data("rsn_taxonomy.tsv")), sep="\t", keep_default_na=False)
    return Taxonomy(table)


def write_taxonomy(path: str | None = None) -> str:
    """Rebuild the taxonomy and write it (default: the shipped file in the source tree).

    Parameters
    ----------
    path : str, optional
        Where to write the TSV; by default ``rsnflow/data/rsn_taxonomy.tsv`` in the source tree.

    Returns
    -------
    str
        The path written.
    """
    from pathlib import Path

    target = Path(path) if path else Path(__file__).resolve().parents[1] / "data" / "rsn_taxonomy.tsv"
    from rsnflow.io import write_text

    write_text(build_taxonomy().to_csv(sep="\t", index=False), target)
    return str(target)

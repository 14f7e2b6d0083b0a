"""Resting-state network taxonomy (58 classes) and its reference maps."""

from rsnflow.atlas.maps import node_map, reference_maps
from rsnflow.atlas.taxonomy import (
    NOISE,
    TAXONOMY_VERSION,
    UNKNOWN,
    Taxonomy,
    build_taxonomy,
    load_taxonomy,
)

__all__ = [
    "NOISE",
    "TAXONOMY_VERSION",
    "UNKNOWN",
    "Taxonomy",
    "build_taxonomy",
    "load_taxonomy",
    "node_map",
    "reference_maps",
]

"""The classification dataset: build, split, store, and stream to torch."""

from rsnflow.dataset.build import NORMALISATION, build_dataset, class_weights, normalise_maps
from rsnflow.dataset.reader import MapDataset, load_manifest, make_loader
from rsnflow.dataset.split import SPLITS, subject_split
from rsnflow.dataset.verify import verify_dataset
from rsnflow.dataset.views import rgb_projections

__all__ = [
    "NORMALISATION",
    "SPLITS",
    "MapDataset",
    "build_dataset",
    "class_weights",
    "load_manifest",
    "make_loader",
    "normalise_maps",
    "rgb_projections",
    "subject_split",
    "verify_dataset",
]

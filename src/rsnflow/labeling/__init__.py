"""Labels of group components: expert files and automatic labelling against the taxonomy."""

from rsnflow.labeling.auto import auto_labels, noise_criteria, reference_scores
from rsnflow.labeling.expert import read_expert_labels
from rsnflow.labeling.features import spatial_features, temporal_features
from rsnflow.labeling.stage import (
    check_labels_current,
    label_components,
    labels_path,
    labels_record,
    load_group_maps,
)

__all__ = [
    "auto_labels",
    "check_labels_current",
    "label_components",
    "labels_path",
    "labels_record",
    "load_group_maps",
    "noise_criteria",
    "read_expert_labels",
    "reference_scores",
    "spatial_features",
    "temporal_features",
]

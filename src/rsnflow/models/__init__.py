"""The three classifiers of the paper and the deployable wrapper around them."""

from rsnflow.models.classifier import (
    ARCHS,
    VIEWS,
    RSNClassifier,
    build_network,
    load_classifier,
    load_pretrained,
    save_classifier,
)
from rsnflow.models.cnn import R3D18, ResNet2p5D, one_channel_conv
from rsnflow.models.estimator import MapClassifier
from rsnflow.models.mlp import MLP

__all__ = [
    "ARCHS",
    "MLP",
    "R3D18",
    "VIEWS",
    "MapClassifier",
    "RSNClassifier",
    "ResNet2p5D",
    "build_network",
    "load_classifier",
    "load_pretrained",
    "one_channel_conv",
    "save_classifier",
]

"""Serving: a KServe predictor (V1 and V2 protocols) for a trained rsnflow classifier."""

from rsnflow.serve.inputs import decode_v1, decode_v2, maps_from_nifti, maps_from_numbers
from rsnflow.serve.predictor import TOP_K, RSNPredictor, load_served_classifier
from rsnflow.serve.server import BodyLimit, RSNModelServer, serve

__all__ = [
    "TOP_K",
    "BodyLimit",
    "RSNModelServer",
    "RSNPredictor",
    "decode_v1",
    "decode_v2",
    "load_served_classifier",
    "maps_from_nifti",
    "maps_from_numbers",
    "serve",
]

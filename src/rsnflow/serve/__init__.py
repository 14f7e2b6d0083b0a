"""Serving: a KServe predictor (V1 and V2 protocols) for a trained rsnflow classifier."""

import sys

# kserve parses sys.argv when it is first imported (kserve.model_server), and argparse takes
# rsnflow's own options for its abbreviations (``--config FILE`` for ``--configure_logging``):
# any rsnflow command that labels maps in process would exit there. It is imported here, before
# any module of this package, with rsnflow's arguments out of its sight.
_argv, sys.argv = sys.argv, sys.argv[:1]
try:
    import kserve  # noqa: F401
finally:
    sys.argv = _argv

from rsnflow.serve.inputs import decode_v1, decode_v2, maps_from_nifti, maps_from_numbers  # noqa: E402
from rsnflow.serve.predictor import TOP_K, RSNPredictor, load_served_classifier  # noqa: E402
from rsnflow.serve.server import BodyLimit, RSNModelServer, serve  # noqa: E402

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

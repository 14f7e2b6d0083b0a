"""Container images of the components (built from ``images/``), overridable at compile time.

``RSNFLOW_PIPELINE_IMAGE`` (CPU stages) and ``RSNFLOW_TRAIN_IMAGE`` (CUDA
torch, training) replace the defaults when the pipeline is compiled, so a
registry mirror or a pinned digest needs no code change.
"""

from __future__ import annotations

import os

from rsnflow import __version__

PIPELINE_IMAGE = os.environ.get("RSNFLOW_PIPELINE_IMAGE", f"ghcr.io/rsnflow/rsnflow-pipeline:{__version__}")
TRAIN_IMAGE = os.environ.get("RSNFLOW_TRAIN_IMAGE", f"ghcr.io/rsnflow/rsnflow-train:{__version__}")

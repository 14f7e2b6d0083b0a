"""rsnflow: resting-state fMRI from raw BOLD to labelled networks and a served classifier."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("rsnflow")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]

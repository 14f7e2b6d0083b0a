from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from rsnflow.io import (
    InvalidInputError,
    atomic_path,
    find_sidecar,
    load_bold,
    load_masked_series,
    load_nifti,
    nifti_from_bytes,
    read_tr,
    save_nifti,
    write_dataset_description,
)
from rsnflow.layout import derivative_path


def _bold(
    path: Path,
    shape: tuple[int, ...] = (6, 7, 5, 12),
    tr: float | None = 2.0,
    units: str = "sec",
    dtype: type = np.float32,
    sidecar_tr: float | None = None,
) -> Path:
    rng = np.random.default_rng(0)
    data = (100 + rng.random(shape)).astype(dtype)
    img = nib.Nifti1Image(data, np.diag([3.0, 3.0, 3.5, 1.0]))
    img.header.set_xyzt_units("mm", units)
    if len(shape) == 4:
        img.header.set_zooms((3.0, 3.0, 3.5, tr or 0.0))
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, path)
    if sidecar_tr is not None:
        path.with_name(path.name.replace(".nii.gz", ".json")).write_text(
            json.dumps({"RepetitionTime": sidecar_tr})
        )
    return path


def test_good_run_loads(tmp_path: Path) -> None:
    run = load_bold(_bold(tmp_path / "sub-01_task-rest_bold.nii.gz"))
    assert run.tr == 2.0
    assert run.n_volumes == 12


def test_truncated_gzip(tmp_path: Path) -> None:
    p = _bold(tmp_path / "t.nii.gz", shape=(20, 20, 20, 20))
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    with pytest.raises(InvalidInputError, match="truncated") as info:
        load_nifti(p)
    assert info.value.path == p
    assert str(p) in str(info.value)


def test_not_a_nifti(tmp_path: Path) -> None:
    p = tmp_path / "x.nii.gz"
    p.write_text("hello, I am not an image")
    with pytest.raises(InvalidInputError, match=r"x\.nii\.gz: .*(NIfTI|corrupt)"):
        load_nifti(p)
    q = tmp_path / "notes.txt"
    q.write_text("plain text")
    with pytest.raises(InvalidInputError, match="not a NIfTI"):
        load_nifti(q)


def test_missing_and_empty_files(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="does not exist"):
        load_nifti(tmp_path / "nope.nii.gz")
    (tmp_path / "empty.nii.gz").write_bytes(b"")
    with pytest.raises(InvalidInputError, match="empty"):
        load_nifti(tmp_path / "empty.nii.gz")


def test_3d_where_4d_needed(tmp_path: Path) -> None:
    p = _bold(tmp_path / "v.nii.gz", shape=(6, 7, 5))
    with pytest.raises(InvalidInputError, match="expected a 4D image, got 3D"):
        load_bold(p)


@pytest.mark.parametrize(("value", "word"), [(np.nan, "NaN"), (np.inf, "infinite")])
def test_non_finite_voxels(tmp_path: Path, value: float, word: str) -> None:
    data = np.ones((5, 5, 5, 4), np.float32)
    data[1, 1, 1, 2] = value
    p = tmp_path / "nf.nii.gz"
    nib.save(nib.Nifti1Image(data, np.eye(4)), p)
    with pytest.raises(InvalidInputError, match=f"1 voxels hold {word}"):
        load_nifti(p)


def test_zero_volumes_and_too_few(tmp_path: Path) -> None:
    p = tmp_path / "z.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4, 0), np.float32), np.eye(4)), p)
    with pytest.raises(InvalidInputError, match="zero volumes"):
        load_nifti(p, ndim=4)
    q = _bold(tmp_path / "short.nii.gz", shape=(4, 4, 4, 3))
    with pytest.raises(InvalidInputError, match="3 volumes, at least 10"):
        load_bold(q, min_volumes=10)


def test_all_zero_image(tmp_path: Path) -> None:
    p = tmp_path / "zero.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4, 3), np.float32), np.eye(4)), p)
    with pytest.raises(InvalidInputError, match="all zeros"):
        load_nifti(p)


def test_missing_tr(tmp_path: Path) -> None:
    p = _bold(tmp_path / "sub-01_task-rest_bold.nii.gz", tr=None)
    with pytest.raises(InvalidInputError, match="no repetition time"):
        load_bold(p)


def test_tr_zero_in_sidecar(tmp_path: Path) -> None:
    p = _bold(tmp_path / "sub-01_task-rest_bold.nii.gz", sidecar_tr=0)
    with pytest.raises(InvalidInputError, match="must be positive") as info:
        load_bold(p)
    assert info.value.path.suffix == ".json"


def test_tr_in_milliseconds_by_mistake(tmp_path: Path) -> None:
    p = _bold(tmp_path / "a" / "sub-01_task-rest_bold.nii.gz", tr=2000.0, units="sec")
    with pytest.raises(InvalidInputError, match="looks like milliseconds"):
        load_bold(p)
    q = _bold(tmp_path / "b" / "sub-01_task-rest_bold.nii.gz", sidecar_tr=2000)
    with pytest.raises(InvalidInputError, match="looks like milliseconds"):
        load_bold(q)


def test_header_in_milliseconds_is_converted(tmp_path: Path) -> None:
    p = _bold(tmp_path / "sub-01_task-rest_bold.nii.gz", tr=2000.0, units="msec")
    assert read_tr(p) == pytest.approx(2.0)


def test_sidecar_wins_over_header_and_inherits(tmp_path: Path) -> None:
    (tmp_path / "dataset_description.json").write_text("{}")
    (tmp_path / "task-rest_bold.json").write_text(json.dumps({"RepetitionTime": 2.5}))
    p = _bold(tmp_path / "sub-01" / "func" / "sub-01_task-rest_bold.nii.gz", tr=2.0)
    assert find_sidecar(p) == tmp_path / "task-rest_bold.json"
    assert read_tr(p) == 2.5


def test_sidecars_follow_bids_inheritance_with_sessions_and_runs(tmp_path: Path) -> None:
    from rsnflow.io import read_sidecar, sidecars

    (tmp_path / "dataset_description.json").write_text("{}")
    top = tmp_path / "task-rest_bold.json"
    top.write_text(json.dumps({"RepetitionTime": 2.5, "TaskName": "rest", "EchoTime": 0.03}))
    subject = tmp_path / "sub-01" / "sub-01_task-rest_bold.json"
    subject.parent.mkdir()
    subject.write_text(json.dumps({"RepetitionTime": 2.0}))
    p = _bold(tmp_path / "sub-01" / "ses-2" / "func" / "sub-01_ses-2_task-rest_run-1_bold.nii.gz", tr=9.0)
    own = p.with_name("sub-01_ses-2_task-rest_run-1_bold.json")
    own.write_text(json.dumps({"EchoTime": 0.025}))
    other_run = p.with_name("sub-01_ses-2_task-rest_run-2_bold.json")  # another run's: does not apply
    other_run.write_text(json.dumps({"RepetitionTime": 0.7}))
    (tmp_path / "task-motor_bold.json").write_text(json.dumps({"RepetitionTime": 3.0}))
    assert sidecars(p) == [top, subject, own]
    meta = read_sidecar(p)
    assert meta["RepetitionTime"] == (2.0, subject) and meta["EchoTime"] == (0.025, own)
    assert read_tr(p) == 2.0


def test_atomic_write_leaves_nothing_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "out" / "img.nii.gz"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"partial")
        raise RuntimeError("boom")
    assert not target.exists()
    assert list(target.parent.iterdir()) == []


def test_save_nifti_round_trip(tmp_path: Path) -> None:
    img = nib.Nifti1Image(np.arange(24, dtype=np.float32).reshape(2, 3, 4) + 1, np.eye(4))
    p = save_nifti(img, tmp_path / "a" / "b.nii.gz")
    np.testing.assert_array_equal(load_nifti(p, ndim=3).get_fdata(), img.get_fdata())
    assert [x.name for x in p.parent.iterdir()] == ["b.nii.gz"]


def test_derivative_paths_and_description(tmp_path: Path) -> None:
    p = derivative_path(tmp_path, "01", "bold", space="MNI152NLin2009aSym", res=4, desc="preproc")
    assert (
        p
        == tmp_path / "sub-01/func/sub-01_task-rest_space-MNI152NLin2009aSym_res-4mm_desc-preproc_bold.nii.gz"
    )
    c = derivative_path(tmp_path, "sub-02", "timeseries", desc="confounds", extension=".tsv")
    assert c.name == "sub-02_task-rest_desc-confounds_timeseries.tsv"
    d = json.loads(write_dataset_description(tmp_path).read_text())
    assert d["DatasetType"] == "derivative"
    assert d["GeneratedBy"][0]["Name"] == "rsnflow"


def test_nifti_from_bytes_reads_both_versions_gzipped_or_not() -> None:
    data = np.arange(60, dtype=np.float32).reshape(3, 4, 5) + 1
    for cls in (nib.Nifti1Image, nib.Nifti2Image):
        raw = cls(data, np.diag([2.0, 2.0, 2.0, 1.0])).to_bytes()
        for payload in (raw, gzip.compress(raw)):
            img = nifti_from_bytes(payload, "req[0]", ndim=3)
            np.testing.assert_array_equal(np.asarray(img.dataobj), data)
            assert img.affine[0, 0] == 2.0


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        (b"", "payload is empty"),
        (b"{}" * 200, "no NIfTI-1 or NIfTI-2 header"),
        ("truncated", "gzip stream is truncated"),
        ("short", "file is truncated or its header is wrong"),
        ("bomb", "inflates to more than 100,000 bytes"),
        ("nan", "NaN values"),
        ("4d", "expected a 3D image"),
    ],
)
def test_nifti_from_bytes_names_the_source_and_the_problem(payload: object, problem: str) -> None:
    vol = np.ones((3, 4, 5), np.float32)
    raw = nib.Nifti1Image(vol, np.eye(4)).to_bytes()
    made = {
        "truncated": gzip.compress(raw)[:60],
        "short": raw[:360],
        "bomb": gzip.compress(b"\0" * 1_000_000),
        "nan": nib.Nifti1Image(np.where(vol > 0, np.nan, vol).astype(np.float32), np.eye(4)).to_bytes(),
        "4d": nib.Nifti1Image(np.ones((3, 4, 5, 2), np.float32), np.eye(4)).to_bytes(),
    }
    with pytest.raises(InvalidInputError, match=re.escape(problem)) as err:
        nifti_from_bytes(made.get(payload, payload), "request input 'nifti'[2]", ndim=3, max_bytes=100_000)
    assert str(err.value).startswith("request input 'nifti'[2]: ")


def test_gzipped_run_is_inflated_into_its_array_without_copies(tmp_path: Path) -> None:
    """Peak memory of reading a gzipped run is the run's array, not the file plus its inflated bytes."""
    import subprocess
    import sys

    rng = np.random.default_rng(0)
    data = rng.integers(0, 2000, size=(100, 100, 50, 100), dtype=np.int16)  # 100 MB, poorly compressible
    path = tmp_path / "sub-01_task-rest_bold.nii.gz"
    nib.save(nib.Nifti1Image(data, np.diag([3.0, 3.0, 3.0, 1.0])), path)
    code = (
        "import resource, sys\n"
        "from rsnflow.io import load_nifti\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "img = load_nifti(sys.argv[1])\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before, int(img.dataobj[1, 2, 3, 4]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True)
    grown_kib, value = (int(v) for v in out.stdout.split())
    assert value == data[1, 2, 3, 4]
    run_kib = data.nbytes // 1024
    assert grown_kib < 1.3 * run_kib, f"reading grew memory by {grown_kib / run_kib:.2f} times the run"


def test_scaled_gzipped_image_reads_as_nibabel_does(tmp_path: Path) -> None:
    data = np.arange(2 * 3 * 4 * 5, dtype=np.int16).reshape(2, 3, 4, 5) + 1
    img = nib.Nifti1Image(data, np.eye(4))
    img.header.set_slope_inter(0.5, 10.0)
    path = tmp_path / "scaled.nii.gz"
    nib.save(img, path)
    ours = load_nifti(path)
    np.testing.assert_allclose(np.asarray(ours.dataobj), nib.load(path).get_fdata(), rtol=1e-6)
    np.testing.assert_array_equal(ours.affine, nib.load(path).affine)


def test_gzip_of_several_members_and_a_bad_checksum(tmp_path: Path) -> None:
    """A gzip file may hold several members (concatenated streams); a wrong CRC is corruption."""
    img = nib.Nifti1Image(np.arange(6 * 7 * 8 * 9, dtype=np.float32).reshape(6, 7, 8, 9) + 1, np.eye(4))
    raw = img.to_bytes()
    multi = tmp_path / "multi.nii.gz"
    multi.write_bytes(gzip.compress(raw[:5000]) + gzip.compress(raw[5000:]))
    np.testing.assert_array_equal(np.asarray(load_nifti(multi).dataobj), np.asarray(img.dataobj))
    bad = bytearray(gzip.compress(raw))
    bad[-8] ^= 0xFF  # the CRC-32 of the trailer
    broken = tmp_path / "crc.nii.gz"
    broken.write_bytes(bytes(bad))
    with pytest.raises(InvalidInputError, match=r"crc\.nii\.gz: corrupt gzip stream"):
        load_nifti(broken)


@pytest.mark.parametrize("dtype", [np.float32, ">f4", np.int16, np.float64])
@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
def test_masked_series_equals_the_masked_array(tmp_path: Path, dtype: str, suffix: str) -> None:
    """Block by block, any dtype and byte order, scaled or not: ``data[mask].T`` exactly."""
    rng = np.random.default_rng(1)
    data = (rng.standard_normal((9, 8, 7, 300)) * 50).astype(dtype)  # 300 volumes: several blocks
    img = nib.Nifti1Image(data, np.eye(4))
    if np.dtype(dtype).kind == "i":
        img.header.set_slope_inter(0.25, -3.0)
    path = tmp_path / f"run{suffix}"
    nib.save(img, path)
    mask = rng.random((9, 8, 7)) > 0.4
    expected = np.asarray(nib.load(path).get_fdata(), dtype=np.float32)[mask].T
    series = load_masked_series(path, mask)
    assert series.dtype == np.float32 and series.flags.c_contiguous and series.shape == (300, mask.sum())
    np.testing.assert_allclose(series, expected, rtol=1e-6)


def test_masked_series_reads_in_small_blocks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Blocks of one volume, or of a volume larger than the block, give the same series."""
    import rsnflow.io

    data = np.arange(4 * 5 * 6 * 7, dtype=np.float32).reshape(4, 5, 6, 7) + 1
    path = tmp_path / "run.nii.gz"
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    mask = np.zeros((4, 5, 6), dtype=bool)
    mask[1:3, 2:5, ::2] = True
    for block in (1, 4 * 5 * 6 * 4, 4 * 5 * 6 * 4 * 3):
        monkeypatch.setattr(rsnflow.io, "_SERIES_BLOCK", block)
        np.testing.assert_array_equal(load_masked_series(path, mask), data[mask].T)


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]), "truncated"),
        (lambda p: nib.save(nib.Nifti1Image(np.ones((6, 7, 5, 3), np.float32), np.eye(4)), p), "grid"),
        (lambda p: nib.save(nib.Nifti1Image(np.ones((6, 7, 8), np.float32), np.eye(4)), p), "4D series"),
        (lambda p: nib.save(nib.Nifti1Image(np.full((6, 7, 8, 3), np.nan, np.float32), np.eye(4)), p), "NaN"),
        (lambda p: nib.save(nib.Nifti1Image(np.zeros((6, 7, 8, 3), np.float32), np.eye(4)), p), "all zeros"),
        (lambda p: p.write_bytes(b""), "empty"),
        (lambda p: p.write_bytes(gzip.compress(b"not a nifti at all" * 40)), "not a NIfTI"),
    ],
)
def test_masked_series_names_the_file_and_the_problem(tmp_path: Path, make: object, problem: str) -> None:
    path = tmp_path / "bad.nii.gz"
    nib.save(
        nib.Nifti1Image(np.random.default_rng(0).random((6, 7, 8, 40), dtype=np.float32), np.eye(4)), path
    )
    make(path)  # type: ignore[operator]
    with pytest.raises(InvalidInputError, match=problem) as info:
        load_masked_series(path, np.ones((6, 7, 8), dtype=bool))
    assert info.value.path == path


def test_saved_gzip_is_deterministic_and_read_by_every_reader(tmp_path: Path) -> None:
    """ISA-L's gzip: nibabel, Python's gzip and rsnflow read it; two saves are the same bytes."""
    rng = np.random.default_rng(2)
    img = nib.Nifti1Image(rng.standard_normal((7, 8, 9, 5)).astype(np.float32), np.diag([2.0, 2.0, 2.0, 1.0]))
    a, b = save_nifti(img, tmp_path / "a.nii.gz"), save_nifti(img, tmp_path / "b.nii.gz")
    assert a.read_bytes() == b.read_bytes()
    assert gzip.decompress(a.read_bytes()) == img.to_bytes()
    np.testing.assert_array_equal(nib.load(a).get_fdata(dtype=np.float32), img.get_fdata(dtype=np.float32))
    np.testing.assert_array_equal(np.asarray(load_nifti(a).dataobj), np.asarray(img.dataobj))

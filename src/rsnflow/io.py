"""NIfTI and BIDS input/output: validated loading, atomic writes, derivative paths.

Every loader validates at the entry point and raises :class:`InvalidInputError`
whose message starts with the file and says what is wrong with it, so one bad
subject can be reported and skipped by the cohort-level code. Every writer
writes to a temporary name in the destination folder and renames, so a crash
never leaves a half-written output that a rerun would mistake for a finished one.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from isal import igzip, igzip_lib, isal_zlib
from numpy.typing import NDArray

from rsnflow import __version__
from rsnflow.log import get_logger

__all__ = [
    "BoldRun",
    "InvalidInputError",
    "atomic_path",
    "check_image",
    "find_sidecar",
    "link_tree",
    "load_bold",
    "load_masked_series",
    "load_nifti",
    "nifti_class",
    "nifti_from_bytes",
    "open_nifti",
    "read_sidecar",
    "read_tr",
    "remove_leftovers",
    "save_nifti",
    "sha256_file",
    "sidecar_metadata",
    "sidecars",
    "temp_marker",
    "write_dataset_description",
    "write_json",
    "write_text",
]

log = get_logger(__name__)

#: Repetition times outside this range (seconds) are refused as implausible.
TR_RANGE_S = (0.1, 20.0)


class InvalidInputError(ValueError):
    """An input file is unusable. ``path`` names the file, ``problem`` says why.

    Parameters
    ----------
    path : str or os.PathLike
        The file (or, for data held in memory, the name of its source); kept as a :class:`~pathlib.Path`.
    problem : str
        What is wrong with it. The message is ``"{path}: {problem}"``.
    """

    def __init__(self, path: str | os.PathLike[str], problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


# --------------------------------------------------------------------------- writing


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` on success.

    The temporary name keeps the final suffixes (``.nii.gz``) so that writers
    which choose the format by extension behave the same. On error the
    temporary file is removed and ``path`` is untouched.

    Parameters
    ----------
    path : str or os.PathLike
        The final file. Its folder is created if needed.

    Yields
    ------
    pathlib.Path
        The temporary file (already created, empty) to write to.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(final.suffixes[-2:]) if final.name.endswith(".nii.gz") else final.suffix
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{final.stem}.{temp_marker()}", suffix=f".tmp{suffix}", dir=final.parent
    )
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        # mkstemp creates 0600; give the file the permissions a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o666 & ~umask)
        tmp.replace(final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


#: Names of rsnflow's temporary files and folders carry this, then the writing process's id.
_TEMP_TAG = "rsnflow-tmp-"
_TEMP_NAME = re.compile(rf"^\..*\.{_TEMP_TAG}(\d+)-")


def temp_marker() -> str:
    """The part of a temporary name that marks it as rsnflow's and names the writing process.

    Returns
    -------
    str
        ``"rsnflow-tmp-{pid}-"`` with the current process id.
    """
    return f"{_TEMP_TAG}{os.getpid()}-"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_leftovers(root: str | os.PathLike[str], recursive: bool = True) -> int:
    """Remove the temporary files and folders that a killed rsnflow process left under ``root``.

    Only names that rsnflow's writers make (:func:`temp_marker`) whose writing
    process is gone are removed; a live writer's are kept, and nothing else is
    touched.

    Parameters
    ----------
    root : str or os.PathLike
        The folder to clean. A missing folder is not an error.
    recursive : bool, default=True
        Look in every folder below ``root``; ``False`` looks at ``root``'s own entries only.

    Returns
    -------
    int
        How many files and folders were removed.
    """
    base = Path(root)
    if not base.is_dir():
        return 0
    removed = 0
    for dirpath, dirnames, filenames in os.walk(base):
        for name in [*filenames, *dirnames]:
            m = _TEMP_NAME.match(name)
            if m is None or _alive(int(m.group(1))):
                continue
            path = Path(dirpath) / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
                dirnames.remove(name)
            else:
                path.unlink(missing_ok=True)
            removed += 1
        if not recursive:
            break
    if removed:
        log.info("removed %d leftovers of an interrupted run under %s", removed, base)
    return removed


def save_nifti(img: nib.spatialimages.SpatialImage, path: str | os.PathLike[str]) -> Path:
    """Save a NIfTI image atomically; gzip is chosen by the ``.gz`` extension.

    Gzip is ISA-L's at level 2, byte-deterministic as nibabel's (no name, time
    0): about 7 times faster than ``nibabel.save`` (zlib level 1) on a 98 MB run,
    and a little smaller (``docs/benchmarks.md``).

    Parameters
    ----------
    img : nibabel.spatialimages.SpatialImage
        The image to save.
    path : str or os.PathLike
        Destination file (``.nii`` or ``.nii.gz``); its folder is created if needed.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    with atomic_path(path) as tmp:
        if tmp.name.endswith(".gz") and isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
            with tmp.open("wb") as raw, igzip.IGzipFile("", "wb", _GZIP_LEVEL, raw, mtime=0) as gz:
                img.to_file_map(img.make_file_map({"image": gz}))
        else:
            nib.save(img, tmp)
    return Path(path)


#: ISA-L's level for written ``.nii.gz`` (0-3; 2 compresses as zlib's 6, several times faster).
_GZIP_LEVEL = 2


def write_text(text: str, path: str | os.PathLike[str]) -> Path:
    """Write a text file atomically.

    Parameters
    ----------
    text : str
        The content, written as UTF-8 (the pages say so, whatever the locale).
    path : str or os.PathLike
        Destination file; its folder is created if needed.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(data: Any, path: str | os.PathLike[str]) -> Path:
    """Write JSON atomically, indented and with sorted keys (stable diffs).

    Parameters
    ----------
    data : Any
        JSON-serialisable data; NumPy scalars and arrays and :class:`~pathlib.Path` objects
        are converted (to numbers, lists and strings).
    path : str or os.PathLike
        Destination file; its folder is created if needed.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    TypeError
        A value that cannot be written as JSON.
    """
    return write_text(json.dumps(data, indent=2, sort_keys=True, default=_json_default) + "\n", path)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


# --------------------------------------------------------------------------- reading


def load_nifti(
    path: str | os.PathLike[str],
    ndim: int | None = None,
    min_volumes: int = 1,
) -> nib.Nifti1Image:
    """Load a NIfTI image, read all of its data and validate it.

    Parameters
    ----------
    path
        ``.nii`` or ``.nii.gz`` file.
    ndim
        Required dimensionality (3 or 4); ``None`` accepts either.
    min_volumes
        For 4D images, the least number of volumes accepted.

    Returns
    -------
    nibabel.Nifti1Image
        The image, with its data already read (so a truncated file fails here
        and not later in the middle of a stage).

    Raises
    ------
    InvalidInputError
        Missing, unreadable, truncated or non-NIfTI file; wrong dimensionality;
        too few volumes; no voxels; NaN or infinite values; an all-zero image;
        an affine that is not invertible.
    """
    p = Path(path)
    if _is_gzipped(p):
        return check_image(_inflate_nifti(p), p, ndim, min_volumes)
    try:
        img = nib.load(p)
    except nib.filebasedimages.ImageFileError as exc:
        raise InvalidInputError(p, f"not a NIfTI image ({exc})") from exc
    except (EOFError, OSError, ValueError) as exc:
        raise InvalidInputError(p, f"cannot read NIfTI header: file is corrupt or truncated ({exc})") from exc
    return check_image(img, p, ndim, min_volumes, available=p.stat().st_size)


def _is_gzipped(path: Path) -> bool:
    """Whether ``path`` starts with the gzip magic; a missing or empty file is an error naming it."""
    if not path.exists():
        raise InvalidInputError(path, "file does not exist")
    if path.stat().st_size == 0:
        raise InvalidInputError(path, "file is empty (0 bytes)")
    with path.open("rb") as f:
        return f.read(2) == _GZIP_MAGIC


def open_nifti(path: str | os.PathLike[str]) -> nib.Nifti1Image:
    """A NIfTI image whose data is read only when asked (headers, one volume); no validation.

    For files rsnflow wrote itself; a user's file goes through :func:`load_nifti`.

    Parameters
    ----------
    path : str or os.PathLike
        ``.nii`` or ``.nii.gz`` file.

    Returns
    -------
    nibabel.Nifti1Image
        The image (a :class:`nibabel.Nifti2Image` for a NIfTI-2 file), its data not yet read.

    Raises
    ------
    InvalidInputError
        nibabel read the file as another image format.
    """
    img = nib.load(path)
    if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
        raise InvalidInputError(path, f"not a NIfTI image (nibabel read it as {type(img).__name__})")
    return img


_GZIP_MAGIC = b"\x1f\x8b"
#: Deflate cannot compress better than about 1032:1: a header claiming more is lying.
_MAX_DEFLATE_RATIO = 1032
#: Inflated per read (the stream is never held whole, compressed or not).
_INFLATE_CHUNK = 1 << 26


class _Inflater:
    """A gzip stream (one or more members) inflated on demand, at most ``n`` bytes at a time.

    ISA-L's decompressor on ``read_size`` reads of the file: C speed, never
    more than one read and one output chunk in memory, and the input it has
    not used yet stays inside the decompressor (zlib's ``unconsumed_tail``
    copies it on every call: on a 23 MB run read 4 MB at a time, 275 MB of
    copies, more than the inflation itself).
    """

    def __init__(self, f: Any, read_size: int = 1 << 24) -> None:
        self._f = f
        self._d = igzip_lib.IgzipDecompressor(flag=igzip_lib.DECOMP_GZIP)
        self._read_size = read_size

    def read(self, n: int) -> bytes:
        parts, got = [], 0
        while got < n:
            if self._d.eof:
                data = self._d.unused_data  # a next gzip member, or the end
                if not data and not (data := self._f.read(self._read_size)):
                    break
                self._d = igzip_lib.IgzipDecompressor(flag=igzip_lib.DECOMP_GZIP)
            elif self._d.needs_input:
                data = self._f.read(self._read_size)
                if not data:
                    raise EOFError("compressed file ended before the end of the gzip stream")
            else:
                data = b""  # output is still pending from the input it holds
            chunk = self._d.decompress(data, n - got)
            parts.append(chunk)
            got += len(chunk)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def drain(self) -> None:
        """Inflate to the end of the stream, so that the gzip CRC is checked."""
        while self.read(_INFLATE_CHUNK):
            pass


@dataclass(frozen=True)
class _GzHeader:
    """A gzipped NIfTI's header, read from an :class:`_Inflater` left at the first data byte."""

    image_class: type[nib.Nifti1Image]
    header: nib.Nifti1Header
    shape: tuple[int, ...]
    dtype: np.dtype[Any]

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.float64)) * self.dtype.itemsize

    @property
    def scaling(self) -> tuple[float, float] | None:
        """``(slope, intercept)`` the stored values are scaled by on read, or None for none."""
        slope, inter = self.header.get_slope_inter()
        if slope is None or (slope, inter or 0.0) == (1.0, 0.0):
            return None
        return float(slope), float(inter or 0.0)

    @classmethod
    def read(cls, f: _Inflater, path: Path) -> _GzHeader:
        """Parse the header and refuse a claimed size the file cannot hold, or complex data."""
        head = f.read(4)
        image_class = nifti_class(head)
        if image_class is None:
            raise InvalidInputError(path, "not a NIfTI image (no NIfTI-1 or NIfTI-2 header)")
        size = 348 if image_class is nib.Nifti1Image else 540
        block = head + f.read(size - 4)
        if len(block) < size:
            raise EOFError("the header is cut short")
        header = image_class.header_class(block, check=False)
        offset = max(int(header["vox_offset"]), size + 4)
        header = image_class.header_class.from_fileobj(io.BytesIO(block + f.read(offset - size)))
        out = cls(
            image_class, header, tuple(int(n) for n in header.get_data_shape()), header.get_data_dtype()
        )
        available = _MAX_DEFLATE_RATIO * path.stat().st_size
        if out.nbytes > available:
            raise InvalidInputError(
                path,
                f"file is truncated or its header is wrong: the header claims {out.nbytes:,} bytes of data "
                f"{out.shape}, the file holds at most {available:,} once inflated",
            )
        if out.dtype.kind == "c":
            raise InvalidInputError(
                path, f"complex-valued data ({out.dtype}); rsnflow needs real (magnitude) images"
            )
        return out

    def read_exactly(self, f: _Inflater, n: int, done: int, path: Path) -> bytes:
        """The next ``n`` data bytes (``done`` already read); a short stream is an error naming ``path``."""
        chunk = f.read(n)
        if len(chunk) < n:
            raise InvalidInputError(
                path,
                f"file is truncated or its header is wrong: the header claims {self.nbytes:,} bytes of "
                f"data {self.shape}, the file holds {done + len(chunk):,}",
            )
        return chunk


@contextlib.contextmanager
def _gz_errors(path: Path) -> Iterator[None]:
    """Turn gzip and header errors while inflating ``path`` into one-line errors naming it."""
    try:
        yield
    except InvalidInputError:
        raise
    except (EOFError, igzip_lib.IsalError) as exc:  # type: ignore[misc]  # stubs: a module attribute
        what = "gzip stream is truncated" if isinstance(exc, EOFError) else f"corrupt gzip stream ({exc})"
        raise InvalidInputError(path, what) from exc
    except (ValueError, nib.spatialimages.HeaderDataError) as exc:
        raise InvalidInputError(path, f"cannot read NIfTI header: corrupt or truncated ({exc})") from exc


def _inflate_nifti(path: Path) -> nib.Nifti1Image:
    """A gzipped NIfTI inflated straight into its array, a chunk at a time (ISA-L: twice zlib's speed).

    Neither the compressed file nor the inflated bytes are ever held whole: a
    104x104x72x1200 int16 run costs its 1.9 GB array and one 64 MB chunk. The
    size the header claims is checked against what the file could hold before
    the array is allocated; a short or corrupt stream is an error naming the file.
    """
    with _gz_errors(path), path.open("rb") as raw:
        f = _Inflater(raw)
        head = _GzHeader.read(f, path)
        claimed = head.nbytes
        buffer = np.empty(claimed, dtype=np.uint8)
        done = 0
        while done < claimed:
            chunk = head.read_exactly(f, min(_INFLATE_CHUNK, claimed - done), done, path)
            buffer[done : done + len(chunk)] = np.frombuffer(chunk, dtype=np.uint8)
            done += len(chunk)
        f.drain()
    data: Any = buffer.view(head.dtype).reshape(head.shape, order="F")
    if head.scaling is not None:
        # Scaled on read as nibabel would, in float32 for 8/16-bit scanner data.
        out_type = np.float32 if head.dtype.itemsize <= 2 else np.float64
        slope, inter = head.scaling
        data = data.astype(out_type) * out_type(slope) + out_type(inter)
    return head.image_class(data, head.header.get_best_affine(), head.header)


#: Inflated per block by :func:`load_masked_series`: small enough to stay in cache while it is masked.
_SERIES_BLOCK = 1 << 22


def load_masked_series(path: str | os.PathLike[str], mask: NDArray[np.bool_]) -> NDArray[np.float32]:
    """The ``(T, V)`` float32 time series of a 4D NIfTI's voxels inside ``mask``, ``data[mask].T``.

    A gzipped file is inflated a few volumes at a time and each block masked
    as it comes, so the whole 4D array is never held: memory is the output
    plus one 4 MB block, and the masked values are gathered from
    contiguous volumes. Validation is that of :func:`load_nifti` for what is
    used: a 4D image on ``mask``'s grid, finite and not all zero inside it.

    Parameters
    ----------
    path : str or os.PathLike
        ``.nii`` or ``.nii.gz`` 4D image.
    mask : ndarray of bool
        3D mask of the image's grid.

    Returns
    -------
    ndarray
        ``(T, V)`` float32, ``V = mask.sum()`` voxels in ``mask``'s C order (as ``data[mask]``).

    Raises
    ------
    InvalidInputError
        Missing, truncated or corrupt file; not 4D; another grid than ``mask``'s; NaN or infinite
        values, or only zeros, inside the mask.
    """
    p = Path(path)
    if not _is_gzipped(p):
        data = np.asarray(load_nifti(p, ndim=4).dataobj, dtype=np.float32)
        _check_grid(p, data.shape, mask)
        return _check_series(p, np.ascontiguousarray(data[mask].T))
    # Voxel (x, y, z) of an F-ordered volume sits at x + X (y + Y z); enumerated in the mask's C order.
    index = np.ravel_multi_index(np.nonzero(mask), mask.shape, order="F")
    with _gz_errors(p), p.open("rb") as raw:
        inflater = _Inflater(raw, read_size=1 << 20)
        head = _GzHeader.read(inflater, p)
        _check_grid(p, head.shape, mask)
        n_vol, vol_bytes = head.shape[3], int(np.prod(head.shape[:3])) * head.dtype.itemsize
        out = np.empty((n_vol, index.size), dtype=np.float32)
        step = max(1, _SERIES_BLOCK // max(vol_bytes, 1))
        for t in range(0, n_vol, step):
            n = min(step, n_vol - t)
            block = np.frombuffer(
                head.read_exactly(inflater, n * vol_bytes, t * vol_bytes, p), dtype=head.dtype
            )
            out[t : t + n] = block.reshape(n, -1)[:, index]
        inflater.drain()
    if head.scaling is not None:
        out *= np.float32(head.scaling[0])
        out += np.float32(head.scaling[1])
    return _check_series(p, out)


def _check_grid(path: Path, shape: tuple[int, ...], mask: NDArray[np.bool_]) -> None:
    if len(shape) != 4 or tuple(shape[:3]) != mask.shape:
        raise InvalidInputError(
            path, f"image of shape {tuple(shape)} is not a 4D series on the mask's grid {mask.shape}"
        )


def _check_series(path: Path, series: NDArray[np.float32]) -> NDArray[np.float32]:
    bad = int(np.count_nonzero(~np.isfinite(series)))
    if bad:
        raise InvalidInputError(path, f"{bad} values inside the mask are NaN or infinite")
    if not series.any():
        raise InvalidInputError(path, "image is all zeros inside the mask")
    return series


def nifti_class(raw: bytes) -> type[nib.Nifti1Image] | None:
    """The nibabel class for uncompressed bytes that start with a NIfTI-1 or NIfTI-2 header, else None.

    Parameters
    ----------
    raw : bytes
        The start of an uncompressed file (at least its first 4 bytes: the header size, 348 or 540,
        in either byte order).

    Returns
    -------
    type or None
        :class:`nibabel.Nifti1Image`, :class:`nibabel.Nifti2Image`, or ``None`` when ``raw`` does
        not start with a NIfTI header size.
    """
    for order in ("little", "big"):
        size = int.from_bytes(raw[:4], order) if len(raw) >= 4 else 0
        if size in (348, 540):
            return nib.Nifti1Image if size == 348 else nib.Nifti2Image
    return None


def nifti_from_bytes(
    data: bytes,
    where: str | os.PathLike[str],
    ndim: int | None = None,
    max_bytes: int | None = 1 << 30,
    min_volumes: int = 1,
) -> nib.Nifti1Image:
    """Parse a single-file NIfTI-1/2 image (gzipped or not) held in memory and validate it.

    The checks are those of :func:`load_nifti`.

    Parameters
    ----------
    data : bytes
        The whole file: ``.nii`` bytes, or ``.nii.gz`` bytes (one gzip member).
    where : str or os.PathLike
        Names the source in error messages (a request input, say).
    ndim : int or None, default=None
        Required dimensionality (3 or 4); ``None`` accepts either.
    max_bytes : int or None, default=1 GiB
        Bound on the decompressed size in bytes (and on the data size the header claims) so that a
        gzip bomb is refused; ``None``: no bound, for local files.
    min_volumes : int, default=1
        For 4D images, the least number of volumes accepted.

    Returns
    -------
    nibabel.Nifti1Image
        The validated image with its data read.

    Raises
    ------
    InvalidInputError
        Empty data, a corrupt or truncated gzip stream, more than ``max_bytes`` once inflated, no
        NIfTI header, or any of the problems :func:`check_image` refuses.
    """
    if len(data) == 0:
        raise InvalidInputError(where, "NIfTI payload is empty (0 bytes)")
    raw = data
    if data[:2] == _GZIP_MAGIC:
        inflate = isal_zlib.decompressobj(wbits=31)  # gzip framing; same API as zlib's
        try:
            raw = inflate.decompress(data, max_bytes or 0)
        except isal_zlib.error as exc:  # type: ignore[misc]  # isal's stubs declare error as a module attribute
            raise InvalidInputError(where, f"corrupt gzip stream ({exc})") from exc
        if inflate.unconsumed_tail:
            raise InvalidInputError(
                where, f"NIfTI image inflates to more than {max_bytes:,} bytes (the limit)"
            )
        if not inflate.eof:
            raise InvalidInputError(where, "gzip stream is truncated")
    image_class = nifti_class(raw)
    if image_class is None:
        raise InvalidInputError(where, "not a NIfTI image (no NIfTI-1 or NIfTI-2 header)")
    try:
        img = image_class.from_bytes(raw)
    except Exception as exc:  # nibabel raises a range of types on a bad header
        raise InvalidInputError(where, f"cannot read NIfTI image: corrupt or truncated ({exc})") from exc
    return check_image(img, where, ndim, min_volumes, available=len(raw), max_bytes=max_bytes)


def check_image(
    img: nib.filebasedimages.FileBasedImage,
    where: str | os.PathLike[str],
    ndim: int | None = None,
    min_volumes: int = 1,
    available: int | None = None,
    max_bytes: int | None = None,
) -> nib.Nifti1Image:
    """Validate a NIfTI image and return it with its data read; errors name ``where``.

    Parameters
    ----------
    img : nibabel.filebasedimages.FileBasedImage
        The image as nibabel opened it (its data need not be read yet).
    where : str or os.PathLike
        The file or source named in error messages.
    ndim : int or None, default=None
        Required dimensionality (3 or 4); ``None`` accepts either. With 3, a 4D image of a single
        volume is accepted and returned as 3D.
    min_volumes : int, default=1
        For 4D images, the least number of volumes accepted.
    available : int or None, default=None
        Size in bytes of the (uncompressed) file holding the image: the size its header claims is
        checked against it before anything of that size is allocated (a 100-byte file can claim
        9 GB). ``None`` skips this check.
    max_bytes : int or None, default=None
        Largest data size in bytes the header may claim; ``None``: no bound.

    Returns
    -------
    nibabel.Nifti1Image
        A new image holding the data that was read, with the same affine and header.

    Raises
    ------
    InvalidInputError
        Not a NIfTI image; wrong dimensionality; too few volumes; no voxels; complex data; a
        claimed size over ``max_bytes`` or over what the file holds; unreadable data; NaN or
        infinite values; an all-zero image; an affine that is missing or not invertible.
    """
    if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
        raise InvalidInputError(where, f"not a NIfTI image (nibabel read it as {type(img).__name__})")
    shape = img.shape
    # A 4D image with a single volume is still acceptable as 3D.
    single_volume_as_3d = ndim == 3 and len(shape) == 4 and shape[3] == 1
    if ndim is not None and len(shape) != ndim and not single_volume_as_3d:
        raise InvalidInputError(where, f"expected a {ndim}D image, got {len(shape)}D with shape {shape}")
    if len(shape) not in (3, 4):
        raise InvalidInputError(where, f"expected a 3D or 4D image, got shape {shape}")
    if any(s == 0 for s in shape[:3]):
        raise InvalidInputError(where, f"image has no voxels (shape {shape})")
    if len(shape) == 4:
        if shape[3] == 0:
            raise InvalidInputError(where, "image has zero volumes")
        if shape[3] < min_volumes:
            raise InvalidInputError(where, f"image has {shape[3]} volumes, at least {min_volumes} needed")
    dtype = img.header.get_data_dtype()
    if dtype.kind == "c":
        raise InvalidInputError(
            where, f"complex-valued data ({dtype}); rsnflow needs real (magnitude) images"
        )
    _check_claimed_size(img, where, available, max_bytes)
    try:
        data = np.asanyarray(img.dataobj)
    except (EOFError, OSError, ValueError) as exc:
        raise InvalidInputError(
            where, f"cannot read image data: file is truncated or corrupt ({exc})"
        ) from exc
    if data.dtype.kind == "f":
        bad = ~np.isfinite(data)
        n_bad = int(bad.sum())
        if n_bad:
            kinds = []
            if np.isnan(data).any():
                kinds.append("NaN")
            if np.isinf(data).any():
                kinds.append("infinite")
            raise InvalidInputError(where, f"{n_bad} voxels hold {' and '.join(kinds)} values")
    if not np.any(data):
        raise InvalidInputError(where, "image is all zeros")
    affine = img.affine
    if affine is None or not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-6:
        raise InvalidInputError(where, "image affine is missing or not invertible")
    if ndim == 3 and len(shape) == 4:
        return nib.Nifti1Image(np.asarray(data)[..., 0], affine, img.header)
    # Keep the data that was just read so later access does not re-read the file.
    return nib.Nifti1Image(np.asarray(data), affine, img.header)


def _check_claimed_size(
    img: nib.Nifti1Image, where: str | os.PathLike[str], available: int | None, max_bytes: int | None
) -> None:
    """Refuse a header whose data size exceeds ``max_bytes`` or what the file holds, before reading."""
    claimed = (
        int(np.prod([int(s) for s in img.shape], dtype=np.float64)) * img.header.get_data_dtype().itemsize
    )
    if max_bytes is not None and claimed > max_bytes:
        raise InvalidInputError(
            where, f"header claims {claimed:,} bytes of data ({img.shape}), above the limit of {max_bytes:,}"
        )
    if available is not None:
        # Where the data start: the array proxy knows (the header's vox_offset may read 0).
        offset = int(getattr(img.dataobj, "offset", 0) or img.header.get_data_offset())
        if claimed > available - offset:
            raise InvalidInputError(
                where,
                f"file is truncated or its header is wrong: the header claims {claimed:,} bytes of data "
                f"{img.shape}, the file holds {max(available - offset, 0):,}",
            )


def sidecars(bold_path: str | os.PathLike[str]) -> list[Path]:
    """Every JSON sidecar that applies to a BOLD run under BIDS inheritance, the least specific first.

    A ``*_bold.json`` applies when its entities are a subset of the run's and
    it lies in the run's folder or one above it, up to the dataset root (the
    folder with ``dataset_description.json``): ``task-rest_bold.json`` at the
    root, ``sub-01/sub-01_task-rest_bold.json``,
    ``sub-01/ses-2/func/sub-01_ses-2_task-rest_run-1_bold.json``. Values of a
    later file override those of an earlier one (:func:`read_sidecar`).

    Parameters
    ----------
    bold_path : str or os.PathLike
        The run's NIfTI file (it need not exist: only its name and folders are used).

    Returns
    -------
    list of pathlib.Path
        The sidecars that apply, from the folder nearest the dataset root to the run's own
        folder and, within a folder, from the fewest entities to the most.
    """
    p = Path(bold_path)
    stem = p.name.removesuffix(".gz").removesuffix(".nii")
    *entities, suffix = stem.split("_")
    own = set(entities)
    found: list[tuple[int, int, Path]] = []
    for depth, folder in enumerate(p.parents):
        for candidate in sorted(folder.glob(f"*{suffix}.json")):
            parts = candidate.name.removesuffix(".json").split("_")
            if parts[-1] == suffix and set(parts[:-1]) <= own:
                found.append((-depth, len(parts), candidate))
        if (folder / "dataset_description.json").exists():
            break
    return [path for _, _, path in sorted(found)]


def find_sidecar(bold_path: str | os.PathLike[str]) -> Path | None:
    """The most specific JSON sidecar of a BOLD run (:func:`sidecars`), or None.

    Parameters
    ----------
    bold_path : str or os.PathLike
        The run's NIfTI file.

    Returns
    -------
    pathlib.Path or None
        The last of :func:`sidecars`, or ``None`` when no sidecar applies.
    """
    found = sidecars(bold_path)
    return found[-1] if found else None


def read_sidecar(bold_path: str | os.PathLike[str]) -> dict[str, tuple[Any, Path]]:
    """The run's metadata merged along BIDS inheritance: key -> (value, the file that set it).

    Parameters
    ----------
    bold_path : str or os.PathLike
        The run's NIfTI file.

    Returns
    -------
    dict of str to (Any, pathlib.Path)
        Every key of the sidecars that apply (:func:`sidecars`), with the value of the most
        specific sidecar that sets it and that sidecar's path. Empty when there is no sidecar.

    Raises
    ------
    InvalidInputError
        A sidecar that cannot be read, is not valid JSON or is not a JSON object.
    """
    merged: dict[str, tuple[Any, Path]] = {}
    for path in sidecars(bold_path):
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InvalidInputError(path, f"sidecar is not valid JSON ({exc})") from exc
        if not isinstance(meta, dict):
            raise InvalidInputError(path, f"sidecar must be a JSON object, got {type(meta).__name__}")
        merged.update({key: (value, path) for key, value in meta.items()})
    return merged


def sidecar_metadata(bold_path: str | os.PathLike[str]) -> dict[str, Any]:
    """The run's merged sidecar metadata, values only (:func:`read_sidecar` without the files).

    Parameters
    ----------
    bold_path : str or os.PathLike
        The run's NIfTI file.

    Returns
    -------
    dict of str to Any
        The merged metadata.
    """
    return {key: value for key, (value, _) in read_sidecar(bold_path).items()}


def read_tr(path: str | os.PathLike[str], img: nib.Nifti1Image | None = None) -> float:
    """The repetition time in seconds of a 4D BOLD run.

    Taken from the ``RepetitionTime`` of the BIDS sidecars (seconds by the
    BIDS standard, inheritance followed: :func:`read_sidecar`), otherwise from the NIfTI header's 4th pixdim
    and its time unit (``msec`` and ``usec`` are converted).

    Parameters
    ----------
    path : str or os.PathLike
        The run's NIfTI file; its sidecars are looked up from its name.
    img : nibabel.Nifti1Image or None, default=None
        The run's image when already loaded; otherwise the header is read from ``path`` when
        there is no sidecar TR.

    Returns
    -------
    float
        The repetition time in seconds.

    Raises
    ------
    InvalidInputError
        No TR anywhere, a TR of zero or below, or a TR outside
        :data:`TR_RANGE_S` (such as 2000 written in milliseconds where seconds
        are declared).
    """
    p = Path(path)
    meta = read_sidecar(p)
    if "RepetitionTime" in meta:
        tr, sidecar = meta["RepetitionTime"]
        if not isinstance(tr, int | float) or isinstance(tr, bool):
            raise InvalidInputError(sidecar, f"RepetitionTime must be a number, got {tr!r}")
        return _check_tr(sidecar, float(tr), "RepetitionTime in the sidecar (seconds)")
    if img is None:
        img = open_nifti(p)
    if len(img.shape) < 4:
        raise InvalidInputError(p, "no repetition time: image is not 4D and has no sidecar")
    zooms = img.header.get_zooms()
    tr = float(zooms[3]) if len(zooms) > 3 else 0.0
    if tr == 0.0:
        raise InvalidInputError(
            p,
            "no repetition time: no RepetitionTime in a JSON sidecar and the header's TR (pixdim[4]) is 0",
        )
    unit = img.header.get_xyzt_units()[1]
    scale = {"msec": 1e-3, "usec": 1e-6}.get(unit, 1.0)
    where = f"header pixdim[4] ({unit or 'unknown'} units)"
    return _check_tr(p, tr * scale, where)


def _check_tr(path: Path, tr: float, where: str) -> float:
    if not np.isfinite(tr) or tr <= 0:
        raise InvalidInputError(path, f"repetition time must be positive, got {tr} from {where}")
    lo, hi = TR_RANGE_S
    if tr > hi:
        hint = f"; {tr:g} looks like milliseconds ({tr / 1000:g} s?)" if tr >= 100 else ""
        raise InvalidInputError(
            path, f"repetition time {tr:g} s from {where} is implausible (> {hi:g} s){hint}"
        )
    if tr < lo:
        raise InvalidInputError(path, f"repetition time {tr:g} s from {where} is implausible (< {lo:g} s)")
    return tr


@dataclass(frozen=True)
class BoldRun:
    """A validated 4D BOLD run and its repetition time.

    Attributes
    ----------
    path : pathlib.Path
        The run's NIfTI file.
    img : nibabel.Nifti1Image
        The 4D image, its data read and validated.
    tr : float
        Repetition time in seconds.
    """

    path: Path
    img: nib.Nifti1Image
    tr: float

    @property
    def n_volumes(self) -> int:
        """Number of volumes (time points) of the run."""
        return int(self.img.shape[3])


def load_bold(path: str | os.PathLike[str], min_volumes: int = 2) -> BoldRun:
    """Load and validate a 4D BOLD run with its repetition time.

    Parameters
    ----------
    path : str or os.PathLike
        The run's ``.nii`` or ``.nii.gz`` file.
    min_volumes : int, default=2
        The least number of volumes accepted.

    Returns
    -------
    BoldRun
        The run, its validated image (:func:`load_nifti`) and its TR (:func:`read_tr`).

    Raises
    ------
    InvalidInputError
        The image is not a valid 4D image of at least ``min_volumes`` volumes, or it has no
        plausible repetition time.
    """
    img = load_nifti(path, ndim=4, min_volumes=min_volumes)
    return BoldRun(Path(path), img, read_tr(path, img))


# --------------------------------------------------------------------------- BIDS derivatives


def write_dataset_description(
    root: str | os.PathLike[str],
    name: str = "rsnflow",
    dataset_type: str = "derivative",
    source: str | None = None,
) -> Path:
    """Write ``dataset_description.json`` (BIDS 1.9) naming rsnflow as the generator.

    Parameters
    ----------
    root : str or os.PathLike
        The dataset's root folder (created if needed).
    name : str, default="rsnflow"
        The dataset's ``Name``.
    dataset_type : str, default="derivative"
        ``DatasetType``: ``"derivative"`` or ``"raw"``. Only a derivative dataset gets
        ``GeneratedBy`` (rsnflow and its version) and ``SourceDatasets``.
    source : str or None, default=None
        URL of the source dataset, written as ``SourceDatasets`` of a derivative dataset.

    Returns
    -------
    pathlib.Path
        The written ``dataset_description.json``.
    """
    desc: dict[str, Any] = {
        "Name": name,
        "BIDSVersion": "1.9.0",
        "DatasetType": dataset_type,
    }
    if dataset_type == "derivative":
        desc["GeneratedBy"] = [{"Name": "rsnflow", "Version": __version__}]
        if source:
            desc["SourceDatasets"] = [{"URL": source}]
    return write_json(desc, Path(root) / "dataset_description.json")


def link_tree(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> Path:
    """Mirror the files of ``src`` under ``dst`` by hard links (copies across filesystems).

    Used to assemble one derivatives tree from per-task artifacts: rsnflow never
    modifies a written file in place (writes are renames), so sharing inodes is safe.
    Existing files in ``dst`` are kept.

    Parameters
    ----------
    src : str or os.PathLike
        The folder whose files are linked.
    dst : str or os.PathLike
        The folder they are linked into, with the same relative paths (folders created as needed).

    Returns
    -------
    pathlib.Path
        ``dst``.
    """
    s, d = Path(src), Path(dst)
    for path in s.rglob("*"):
        target = d / path.relative_to(s)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        elif not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(path, target)
            except OSError:
                shutil.copy2(path, target)
    return d


def sha256_file(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file, read in 16 MiB chunks (datasets of several GB).

    Parameters
    ----------
    path : str or os.PathLike
        The file.

    Returns
    -------
    str
        The hexadecimal digest (64 characters).
    """
    import hashlib

    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 24), b""):
            digest.update(chunk)
    return digest.hexdigest()

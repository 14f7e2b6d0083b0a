"""Checking a stored dataset against its manifest before it is trained on.

The manifest records the SHA-256 of every file and, for ``maps.npy``, of each
:data:`BLOCK` bytes. The fast check (the default of ``rsnflow train``) checks
every file's size, hashes the small files whole and :data:`FAST_BLOCKS`
evenly spaced blocks of the maps (all of them for a dataset up to 1 GiB, the
demo's size); the full check hashes everything. A flipped byte in a block the
fast check skips is caught by the full check only.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Literal

import numpy as np

from rsnflow.io import InvalidInputError, sha256_file

__all__ = ["BLOCK", "FAST_BLOCKS", "Verify", "block_digests", "verify_dataset"]

#: Bytes per hashed block of ``maps.npy``.
BLOCK = 64 << 20
#: Blocks of ``maps.npy`` the fast check hashes (evenly spaced, first and last included).
FAST_BLOCKS = 16

Verify = Literal["fast", "full", "none"]


def block_digests(path: str | Path) -> list[str]:
    """SHA-256 of each :data:`BLOCK` bytes of a file, in order.

    Parameters
    ----------
    path : str or pathlib.Path
        The file to hash.

    Returns
    -------
    list of str
        Hex digests, one per block (the last block may be shorter); empty for an empty file.
    """
    out = []
    with Path(path).open("rb") as fh:
        for chunk in iter(lambda: fh.read(BLOCK), b""):
            out.append(hashlib.sha256(chunk).hexdigest())
    return out


def _block_digest(path: Path, i: int) -> str:
    with path.open("rb") as fh:
        fh.seek(i * BLOCK)
        return hashlib.sha256(fh.read(BLOCK)).hexdigest()


def verify_dataset(dataset_dir: str | Path, manifest: dict[str, Any], level: Verify = "fast") -> None:
    """Raise unless the dataset's files match its manifest (``level``: fast, full or none).

    Parameters
    ----------
    dataset_dir : str or pathlib.Path
        The dataset folder.
    manifest : dict
        Its manifest (:func:`rsnflow.dataset.load_manifest`).
    level : {"fast", "full", "none"}, default="fast"
        ``fast`` hashes ``index.tsv``, ``mask.npy`` and up to :data:`FAST_BLOCKS`
        blocks of ``maps.npy``; ``full`` hashes every block; ``none`` checks nothing.

    Raises
    ------
    InvalidInputError
        Naming the first file whose size or content differs from the manifest.
    """
    if level == "none":
        return
    root = Path(dataset_dir)
    digests = manifest.get("sha256", {})
    maps = root / "maps.npy"
    expected = int(np.prod(manifest["shape"])) * np.dtype(manifest["dtype"]).itemsize
    if not maps.exists():
        raise InvalidInputError(maps, "missing from the dataset")
    if maps.stat().st_size < expected:
        raise InvalidInputError(
            maps, f"{maps.stat().st_size:,} bytes, less than the {expected:,} of its maps"
        )
    for name in ("index.tsv", "mask.npy"):
        if name in digests and sha256_file(root / name) != digests[name]:
            raise InvalidInputError(root / name, "content differs from the manifest's SHA-256 (corrupted?)")
    blocks = manifest.get("maps_block_sha256")
    if not blocks:  # a manifest from before block hashes: the whole file
        if sha256_file(maps) != digests.get("maps.npy"):
            raise InvalidInputError(maps, "content differs from the manifest's SHA-256 (corrupted?)")
        return
    n = len(blocks)
    if maps.stat().st_size > n * BLOCK or maps.stat().st_size <= (n - 1) * BLOCK:
        raise InvalidInputError(
            maps, f"size {maps.stat().st_size:,} does not match the manifest's {n} blocks"
        )
    picks = range(n) if level == "full" or n <= FAST_BLOCKS else np.linspace(0, n - 1, FAST_BLOCKS).round()
    for i in sorted({int(i) for i in picks}):
        if _block_digest(maps, i) != blocks[i]:
            raise InvalidInputError(
                maps, f"bytes {i * BLOCK:,}-{(i + 1) * BLOCK - 1:,} differ from the manifest (corrupted?)"
            )

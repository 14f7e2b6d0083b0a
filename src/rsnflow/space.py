"""The classification space: the MNI152 4 mm grid, its template, masks and tissue maps.

The grid is fixed (shared/DESIGN.md): shape 45x54x45 and affine
``[[-4,0,0,90],[0,4,0,-126],[0,0,4,-72],[0,0,0,1]]``, every second voxel of
FSL's 2 mm MNI152 grid. Template, brain mask and tissue probability maps come
from the ICBM 2009a symmetric images that nilearn ships inside its package
(nothing is downloaded); they are resampled once into the grid and cached on
disk under ``$RSNFLOW_CACHE_DIR`` (default ``~/.cache/rsnflow``).
"""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
from numpy.typing import ArrayLike, NDArray

from rsnflow.io import load_nifti, save_nifti
from rsnflow.log import get_logger

__all__ = [
    "MNI4_AFFINE",
    "MNI4_SHAPE",
    "SPACE_NAME",
    "cache_dir",
    "grid_data",
    "is_on_grid",
    "load_brain_mask",
    "load_template",
    "load_tissue_probabilities",
    "resample_to_grid",
    "unmask",
    "voxel_to_world",
    "world_to_voxel",
]

log = get_logger(__name__)

#: Shape of the classification grid (x, y, z).
MNI4_SHAPE: tuple[int, int, int] = (45, 54, 45)
#: Voxel-to-MNI-mm affine of the classification grid.
MNI4_AFFINE: NDArray[np.float64] = np.array(
    [[-4.0, 0.0, 0.0, 90.0], [0.0, 4.0, 0.0, -126.0], [0.0, 0.0, 4.0, -72.0], [0.0, 0.0, 0.0, 1.0]]
)
MNI4_AFFINE.setflags(write=False)
#: BIDS ``space-`` entity of the grid (the template nilearn ships is ICBM 2009a symmetric).
SPACE_NAME = "MNI152NLin2009aSym"
#: Version of the cached resampled images; bump when the recipe changes.
_CACHE_VERSION = "1"


def cache_dir() -> Path:
    """Folder holding the resampled template and masks.

    Returns
    -------
    Path
        ``space-v<version>`` under ``$RSNFLOW_CACHE_DIR`` (default ``~/.cache/rsnflow``);
        not created here.
    """
    root = os.environ.get("RSNFLOW_CACHE_DIR") or Path.home() / ".cache" / "rsnflow"
    return Path(root) / f"space-v{_CACHE_VERSION}"


def world_to_voxel(coords_mm: ArrayLike, affine: ArrayLike = MNI4_AFFINE) -> NDArray[np.float64]:
    """Map world coordinates (mm, ``(..., 3)``) to continuous voxel coordinates.

    Parameters
    ----------
    coords_mm : array-like, shape (..., 3)
        World coordinates in mm.
    affine : array-like, shape (4, 4)
        Voxel-to-world affine of the grid; default: the MNI 4 mm grid.

    Returns
    -------
    ndarray, shape (..., 3)
        Voxel coordinates, not rounded.
    """
    xyz = np.asarray(coords_mm, dtype=float)
    inv = np.linalg.inv(np.asarray(affine, dtype=float))
    return xyz @ inv[:3, :3].T + inv[:3, 3]


def voxel_to_world(ijk: ArrayLike, affine: ArrayLike = MNI4_AFFINE) -> NDArray[np.float64]:
    """Map voxel coordinates (``(..., 3)``) to world coordinates in mm.

    Parameters
    ----------
    ijk : array-like, shape (..., 3)
        Voxel coordinates (integer or continuous).
    affine : array-like, shape (4, 4)
        Voxel-to-world affine of the grid; default: the MNI 4 mm grid.

    Returns
    -------
    ndarray, shape (..., 3)
        World coordinates in mm.
    """
    v = np.asarray(ijk, dtype=float)
    a = np.asarray(affine, dtype=float)
    return v @ a[:3, :3].T + a[:3, 3]


def unmask(values: NDArray[np.floating], mask: NDArray[np.bool_]) -> NDArray[np.float32]:
    """Rows ``(K, V)`` of values inside ``mask`` as a 4D ``(45, 54, 45, K)`` float32 volume.

    Parameters
    ----------
    values : ndarray, shape (K, V)
        One row per map, one column per in-mask voxel (C order of the grid).
    mask : ndarray of bool, shape (45, 54, 45)
        Mask on the MNI 4 mm grid with ``V`` true voxels.

    Returns
    -------
    ndarray of float32, shape (45, 54, 45, K)
        The maps, 0 outside the mask.
    """
    out = np.zeros((*MNI4_SHAPE, values.shape[0]), dtype=np.float32)
    out[mask] = values.T
    return out


def resample_to_grid(
    img: nib.spatialimages.SpatialImage, interpolation: str = "continuous"
) -> nib.Nifti1Image:
    """Resample any 3D or 4D image with a valid affine into the MNI 4 mm grid.

    Parameters
    ----------
    img
        Image in world (mm) coordinates of MNI space.
    interpolation
        ``"continuous"`` (cubic), ``"linear"`` or ``"nearest"`` (nilearn's names).

    Returns
    -------
    nibabel.Nifti1Image
        Float32 image of shape ``(45, 54, 45[, T])`` with :data:`MNI4_AFFINE` (a fresh
        header: the input's is not kept).
    """
    from nilearn.image import resample_img

    with warnings.catch_warnings():
        # nilearn warns about linear resampling of binary masks; the mask
        # recipe does it on purpose (partial volume, then a 0.5 threshold).
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", FutureWarning)
        out = resample_img(
            img,
            target_affine=MNI4_AFFINE,
            target_shape=MNI4_SHAPE,
            interpolation=interpolation,
            force_resample=True,
            copy_header=True,
        )
    return nib.Nifti1Image(np.asarray(out.dataobj, dtype=np.float32), MNI4_AFFINE)


def is_on_grid(img: nib.spatialimages.SpatialImage) -> bool:
    """Whether an image's arrays index the MNI 4 mm grid as is (its shape and affine are the grid's).

    Parameters
    ----------
    img : nibabel.spatialimages.SpatialImage
        A 3D or 4D image.

    Returns
    -------
    bool
        True when its first three axes are :data:`MNI4_SHAPE` with :data:`MNI4_AFFINE`.
    """
    return tuple(img.shape[:3]) == MNI4_SHAPE and bool(np.allclose(img.affine, MNI4_AFFINE, atol=1e-3))


def grid_data(img: nib.spatialimages.SpatialImage) -> NDArray[np.float32]:
    """An MNI-space image's data on the MNI 4 mm grid, as the grid's arrays index it.

    A 45x54x45 array is not on the grid because of its shape: fMRIPrep and
    nilearn write MNI images right-to-left (``+x``, RAS) where this grid runs
    left-to-right (``-4``, LAS, FSL's order), and reading such an array as is
    mirrors left and right. An image whose affine is the grid's is read as is;
    one on the same voxel centres in another axis order or direction is
    reoriented exactly (nibabel's orientation transforms); any other is
    resampled (:func:`resample_to_grid`).

    Parameters
    ----------
    img : nibabel.spatialimages.SpatialImage
        A 3D or 4D image in MNI space (world mm).

    Returns
    -------
    ndarray
        float32 ``(45, 54, 45[, T])``.
    """
    from nibabel import orientations

    if is_on_grid(img):
        return np.asarray(img.dataobj, dtype=np.float32)
    ornt = orientations.ornt_transform(
        orientations.io_orientation(img.affine), orientations.io_orientation(MNI4_AFFINE)
    )
    flipped = img.affine @ orientations.inv_ornt_aff(ornt, img.shape[:3])
    shape = tuple(int(img.shape[int(a)]) for a in ornt[:, 0].argsort())
    if shape == MNI4_SHAPE and np.allclose(flipped, MNI4_AFFINE, atol=1e-3):
        return orientations.apply_orientation(np.asarray(img.dataobj, dtype=np.float32), ornt)
    return np.asarray(resample_to_grid(img).dataobj)


def _cached(name: str, build: Callable[[], nib.Nifti1Image]) -> nib.Nifti1Image:
    path = cache_dir() / f"{name}.nii.gz"
    if path.exists():
        try:
            return load_nifti(path, ndim=3)
        except ValueError:
            log.warning("cached %s is unreadable; rebuilding it", path)
    log.debug("building %s on the MNI 4 mm grid", name)
    img = build()
    save_nifti(img, path)
    return img


def _template() -> nib.Nifti1Image:
    from nilearn.datasets import load_mni152_template

    img = resample_to_grid(load_mni152_template(resolution=2), "continuous")
    data = np.clip(img.get_fdata(dtype=np.float32), 0, None)
    return nib.Nifti1Image(data, MNI4_AFFINE)


def _brain_mask() -> nib.Nifti1Image:
    from nilearn.datasets import load_mni152_brain_mask

    frac = resample_to_grid(load_mni152_brain_mask(resolution=2), "linear").get_fdata()
    return nib.Nifti1Image((frac >= 0.5).astype(np.uint8), MNI4_AFFINE)


def _tissue(kind: str) -> nib.Nifti1Image:
    from nilearn.datasets import load_mni152_gm_template, load_mni152_wm_template

    loader = {"gm": load_mni152_gm_template, "wm": load_mni152_wm_template}[kind]
    prob = resample_to_grid(loader(resolution=2), "linear").get_fdata(dtype=np.float32)
    return nib.Nifti1Image(np.clip(prob, 0, 1).astype(np.float32), MNI4_AFFINE)


@functools.cache
def load_template() -> nib.Nifti1Image:
    """The MNI152 T1 template (ICBM 2009a sym, from nilearn) on the 4 mm grid."""
    return _cached("template_T1w", _template)


@functools.cache
def load_brain_mask() -> nib.Nifti1Image:
    """The MNI152 brain mask on the 4 mm grid (uint8, 1 inside the brain)."""
    return _cached("brain_mask", _brain_mask)


@functools.cache
def load_tissue_probabilities() -> dict[str, NDArray[np.float32]]:
    """Grey-matter, white-matter and CSF probability arrays on the 4 mm grid.

    CSF is what the brain mask holds beyond grey and white matter (nilearn
    ships no CSF map); the three sum to at most 1 inside the mask and are 0
    outside it.
    """
    mask = load_brain_mask().get_fdata() > 0
    gm = _cached("label_GM_probseg", lambda: _tissue("gm")).get_fdata(dtype=np.float32)
    wm = _cached("label_WM_probseg", lambda: _tissue("wm")).get_fdata(dtype=np.float32)
    gm = np.where(mask, gm, 0).astype(np.float32)
    wm = np.where(mask, wm, 0).astype(np.float32)
    total = gm + wm
    scale = np.where(total > 1, 1 / np.maximum(total, 1e-6), 1).astype(np.float32)
    gm, wm = gm * scale, wm * scale
    csf = np.where(mask, np.clip(1 - gm - wm, 0, 1), 0).astype(np.float32)
    return {"gm": gm, "wm": wm, "csf": csf}

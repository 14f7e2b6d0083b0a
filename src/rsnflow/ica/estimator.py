"""Group ICA as a scikit-learn estimator: images or arrays in, fitted maps out, no files.

``GroupICA(n_components=20, random_state=0).fit(imgs)`` is what nilearn's
``CanICA`` users type; the ``group-ica`` stage (:func:`rsnflow.ica.group.group_ica`)
fits the same estimator on the runs of a derivatives folder and writes its outputs,
so a fit on the same runs, mask and seed gives the same maps.

The method: each run variance-normalised per voxel (MELODIC ``--vn``) with its
volumes centred over voxels, optionally reduced to its ``subject_dim`` whitened
eigenmaps; MIGP (incremental group PCA) over the runs in a seeded order;
symmetric FastICA of the ``n_components`` strongest eigenmaps from
``n_restarts`` starts; signs flipped to positive skew; back-projection to mixing
and maps; maps as z statistics (map over the residual noise), sorted by
explained variance.
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import nibabel as nib
import numpy as np
from numpy.typing import NDArray
from scipy import stats
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from rsnflow.config import IcaConfig, PreprocessConfig, default_section
from rsnflow.ica.decomposition import (
    MIGP_PRECISIONS,
    FastICAResult,
    bic_order,
    fastica,
    migp,
    migp_precision,
    normalise_subject,
    regress_maps,
    subject_pca,
)
from rsnflow.ica.dual_regression import DualRegression, dual_regression
from rsnflow.log import get_logger
from rsnflow.resample import check_device, pick_device
from rsnflow.space import MNI4_AFFINE

__all__ = ["GroupICA", "InsufficientDataError", "Run", "run_rows"]

log = get_logger(__name__)

#: A run as the estimator takes it: a 4D image, a path to one, or a 4D array.
Run = nib.Nifti1Image | str | os.PathLike[str] | NDArray[np.floating]

_FUNS = ("logcosh", "exp", "cube")
#: The parameters' defaults: the ``ica`` section of ``defaults.yaml``.
_DEFAULTS = default_section(IcaConfig)


class InsufficientDataError(ValueError):
    """The runs hold fewer dimensions than the model order needs.

    Parameters
    ----------
    order : int
        The model order asked for; kept as ``self.order``.
    n_rows : int
        Rows (dimensions) MIGP kept from the runs; kept as ``self.n_rows``.
    """

    def __init__(self, order: int, n_rows: int) -> None:
        super().__init__(f"model order {order} needs more data: the runs hold {n_rows} dimensions after MIGP")
        self.order, self.n_rows = order, n_rows


def run_rows(data: NDArray[np.floating], subject_dim: int | None, copy: bool = True) -> NDArray[np.float32]:
    """A ``(T, V)`` run as MIGP takes it: voxels variance-normalised, volumes centred; or its subject PCA.

    Parameters
    ----------
    data : ndarray
        ``(T, V)`` time series of one run inside the mask.
    subject_dim : int or None
        Whitened eigenmaps to keep (:func:`~rsnflow.ica.decomposition.subject_pca`);
        ``None`` keeps the normalised volumes.
    copy : bool, default=True
        ``False``: normalise in ``data`` itself (a buffer the caller no longer needs).

    Returns
    -------
    ndarray
        ``(T, V)`` float32 rows, or ``(min(subject_dim, rank), V)`` whitened
        eigenmaps with ``subject_dim``.
    """
    x = normalise_subject(data, centre_volumes=True, copy=copy)
    if subject_dim is None:
        return x
    reduced = subject_pca(x, subject_dim)
    if reduced.shape[0] < subject_dim:
        log.warning(
            "a run of %d volumes holds %d eigenmaps, fewer than subject_dim %d: all of them are whitened, "
            "noise included",
            x.shape[0], reduced.shape[0], subject_dim,
        )  # fmt: skip
    return reduced


class GroupICA(TransformerMixin, BaseEstimator):
    """Temporal-concatenation group ICA (MIGP + FastICA), as MELODIC and nilearn's CanICA.

    Parameters
    ----------
    n_components
        Model order, or ``"auto"`` (Minka's BIC on the MIGP eigenvalues, the
        voxels counted as independent samples over the data's smoothness).
    migp_dim
        Rows MIGP keeps between reductions (well above ``n_components``).
    subject_dim
        Whitened eigenmaps per run entering MIGP; ``None``: the run's volumes.
    migp_precision
        ``"float32"``, ``"bfloat16"`` (MIGP's intermediate products on 8-bit
        mantissas, :func:`~rsnflow.ica.decomposition.migp`) or ``"auto"``:
        bfloat16 where the device multiplies it in hardware (CPUs with AMX, CUDA).
    fun
        FastICA contrast: ``"logcosh"``, ``"exp"`` or ``"cube"``.
    max_iter, tol
        FastICA's iteration limit and convergence tolerance.
    n_restarts
        FastICA starts; the converged one with the largest negentropy is kept.
    random_state
        Seed of the run order and of FastICA (``None``: drawn at fit).
    device
        ``"auto"``, ``"cpu"`` or ``"cuda"``.
    smoothness_fwhm_mm
        The data's smoothing (FWHM): for ``n_components="auto"``, neighbouring
        voxels within it are not independent, so the sample count is the voxel
        count over ``(fwhm / voxel size)^3``.

    Attributes
    ----------
    components_ : ndarray of shape (n_components_, n_voxels)
        z maps inside ``mask_``, sorted by explained variance.
    components_img_ : nibabel.Nifti1Image
        The same maps as a 4D image on the inputs' grid.
    mask_ : ndarray of bool, shape (X, Y, Z)
        The voxels decomposed.
    mixing_ : ndarray of shape (n_rows, n_components_)
        Time courses of the MIGP rows.
    explained_variance_ : ndarray of shape (n_components_,)
        Fraction of the MIGP rows' variance each component explains.
    n_components_ : int
        The order used (the estimate when ``n_components="auto"``).
    n_iter_ : int
        FastICA iterations of the kept restart (summed over the random starts it
        replaced after a stall).
    converged_ : bool
        Whether the kept start converged.
    migp_precision_ : str
        The precision MIGP used (``"auto"`` resolved).
    affine_ : ndarray of shape (4, 4)
        Voxel-to-world affine of ``components_img_``.

    Examples
    --------
    >>> ica = GroupICA(n_components=20, random_state=0).fit(imgs)  # doctest: +SKIP
    >>> ica.components_img_.shape  # doctest: +SKIP
    (45, 54, 45, 20)
    """

    def __init__(
        self,
        n_components: int | str = _DEFAULTS.order,
        migp_dim: int = _DEFAULTS.migp_dim,
        subject_dim: int | None = _DEFAULTS.subject_dim,
        migp_precision: str = _DEFAULTS.migp_precision,
        fun: str = _DEFAULTS.nonlinearity,
        max_iter: int = _DEFAULTS.max_iter,
        tol: float = _DEFAULTS.tol,
        n_restarts: int = _DEFAULTS.n_restarts,
        random_state: int | None = 0,
        device: str = "auto",
        smoothness_fwhm_mm: float = default_section(PreprocessConfig).fwhm_mm,
    ) -> None:
        self.n_components = n_components
        self.migp_dim = migp_dim
        self.subject_dim = subject_dim
        self.migp_precision = migp_precision
        self.fun = fun
        self.max_iter = max_iter
        self.tol = tol
        self.n_restarts = n_restarts
        self.random_state = random_state
        self.device = device
        self.smoothness_fwhm_mm = smoothness_fwhm_mm

    @classmethod
    def from_config(
        cls,
        config: IcaConfig,
        random_state: int | None = 0,
        device: str = "auto",
        smoothness_fwhm_mm: float = default_section(PreprocessConfig).fwhm_mm,
    ) -> GroupICA:
        """The estimator an ``ica`` configuration section describes.

        Parameters
        ----------
        config
            The section (``load_config().ica``).
        random_state
            Seed of the run order and of FastICA (the run's ``seed``).
        device
            ``"auto"``, ``"cpu"`` or ``"cuda"``.
        smoothness_fwhm_mm
            The FWHM the runs were smoothed with (for ``order: auto``).

        Returns
        -------
        GroupICA
            An unfitted estimator.
        """
        return cls(
            n_components=config.order, migp_dim=config.migp_dim, subject_dim=config.subject_dim,
            migp_precision=config.migp_precision, fun=config.nonlinearity, max_iter=config.max_iter,
            tol=config.tol, n_restarts=config.n_restarts, random_state=random_state, device=device,
            smoothness_fwhm_mm=smoothness_fwhm_mm,
        )  # fmt: skip

    # ------------------------------------------------------------------ fitting

    def fit(self, imgs: Run | Sequence[Run], y: Any = None, mask: Any = None) -> GroupICA:
        """Decompose the runs.

        Parameters
        ----------
        imgs
            A run or a list of runs: 4D NIfTI images, paths to them, or 4D arrays
            on one grid (read one at a time).
        y
            Ignored (scikit-learn's signature).
        mask
            Voxels to decompose: a 3D boolean array, image or path; default the
            voxels with signal in every run.

        Returns
        -------
        GroupICA
            ``self``, fitted.
        """
        self._validate_params()  # before any run is read
        runs = _as_list(imgs)
        if not runs:
            raise ValueError("GroupICA.fit needs at least one run")
        grid, affine = _grid(runs[0])
        mask_array = _common_mask(runs, grid) if mask is None else _as_mask(mask, grid)

        def rows(i: int) -> NDArray[np.float32]:
            return run_rows(_masked_run(runs[i], mask_array), self.subject_dim, copy=False)

        return self.fit_rows(rows, len(runs), mask_array, affine)

    def fit_rows(
        self,
        rows: Callable[[int], NDArray[np.floating]],
        n_runs: int,
        mask: NDArray[np.bool_],
        affine: NDArray[np.float64] = MNI4_AFFINE,
        stream: Callable[[Iterable[int]], Iterator[NDArray[np.floating]]] | None = None,
    ) -> GroupICA:
        """Fit from ``rows(i)``, run ``i``'s MIGP rows (:func:`run_rows`), for ``i`` in a seeded order.

        Parameters
        ----------
        rows : callable
            ``rows(i)`` gives run ``i``'s MIGP rows, ``(T_i, V)`` or its subject PCA.
        n_runs : int
            Number of runs; indices ``0 .. n_runs - 1`` are permuted by the seed.
        mask : ndarray of bool
            The 3D mask the rows' ``V`` voxels come from.
        affine : ndarray of shape (4, 4), default=MNI4_AFFINE
            Voxel-to-world affine of the mask's grid.
        stream : callable or None, default=None
            Turns the seeded order of run indices into the rows (the stage reads
            ahead in threads); by default ``map(rows, order)``.

        Returns
        -------
        GroupICA
            ``self``, fitted.

        Raises
        ------
        ValueError
            When a parameter is invalid.
        InsufficientDataError
            When MIGP keeps fewer than ``n_components_ + 2`` rows.
        """
        self._validate_params()
        seed = self._seed()
        dev = pick_device(self.device)
        n_vox = int(mask.sum())
        order_of_runs = [int(i) for i in np.random.default_rng(seed).permutation(n_runs)]
        self.run_order_ = order_of_runs
        self.migp_precision_ = migp_precision(self.migp_precision, dev)
        runs = (stream or (lambda idx: map(rows, idx)))(order_of_runs)
        pca = migp(runs, self.migp_dim, dev, self.migp_precision_)
        n_rows = len(pca.eigenvalues)
        self.affine_ = np.asarray(affine, dtype=np.float64)
        order = self._order(pca.eigenvalues, n_vox, n_rows)
        ica = self._best_fastica(pca.whitened(order), seed, dev)
        sources = ica.sources.astype(np.float64)
        sources *= np.where(stats.skew(sources, axis=1) < 0, -1.0, 1.0)[:, None]
        # Back to data units: MIGP rows ~ mixing @ maps; residual noise per voxel gives z maps.
        mixing, maps, noise = regress_maps(pca.rows, sources, order, dev)
        zmaps = maps / np.maximum(noise, 1e-12)
        # ||a_k s_k^T||^2 = ||a_k||^2 ||s_k||^2: no (rows x voxels) product per component.
        explained = (mixing**2).sum(0) * (maps**2).sum(1) / float(pca.eigenvalues.sum())
        ordering = np.argsort(explained)[::-1]
        self.components_ = zmaps[ordering].astype(np.float32)
        self.mixing_ = mixing[:, ordering].astype(np.float32)
        self.explained_variance_ = explained[ordering]
        self.mask_ = np.asarray(mask, dtype=bool)
        self.n_components_ = order
        self.n_iter_ = ica.n_iter
        self.converged_ = ica.converged
        return self

    @property
    def components_img_(self) -> nib.Nifti1Image:
        """The fitted z maps as a 4D image (zero outside ``mask_``)."""
        check_is_fitted(self, "components_")
        vol = np.zeros((*self.mask_.shape, self.n_components_), dtype=np.float32)
        vol[self.mask_] = self.components_.T
        return nib.Nifti1Image(vol, self.affine_)

    # ------------------------------------------------------------------ transform

    def transform(self, imgs: Run | Sequence[Run], des_norm: bool = True) -> list[DualRegression]:
        """Dual regression of each run onto the fitted maps (subject time courses, maps, z maps).

        Parameters
        ----------
        imgs
            Runs as for :meth:`fit`, on the fitted grid.
        des_norm
            Scale stage-1 time courses to unit variance before stage 2 (FSL's ``--des_norm``).

        Returns
        -------
        list of DualRegression
            One per run, in order.
        """
        check_is_fitted(self, "components_")
        dev = pick_device(self.device)
        out = []
        for run in _as_list(imgs):
            data = _masked_run(run, self.mask_)
            out.append(dual_regression(data, self.components_, des_norm, dev))
        return out

    # ------------------------------------------------------------------ helpers

    def _validate_params(self) -> None:
        k = self.n_components
        if not (k == "auto" or (_is_int(k) and int(k) >= 1)):
            raise ValueError(f"n_components must be a positive integer or 'auto', got {k!r}")
        if not (_is_int(self.migp_dim) and self.migp_dim >= 1):
            raise ValueError(f"migp_dim must be a positive integer, got {self.migp_dim!r}")
        if _is_int(k) and self.migp_dim < int(k):
            raise ValueError(f"migp_dim ({self.migp_dim}) must be at least n_components ({k})")
        if self.subject_dim is not None and not (_is_int(self.subject_dim) and self.subject_dim >= 1):
            raise ValueError(f"subject_dim must be a positive integer or None, got {self.subject_dim!r}")
        if self.migp_precision not in MIGP_PRECISIONS:
            raise ValueError(
                f"migp_precision must be one of {', '.join(MIGP_PRECISIONS)}, got {self.migp_precision!r}"
            )
        if self.fun not in _FUNS:
            raise ValueError(f"fun must be one of {', '.join(_FUNS)}, got {self.fun!r}")
        if not (_is_int(self.max_iter) and self.max_iter >= 1):
            raise ValueError(f"max_iter must be a positive integer, got {self.max_iter!r}")
        if not (isinstance(self.tol, numbers.Real) and 0 < float(self.tol) < 1):
            raise ValueError(f"tol must be a number in (0, 1), got {self.tol!r}")
        if not (_is_int(self.n_restarts) and self.n_restarts >= 1):
            raise ValueError(f"n_restarts must be a positive integer, got {self.n_restarts!r}")
        if self.random_state is not None and not _is_int(self.random_state):
            raise ValueError(f"random_state must be an integer or None, got {self.random_state!r}")
        check_device(self.device)
        fwhm = self.smoothness_fwhm_mm
        if isinstance(fwhm, bool) or not (isinstance(fwhm, int | float) and np.isfinite(fwhm) and fwhm >= 0):
            raise ValueError(f"smoothness_fwhm_mm must be a number >= 0, got {fwhm!r}")

    def _seed(self) -> int:
        if self.random_state is None:
            return int(np.random.default_rng().integers(2**31 - 1))
        return int(self.random_state)

    def _order(self, eigenvalues: NDArray[np.float64], n_vox: int, n_rows: int) -> int:
        if self.n_components == "auto":
            voxel = float(np.cbrt(abs(np.linalg.det(self.affine_[:3, :3]))))
            # Smoothing by fwhm makes about (fwhm / voxel)^3 neighbouring voxels one sample.
            smoothness = max(1.0, (self.smoothness_fwhm_mm / voxel) ** 3)
            order = bic_order(eigenvalues / n_vox, n_vox / smoothness, max_order=n_rows - 2)
            log.info("estimated model order: %d", order)
        else:
            order = int(self.n_components)
        if self.subject_dim is not None and self.subject_dim < order:
            log.warning(
                "subject_dim %d is below the model order %d: each run enters with fewer dimensions than "
                "the group keeps (two-stage PCA wants more at the subject level)",
                self.subject_dim, order,
            )  # fmt: skip
        if order > n_rows - 2:
            raise InsufficientDataError(order, n_rows)
        return order

    def _best_fastica(self, whitened: NDArray[np.float64], seed: int, device: Any) -> FastICAResult:
        """FastICA from ``n_restarts`` seeds; the converged one with the largest negentropy proxy.

        Each call of :func:`fastica` already replaces a start that stalls, so a
        start that did not converge is rare; it loses to any that did.
        """
        best: tuple[tuple[bool, float], FastICAResult] | None = None
        for r in range(self.n_restarts):
            res = fastica(whitened, seed + r, self.max_iter, self.tol, self.fun, device)
            # Negentropy proxy: sum over components of |E G(y) - E G(nu)|, G = log cosh.
            score = float(np.abs(np.log(np.cosh(res.sources)).mean(1) - 0.3746).sum())
            if best is None or (res.converged, score) > best[0]:
                best = ((res.converged, score), res)
        assert best is not None
        return best[1]


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _as_list(imgs: Run | Sequence[Run]) -> list[Run]:
    if isinstance(imgs, nib.spatialimages.SpatialImage | str | os.PathLike | np.ndarray):
        return [imgs]
    return list(imgs)


def _grid(run: Run) -> tuple[tuple[int, ...], NDArray[np.float64]]:
    """A run's grid and affine from its header (a path's data is not read): arrays are on MNI 4 mm."""
    if isinstance(run, str | os.PathLike):
        from rsnflow.io import open_nifti

        img = open_nifti(run)
        return tuple(img.shape[:3]), img.affine
    loaded = _load_run(run)
    affine = loaded.affine if isinstance(loaded, nib.spatialimages.SpatialImage) else MNI4_AFFINE
    return tuple(loaded.shape[:3]), affine


def _load_run(run: Run) -> nib.Nifti1Image | NDArray[np.floating]:
    """A run as an image (paths validated by :func:`rsnflow.io.load_nifti`) or a 4D array."""
    if isinstance(run, str | os.PathLike):
        from rsnflow.io import load_nifti

        return load_nifti(run, ndim=4)
    if isinstance(run, np.ndarray):
        if run.ndim != 4:
            raise ValueError(f"a run given as an array must be 4D (X, Y, Z, T), got shape {run.shape}")
        return run
    if isinstance(run, nib.spatialimages.SpatialImage):
        if len(run.shape) != 4:
            raise ValueError(f"a run must be a 4D image, got shape {run.shape}")
        return run
    raise TypeError(f"a run must be a NIfTI image, a path or a 4D array, got {type(run).__name__}")


def _masked_run(run: Run, mask: NDArray[np.bool_]) -> NDArray[np.float32]:
    """``(T, V)`` float32 rows of a run inside ``mask``; a file is read and masked a block at a time."""
    if isinstance(run, str | os.PathLike):
        from rsnflow.io import load_masked_series

        return load_masked_series(run, mask)
    return _masked(_load_run(run), mask)


def _masked(run: nib.Nifti1Image | NDArray[np.floating], mask: NDArray[np.bool_]) -> NDArray[np.float32]:
    """``(T, V)`` float32 rows of the run inside ``mask``."""
    data = run if isinstance(run, np.ndarray) else np.asanyarray(run.dataobj)
    if data.shape[:3] != mask.shape:
        raise ValueError(f"run grid {data.shape[:3]} differs from the mask's {mask.shape}")
    return np.ascontiguousarray(np.asarray(data[mask], dtype=np.float32).T)


def _common_mask(runs: list[Run], grid: tuple[int, ...]) -> NDArray[np.bool_]:
    """Voxels with signal (non-zero variance) in every run."""
    mask = np.ones(grid, dtype=bool)
    for run in runs:
        loaded = _load_run(run)
        data = loaded if isinstance(loaded, np.ndarray) else np.asanyarray(loaded.dataobj)
        if data.shape[:3] != grid:
            raise ValueError(f"runs differ in grid: {data.shape[:3]} and {grid}")
        mask &= np.asarray(data, dtype=np.float32).std(-1) > 0
    if not mask.any():
        raise ValueError("no voxel has signal in every run: give a mask")
    return mask


def _as_mask(mask: Any, grid: tuple[int, ...]) -> NDArray[np.bool_]:
    if isinstance(mask, str | os.PathLike):
        from rsnflow.io import load_nifti

        mask = load_nifti(mask, ndim=3)
    array = np.asanyarray(mask.dataobj) if isinstance(mask, nib.spatialimages.SpatialImage) else mask
    array = np.asarray(array) > 0
    if array.shape != grid:
        raise ValueError(f"mask shape {array.shape} differs from the runs' grid {grid}")
    if not array.any():
        raise ValueError("mask is empty")
    return array

"""Subject and group PCA (MIGP), model-order estimation, and spatial FastICA in torch.

MIGP (Smith et al. 2014, "Group-PCA for very large fMRI datasets") keeps a
running ``d x V`` matrix: each subject's (time x voxel) data is appended and
the stack is cut back to its ``d`` strongest eigen-directions, so memory does
not depend on the number of subjects. Spatial FastICA (Hyvarinen 1999,
symmetric, logcosh) then unmixes the ``K`` strongest spatial eigenmaps, as
MELODIC does for temporal-concatenation group ICA. Each subject may first be
reduced to its own whitened eigenmaps (:func:`subject_pca`), the two-stage
group PCA of GIFT and CanICA.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import NDArray

from rsnflow.log import get_logger

__all__ = [
    "FastICAResult",
    "GroupPCA",
    "bic_order",
    "fastica",
    "migp",
    "migp_precision",
    "normalise_subject",
    "regress_maps",
    "subject_pca",
]

log = get_logger(__name__)


def normalise_subject(
    data: NDArray[np.floating], centre_volumes: bool = False, copy: bool = True
) -> NDArray[np.float32]:
    """Demean each voxel over time and divide by its standard deviation (MELODIC ``--vn``).

    No temporary of the run's size is made (on a cohort, fresh memory costs
    more than the arithmetic); with ``copy=False`` a float32 C-contiguous
    ``data`` (a reader's own buffer) is overwritten instead of copied.

    Parameters
    ----------
    data : ndarray
        ``(T, V)`` time series of one subject, one column per voxel.
    centre_volumes : bool, default=False
        Then also centre each volume over voxels (spatial ICA's samples are voxels).
    copy : bool, default=True
        ``False``: work in ``data`` itself when it is float32 and C-contiguous.

    Returns
    -------
    ndarray
        ``(T, V)`` float32 array, each column of zero mean and unit standard
        deviation; voxels with no variance (std at most 1e-6) become 0.
    """
    x = np.asarray(data)
    if copy or not (x.dtype == np.float32 and x.flags.c_contiguous and x.flags.writeable):
        x = np.array(data, dtype=np.float32, order="C")
    t = x.shape[0]
    x -= np.ones(t, dtype=np.float32) @ x / np.float32(t)  # column means by one product
    std = np.sqrt(np.einsum("ij,ij->j", x, x) / np.float32(t))  # no squared copy
    x *= np.divide(1.0, std, out=np.zeros_like(std), where=std > 1e-6)
    if centre_volumes:
        x -= (x @ np.full(x.shape[1], 1.0 / x.shape[1], dtype=np.float32))[:, None]
    return x


@dataclass(frozen=True)
class GroupPCA:
    """The strongest spatial eigenmaps of a (time x voxel) stack, as MIGP leaves them.

    Attributes
    ----------
    rows
        ``(d, V)``: ``U^T X`` for the ``d`` leading eigenvectors ``U`` of the
        stack's ``X X^T``, strongest first; the rows are orthogonal.
    eigenvalues
        ``(d,)``: squared norms of the rows (eigenvalues of ``X X^T``), descending.
    """

    rows: NDArray[np.float32]
    eigenvalues: NDArray[np.float64]

    def whitened(self, k: int) -> NDArray[np.float64]:
        """The ``k`` strongest spatial eigenmaps ``(k, V)``, each of unit variance over voxels.

        Parameters
        ----------
        k : int
            Number of eigenmaps, strongest first (at most ``d``).

        Returns
        -------
        ndarray
            ``(k, V)`` float64 rows, each scaled to a squared norm of ``V``.
        """
        scale = np.sqrt(self.rows.shape[1] / np.maximum(self.eigenvalues[:k], 1e-30))
        return self.rows[:k].astype(np.float64) * scale[:, None]


def subject_pca(data: NDArray[np.floating], dim: int) -> NDArray[np.float32]:
    """One subject's ``dim`` strongest spatial eigenmaps, whitened: each of unit variance over voxels.

    Two-stage group PCA (GIFT's subject-level PCA, CanICA's per-subject
    reduction, MELODIC's ``--sep_whiten``): each subject's signal subspace
    enters the group PCA with equal weight per direction, so a network that
    every subject shares but that is weak against the thermal noise adds up
    across subjects instead of sinking under the strong networks' variance.

    Parameters
    ----------
    data
        ``(T, V)`` rows, variance-normalised (:func:`normalise_subject`).
    dim
        Eigenmaps kept; capped at the rank of ``data`` (``T - 1`` after
        demeaning each voxel), since a null direction cannot be whitened.

    Returns
    -------
    ``(min(dim, rank), V)`` float32 rows, orthogonal, each of squared norm ``V``
    (none for data without variance).
    """
    x = np.asarray(data, dtype=np.float32)
    vals, vecs = np.linalg.eigh((x @ x.T).astype(np.float64))  # (T, T): V T^2 flops, no (T, V) SVD
    vals, vecs = vals[::-1], vecs[:, ::-1]
    rank = int((vals > vals[0] * 1e-6).sum()) if vals[0] > 0 else 0
    k = min(dim, rank)
    scale = np.sqrt(x.shape[1] / vals[:k])
    return (vecs[:, :k] * scale).T.astype(np.float32) @ x


def migp(
    subjects: Iterable[NDArray[np.floating]],
    dim: int,
    device: torch.device | str = "cpu",
    precision: str = "float32",
) -> GroupPCA:
    """Incremental group PCA: the ``<= dim`` strongest eigenmaps of the subjects' concatenation.

    Parameters
    ----------
    subjects : iterable of ndarray
        ``(T_s, V)`` arrays, streamed one at a time (in the order given:
        shuffle beforehand, with a seed, as MIGP recommends). A single array
        gives its exact PCA when ``dim`` is at least its number of rows.
    dim : int
        Rows kept between reductions (MELODIC's internal dimension: well above
        the final order, so the order's eigenmaps are those of the whole stack).
    device : torch.device or str, default="cpu"
        Where the reductions are computed.
    precision : {"float32", "bfloat16"}, default="float32"
        Operands of the intermediate reductions' products (the Gram matrix and
        the re-mixed rows). ``"bfloat16"`` rounds them to 8 bits of mantissa
        (a relative error of about 3e-3 per product, far under the data's own
        noise) for the bf16 matrix units of recent CPUs (AMX) and GPUs: about
        7 times the float32 speed on this CPU. The last reduction, whose rows
        and eigenvalues are MIGP's result, is always float32.

    Returns
    -------
    GroupPCA
        The ``min(dim, total rows)`` strongest eigenmaps and their eigenvalues.

    Raises
    ------
    ValueError
        When ``subjects`` is empty.

    Notes
    -----
    Subjects are buffered until the kept and buffered rows exceed ``2 dim``;
    then the stack is cut back to its ``dim`` strongest eigen-directions
    through its small Gram matrix. The kept rows are orthogonal with known
    norms, so only the buffered rows' blocks of that matrix are computed.
    Intermediate reductions eigendecompose it in float32; the last in
    float64, since its eigenvalues feed the order estimate.
    """
    if precision not in _PRODUCT_DTYPES:
        raise ValueError(f"unknown MIGP precision {precision!r} ({', '.join(_PRODUCT_DTYPES)})")
    stack: _Stack | None = None
    for x in subjects:
        rows = np.ascontiguousarray(x, dtype=np.float32)
        if stack is None:
            stack = _Stack(2 * dim + rows.shape[0], rows.shape[1], torch.device(device), precision)
        # Reduce before taking the next subject, so the last reduction (float64) always has rows to add.
        if stack.n_rows > 2 * dim:
            stack.reduce(dim, final=False)
        stack.append(rows)
    if stack is None:
        raise ValueError("MIGP needs at least one subject")
    stack.reduce(dim, final=True)
    return GroupPCA(stack.kept.cpu().numpy(), stack.eigenvalues.cpu().numpy())


#: Voxels per block of MIGP's Gram matrix: float32 products of 4,096 voxels,
#: summed in float64, keep the small eigenvalues the order estimate reads.
_GRAM_BLOCK = 4096


def migp_precision(precision: str, device: torch.device | str = "cpu") -> str:
    """``precision``, with ``"auto"`` resolved for ``device``: bfloat16 where it is multiplied in hardware.

    Parameters
    ----------
    precision : {"auto", "float32", "bfloat16"}
        The requested precision of MIGP's intermediate products.
    device : torch.device or str, default="cpu"
        Where MIGP computes.

    Returns
    -------
    str
        ``"float32"`` or ``"bfloat16"``: ``"auto"`` gives bfloat16 on a CUDA device that supports it and
        on a CPU with AMX tiles (Intel Sapphire Rapids and later), whose bf16 products run several times
        faster than float32; elsewhere bf16 is emulated or narrow, and float32 is faster.
    """
    if precision != "auto":
        return precision
    dev = torch.device(device)
    if dev.type == "cuda":
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float32"
    return "bfloat16" if _has_amx() else "float32"


def _has_amx() -> bool:
    try:  # torch asks the kernel for the AMX tile state; False where there is none (or on other OSes)
        return bool(torch._C._cpu._init_amx())
    except (AttributeError, RuntimeError):
        return False


#: The operand dtype of MIGP's intermediate products for each ``precision``.
_PRODUCT_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
#: The values of ``ica.migp_precision``: one of the products' dtypes, or ``"auto"``.
MIGP_PRECISIONS = ("auto", *_PRODUCT_DTYPES)


class _Stack:
    """MIGP's kept rows followed by the rows that arrived since, in buffers allocated once.

    A reduction writes the new kept rows into a second buffer and the two swap,
    so no stack-sized tensor is allocated per subject or per reduction (fresh
    memory is paid in page faults, which on a VM cost more than the copies).
    """

    def __init__(self, capacity: int, n_voxels: int, device: torch.device, precision: str) -> None:
        self._dtype = _PRODUCT_DTYPES[precision]
        self._buffers = [torch.empty(capacity, n_voxels, device=device) for _ in range(2)]
        self._low: torch.Tensor | None = None  # the stack in the products' dtype, when not float32
        self.n_kept = 0
        self.n_rows = 0
        self.eigenvalues = torch.zeros(0, dtype=torch.float64, device=device)

    @property
    def kept(self) -> torch.Tensor:
        """The kept rows (a view of the current buffer)."""
        return self._buffers[0][: self.n_kept]

    def append(self, rows: NDArray[np.float32]) -> None:
        """Copy one subject's rows after the stack, growing the buffers when they are full."""
        buf = self._buffers[0]
        end = self.n_rows + rows.shape[0]
        if end > buf.shape[0]:
            grown = [torch.empty(end, buf.shape[1], device=buf.device) for _ in range(2)]
            grown[0][: self.n_rows] = buf[: self.n_rows]
            self._buffers, self._low = grown, None
        self._buffers[0][self.n_rows : end] = torch.from_numpy(rows)
        self.n_rows = end

    def reduce(self, dim: int, final: bool) -> None:
        """Cut the stack to its ``dim`` strongest eigen-directions (float64 eigenproblem when ``final``)."""
        dtype = torch.float32 if final else self._dtype
        stack = self._buffers[0][: self.n_rows]
        if dtype != torch.float32:
            if self._low is None:  # allocated once per buffer size (append drops it when it grows)
                self._low = torch.empty(self._buffers[0].shape, dtype=dtype, device=stack.device)
            self._low[: self.n_rows].copy_(stack)
            stack = self._low[: self.n_rows]
        gram = self._gram(stack, blockwise=final)
        vals, vecs = torch.linalg.eigh(gram.to(torch.float64 if final else torch.float32))
        d = min(dim, self.n_rows)
        top = vecs[:, -d:].flip(1).to(dtype)
        out = self._buffers[1][:d]
        if dtype == torch.float32:
            torch.matmul(top.T, stack, out=out)
        else:
            out.copy_(top.T @ stack)
        self._buffers.reverse()
        self.eigenvalues = vals.double()[-d:].flip(0).clamp_min(0)
        self.n_kept = self.n_rows = d

    def _gram(self, stack: torch.Tensor, blockwise: bool) -> torch.Tensor:
        """``stack stack^T`` in float64; the kept block is diagonal with known norms, the rest computed."""
        n, k = stack.shape[0], self.n_kept
        gram = torch.zeros(n, n, dtype=torch.float64, device=stack.device)
        gram[:k, :k] = torch.diag(self.eigenvalues)
        new = stack[k:]
        if blockwise:  # float32 products of _GRAM_BLOCK voxels summed in float64: the small eigenvalues
            for start in range(0, stack.shape[1], _GRAM_BLOCK):
                part = stack[:, start : start + _GRAM_BLOCK]
                gram[k:] += (part[k:] @ part.T).double()
            gram[k:, k:] = (gram[k:, k:] + gram[k:, k:].T) / 2
        else:
            gram[k:, k:] = (new @ new.T).double()
            gram[k:, :k] = (new @ stack[:k].T).double()
        gram[:k, k:] = gram[k:, :k].T
        return gram


def regress_maps(
    data: NDArray[np.floating], sources: NDArray[np.floating], order: int, device: torch.device | str = "cpu"
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Mixing matrix, maps in data units and residual noise std of ``data ~ mixing @ maps``.

    ``mixing = data pinv(sources)``, then ``maps`` by least squares on that
    mixing (MELODIC's back-projection), through the small ``K x K`` normal
    equations. The residual sum of squares per voxel is ``|x|^2 - |M m|^2``
    (the least-squares residual is orthogonal to the fit), so no ``T x V``
    residual is formed.

    Parameters
    ----------
    data : ndarray
        ``(T, V)`` time series.
    sources : ndarray
        ``(K, V)`` spatial sources (e.g. FastICA's), in the same voxels.
    order : int
        Model order: the noise std has ``T - order`` degrees of freedom (at least 1).
    device : torch.device or str, default="cpu"
        Where the solves are computed.

    Returns
    -------
    mixing : ndarray
        ``(T, K)`` float64 time courses, ``data pinv(sources)``.
    maps : ndarray
        ``(K, V)`` float64 maps in data units.
    noise : ndarray
        ``(V,)`` float64 residual standard deviation per voxel.
    """
    dev = torch.device(device)
    x = torch.from_numpy(np.ascontiguousarray(data, dtype=np.float64)).to(dev)
    s = torch.from_numpy(np.ascontiguousarray(sources, dtype=np.float64)).to(dev)
    mixing = torch.linalg.solve(s @ s.T, s @ x.T).T
    gram = mixing.T @ mixing
    maps = torch.linalg.solve(gram, mixing.T @ x)
    rss = ((x * x).sum(0) - (maps * (gram @ maps)).sum(0)).clamp_min(0)
    noise = (rss / max(x.shape[0] - order, 1)).sqrt()
    return mixing.cpu().numpy(), maps.cpu().numpy(), noise.cpu().numpy()


def bic_order(eigenvalues: NDArray[np.floating], n_samples: float, max_order: int | None = None) -> int:
    """Model order by the BIC approximation of Minka (2000) to the PCA evidence.

    Parameters
    ----------
    eigenvalues : ndarray
        Eigenvalues of the data covariance, any order; those below 1e-6 of
        the largest are dropped: the null directions of demeaned, filtered
        float32 data, whose eigenvalues come out of rounding at 1e-10 to 1e-8
        of the largest rather than 0 (kept, they make every order up to the
        last look likely: a 150-volume run's order came out 148).
    n_samples : float
        Number of independent observations (voxels over the smoothness
        factor, for spatially smooth data).
    max_order : int or None, default=None
        Largest order tried; the orders tried never exceed the number of
        kept eigenvalues minus 2 (None or 0: that bound only).

    Returns
    -------
    int
        The order with the highest BIC (1 when no order can be tried).
    """
    lam = np.sort(np.asarray(eigenvalues, dtype=np.float64))[::-1]
    lam = lam[lam > lam[0] * 1e-6]
    d = len(lam)
    top = min(d - 2, max_order or d - 2)
    best, best_k = -np.inf, 1
    for k in range(1, top + 1):
        rest = lam[k:].mean()
        m = d * k - k * (k + 1) / 2
        bic = (
            -n_samples / 2 * np.log(lam[:k]).sum()
            - n_samples * (d - k) / 2 * np.log(rest)
            - (m + k) / 2 * np.log(n_samples)
        )
        if bic > best:
            best, best_k = bic, k
    return best_k


@dataclass(frozen=True)
class FastICAResult:
    """Spatial FastICA on whitened data: ``sources = unmixing @ whitened``.

    Attributes
    ----------
    unmixing : ndarray
        ``(K, K)`` float64 orthogonal unmixing matrix.
    sources : ndarray
        ``(K, V)`` float32 independent spatial sources.
    n_iter : int
        Iterations run, summed over all random starts.
    converged : bool
        Whether the last start converged within ``tol``.
    """

    unmixing: NDArray[np.float64]
    sources: NDArray[np.float32]
    n_iter: int
    converged: bool


def fastica(
    whitened: NDArray[np.floating],
    seed: int,
    max_iter: int = 500,
    tol: float = 1e-4,
    nonlinearity: str = "logcosh",
    device: torch.device | str = "cpu",
) -> FastICAResult:
    """Symmetric FastICA of ``(K, V)`` whitened rows (samples are voxels).

    The fixed-point update is ``W <- E[g(WZ) Z^T] - diag(E[g'(WZ)]) W`` followed
    by symmetric decorrelation ``W <- (W W^T)^(-1/2) W``; it stops when every
    row has turned by less than ``tol`` (``1 - |diag(W_new W^T)| < tol``).

    At a high model order some random starts never converge: a few
    near-Gaussian rows keep turning by tens of degrees (at order 100 on the
    tests' 8 short runs, 2 starts in 12; which ones depends on the CPU's
    rounding). Such a start lies in a poor basin: forced to converge by
    damping, it ends at a lower negentropy (13.7 against 14.26) and recovers 45
    true networks instead of 55. So a start whose largest turn has not shrunk
    by 10% in :data:`_STALL` iterations is abandoned for a new random start
    (drawn from the same seeded generator), up to :data:`_MAX_STARTS` starts.
    Only the last start, if it stalls too, is damped (Hyvarinen's stabilised
    update, the ``stabilization`` option of the reference FastICA package:
    ``W <- W + mu D (E[g(Y) Y^T] - diag(beta)) W``, ``beta_i = E[y_i g(y_i)]``,
    ``D = diag(1 / (beta_i - E[g'(y_i)]))``, ``mu`` halved on each further
    stall), so it converges, with a warning. Everything runs in float64: the
    path does not hinge on the rounding of one machine's float32 kernels, and
    1 or 2 threads give the same maps.

    Parameters
    ----------
    whitened : ndarray
        ``(K, V)`` whitened rows, e.g. :meth:`GroupPCA.whitened`.
    seed : int
        Seed of the generator that draws every random start.
    max_iter : int, default=500
        Iterations allowed to each start.
    tol : float, default=1e-4
        Convergence threshold on the largest turn of a row.
    nonlinearity : {"logcosh", "exp", "cube"}, default="logcosh"
        Contrast function ``G``.
    device : torch.device or str, default="cpu"
        Where the iterations run.

    Returns
    -------
    FastICAResult
        Unmixing matrix, sources, iteration count and convergence flag.

    Raises
    ------
    ValueError
        For an unknown ``nonlinearity``.
    """
    dev = torch.device(device)
    z = torch.from_numpy(np.ascontiguousarray(whitened, dtype=np.float64)).to(dev)
    k = z.shape[0]
    gen = torch.Generator().manual_seed(int(seed))
    total = 0
    for start in range(_MAX_STARTS):
        w0 = _decorrelate(torch.randn(k, k, generator=gen, dtype=torch.float64).to(dev))
        last = start == _MAX_STARTS - 1
        w, n_iter, converged = _fixed_point(z, w0, max_iter, tol, nonlinearity, damp_on_stall=last)
        total += n_iter
        if converged:
            break
        log.info("FastICA start %d stalled after %d iterations: new random start", start + 1, n_iter)
    if not converged:
        log.warning("FastICA did not converge in %d iterations (tol %g)", max_iter, tol)
    sources = (w @ z).float().cpu().numpy()
    return FastICAResult(w.cpu().numpy(), sources, total, converged)


#: Iterations without a 10% smaller largest turn after which a FastICA start counts as stalled.
_STALL = 50
#: Random starts FastICA tries before it damps the last one into convergence.
_MAX_STARTS = 5
#: The smallest step the damped update halves down to.
_MIN_STEP = 1 / 64


def _fixed_point(
    z: torch.Tensor, w: torch.Tensor, max_iter: int, tol: float, nonlinearity: str, damp_on_stall: bool
) -> tuple[torch.Tensor, int, bool]:
    """FastICA from ``w``: (W, iterations, converged); gives up on a stall unless ``damp_on_stall``."""
    v = z.shape[1]
    mu, best, since = 1.0, np.inf, 0
    for n_iter in range(1, max_iter + 1):
        y = w @ z
        g, g_prime = _contrast(y, nonlinearity)
        if mu == 1.0:  # the plain fixed point
            w_new = _decorrelate((g @ z.T) / v - g_prime[:, None] * w)
        else:  # stabilised: a damped Newton step per row
            gy = (g @ y.T) / v  # E[g(y) y^T]
            beta = torch.diagonal(gy)
            w_new = _decorrelate(w + mu * ((gy - torch.diag(beta)) / (beta - g_prime)[:, None]) @ w)
        # With a step mu, a row turns mu times as far: converged when the full step would be under tol.
        change = float((1 - torch.abs(torch.sum(w_new * w, 1))).max())
        w = w_new
        if change < tol * mu:
            return w, n_iter, True
        if change < 0.9 * best:
            best, since = change, 0
            continue
        since += 1
        if since >= (_STALL if mu == 1.0 else _STALL // 2):
            if not damp_on_stall:
                return w, n_iter, False
            if mu > _MIN_STEP:
                mu, best, since = mu / 2, change, 0
    return w, max_iter, False


def _contrast(y: torch.Tensor, nonlinearity: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``g(y)`` and the mean of ``g'(y)`` over samples for FastICA's contrast function."""
    if nonlinearity == "logcosh":
        g = torch.tanh(y)
        return g, (1 - g * g).mean(1)
    if nonlinearity == "exp":
        e = torch.exp(-y * y / 2)
        return y * e, ((1 - y * y) * e).mean(1)
    if nonlinearity == "cube":
        return y**3, (3 * y * y).mean(1)
    raise ValueError(f"unknown nonlinearity {nonlinearity!r} (logcosh, exp, cube)")


def _decorrelate(w: torch.Tensor) -> torch.Tensor:
    vals, vecs = torch.linalg.eigh(w @ w.T)
    return (vecs * vals.clamp_min(1e-12).rsqrt()) @ vecs.T @ w

"""Extreme eigenvalues of kernel Gram matrices (docs/math/5-gram-dynamics.md).

Every function takes either a dense symmetric positive semidefinite matrix ``K`` of shape
(N, N), or a network and its inputs, ``(net, x)`` with ``kernel="ntk"`` or ``"nngp"``: then
the Gram matrix of ``net`` on the rows of ``x`` is applied tile by tile and never stored
(memory O(N * block)), so N can exceed what a dense Gram would fit in.

The solver is a thick-restart block Lanczos method with full reorthogonalization in the C++
core; it stops when every wanted pair has ``||K v - lambda v|| <= tol * ||K||`` (or is at the
rounding floor ``8 sqrt(N) eps ||K||`` when ``tol`` asks for less).  The smallest eigenvalues
of a dense ``K`` come from the largest of ``K^-1`` through a Cholesky factor (with a tiny
shift when ``K`` is numerically singular, and a larger one when a graded spectrum would lose
the k-th eigenvalue in the rounding of ``K^-1``).  The matrix-free operator has no such
factor: its smallest eigenvalues come from Lanczos on ``K`` itself, which needs many passes
over the kernel when the bottom of the spectrum is clustered (typical of NTKs).

Scale invariance: the solvers work on ``2^-e K``, with the power of two chosen from
``max|K_ij|`` (dense) or from the diagonal of the Gram (matrix-free), and multiply the
eigenvalues back by ``2^e``.  This is exact, so ``lambda_max(2**j * K) == 2**j *
lambda_max(K)`` bit for bit, and any ``K`` whose entries and eigenvalues are finite numbers
of its dtype can be analysed (``1e-300 * K`` as well as ``1e300 * K``); an eigenvalue beyond
the dtype's range raises OverflowError instead of returning inf.  The zero matrix has the
eigenvalues 0.

Reproducibility: the results of :func:`eigsh`, :func:`lambda_min`, :func:`lambda_max` and
:func:`condition_number` are bitwise identical for identical input, options and ``seed``,
whatever ``n_threads``, dense or matrix-free (every threaded sum in the core has a fixed
order, and the start block comes from the seed).  They are not promised to be identical
across builds of the extension (its instruction-set variants, compilers) or platforms, where
the eigenvectors of a repeated eigenvalue may differ by any rotation within its eigenspace.
:func:`spectrum` is LAPACK's, as reproducible as the BLAS that numpy uses.

>>> import numpy as np, ntkcore
>>> x = np.random.default_rng(0).standard_normal((300, 8))
>>> net = ntkcore.FullyConnected(2, "relu", W_std=2**0.5, b_std=0.1)
>>> theta = net.ntk(x)
>>> values, vectors = ntkcore.eigsh(theta, k=3)
>>> bool(np.allclose(values, np.linalg.eigvalsh(theta)[-3:]))
True
"""

from __future__ import annotations

import math
import numbers
import warnings

import numpy as np

from ._native import core as _core
from ._progress import Progress as _Progress
from ._progress import check as check_progress
from ._validation import (
    as_points,
    check_n_threads,
    check_seed,
    choice,
    integer,
    optional_positive_int,
    real,
    resolve_dtype,
)
from .network import FullyConnected
from .serial import Serial

# Networks whose Gram matrices the solvers take as (net, x).
_NETWORKS = (FullyConnected, Serial)

__all__ = ["condition_number", "eigsh", "lambda_max", "lambda_min", "spectrum"]

_WHICH = ("largest", "smallest")
_KERNELS = ("ntk", "nngp")
# Relative asymmetry max|K - K^T| / max|K| accepted as rounding.
_SYMMETRY_TOL = {np.dtype(np.float32): 1e-4, np.dtype(np.float64): 1e-8}


def as_symmetric_matrix(K, name: str = "K") -> np.ndarray:
    """``K`` as a C-contiguous, finite, symmetric (N, N) float32/float64 array.

    Raises TypeError for a non-floating dtype and ValueError for a wrong shape, NaN/inf, or
    an asymmetry beyond rounding (max|K - K^T| > tol * max|K|, tol = 1e-8 in float64 and
    1e-4 in float32).
    """
    return _checked_symmetric(K, name)[0]


def _checked_symmetric(K, name: str):
    """(``as_symmetric_matrix(K)``, max|K_ij|), from one pass over K."""
    if isinstance(K, _NETWORKS):
        raise TypeError(f"{name} must be an array here, got a network")
    if isinstance(K, np.ndarray):
        arr = K
    else:
        try:
            arr = np.asarray(K)
        except (ValueError, TypeError) as exc:
            raise TypeError(f"{name} must be a square 2-D array of real numbers: {exc}") from exc
    if arr.dtype.kind != "f":
        raise TypeError(
            f"{name} must hold floating-point numbers (float32 or float64), got dtype {arr.dtype}; "
            f"convert explicitly, e.g. {name}.astype(numpy.float64)"
        )
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1]:
        raise ValueError(f"{name} must be a square matrix of shape (N, N), got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError(f"{name} must not be empty")
    dtype = np.dtype(np.float32) if arr.dtype == np.float32 else np.dtype(np.float64)
    arr = np.ascontiguousarray(arr, dtype=dtype)
    # One threaded pass in the core compares mirrored tiles (no N x N temporaries).
    scale, worst, row, col = _core.symmetry_report(arr)
    if row >= 0:
        raise ValueError(f"{name} must be finite; {name}[{row}, {col}] = {arr[row, col]}")
    if worst > _SYMMETRY_TOL[dtype] * scale:
        raise ValueError(
            f"{name} must be symmetric: max|{name} - {name}.T| = {worst:.3g} exceeds "
            f"{_SYMMETRY_TOL[dtype]:g} * max|{name}| = {_SYMMETRY_TOL[dtype] * scale:.3g}; "
            f"use ({name} + {name}.T) / 2 if the asymmetry is rounding"
        )
    return arr, scale


class _TileOperator:
    """The Gram of ``(net, x)`` as block products over its tiles, on this machine or on a
    Dask cluster, with progress reports: the operand of eigsh(..., client=, progress=)."""

    def __init__(self, net, x, kernel: str, n_threads, client, progress):
        from .dynamics import _network_inputs  # dynamics and regression import this module
        from .regression import _kernel_passes

        self.points = _network_inputs(net, x, "x")
        self.n = self.points.shape[0]
        threads = check_n_threads(n_threads)
        # The power-of-two scale of the solver, from the diagonal as for the plain call.
        self.magnitude = float(np.max(getattr(net.diagonal(self.points), kernel)))
        self.tiles = _kernel_passes(client, net, kernel, self.points, threads)
        self.progress = progress

    def solve(self, k: int, which: str, settings: dict, max_passes) -> tuple:
        report = _Progress(self.progress, "eigsh", max_passes or 1000)
        try:

            def apply(v: np.ndarray) -> np.ndarray:
                return self.tiles.train(np.ascontiguousarray(v), report.callback)

            settings = {key: value for key, value in settings.items() if key != "n_threads"}
            return _core.eigsh_operator(apply, self.n, self.magnitude, k, which, **settings)
        finally:
            self.tiles.close()
            report.finish()


def _tile_operator(K, x, kernel, n_threads, client, progress) -> _TileOperator:
    if not isinstance(K, _NETWORKS):
        raise TypeError("client and progress apply to a network's Gram: call eigsh(net, x, ..., client=, progress=)")
    if x is None:
        raise ValueError("x is required with a network: pass eigsh(net, x, ...)")
    check_progress(progress)
    return _TileOperator(K, x, choice(kernel, "kernel", _KERNELS), n_threads, client, progress)


def _operand(K, x, kernel, dtype=None, n_threads=None):
    """('dense', (matrix, max|K_ij|)) or ('kernel', (network spec, points, kernel)), validated.

    A fully-connected network is applied matrix-free, tile by tile; a serial network's Gram
    is formed first (N^2 entries).
    """
    if isinstance(K, _TileOperator):
        return "operator", (K,)
    if isinstance(K, _NETWORKS):
        if x is None:
            raise ValueError("x is required with a network: pass eigsh(net, x, ...)")
        kernel = choice(kernel, "kernel", _KERNELS)
        if isinstance(K, Serial):
            return "dense", _checked_symmetric(getattr(K.kernels(x, dtype=dtype, n_threads=n_threads), kernel), "K")
        dt = resolve_dtype(dtype, x)
        return "kernel", (K._core_network(), as_points(x, "x", dt), kernel)
    if x is not None:
        if isinstance(x, numbers.Number):
            raise TypeError(
                "the second positional argument is x, the inputs of a network; "
                "pass k and other options by keyword, e.g. eigsh(K, k=6)"
            )
        raise TypeError("x is only used with a network: eigsh(net, x, ...); K was given as a matrix")
    return "dense", _checked_symmetric(K, "K")


def _solve(
    K, x, k, which, tol, kernel, n_threads, block_size, max_passes, seed, dtype=None, max_basis=None, values_only=False
):
    if not isinstance(which, str) or which not in _WHICH:
        raise ValueError(f"which must be 'largest' or 'smallest', got {which!r}")
    kind, operand = _operand(K, x, kernel, dtype, n_threads)
    n = {"dense": lambda: operand[0].shape[0], "kernel": lambda: operand[1].shape[0], "operator": lambda: operand[0].n}[
        kind
    ]()
    k = integer(k, "k", minimum=1, maximum=n)
    settings = dict(
        tol=0.0 if tol is None else real(tol, "tol", minimum=0.0, maximum=1.0, strict=True),
        block_size=optional_positive_int(block_size, "block_size"),
        max_basis=optional_positive_int(max_basis, "max_basis"),
        max_passes=optional_positive_int(max_passes, "max_passes"),
        seed=check_seed(seed),
        n_threads=check_n_threads(n_threads),
    )
    try:
        if kind == "dense":
            matrix, magnitude = operand
            out = _core.eigsh_dense(matrix, k, which, values_only=values_only, magnitude=magnitude, **settings)
        elif kind == "kernel":
            spec, points, kernel = operand
            out = _core.eigsh_kernel(spec, points, kernel, k, which, **settings)
        else:
            out = operand[0].solve(k, which, settings, max_passes)
    except ValueError as exc:  # Cholesky failure (std::domain_error)
        if "not positive definite" in str(exc):
            raise ValueError(
                "K is not positive semidefinite (its Cholesky factorization fails even with a "
                f"diagonal shift): {exc}; the smallest eigenvalues need a PSD matrix"
            ) from exc
        raise
    except OverflowError as exc:  # an eigenvalue beyond the dtype's range
        single = kind != "operator" and (operand[0] if kind == "dense" else operand[1]).dtype == np.float32
        hint = "; compute in float64 (dtype=numpy.float64)" if single else ""
        raise OverflowError(f"{exc}{hint}") from exc
    values, vectors, residuals, norm, passes, converged, lost = out
    if lost:  # the Cholesky path's last shift still lost a wanted pair in rounding
        raise RuntimeError(
            f"eigsh cannot resolve the {k} smallest eigenpairs of K to the tolerance: its spectrum is too "
            "graded for the rounding of the (shifted) inverse even after shifting up (largest relative "
            f"residual {float(np.max(residuals)) / (norm if norm > 0 else 1.0):.3g}); ask for fewer pairs or a "
            "larger tol"
        )
    if not converged:
        warnings.warn(
            f"eigsh did not converge in {passes} passes: largest relative residual "
            f"{float(np.max(residuals)) / (norm if norm > 0 else 1.0):.3g} (tol "
            f"{settings['tol'] or 'default'}); raise max_passes or tol",
            RuntimeWarning,
            stacklevel=3,
        )
    dt = vectors.dtype
    return np.asarray(values, dtype=dt), vectors, residuals, norm


def _extreme_tol(tol, K, x, dtype):
    """Default tolerance of lambda_min / lambda_max: 1e-8 relative (float64), 1e-4 (float32).

    By Weyl's bound the eigenvalue is then accurate to tol relative to the operator's norm
    (that of K^-1 on the Cholesky path: relative to lambda_min itself), in practice to about
    tol**2 / (relative gap).
    """
    if tol is not None:
        return tol
    single = (isinstance(K, np.ndarray) and K.dtype == np.float32) or (
        isinstance(K, _NETWORKS) and resolve_dtype(dtype, x) == np.float32
    )
    return 1e-4 if single else 1e-8


def eigsh(
    K,
    x=None,
    *,
    k: int = 6,
    which: str = "largest",
    tol: float | None = None,
    return_eigenvectors: bool = True,
    kernel: str = "ntk",
    n_threads: int | None = None,
    block_size: int | None = None,
    max_basis: int | None = None,
    max_passes: int | None = None,
    seed: int = 0,
    dtype=None,
    client=None,
    progress=False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """The ``k`` largest or smallest eigenpairs of a symmetric PSD Gram matrix.

    Call as ``eigsh(K, k=...)`` with a dense matrix, or ``eigsh(net, x, k=..., kernel=...)``
    to work on the Gram matrix of ``net`` on ``x``: without storing it for a
    ``FullyConnected`` network, from the formed Gram (N^2 entries) for a ``serial`` one.

    Parameters
    ----------
    K : array_like of shape (N, N), FullyConnected or Serial
        Symmetric (to rounding) positive semidefinite float32/float64 matrix, or a network.
    x : array_like of shape (N, d) (or (N, H, W, C), (N, L, C) for a serial network), only with a network
        The points whose Gram matrix is analysed.
    k : int in [1, N]
        Number of eigenpairs.
    which : "largest" or "smallest"
        End of the spectrum.
    tol : float in (0, 1), optional
        Stop when every pair has ``||K v - lambda v|| <= tol * ||K||`` (default 1e-10 in
        float64, 1e-4 in float32); eigenvalues are then accurate to about
        ``tol**2 * ||K|| / gap`` and never worse than ``tol * ||K||``.
    return_eigenvectors : bool
        Also return the eigenvectors.
    kernel : "ntk" or "nngp"
        Which Gram matrix of the network (ignored for a dense ``K``).
    n_threads : int >= 1, optional
        Threads for the block products (default: all that OpenMP offers).
    block_size, max_basis, max_passes : int >= 1, optional
        Vectors per block (default ``max(4, 1.5 k)``, at most 64), basis vectors kept before
        a thick restart (default ``max(120, 10 block_size, 2 k + 2 block_size)``, at most N;
        the solver holds 2 N max_basis numbers), and the most operator applications (default
        1000; a RuntimeWarning reports non-convergence).
    seed : int
        Seed of the random start block.  Results are bitwise reproducible for the same
        input, options and seed, whatever ``n_threads`` (see the module documentation).
    dtype : float32 or float64, optional
        Precision of the matrix-free computation (default: that of ``x``).
    client : distributed.Client, optional
        With a network: run each pass over the kernel tiles on this Dask cluster (row blocks
        computed by the C++ core on the workers, ``x`` scattered once, only N x block_size
        numbers sent per pass); the Gram is never gathered, for ``serial`` networks either.
        Needs the ``dask`` extra.
    progress : bool or callable(done, total)
        With a network: report the tiles finished over all passes (``True``: a tqdm bar when
        tqdm is installed, a line on stderr otherwise; a callable is called on this thread
        with the tiles done and a total that assumes ``max_passes`` passes until the last
        call, which gives the true count).  Ctrl-C, or an exception the callable raises,
        ends the solve.

    With ``client`` or ``progress`` the block products come from
    :func:`ntkcore.regression.kernel_product` (on this machine or the cluster) and the solver
    works in float64 whatever ``dtype``; the results agree with the plain call to rounding
    (the products sum in another order), and are again bitwise reproducible for the same
    input, options and seed.

    Returns
    -------
    values : ndarray of shape (k,)
        Eigenvalues in ascending order.  Scale-invariant: ``eigsh(c * K)`` is ``c *
        eigsh(K)`` to rounding (exactly, vectors included, when ``c`` is a power of two) for
        any ``c > 0`` that keeps ``c * K`` finite; OverflowError when an eigenvalue exceeds the
        dtype's range.
    vectors : ndarray of shape (N, k)
        Orthonormal eigenvectors, ``vectors[:, i]`` belonging to ``values[i]`` (only when
        ``return_eigenvectors``).

    With ``which="smallest"`` and ``k >= 2`` on a graded spectrum (eigenvalues spread over
    many orders of magnitude below ``||K||``), the eigenvalues under about ``eps ||K||`` are
    only determined to that absolute accuracy (as by any backward-stable method, LAPACK's
    included): the pairs returned then satisfy the residual bound above, but which of those
    tiny eigenvalues they stand for is not defined.
    """
    if not isinstance(return_eigenvectors, (bool, np.bool_)):
        raise TypeError(f"return_eigenvectors must be True or False, got {return_eigenvectors!r}")
    if client is not None or progress is not False:
        operator = _tile_operator(K, x, kernel, n_threads, client, progress)
        K, x = operator, None
    values, vectors, _, _ = _solve(
        K, x, k, which, tol, kernel, n_threads, block_size, max_passes, seed, dtype, max_basis
    )
    return (values, vectors) if return_eigenvectors else values


def lambda_max(
    K,
    x=None,
    *,
    kernel: str = "ntk",
    tol: float | None = None,
    n_threads: int | None = None,
    max_passes: int | None = None,
    dtype=None,
) -> float:
    """The largest eigenvalue of ``K`` (N, N), or of the Gram matrix of ``(net, x)``.

    Arguments as :func:`eigsh`; ``tol`` defaults to 1e-8 (float64) or 1e-4 (float32): the
    result is then accurate to that relative to lambda_max.  Returns a Python float.
    """
    values, _, _, _ = _solve(
        K, x, 1, "largest", _extreme_tol(tol, K, x, dtype), kernel, n_threads, None, max_passes, 0, dtype
    )
    return float(values[0])


def lambda_min(
    K,
    x=None,
    *,
    kernel: str = "ntk",
    tol: float | None = None,
    n_threads: int | None = None,
    max_passes: int | None = None,
    dtype=None,
) -> float:
    """The smallest eigenvalue of ``K`` (N, N), or of the Gram matrix of ``(net, x)``.

    A dense ``K`` is factored (Cholesky, O(N^3 / 3)) and the largest eigenvalue of ``K^-1``
    found by block Lanczos, then refined by the Rayleigh quotient of ``K``.  In float64 a
    single-precision factor first locates lambda_min to about 1e-2, and the double factor
    is taken of ``K - sigma I`` with ``sigma`` just below it, which pulls a clustered bottom
    of the spectrum apart (when ``K`` does not factor in single precision, or no such
    ``sigma`` factors, ``K`` itself is factored instead).  The result carries
    the absolute error of any backward-stable method, about ``N eps ||K||``.  When ``K`` is
    numerically singular (duplicate points, rank deficiency) the factor is taken of
    ``K + s I`` with the smallest working shift ``s`` (from ``N eps max(diag K)``, growing
    tenfold) and the result is a number at rounding level, ``|lambda_min| <~ s``, possibly
    slightly negative; :func:`condition_number` then returns ``inf``.

    With ``(net, x)`` no factor exists (the Gram is never stored): plain Lanczos on the
    kernel, which can need hundreds of passes over it when the spectrum's bottom is
    clustered; ``max_passes`` bounds the work.  Arguments as :func:`eigsh`; ``tol``
    defaults to 1e-8 (float64) or 1e-4 (float32), which bounds the relative error of the
    result on the Cholesky path (Weyl's bound for K^-1) and its error relative to
    lambda_max on the matrix-free path.
    """
    values, _, _, _ = _solve(
        K,
        x,
        1,
        "smallest",
        _extreme_tol(tol, K, x, dtype),
        kernel,
        n_threads,
        None,
        max_passes,
        0,
        dtype,
        values_only=True,
    )
    return float(values[0])


def condition_number(
    K,
    x=None,
    *,
    kernel: str = "ntk",
    tol: float | None = None,
    n_threads: int | None = None,
    max_passes: int | None = None,
    dtype=None,
) -> float:
    """``lambda_max / lambda_min`` of a symmetric PSD matrix, or ``inf`` when it is singular.

    ``inf`` is returned when ``lambda_min <= N eps lambda_max`` (eps of the dtype): the
    smallest eigenvalue is then indistinguishable from rounding, as for duplicate points, or
    the matrix is zero.  Invariant under scaling ``K`` (exactly, for powers of two).
    Arguments as :func:`eigsh`.
    """
    kw = dict(kernel=kernel, tol=tol, n_threads=n_threads, max_passes=max_passes, dtype=dtype)
    if isinstance(K, _NETWORKS):
        n = np.shape(x)[0] if x is not None and np.ndim(x) >= 2 else 1
        eps = np.finfo(resolve_dtype(dtype, x) if x is not None else np.float64).eps
    else:
        K = as_symmetric_matrix(K, "K")
        n, eps = K.shape[0], np.finfo(K.dtype).eps
    hi = lambda_max(K, x, **kw)
    lo = lambda_min(K, x, **kw)
    if hi <= 0.0 or lo <= n * eps * hi:
        return math.inf
    return hi / lo


def spectrum(K, x=None, *, kernel: str = "ntk", n_threads: int | None = None, dtype=None) -> np.ndarray:
    """All eigenvalues, ascending, shape (N,), by LAPACK (``numpy.linalg.eigvalsh``).

    With ``(net, x)`` the dense Gram matrix is computed first (O(N^2) memory).  ``K`` is
    scaled by a power of two (exactly) so that its largest entry is about 1 before LAPACK
    sees it, so entries near the ends of the floating-point range are fine; an eigenvalue
    beyond the dtype's range raises OverflowError.
    """
    if isinstance(K, _NETWORKS):
        if x is None:
            raise ValueError("x is required with a network: pass spectrum(net, x)")
        kernel = choice(kernel, "kernel", _KERNELS)
        K = getattr(K.kernels(x, dtype=dtype, n_threads=n_threads), kernel)
    elif x is not None:
        raise TypeError("x is only used with a network: spectrum(net, x); K was given as a matrix")
    K, magnitude = _checked_symmetric(K, "K")
    exponent = math.frexp(magnitude)[1] if magnitude > 0 else 0
    if exponent == 0:
        return np.linalg.eigvalsh(K)
    with np.errstate(over="ignore"):
        values = np.ldexp(np.linalg.eigvalsh(np.ldexp(K, -exponent)), exponent).astype(K.dtype)
    if not np.isfinite(values).all():
        raise OverflowError(f"an eigenvalue of K exceeds the largest finite {K.dtype} ({np.finfo(K.dtype).max:.3g})")
    return values

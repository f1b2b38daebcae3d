"""Kernel regression with a network's NNGP or NTK, with or without the Gram matrix.

:class:`KernelRegression` solves ``(K + lambda I) alpha = y`` on the training points ``x``
(N of them, ``y`` of shape (N,) or (N, k)) and predicts ``f(x*) = K(x*, x) alpha``.

``solver="cholesky"`` forms the Gram matrix (8 N^2 bytes, more while it is factored) and
factors it.  ``solver="pcg"`` never forms it: preconditioned conjugate gradients, one
recurrence per column of ``y`` but all k columns in each pass over the kernel tiles, which
the C++ core computes on demand (:func:`kernel_product`).  Memory O(N (k + m) + m^2) plus a
tile per thread.

The preconditioner (a Nystrom approximation on m landmark points z): with ``K_mm = K(z, z) =
U S U^T`` (eigenvalues below ``m eps max S`` dropped) and ``T^-1 = U S^-1/2``, the Nystrom
approximation of K is ``K_nm K_mm^+ K_mn = B B^T``, ``B = K_nm T^-1`` (N x r).  The
preconditioner is ``P = B B^T + lambda I``, applied through the Woodbury identity:

    P^-1 = (I - F F^T) / lambda,    F = B W (lambda I + Sigma^2)^-1/2,   B^T B = W Sigma^2 W^T,

where ``B^T B = T^-T (K_mn K_nm) T^-1`` is formed from row blocks of ``K_nm``, which is then
overwritten by F (N x r): the only N x m array.  P is symmetric positive definite, with
``P <= K + lambda I`` (the Nystrom approximation is below K), and equals it when the
landmarks span K's range.  (Falkon builds its preconditioner from the same two Cholesky-like
factors, for the smaller problem restricted to the landmarks; here the full N x N system is
solved, so its predictions are those of exact kernel regression, to ``tol``.)

Stopping: when every column has ``||y_j - (K + lambda I) alpha_j|| <= tol ||y_j||``, checked
on the true residual (one extra pass) before returning; ``residual_`` is the largest of these
ratios and ``iterations_`` the number of CG iterations (the passes over the kernel are one more,
and one more per restart when rounding left the true residual above tol).

Cost on paper (pcg): a pass over an N x N kernel computes ``ceil(N/128)^2 / 2`` tiles of
128^2 kernel entries (each entry ~ ``depth`` dual-activation evaluations) plus ``2 N^2 k``
flops; one pass per iteration, iterations ~ ``sqrt(cond(P^-1 (K + lambda I)))``
``log(1/tol)``.  Bytes moved per pass on a cluster: ``N k`` doubles out to each worker and
back, never a block of the N x N kernel.

>>> import numpy as np, ntkcore
>>> rng = np.random.default_rng(0)
>>> x, y = rng.standard_normal((300, 4)), rng.standard_normal(300)
>>> net = ntkcore.FullyConnected(2, "relu", W_std=2**0.5, b_std=0.1)
>>> pcg = ntkcore.KernelRegression(net, solver="pcg", tol=1e-10).fit(x, y)
>>> exact = ntkcore.KernelRegression(net, solver="cholesky").fit(x, y)
>>> bool(np.allclose(pcg.predict(x[:5]), exact.predict(x[:5]), rtol=1e-7, atol=0))
True
"""

from __future__ import annotations

import math
import numbers
import os
import warnings
from collections.abc import Callable

import numpy as np

from ._native import core as _core
from ._progress import Progress as _Progress
from ._progress import check as check_progress
from ._validation import (
    as_real_array,
    check_n_threads,
    check_seed,
    choice,
    flag,
    float64_array,
    integer,
    real,
)
from .dynamics import _CholeskySolver, _network_inputs
from .network import FullyConnected
from .serial import Serial

__all__ = ["KernelRegression", "kernel_product"]

_KERNELS = ("ntk", "nngp")
_SOLVERS = ("auto", "cholesky", "pcg")
# "auto" factors the Gram matrix up to this many points (and while it fits in memory).
_CHOLESKY_MAX_N = 20000
# Bytes per Gram entry the Cholesky path holds at its peak: both Gram matrices from the core,
# then K + lambda I and its factor (measured: 6.1 GiB at N = 20000, bench/RESULTS_scale.md).
_CHOLESKY_BYTES = 16
# Bytes of kernel rows that the serial-network product computes at once.
_SERIAL_BLOCK_BYTES = 2**26


def _network(net):
    if not isinstance(net, (FullyConnected, Serial)):
        raise TypeError(f"net must be an ntkcore.FullyConnected or ntkcore.Serial network, got {type(net).__name__}")
    return net


def kernel_product(
    net,
    x1,
    x2,
    v,
    *,
    kernel: str = "ntk",
    n_threads: int | None = None,
    progress: Callable[[int, int], object] | None = None,
) -> np.ndarray:
    """``K(x1, x2) @ v`` without forming ``K(x1, x2)``.

    A fully-connected network's kernel is computed by the C++ core tile by tile (128 x 128)
    and multiplied into all columns of ``v`` in one pass, without the GIL; ``x2=None`` means
    ``x1`` and computes half the tiles.  A serial network's kernel rows are formed in blocks
    (``Serial.kernels(x1[rows], x2)``, about 64 MiB at a time) and multiplied.

    Parameters
    ----------
    net : FullyConnected or Serial
    x1 : array_like, shape (N1, ...) of network inputs
    x2 : array_like, shape (N2, ...), or None (``x1``)
    v : array_like, shape (N2,) or (N2, b)
    kernel : "ntk" or "nngp"
    n_threads : int >= 1, optional
        Threads of the core (default: all OpenMP offers).
    progress : callable(done, total), optional
        Called on this thread with the tiles (row blocks for a serial network) finished, at
        most every 50 ms and once at the end; Ctrl-C or an exception it raises ends the product.

    Returns
    -------
    numpy.ndarray, float64, shape (N1,) or (N1, b)
        Computed in float64 whatever the inputs' dtype.
    """
    net = _network(net)
    kernel = choice(kernel, "kernel", _KERNELS)
    a = _network_inputs(net, x1, "x1")
    b = None if x2 is None else _network_inputs(net, x2, "x2", like=a, same_shape=True)
    n2 = a.shape[0] if b is None else b.shape[0]
    vec = float64_array(v, "v")
    if vec.ndim not in (1, 2) or vec.shape[0] != n2 or vec.size == 0:
        raise ValueError(f"v must have shape ({n2},) or ({n2}, b) with b >= 1, got {vec.shape}")
    if not np.isfinite(vec).all():
        raise ValueError("v must be finite")
    if progress is not None and not callable(progress):
        raise TypeError(f"progress must be a callable(done, total) or None, got {progress!r}")
    out = _product(net, kernel, a, b, np.ascontiguousarray(vec.reshape(n2, -1)), check_n_threads(n_threads), progress)
    return out.reshape(-1) if vec.ndim == 1 else out


def _product(net, kernel: str, a: np.ndarray, b: np.ndarray | None, v: np.ndarray, threads: int, progress):
    """``K(a, b) v`` for checked float64 inputs and a C-contiguous (N2, k) ``v``."""
    if isinstance(net, FullyConnected):
        return np.asarray(_core.kernel_product(net._core_network(), a, b, kernel == "ntk", v, threads, 0, progress))
    other = a if b is None else b
    rows = max(1, _SERIAL_BLOCK_BYTES // (16 * other.shape[0]))
    out = np.empty((a.shape[0], v.shape[1]))
    total = -(-a.shape[0] // rows)
    for done, lo in enumerate(range(0, a.shape[0], rows)):
        block = getattr(net.kernels(a[lo : lo + rows], other, dtype=np.float64, n_threads=threads or None), kernel)
        out[lo : lo + rows] = block @ v
        if progress is not None:
            progress(done + 1, total)
    return out


def _rows(net, kernel: str, a: np.ndarray, z: np.ndarray, threads: int, rows: int):
    """Row blocks (lo, hi, K(a[lo:hi], z)) of the N x m kernel between ``a`` and ``z``."""
    for lo in range(0, a.shape[0], rows):
        hi = min(lo + rows, a.shape[0])
        yield lo, hi, getattr(net.kernels(a[lo:hi], z, dtype=np.float64, n_threads=threads or None), kernel)


class _LocalTiles:
    """The kernel passes of a fit on this machine."""

    def __init__(self, net, kernel: str, x: np.ndarray, threads: int):
        self.net, self.kernel, self.x, self.threads = net, kernel, x, threads

    def train(self, v: np.ndarray, progress) -> np.ndarray:
        return _product(self.net, self.kernel, self.x, None, v, self.threads, progress)

    def cross(self, x_other: np.ndarray, v: np.ndarray, progress) -> np.ndarray:
        return _product(self.net, self.kernel, x_other, self.x, v, self.threads, progress)

    def landmark_rows(self, z: np.ndarray):
        rows = max(1, _SERIAL_BLOCK_BYTES // (16 * z.shape[0]))
        return _rows(self.net, self.kernel, self.x, z, self.threads, rows)

    def close(self) -> None:
        pass


def _kernel_passes(client, net, kernel: str, x: np.ndarray, threads: int):
    """The passes over the kernel tiles of ``x``: on this machine, or on a Dask cluster."""
    if client is None:
        return _LocalTiles(net, kernel, x, threads)
    from .dask import _ClusterTiles

    return _ClusterTiles(client, net, kernel, x, threads)


def _available_memory() -> float:
    """Bytes of memory available to a new allocation (MemAvailable on Linux)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return float(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 0.0


class _Nystrom:
    """The preconditioner ``(I - F F^T) / lambda`` of the module docstring."""

    def __init__(self, kmm: np.ndarray, rows, n: int, ridge: float):
        s, u = np.linalg.eigh(kmm)
        keep = s > max(float(s[-1]), 0.0) * len(s) * np.finfo(np.float64).eps
        t_inv = u[:, keep] / np.sqrt(s[keep])
        m = kmm.shape[0]
        knm = np.empty((n, m))
        gram = np.zeros((m, m))
        for lo, hi, block in rows:
            knm[lo:hi] = block
            gram += block.T @ block
        sigma2, w = np.linalg.eigh(t_inv.T @ gram @ t_inv)
        g = t_inv @ (w / np.sqrt(ridge + np.maximum(sigma2, 0.0)))
        r = g.shape[1]
        step = max(1, 2**24 // max(m, 1))
        for lo in range(0, n, step):
            knm[lo : lo + step, :r] = knm[lo : lo + step] @ g
        self._f = knm[:, :r]
        self._ridge = ridge

    def __call__(self, r: np.ndarray) -> np.ndarray:
        return (r - self._f @ (self._f.T @ r)) / self._ridge


def _column_dots(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->j", a, b)


class KernelRegression:
    """Kernel ridge regression with the NNGP or NTK of a network (the ``t = inf`` of
    gradient flow with a ridge), dense or matrix-free.

    Parameters
    ----------
    net : FullyConnected or Serial
        The network whose kernel is used.  Matrix-free products are tiled in the C++ core for
        FullyConnected; a Serial network's kernel rows are formed in blocks (memory O(N) per
        row, still never N^2).
    kernel : "ntk" or "nngp"
    diag_reg : float >= 0
        The ridge: ``lambda = diag_reg * trace(K) / N`` (or ``diag_reg`` itself with
        ``diag_reg_absolute_scale=True``).  "pcg" needs ``diag_reg > 0``.
    solver : "auto", "cholesky" or "pcg"
        "cholesky" forms the Gram matrix and factors it; "pcg" never forms it (module
        docstring); "auto" takes "cholesky" when N <= 20000 and 16 N^2 bytes are at most half
        the available memory, "pcg" otherwise or with a ``client``.
    tol : float in (0, 1)
        pcg stops when every column's relative residual is at most ``tol``.
    landmarks : None, int >= 1 or array of shape (m, ...)
        The Nystrom landmarks of pcg's preconditioner: m training points drawn uniformly
        without replacement (``seed``), or the points themselves; None: ``m = min(N,
        max(64, ceil(4 sqrt N)))`` drawn points.
    client : distributed.Client, optional
        Run pcg's passes over the kernel on this Dask cluster (``ntkcore.dask``, the extra
        ``dask``): the training points are scattered once, each pass sends N x k numbers to
        the workers, which compute row blocks of ``K @ V``; the Gram is never gathered.
    progress : bool or callable(done, total)
        Report the tiles of the kernel passes of ``fit`` and ``predict``: a tqdm bar when
        tqdm is installed, a line on stderr otherwise, or calls of the callable (on the
        calling thread).  The total is an upper bound (``max_iter + 1`` passes) until the
        end, when it becomes the true count.
    diag_reg_absolute_scale : bool
    max_iter : int >= 1
        Most CG iterations; a RuntimeWarning says when pcg stops there unconverged.
    seed : int
        Draws the landmarks.
    n_threads : int >= 1, optional
        Threads of the core (default: all OpenMP offers).

    Attributes
    ----------
    alpha_ : ndarray, shape (N,) or (N, k)
        The dual coefficients ``(K + lambda I)^-1 y``.
    residual_ : float
        ``max_j ||y_j - (K + lambda I) alpha_j|| / ||y_j||``, computed after the solve.
    iterations_ : int
        CG iterations (0 for cholesky).
    solver_ : str
        The solver used ("cholesky" or "pcg").
    ridge_ : float
        lambda, in the kernel's units.
    landmarks_ : ndarray or None
        pcg's landmark points.
    """

    alpha_: np.ndarray
    residual_: float
    iterations_: int
    solver_: str
    ridge_: float
    landmarks_: np.ndarray | None
    x_train_: np.ndarray

    def __init__(
        self,
        net,
        kernel: str = "ntk",
        diag_reg: float = 1e-4,
        solver: str = "auto",
        tol: float = 1e-6,
        landmarks=None,
        client=None,
        progress=False,
        *,
        diag_reg_absolute_scale: bool = False,
        max_iter: int = 1000,
        seed: int = 0,
        n_threads: int | None = None,
    ):
        self.net = _network(net)
        self.kernel = choice(kernel, "kernel", _KERNELS)
        self.diag_reg = real(diag_reg, "diag_reg", minimum=0.0)
        self.solver = choice(solver, "solver", _SOLVERS)
        self.tol = real(tol, "tol", minimum=0.0, maximum=1.0, strict=True)
        if solver == "pcg" and self.diag_reg == 0.0:
            raise ValueError("solver='pcg' needs diag_reg > 0 (its preconditioner divides by the ridge)")
        if client is not None and solver == "cholesky":
            raise ValueError("a client runs the matrix-free passes: use solver='pcg' or 'auto' with it")
        self.landmarks: int | np.ndarray | None
        if landmarks is None or isinstance(landmarks, numbers.Integral):  # bool: integer() refuses it
            self.landmarks = None if landmarks is None else integer(landmarks, "landmarks", minimum=1)
        else:
            self.landmarks = as_real_array(landmarks, "landmarks", np.dtype(np.float64), (2, 3, 4), "(m, ...)")
        self.client = client
        check_progress(progress)
        self.progress = progress
        self.diag_reg_absolute_scale = flag(diag_reg_absolute_scale, "diag_reg_absolute_scale")
        self.max_iter = integer(max_iter, "max_iter", minimum=1)
        self.seed = check_seed(seed)
        self.n_threads = check_n_threads(n_threads)

    # --- fitting ---------------------------------------------------------------------------

    def _tiles(self, x: np.ndarray):
        return _kernel_passes(self.client, self.net, self.kernel, x, self.n_threads)

    def _choose(self, n: int) -> str:
        if self.solver != "auto":
            return self.solver
        fits = _CHOLESKY_BYTES * n * n <= _available_memory() / 2
        return "cholesky" if self.client is None and n <= _CHOLESKY_MAX_N and fits else "pcg"

    def fit(self, x, y) -> KernelRegression:
        """Solve ``(K(x, x) + lambda I) alpha = y``.

        Parameters
        ----------
        x : array_like, shape (N, d) (FullyConnected) or (N, ...) network inputs
            float32, float64 or integer; the kernels are computed in float64.
        y : array_like, shape (N,) or (N, k)

        Returns
        -------
        self
        """
        x = _network_inputs(self.net, x, "x")
        n = x.shape[0]
        targets = float64_array(y, "y")
        if targets.ndim not in (1, 2) or targets.shape[0] != n or targets.size == 0:
            raise ValueError(f"y must have shape ({n},) or ({n}, k) with k >= 1, got {targets.shape}")
        if not np.isfinite(targets).all():
            raise ValueError("y must be finite")
        rhs = np.ascontiguousarray(targets.reshape(n, -1))
        diagonal = getattr(self.net.diagonal(x, dtype=np.float64), self.kernel)
        scale = 1.0 if self.diag_reg_absolute_scale else float(np.mean(diagonal))
        self.ridge_ = self.diag_reg * scale
        self.solver_ = self._choose(n)
        if self.solver_ == "pcg" and self.ridge_ == 0.0:
            raise ValueError("solver='pcg' needs a ridge lambda > 0: the kernel's diagonal is zero or diag_reg is 0")
        if self.solver_ == "cholesky":
            alpha, self.residual_ = self._cholesky(x, rhs)
            self.iterations_, self.landmarks_ = 0, None
        else:
            alpha = self._pcg(x, rhs)
        self.x_train_ = x
        self.alpha_ = alpha.reshape(-1) if targets.ndim == 1 else alpha
        return self

    def _cholesky(self, x: np.ndarray, rhs: np.ndarray):
        k = getattr(self.net.kernels(x, dtype=np.float64, n_threads=self.n_threads or None), self.kernel)
        k[np.diag_indices_from(k)] += self.ridge_
        alpha = _CholeskySolver(k, "K + diag_reg I").solve(rhs)
        return alpha, float(np.max(np.linalg.norm(rhs - k @ alpha, axis=0) / _norms(rhs)))

    def _landmark_points(self, x: np.ndarray) -> np.ndarray:
        if isinstance(self.landmarks, np.ndarray):
            return _network_inputs(self.net, self.landmarks, "landmarks", like=x, same_shape=True)
        n = x.shape[0]
        m = self.landmarks if self.landmarks is not None else min(n, max(64, math.ceil(4 * math.sqrt(n))))
        if m > n:
            raise ValueError(f"landmarks must be at most N = {n} training points, got {m}")
        rng = np.random.default_rng(self.seed)
        return x[np.sort(rng.choice(n, size=m, replace=False))]

    def _pcg(self, x: np.ndarray, rhs: np.ndarray) -> np.ndarray:
        z = self._landmark_points(x)
        self.landmarks_ = z
        tiles = self._tiles(x)
        report = _Progress(self.progress, "KernelRegression.fit", self.max_iter + 1)
        try:
            kmm = getattr(self.net.kernels(z, dtype=np.float64, n_threads=self.n_threads or None), self.kernel)
            precondition = _Nystrom(kmm, tiles.landmark_rows(z), x.shape[0], self.ridge_)

            def apply(v):
                return tiles.train(v, report.callback) + self.ridge_ * v

            alpha, self.residual_, self.iterations_ = _conjugate_gradients(
                apply, precondition, rhs, self.tol, self.max_iter
            )
        finally:
            tiles.close()
            report.finish()
        if self.residual_ > self.tol:
            warnings.warn(
                f"KernelRegression: pcg did not reach tol = {self.tol:g} in max_iter = {self.max_iter} iterations "
                f"(relative residual {self.residual_:.3g}); raise max_iter, landmarks or diag_reg",
                RuntimeWarning,
                stacklevel=3,
            )
        return alpha

    # --- prediction ------------------------------------------------------------------------

    def predict(self, x_test) -> np.ndarray:
        """``K(x_test, x) alpha_``, computed tile by tile (never the M x N kernel).

        Parameters
        ----------
        x_test : array_like, shape (M, d) or (M, ...) network inputs

        Returns
        -------
        numpy.ndarray, float64, shape (M,) or (M, k) as ``y``
        """
        if not hasattr(self, "alpha_"):
            raise ValueError("KernelRegression.predict needs fit(x, y) first")
        points = _network_inputs(self.net, x_test, "x_test", like=self.x_train_, same_shape=True)
        alpha = np.ascontiguousarray(self.alpha_.reshape(self.x_train_.shape[0], -1))
        tiles = self._tiles(self.x_train_)
        report = _Progress(self.progress, "KernelRegression.predict", 1)
        try:
            out = tiles.cross(points, alpha, report.callback)
        finally:
            tiles.close()
            report.finish()
        return out.reshape(-1) if self.alpha_.ndim == 1 else out


def _norms(y: np.ndarray) -> np.ndarray:
    """Column norms of y, with 1 for zero columns (whose residual is then absolute)."""
    norms = np.linalg.norm(y, axis=0)
    return np.where(norms > 0, norms, 1.0)


def _conjugate_gradients(apply, precondition, y: np.ndarray, tol: float, max_iter: int):
    """(alpha, largest relative residual, iterations) of PCG on the columns of y at once.

    Each column has its own CG recurrence; the products ``apply(P)`` serve all columns in one
    pass.  A column stops updating once its residual is below tol.  The true residual is
    recomputed at the end; when rounding left it above tol, CG restarts from it.
    """
    norms = _norms(y)
    alpha = np.zeros_like(y)
    r = y.copy()
    iterations = 0
    while True:
        active = np.linalg.norm(r, axis=0) / norms > tol
        z = precondition(r)
        p = z.copy()
        rz = _column_dots(r, z)
        while active.any() and iterations < max_iter:
            q = apply(p)
            iterations += 1
            step = np.where(active, rz / np.where(active, _column_dots(p, q), 1.0), 0.0)
            alpha += p * step
            r -= q * step
            active &= np.linalg.norm(r, axis=0) / norms > tol
            if not active.any():
                break
            z = precondition(r)
            rz_next = _column_dots(r, z)
            p = z + p * np.where(active, rz_next / np.where(active, rz, 1.0), 0.0)
            rz = rz_next
        r = y - apply(alpha)
        residual = float(np.max(np.linalg.norm(r, axis=0) / norms))
        if residual <= tol or iterations >= max_iter:
            return alpha, residual, iterations

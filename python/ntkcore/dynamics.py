"""Training dynamics of infinitely wide networks under gradient flow (docs/math/5-gram-dynamics.md).

Gradient flow on the squared loss ``L = ||f(X) - Y||^2 / 2`` with a fixed kernel Theta:
``df/dt = -eta Theta (f - Y)``, or ``-eta Theta (f - Y) / Y.size`` with
``normalize_by_size=True`` (neural-tangents' convention).  With ``Theta = V diag(lambda) V^T``::

    train residual   r_t = V exp(-eta Lambda t) V^T r_0,       r_0 = f_0(X) - Y
    test prediction  f_t(X*) = f_0(X*) - Theta(X*, X) Theta^-1 (I - exp(-eta Theta t)) r_0
    squared residual ||r_t||^2 = sum_i exp(-2 eta lambda_i t) (v_i . r_0)^2
                               <= exp(-2 eta lambda_min t) ||r_0||^2

``t = inf`` is kernel regression, solved by a Cholesky factorization.  Eigenvalues below zero
by rounding (at most ``64 N eps max|lambda|``) are treated as zero, as neural-tangents does; a
kernel with a negative diagonal entry or a negative eigenvalue beyond that is not PSD and is
rejected with a ValueError.  Everything is invariant under scaling the kernel (with the time
scaled inversely), for kernels anywhere in the float64 range.

>>> import numpy as np, ntkcore
>>> rng = np.random.default_rng(0)
>>> x, y = rng.standard_normal((20, 3)), rng.standard_normal((20, 2))
>>> theta = ntkcore.FullyConnected(2, "relu", W_std=1.5).ntk(x)
>>> flow = ntkcore.GradientFlow(theta, y)
>>> bool(np.allclose(flow.predict(np.inf).train, y))
True
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from ._validation import as_points, as_real_array, choice, flag, float64_array, real, targets
from .network import FullyConnected
from .serial import Serial
from .spectral import as_symmetric_matrix, lambda_max, lambda_min

__all__ = [
    "Gaussian",
    "GradientFlow",
    "Prediction",
    "ensemble_predict",
    "loss_bound",
    "loss_curve",
    "max_learning_rate",
]


class Prediction(NamedTuple):
    """Outputs after training: ``train`` of shape (T..., N[, k]); ``test`` (T..., M[, k]) or None."""

    train: np.ndarray
    test: np.ndarray | None


class Gaussian(NamedTuple):
    """Mean (T..., M[, k]) and covariance (T..., M, M) of the ensemble's output, shared by the k outputs."""

    mean: np.ndarray
    covariance: np.ndarray | None


# --- argument checks ---------------------------------------------------------------------


def _flow_settings(learning_rate, diag_reg, diag_reg_absolute_scale, normalize_by_size):
    """The checked (learning_rate, diag_reg, diag_reg_absolute_scale, normalize_by_size)."""
    return (
        real(learning_rate, "learning_rate", minimum=0.0, strict=True),
        real(diag_reg, "diag_reg", minimum=0.0),
        flag(diag_reg_absolute_scale, "diag_reg_absolute_scale"),
        flag(normalize_by_size, "normalize_by_size"),
    )


def _network_inputs(net, x, name: str, like: np.ndarray | None = None, same_shape: bool = False) -> np.ndarray:
    """A network's inputs as float64: (N, d) points for FullyConnected (d as ``like``'s), and
    (N, d), (N, L, C) or (N, H, W, C) arrays for serial networks, whose layers check the rest
    (with ``same_shape``, also ``like``'s shape per point)."""
    if isinstance(net, FullyConnected):
        return as_points(x, name, np.dtype(np.float64), features=None if like is None else like.shape[1])
    arr = as_real_array(x, name, np.dtype(np.float64), (2, 3, 4), "(N, H, W, C), (N, L, C) or (N, d)")
    if same_shape and like is not None and arr.shape[1:] != like.shape[1:]:
        raise ValueError(f"{name} must have shape (M, {', '.join(map(str, like.shape[1:]))}), got {arr.shape}")
    return arr


def _times(t) -> np.ndarray:
    arr = float64_array(t, "t")
    if np.isnan(arr).any() or (arr < 0).any():
        raise ValueError("t must be >= 0 (inf allowed: the end of training), without NaN")
    return arr


def _regularized(k: np.ndarray, diag_reg: float, absolute: bool) -> np.ndarray:
    if diag_reg == 0.0:
        return k
    scale = diag_reg if absolute else diag_reg * float(np.trace(k)) / k.shape[0]
    return k + scale * np.eye(k.shape[0])


def _rounding(values: np.ndarray) -> float:
    """How far below zero rounding can put an eigenvalue (or diagonal entry) of a PSD kernel."""
    return 64 * len(values) * np.finfo(np.float64).eps * float(np.max(np.abs(values), initial=0.0))


def _kernel(K, name: str) -> np.ndarray:
    """``K`` as a float64 symmetric matrix; ValueError when a diagonal entry shows it is not PSD."""
    k = as_symmetric_matrix(K, name).astype(np.float64, copy=False)
    diag = np.diagonal(k)
    worst = int(np.argmin(diag))
    if diag[worst] < -_rounding(diag):
        raise ValueError(
            f"{name} must be positive semidefinite (a kernel matrix), but its diagonal entry "
            f"{name}[{worst}, {worst}] = {diag[worst]:.3g} is negative"
        )
    return k


def _check_psd(values: np.ndarray, name: str) -> None:
    """ValueError when the eigenvalues ``values`` of ``name`` show that it is not PSD."""
    lowest = float(np.min(values))
    if lowest < -_rounding(values):
        raise ValueError(
            f"{name} must be positive semidefinite (a kernel matrix), but it has the eigenvalue "
            f"{lowest:.3g} (largest |eigenvalue| {float(np.max(np.abs(values))):.3g}): gradient flow "
            "diverges along its eigenvector"
        )


class _CholeskySolver:
    """a^-1 b for symmetric positive definite a, factored once (with scipy; numpy alone checks
    the factorization, then solves), with a clear error when a is singular or not PSD."""

    def __init__(self, a: np.ndarray, name: str):
        try:
            import scipy.linalg as sl
        except ImportError:
            sl = None
        self._a, self._sl = a, sl
        try:
            if sl is not None:
                self._factor = sl.cho_factor(a, lower=True, check_finite=False)
            else:
                np.linalg.cholesky(a)
        except np.linalg.LinAlgError as exc:
            _check_psd(np.linalg.eigvalsh(a), name)  # a failed factorization: say whether a is PSD at all
            raise ValueError(
                f"{name} is singular to working precision (e.g. duplicate training points), so t = inf "
                "(kernel regression) is undefined; pass diag_reg > 0 (a ridge) or use a finite t"
            ) from exc

    def solve(self, b: np.ndarray) -> np.ndarray:
        if self._sl is not None:
            return self._sl.cho_solve(self._factor, b, check_finite=False)
        return np.linalg.solve(self._a, b)


class _Spectrum:
    """Eigendecomposition of a PSD kernel with eigenvalues clipped at 0, and the maps of t."""

    def __init__(self, k: np.ndarray, eta: float, name: str):
        values, self.vectors = np.linalg.eigh(k)
        _check_psd(values, name)
        self.values = np.maximum(values, 0.0)
        self.eta = eta

    def decay(self, t: float) -> np.ndarray:
        """exp(-eta lambda t) per eigenvalue."""
        if math.isinf(t):
            return np.where(self.values > 0, 0.0, 1.0)
        return np.exp(-self.eta * self.values * t)

    def integral(self, t: float) -> np.ndarray:
        """(1 - exp(-eta lambda t)) / lambda per eigenvalue; eta t at lambda = 0."""
        lam = self.values
        safe = np.where(lam > 0, lam, 1.0)
        return np.where(lam > 0, -np.expm1(-self.eta * lam * t) / safe, self.eta * t)


# --- gradient flow with a fixed kernel ------------------------------------------------------


class GradientFlow:
    """Gradient flow on the squared loss with the kernel ``k_train_train`` (docs/math/5-gram-dynamics.md).

    Parameters
    ----------
    k_train_train : array_like of shape (N, N)
        Symmetric PSD kernel on the training points (NTK for gradient descent on all layers,
        NNGP for the last layer only).  Computations are in float64.  ValueError when it is
        not PSD (a negative diagonal entry at once, a negative eigenvalue when it is factored).
    y_train : array_like of shape (N,) or (N, k)
        Targets; k outputs share the kernel (docs/math/2-recursion.md, vector outputs).
    learning_rate : float > 0
        eta.  Time t is in units of 1 / eta.
    diag_reg : float >= 0
        Ridge added to the diagonal before solving: ``diag_reg * mean(diag K)``, or
        ``diag_reg`` itself when ``diag_reg_absolute_scale``.
    normalize_by_size : bool
        Divide the flow by ``y_train.size`` (neural-tangents' convention: its loss is the mean).
    """

    def __init__(
        self,
        k_train_train,
        y_train,
        learning_rate: float = 1.0,
        diag_reg: float = 0.0,
        diag_reg_absolute_scale: bool = False,
        normalize_by_size: bool = False,
    ):
        k = _kernel(k_train_train, "k_train_train")
        self._y = targets(y_train, "y_train", k.shape[0])
        self.learning_rate, self.diag_reg, self.diag_reg_absolute_scale, self.normalize_by_size = _flow_settings(
            learning_rate, diag_reg, diag_reg_absolute_scale, normalize_by_size
        )
        self._k = _regularized(k, self.diag_reg, self.diag_reg_absolute_scale)
        self._eta = self.learning_rate / (self._y.size if self.normalize_by_size else 1)
        self._spectrum: _Spectrum | None = None
        self._solver: _CholeskySolver | None = None

    @property
    def n_train(self) -> int:
        return self._k.shape[0]

    def _eig(self) -> _Spectrum:
        if self._spectrum is None:
            self._spectrum = _Spectrum(self._k, self._eta, "k_train_train")
        return self._spectrum

    def _solve(self, b: np.ndarray) -> np.ndarray:
        """The (regularized) train kernel's inverse times b, from one Cholesky factor."""
        if self._solver is None:
            self._solver = _CholeskySolver(self._k, "k_train_train")
        return self._solver.solve(b)

    def predict(self, t, k_test_train=None, f0_train=None, f0_test=None) -> Prediction:
        """Network outputs after training for time ``t``.

        Parameters
        ----------
        t : float >= 0 or array_like of shape T
            Training time(s); ``numpy.inf`` gives the kernel-regression limit (Cholesky).
        k_test_train : array_like of shape (M, N), optional
            Kernel between test and training points, for test predictions.
        f0_train : array_like of shape (N,) or (N, k), optional
            Outputs at initialization on the training points (default 0).
        f0_test : array_like of shape (M,) or (M, k), optional
            Outputs at initialization on the test points (default 0); needs k_test_train.

        Returns
        -------
        Prediction
            ``train`` of shape T + y_train.shape, and ``test`` of shape T + (M,) + y_train.shape[1:]
            (None without k_test_train).
        """
        times = _times(t)
        n, y = self.n_train, self._y
        f0 = np.zeros_like(y) if f0_train is None else targets(f0_train, "f0_train", n)
        if f0.shape != y.shape:
            raise ValueError(f"f0_train must have the shape of y_train {y.shape}, got {f0.shape}")
        kt = None
        if k_test_train is not None:
            kt = float64_array(k_test_train, "k_test_train")
            if kt.ndim != 2 or kt.shape[1] != n or kt.shape[0] == 0:
                raise ValueError(f"k_test_train must have shape (M, {n}), got {kt.shape}")
            if not np.isfinite(kt).all():
                raise ValueError("k_test_train must be finite")
        elif f0_test is not None:
            raise ValueError("f0_test needs k_test_train (the test predictions need the test-train kernel)")
        ft0 = None
        if kt is not None:
            m = kt.shape[0]
            if f0_test is None:
                ft0 = np.zeros((m, *y.shape[1:]))
            else:
                ft0 = targets(f0_test, "f0_test", m)
                if ft0.shape[1:] != y.shape[1:]:
                    raise ValueError(f"f0_test must have shape {(m, *y.shape[1:])}, got {ft0.shape}")

        r0 = f0 - y
        finite = times[np.isfinite(times)]
        if finite.size:
            spec = self._eig()
            coeff = spec.vectors.T @ r0  # (N[, k])
            kv = None if kt is None else kt @ spec.vectors
        train = np.empty(times.shape + y.shape)
        test = None if ft0 is None else np.empty(times.shape + ft0.shape)
        solved = None
        for index in np.ndindex(times.shape):
            ti = float(times[index])
            if math.isinf(ti):
                train[index] = y
                if kt is not None and ft0 is not None and test is not None:
                    if solved is None:
                        solved = self._solve(r0)
                    test[index] = ft0 - kt @ solved
                continue
            decay = spec.decay(ti).reshape((-1,) + (1,) * (r0.ndim - 1))
            train[index] = y + spec.vectors @ (decay * coeff)
            if kv is not None and ft0 is not None and test is not None:
                integral = spec.integral(ti).reshape(decay.shape)
                test[index] = ft0 - kv @ (integral * coeff)
        return Prediction(train, test)


# --- the infinite ensemble (Lee et al. 2019) -----------------------------------------------


def ensemble_predict(
    net,
    x_train,
    y_train,
    x_test,
    t,
    *,
    kernel: str = "ntk",
    learning_rate: float = 1.0,
    diag_reg: float = 0.0,
    diag_reg_absolute_scale: bool = False,
    normalize_by_size: bool = False,
    compute_cov: bool = True,
    n_threads: int | None = None,
) -> Gaussian:
    """Output distribution of an infinite ensemble of infinitely wide networks after training.

    Networks initialized at random and trained by gradient flow on (x_train, y_train) with
    the NTK (``kernel="ntk"``: all layers trained) or the NNGP kernel (``"nngp"``: last layer
    only, i.e. Bayesian inference at t = inf) have Gaussian outputs (Lee et al. 2019).  With
    ``A(t) = G^-1 (I - exp(-eta G t))`` for the train kernel G (regularized)::

        mean  = G(X*, X) A(t) Y
        cov   = K** - G(X*, X) A K*^T - K* A G(X*, X)^T + G(X*, X) A K A G(X*, X)^T   (ntk)
        cov   = K** - K* K^-1 (I - exp(-2 eta K t)) K*^T                               (nngp)

    with K the NNGP kernel.  The same values as neural-tangents'
    ``gradient_descent_mse_ensemble`` (``t = inf``: ``gp_inference``) with
    ``normalize_by_size=True``.

    Parameters
    ----------
    net : FullyConnected or Serial
    x_train : array_like (N, d) (or (N, H, W, C), (N, L, C) for a serial network)
    y_train : array_like (N,) or (N, k)
    x_test : array_like (M, ...) shaped as x_train, or None for the training points themselves
    t : float >= 0 or array_like of shape T (inf allowed)
    kernel : "ntk" or "nngp"
    learning_rate, diag_reg, diag_reg_absolute_scale, normalize_by_size : as GradientFlow
    compute_cov : bool
        Also return the (M, M) covariance (shared by the k outputs).

    Returns
    -------
    Gaussian
        ``mean`` of shape T + (M,) + y_train.shape[1:], ``covariance`` of shape T + (M, M)
        (None unless compute_cov).
    """
    if not isinstance(net, (FullyConnected, Serial)):
        raise TypeError(f"net must be an ntkcore.FullyConnected or a serial network, got {type(net).__name__}")
    kernel = choice(kernel, "kernel", ("ntk", "nngp"))
    xtr = _network_inputs(net, x_train, "x_train")
    y = targets(y_train, "y_train", xtr.shape[0])
    xte = None if x_test is None else _network_inputs(net, x_test, "x_test", like=xtr)
    times = _times(t)
    cov_wanted = flag(compute_cov, "compute_cov")
    _flow_settings(learning_rate, diag_reg, diag_reg_absolute_scale, normalize_by_size)  # before the kernels

    k_dd = net.kernels(xtr, n_threads=n_threads)
    flow = GradientFlow(getattr(k_dd, kernel), y, learning_rate, diag_reg, diag_reg_absolute_scale, normalize_by_size)
    k_td = None if xte is None else net.kernels(xte, xtr, n_threads=n_threads)
    g_td = None if k_td is None else getattr(k_td, kernel)
    # The ensemble's mean is the flow's prediction from f0 = 0 (the networks' mean at init).
    prediction = flow.predict(times, k_test_train=g_td)
    mean = prediction.train if prediction.test is None else prediction.test
    if not cov_wanted:
        return Gaussian(mean, None)

    test = None
    if xte is not None and k_td is not None and g_td is not None:
        test = (g_td, k_td.nngp, net.nngp(xte, n_threads=n_threads))
    return Gaussian(mean, _ensemble_covariance(flow, kernel, times, k_dd.nngp, test))


def _ensemble_covariance(flow: GradientFlow, kernel: str, times: np.ndarray, nngp_dd: np.ndarray, test) -> np.ndarray:
    """The ensemble's output covariance, shape T + (M, M), on the training points (``test``
    None) or on test points with ``test = (G(X*, X), K(X*, X), K(X*, X*))``."""
    m = flow.n_train if test is None else test[0].shape[0]
    cov = np.empty((*times.shape, m, m))
    inverse = None
    for index in np.ndindex(times.shape):
        ti = float(times[index])
        if test is None:
            if math.isinf(ti):
                cov[index] = 0.0
                continue
            spec = flow._eig()
            vecs, decay = spec.vectors, spec.decay(ti)
            if kernel == "nngp":
                cov[index] = (vecs * (spec.values * decay**2)) @ vecs.T
            else:
                e = (vecs * decay) @ vecs.T
                cov[index] = e @ nngp_dd @ e
            continue
        g_td, k_td, nngp_tt = test
        if math.isinf(ti):
            if inverse is None:  # G^-1 [G*^T, K*^T] from the flow's factor
                inverse = flow._solve(np.hstack([g_td.T, k_td.T]))
            a_gt, a_kt = inverse[:, :m], inverse[:, m:]
            if kernel == "nngp":
                cov[index] = nngp_tt - g_td @ a_kt
            else:
                cross = g_td @ a_kt
                cov[index] = nngp_tt - cross - cross.T + a_gt.T @ nngp_dd @ a_gt
            continue
        spec = flow._eig()
        gv = g_td @ spec.vectors  # (M, N)
        if kernel == "nngp":
            cov[index] = nngp_tt - (gv * spec.integral(2.0 * ti)) @ gv.T
        else:
            term = spec.vectors @ (spec.integral(ti)[:, None] * gv.T)  # A G*^T, (N, M)
            cross = k_td @ term  # K* A G*^T, (M, M)
            cov[index] = nngp_tt - cross - cross.T + term.T @ nngp_dd @ term
    return cov


# --- loss curve and bound ------------------------------------------------------------------


def _residual(r0, n: int) -> np.ndarray:
    return targets(r0, "r0", n).reshape(n, -1)


def loss_curve(K, r0, t, learning_rate: float = 1.0) -> np.ndarray:
    """Exact squared train residual ``||r_t||^2 = sum_i exp(-2 eta lambda_i t) (v_i . r0)^2``.

    Parameters
    ----------
    K : array_like (N, N), symmetric PSD (the training kernel)
    r0 : array_like (N,) or (N, k): initial residual f_0(X) - Y
    t : float >= 0 or array_like of shape T
    learning_rate : float > 0

    Returns
    -------
    ndarray of shape T: ``||r_t||^2`` (twice the loss), from the full spectrum (LAPACK).
    """
    k = _kernel(K, "K")
    r = _residual(r0, k.shape[0])
    times = _times(t)
    eta = real(learning_rate, "learning_rate", minimum=0.0, strict=True)
    spec = _Spectrum(k, eta, "K")
    weights = np.sum((spec.vectors.T @ r) ** 2, axis=1)  # (N,)
    out = np.empty(times.shape)
    for index in np.ndindex(times.shape):
        out[index] = float(np.sum(spec.decay(float(times[index])) ** 2 * weights))
    return out


def loss_bound(K, r0, t, learning_rate: float = 1.0, seed_form: bool = False) -> np.ndarray:
    """Upper bound ``exp(-2 eta lambda_min t) ||r0||^2`` on :func:`loss_curve`.

    ``seed_form=True`` gives the looser ``exp(-eta lambda_min t) ||r0||^2`` of the seed text.
    lambda_min comes from :func:`ntkcore.lambda_min` (Cholesky + Lanczos), clipped at 0 when it
    is negative by rounding only; ValueError when ``K`` is not PSD.  Arguments and result shape
    as :func:`loss_curve`.
    """
    k = _kernel(K, "K")
    r = _residual(r0, k.shape[0])
    times = _times(t)
    eta = real(learning_rate, "learning_rate", minimum=0.0, strict=True)
    seed = flag(seed_form, "seed_form")
    lam = lambda_min(k)
    if lam < -_rounding(np.diagonal(k)):
        raise ValueError(
            f"K must be positive semidefinite (a kernel matrix), but its smallest eigenvalue is {lam:.3g}: "
            "the loss grows along its eigenvector and no decaying bound holds"
        )
    lam = max(lam, 0.0)
    rate = eta * lam * (1.0 if seed else 2.0)
    with np.errstate(invalid="ignore"):
        decay = np.where(np.isinf(times), 0.0 if rate > 0 else 1.0, np.exp(-rate * np.where(np.isinf(times), 0, times)))
    return decay * float(np.sum(r * r))


def max_learning_rate(K, x=None, *, kernel: str = "ntk") -> float:
    """``2 / lambda_max``: discrete gradient descent diverges for larger learning rates.

    ``K`` (N, N), or ``(net, x)`` with ``kernel`` for the matrix-free largest eigenvalue.
    Without normalization by the target size (multiply by ``y.size`` for neural-tangents'
    time convention).  ValueError when ``K`` is zero (every learning rate is stable) or has a
    negative diagonal entry (it is not PSD).
    """
    if not isinstance(K, (FullyConnected, Serial)):
        K = _kernel(K, "K")
    top = lambda_max(K, x, kernel=kernel)
    if top <= 0:
        raise ValueError("K has no positive eigenvalue (it is zero): every learning rate is stable")
    return 2.0 / top

"""Hyperparameter gradients and the Gaussian-process marginal likelihood (W_std, b_std, noise).

The derivatives are exact: forward-mode differentiation of the kernel recursion in the core
(``cpp/include/ntkcore/hyper_gradients.hpp``), in the same tiled pass as the kernel values.
W_std and b_std scale every dense layer together; derivatives are with respect to their
logarithms.

>>> import numpy as np, ntkcore
>>> rng = np.random.default_rng(0)
>>> x, y = rng.standard_normal((20, 3)), rng.standard_normal(20)
>>> net = ntkcore.FullyConnected(2, "relu", W_std=1.5, b_std=0.1)
>>> value, gradient = ntkcore.hyper_gradients(net, x, kernel="nngp")
>>> gradient.shape
(20, 20, 2)
>>> lml, dlml = ntkcore.log_marginal_likelihood(net, x, y, noise=0.1, eval_gradient=True)
>>> dlml.shape
(3,)
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import numpy as np

from ._native import core as _core
from ._validation import as_points, check_n_threads, choice, integer, real, targets
from .network import FullyConnected

__all__ = ["HyperparameterFit", "fit_hyperparameters", "hyper_gradients", "log_marginal_likelihood"]

# Activation families with exact derivatives in the core (each family's own Tangent there).
_DIFFERENTIABLE = tuple(name for name, info in _core.activation_families().items() if info["hyper_gradients"])
_NAMES = ("W_std", "b_std", "noise")


def _check_network(net) -> FullyConnected:
    if not isinstance(net, FullyConnected):
        raise TypeError(f"net must be an ntkcore.FullyConnected, got {type(net).__name__}")
    if net.parameterization != "ntk":
        raise NotImplementedError("hyperparameter gradients are implemented for the NTK parameterization only")
    if net.activation.family not in _DIFFERENTIABLE:
        raise NotImplementedError(
            f"exact hyperparameter gradients are implemented for the ReLU family (relu, leaky ReLU, abs, "
            f"identity), sign, erf, sin/cos and rectified monomials; not for {net.activation!r}"
        )
    return net


def hyper_gradients(net, x1, x2=None, *, kernel: str = "ntk", n_threads: int | None = None):
    """A kernel and its exact derivatives with respect to log W_std and log b_std.

    Parameters
    ----------
    net : FullyConnected
        NTK parameterization; activation of the ReLU family, sign, erf, sin/cos or a
        rectified monomial (NotImplementedError otherwise: gelu, Gauss-Hermite activations).
        Per-layer W_std (b_std) are scaled by one common factor, whose logarithm is the variable.
    x1 : array_like, shape (N1, d)
    x2 : array_like, shape (N2, d), optional
        ``None``: the symmetric Gram of ``x1``.
    kernel : "nngp" or "ntk"
    n_threads : int, optional

    Returns
    -------
    value : ndarray, shape (N1, N2)
        The kernel (float64), as ``net.kernels`` computes it.
    gradient : ndarray, shape (N1, N2, 2)
        ``d value / d log W_std`` and ``d value / d log b_std`` (zero when b_std = 0).
    """
    _check_network(net)
    kernel = choice(kernel, "kernel", ("nngp", "ntk"))
    dtype = np.dtype(np.float64)
    a = as_points(x1, "x1", dtype)
    b = None if x2 is None else as_points(x2, "x2", dtype, features=a.shape[1])
    return _core.hyper_gram(net._core_network(), kernel, a, b, check_n_threads(n_threads))


def log_marginal_likelihood(
    net,
    x,
    y,
    *,
    kernel: str = "nngp",
    noise: float = 1e-6,
    eval_gradient: bool = False,
    n_threads: int | None = None,
):
    """Log evidence of targets ``y`` under the GP prior of the network's kernel plus noise.

    ``log p(y) = -y^T C^-1 y / 2 - log det C / 2 - N log(2 pi) / 2`` with ``C = G + noise I``,
    G the NNGP kernel (the prior of the infinitely wide network's output) or the NTK, summed
    over the k columns of ``y`` (independent outputs sharing the kernel).  One Cholesky
    factorization; the gradient ``tr((alpha alpha^T - C^-1) dC) / 2`` (``alpha = C^-1 y``) uses
    the exact kernel derivatives of :func:`hyper_gradients`.

    Parameters
    ----------
    net : FullyConnected (as :func:`hyper_gradients` when eval_gradient)
    x : array_like, shape (N, d)
    y : array_like, shape (N,) or (N, k)
    kernel : "nngp" or "ntk"
    noise : float >= 0
        Observation-noise variance added to the diagonal (units of the kernel).
    eval_gradient : bool
        Also return the gradient with respect to (log W_std, log b_std, log noise).

    Returns
    -------
    float, or (float, ndarray of shape (3,)) with eval_gradient.  ValueError when C is not
    positive definite (duplicate points without noise).
    """
    kernel = choice(kernel, "kernel", ("nngp", "ntk"))
    noise = real(noise, "noise", minimum=0.0)
    if not isinstance(eval_gradient, (bool, np.bool_)):
        raise TypeError(f"eval_gradient must be True or False, got {eval_gradient!r}")
    if eval_gradient:
        gram, dgram = hyper_gradients(net, x, kernel=kernel, n_threads=n_threads)
    else:
        if not isinstance(net, FullyConnected):
            raise TypeError(f"net must be an ntkcore.FullyConnected, got {type(net).__name__}")
        gram = getattr(net.kernels(x, dtype=np.float64, n_threads=n_threads), kernel)
    n = gram.shape[0]
    outputs = targets(y, "y", n).reshape(n, -1)
    cov = gram + noise * np.eye(n)
    try:
        chol = np.linalg.cholesky(cov)
    except np.linalg.LinAlgError as exc:
        raise ValueError(
            "the kernel plus noise is not positive definite (e.g. duplicate points): increase noise"
        ) from exc
    alpha = _cho_solve(chol, outputs)
    k = outputs.shape[1]
    value = float(
        -0.5 * np.sum(outputs * alpha) - k * np.sum(np.log(np.diagonal(chol))) - 0.5 * n * k * math.log(2 * math.pi)
    )
    if not eval_gradient:
        return value
    inner = alpha @ alpha.T - k * _cho_solve(chol, np.eye(n))
    gradient = np.empty(3)
    gradient[:2] = 0.5 * np.einsum("ij,ijp->p", inner, dgram)
    gradient[2] = 0.5 * noise * np.trace(inner)
    return value, gradient


def _cho_solve(chol: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    try:
        from scipy.linalg import cho_solve
    except ImportError:  # numpy only: two general solves with the triangular factors
        return np.linalg.solve(chol.T, np.linalg.solve(chol, rhs))
    return cho_solve((chol, True), rhs, check_finite=False)


class HyperparameterFit(NamedTuple):
    """Result of :func:`fit_hyperparameters`: the tuned network and noise, and the optimum."""

    network: FullyConnected
    noise: float
    log_marginal_likelihood: float
    n_iterations: int


def fit_hyperparameters(
    net,
    x,
    y,
    *,
    kernel: str = "nngp",
    noise: float = 1e-2,
    tune=_NAMES,
    bounds=None,
    max_iter: int = 200,
    n_threads: int | None = None,
) -> HyperparameterFit:
    """Maximize :func:`log_marginal_likelihood` over W_std, b_std and the noise (L-BFGS-B).

    The variables are the logarithms of the tuned values, with the exact gradient; needs
    scipy (ImportError otherwise).

    Parameters
    ----------
    net : FullyConnected
        The starting point; W_std and b_std must be shared by all layers.  A value of 0 cannot
        move in log space: leave it out of ``tune`` (or start above 0).
    x, y, kernel : as :func:`log_marginal_likelihood`
    noise : float > 0 (if tuned) or >= 0
        Starting noise variance.
    tune : iterable of "W_std", "b_std", "noise"
        The hyperparameters to optimize; the others stay fixed.
    bounds : dict name -> (low, high), optional
        Bounds of the tuned values (not logarithms); defaults W_std (1e-2, 1e2),
        b_std (1e-4, 1e2), noise (1e-8, 1e2).
    max_iter : int >= 1

    Returns
    -------
    HyperparameterFit
    """
    try:
        from scipy.optimize import minimize
    except ImportError as exc:
        raise ImportError("fit_hyperparameters needs scipy (pip install scipy)") from exc
    _check_network(net)
    if len(set(net.W_std)) != 1 or len(set(net.b_std)) != 1:
        raise ValueError("fit_hyperparameters needs W_std and b_std shared by every layer (scalars)")
    tune = tuple(tune)
    unknown = [t for t in tune if t not in _NAMES]
    if unknown or not tune or len(set(tune)) != len(tune):
        raise ValueError(f"tune must name distinct hyperparameters among {_NAMES}, got {tune!r}")
    max_iter = integer(max_iter, "max_iter", minimum=1)
    limits = {"W_std": (1e-2, 1e2), "b_std": (1e-4, 1e2), "noise": (1e-8, 1e2)}
    if bounds is not None:
        if not isinstance(bounds, dict) or any(k not in _NAMES for k in bounds):
            raise ValueError(f"bounds must be a dict with keys among {_NAMES}, got {bounds!r}")
        for name, pair in bounds.items():
            low, high = (real(v, f"bounds[{name!r}]", minimum=0.0, strict=True) for v in pair)
            if not low < high:
                raise ValueError(f"bounds[{name!r}] must be (low, high) with low < high, got {pair!r}")
            limits[name] = (low, high)
    start = {"W_std": net.W_std[0], "b_std": net.b_std[0], "noise": real(noise, "noise", minimum=0.0)}
    for name in tune:
        if start[name] <= 0:
            raise ValueError(f"{name} = 0 cannot be tuned in log space: start from {name} > 0 or leave it out of tune")
    index = [_NAMES.index(name) for name in tune]

    def values(logs):
        current = dict(start)
        current.update({name: float(np.exp(v)) for name, v in zip(tune, logs)})
        return current

    def objective(logs):
        current = values(logs)
        trial = dataclasses.replace(net, W_std=current["W_std"], b_std=current["b_std"])
        lml, grad = log_marginal_likelihood(
            trial, x, y, kernel=kernel, noise=current["noise"], eval_gradient=True, n_threads=n_threads
        )
        return -lml, -grad[index]

    result = minimize(
        objective,
        np.log([start[name] for name in tune]),
        jac=True,
        method="L-BFGS-B",
        bounds=[tuple(np.log(limits[name])) for name in tune],
        options={"maxiter": max_iter},
    )
    best = values(result.x)
    return HyperparameterFit(
        dataclasses.replace(net, W_std=best["W_std"], b_std=best["b_std"]),
        best["noise"],
        float(-result.fun),
        int(result.nit),
    )

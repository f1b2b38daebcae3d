"""Pure-numpy reference recursion: the project's test oracle (docs/math/2-recursion.md and 3-dual-maps.md).

Plain float64 formulas, one line per formula of the specification, written to be
read and checked against docs/math/ rather than to be fast or maximally accurate.
In particular ``s = sqrt(max(q1 q2 - c^2, 0))`` is computed by subtraction, so
nearly collinear pairs (duplicate, rescaled or negated points) lose about half
their digits in the NTK (docs/math/3a-collinearity.md): the C++ core fixes that, this module
deliberately does not.  The diagonal of a symmetric Gram is exact, since it is
computed from the per-point variances with :func:`dual_diagonal`.

Measured against a 50-digit evaluation (``tests/mp_reference.py``): generic pairs
~1e-15 relative; (anti)collinear pairs whose ``q1 q2 - c^2`` rounds to a few ulps
instead of 0: NNGP ~1e-15, NTK of the ABReLU family up to ~2e-8.  Sign is much
worse there, because ``T = 1 - 2 theta/pi`` has infinite slope at ``rho = 1``:
a 1e-8 error in theta grows like a square root per layer, ~1e-2 at depth 3.
Erf loses ~``eps * q`` to the subtraction in ``A1 A2 - 4 c^2`` (1e-15 for q ~ 1).
RectifiedMonomial behaves like the ABReLU family (its step, n = 0, like Sign); Sin, Cos
and Gelu are smooth in the covariance and lose only ~eps there, but Sin's plain
``1 - cos(2 c0) e^{-2 q}`` loses relative accuracy for tiny variances.

Notation (docs/math/3-dual-maps.md): ``P = q1 q2``, ``s = sqrt(max(P - c^2, 0))``,
``theta = atan2(s, c)`` in [0, pi], and ``theta = pi/2`` when ``s = c = 0``
(zero-variance inputs are treated as orthogonal).

Activations without a closed form (``ntkcore.activations.Numerical``) use the literal
two-dimensional Gauss-Hermite rule of docs/math/4-gauss-hermite.md (``deg`` nodes per axis, default 100,
at most 350), one entry at a time: exact only as far as that rule converges.

Public functions
----------------
dual(activation, q1, q2, c) -> (T, Tdot)
dual_diagonal(activation, q) -> (T, Tdot)
kernels(net, x1, x2=None) -> Kernels        (N1, N2) Gram matrices
diagonal(net, x) -> Kernels                 (N,) per-point values

Inputs are checked as the core checks them (``TypeError`` for a wrong kind, ``ValueError``
for a wrong shape, NaN/inf, negative variances or ``c^2 > q1 q2``).
"""

from __future__ import annotations

import functools
import math

import numpy as np

from . import activations as _activations
from ._validation import as_points
from .network import FullyConnected, Kernels

__all__ = ["diagonal", "dual", "dual_diagonal", "kernels"]


def _covariance(**entries):
    """The named covariance entries as broadcast float64 arrays, checked: finite,
    variances (``q*``) >= 0 and ``c^2 <= q1 q2`` up to rounding."""
    arrays = {}
    for name, value in entries.items():
        try:
            arr = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{name} must be real numbers, got {value!r}") from exc
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} must be finite, got {value!r}")
        if name.startswith("q") and np.any(arr < 0):
            raise ValueError(f"{name} is a variance and must be >= 0, got {value!r}")
        arrays[name] = arr
    try:
        arrays = dict(zip(arrays, np.broadcast_arrays(*arrays.values())))
    except ValueError as exc:
        raise ValueError(f"{', '.join(arrays)} must broadcast to a common shape: {exc}") from exc
    if "c" in arrays:
        q1, q2, c = arrays["q1"], arrays["q2"], arrays["c"]
        if np.any(c * c > q1 * q2 * (1 + 1e-12)):
            raise ValueError("c must satisfy c^2 <= q1 q2 (a covariance matrix is positive semidefinite)")
    return tuple(arrays.values())


def _angle(q1, q2, c):
    """``s`` and ``theta`` of docs/math/3-dual-maps.md, plain formulas (inexact near collinearity)."""
    s = np.sqrt(np.maximum(q1 * q2 - c * c, 0.0))
    theta = np.arctan2(s, c)
    theta = np.where((s == 0) & (c == 0), np.pi / 2, theta)  # zero variance: orthogonal
    return s, theta


def dual(activation, q1, q2, c):
    """Dual maps ``T = E[phi(u) phi(v)]``, ``Tdot = E[phi'(u) phi'(v)]`` (docs/math/3-dual-maps.md).

    ``(u, v) ~ N(0, [[q1, c], [c, q2]])``; ``phi'`` is the almost-everywhere
    derivative (zero for Sign).

    Parameters
    ----------
    activation : ntkcore.activations.Activation or name
    q1, q2, c : array_like, broadcastable to a common shape S
        Variances ``q1, q2 >= 0`` and covariance ``c`` with ``c^2 <= q1 q2``.

    Returns
    -------
    T, Tdot : float64 ndarrays of shape S.
    """
    act = _activations.get(activation)
    q1, q2, c = _covariance(q1=q1, q2=q2, c=c)
    a, b, c0 = act.core_params
    if act.family == "ab_relu":
        m = (a * a + b * b) / 2
        f = (a - b) ** 2 / (2 * np.pi)
        s, theta = _angle(q1, q2, c)
        T = f * s + (m - f * theta) * c
        Tdot = m - f * theta
    elif act.family == "sign":
        s, theta = _angle(q1, q2, c)
        T = 1 - 2 * theta / np.pi
        Tdot = np.zeros_like(T)
    elif act.family == "erf":
        q1, q2, c = b * b * q1, b * b * q2, b * b * c  # erf(b x): scale the covariance
        A1 = 1 + 2 * q1
        A2 = 1 + 2 * q2
        D = np.sqrt(A1 * A2 - 4 * c * c)
        T = a * a * (2 / np.pi) * np.arctan2(2 * c, D) + c0 * c0
        Tdot = a * a * b * b * (4 / np.pi) / D
    elif act.family == "sin":
        q1, q2, c = b * b * q1, b * b * q2, b * b * c  # sin(b x + c0): scale the covariance
        k = np.cos(2 * c0)
        T = a * a / 2 * (np.exp(c - (q1 + q2) / 2) - np.exp(-c - (q1 + q2) / 2) * k)
        Tdot = a * a * b * b / 2 * (np.exp(c - (q1 + q2) / 2) + np.exp(-c - (q1 + q2) / 2) * k)
    elif act.family == "gelu":
        P = q1 * q2
        P1 = (q1 + 1) * (q2 + 1)
        D = np.sqrt(P1 - c * c)
        g = np.arctan2(c, D)
        T = c / 4 + ((c * c + P * D * D) / (P1 * D) + c * g) / (2 * np.pi)
        Tdot = 1 / 4 + g / (2 * np.pi) + c / (2 * np.pi * D) * (1 / D**2 + (1 - P) / P1 + 1)
    elif act.family == "rectified_monomial":
        n = int(a)
        s, theta = _angle(q1, q2, c)
        J = _arc_cosine_J(n, theta)
        R = np.sqrt(q1 * q2)
        T = R**n * J[n] / (2 * np.pi)
        T = np.where(R > 0, T, 0.0) if n == 0 else T  # the step of a zero-variance input is 0
        Tdot = n * n * R ** (n - 1) * J[n - 1] / (2 * np.pi) if n > 0 else np.zeros_like(T)
    elif act.family == "numerical":
        T, Tdot = _gauss_hermite(act, q1, q2, c)
    else:
        raise NotImplementedError(f"no closed form for activation family {act.family!r}")
    T, Tdot = np.broadcast_arrays(T, Tdot)
    return np.array(T, dtype=np.float64), np.array(Tdot, dtype=np.float64)


def _arc_cosine_J(n, theta):
    """Cho & Saul's J_0 .. J_n at ``theta`` by their recurrence (docs/math/3-dual-maps.md)."""
    J = [np.pi - theta, np.sin(theta) + (np.pi - theta) * np.cos(theta)]
    for k in range(2, n + 1):
        J.append((2 * k - 1) * np.cos(theta) * J[k - 1] + (k - 1) ** 2 * np.sin(theta) ** 2 * J[k - 2])
    return J


def _double_factorial_odd(n):
    """(2n - 1)!! = 1 * 3 * ... * (2n - 1); 1 for n = 0."""
    return float(np.prod(np.arange(1, 2 * n, 2))) if n > 0 else 1.0


_erf = np.frompyfunc(math.erf, 1, 1)


def _sigmoid(x):
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


_SELU = (1.0507009873554804934193349852946, 1.6732632423543772848170429916717)

# phi and phi' of the built-ins in plain numpy.
_BUILTINS = {
    "tanh": (np.tanh, lambda x: 1 - np.tanh(x) ** 2),
    "sigmoid": (_sigmoid, lambda x: _sigmoid(x) * _sigmoid(-x)),
    "softplus": (lambda x: np.logaddexp(0, x), _sigmoid),
    "gelu": (
        lambda x: x * (1 + _erf(x / np.sqrt(2)).astype(float)) / 2,
        lambda x: (1 + _erf(x / np.sqrt(2)).astype(float)) / 2 + x * np.exp(-x * x / 2) / np.sqrt(2 * np.pi),
    ),
    "silu": (lambda x: x * _sigmoid(x), lambda x: _sigmoid(x) * (1 + x * _sigmoid(-x))),
    "elu": (
        lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, 0))),
        lambda x: np.where(x > 0, 1.0, np.exp(np.minimum(x, 0))),
    ),
    "selu": (
        lambda x: _SELU[0] * np.where(x > 0, x, _SELU[1] * np.expm1(np.minimum(x, 0))),
        lambda x: _SELU[0] * np.where(x >= 0, 1.0, _SELU[1] * np.exp(np.minimum(x, 0))),
    ),
    "mish": (
        lambda x: x * np.tanh(np.logaddexp(0, x)),
        lambda x: np.tanh(np.logaddexp(0, x)) + x * (1 - np.tanh(np.logaddexp(0, x)) ** 2) * _sigmoid(x),
    ),
    "sin": (np.sin, np.cos),
    "cos": (np.cos, lambda x: -np.sin(x)),
    "erf": (lambda x: np.asarray(_erf(x), dtype=float), lambda x: 2 / np.sqrt(np.pi) * np.exp(-x * x)),
}


def _gauss_hermite(act, q1, q2, c, default_degree=100):
    """docs/math/4-gauss-hermite.md literally: the 2-D Gauss-Hermite rule of ``act.deg`` (default 100) nodes per axis.

    Without ``phi'`` (a callable ``fn`` and no ``dfn``) phi' is a central difference of ``fn``
    (step 1e-5: ~1e-10 relative).  Loops over entries, deg^2 evaluations each.
    """
    if act.builtin:
        phi, dphi = _BUILTINS[act.fn]
    elif act.dfn is not None:
        phi, dphi = act.fn, act.dfn
    else:
        phi = act.fn
        dphi = lambda x: (np.asarray(phi(x + 1e-5), float) - np.asarray(phi(x - 1e-5), float)) / 2e-5  # noqa: E731
    degree = act.deg or default_degree
    if degree > 350:
        raise ValueError(f"the reference rule needs deg <= 350 (numpy's hermgauss overflows beyond), got {degree}")
    nodes, weights = np.polynomial.hermite.hermgauss(degree)
    xi, xj = nodes[:, None], nodes[None, :]
    w = weights[:, None] * weights[None, :] / np.pi
    q1, q2, c = np.broadcast_arrays(q1, q2, c)
    T = np.empty(q1.shape)
    Tdot = np.empty(q1.shape)
    for idx in np.ndindex(q1.shape):
        a, b, cc = q1[idx], q2[idx], c[idx]
        u = (np.sqrt(2 * a) * xi + 0 * xj).ravel()
        if a > 0:
            v = (cc * np.sqrt(2 / a) * xi + np.sqrt(2 * max(b - cc * cc / a, 0.0)) * xj).ravel()
        else:
            v = (0 * xi + np.sqrt(2 * b) * xj).ravel()
        f = lambda g, z: np.asarray(g(z), dtype=float).reshape(w.shape)  # noqa: E731
        T[idx] = np.sum(w * f(phi, u) * f(phi, v))
        Tdot[idx] = np.sum(w * f(dphi, u) * f(dphi, v))
    return T, Tdot


def dual_diagonal(activation, q):
    """``T`` and ``Tdot`` at ``q1 = q2 = c = q`` from the diagonal formulas of docs/math/3-dual-maps.md.

    Parameters
    ----------
    activation : ntkcore.activations.Activation or name
    q : array_like of shape S, variances >= 0.

    Returns
    -------
    T, Tdot : float64 ndarrays of shape S.

    At ``q = 0`` the zero-variance convention of :func:`dual` (theta = pi/2)
    applies: Sign gives ``T = 0``; the ABReLU family gives
    ``Tdot = (a + b)^2 / 4`` (= m - f pi/2, i.e. phi'(0) = (a + b)/2, the
    mean of the two slopes).  In the recursion Tdot at q = 0 only ever
    multiplies an NTK value that is itself 0.
    """
    act = _activations.get(activation)
    (q,) = _covariance(q=q)
    a, b, c0 = act.core_params
    if act.family == "ab_relu":
        m = (a * a + b * b) / 2
        T = m * q
        Tdot = np.where(q > 0, m, (a + b) ** 2 / 4)
    elif act.family == "sign":
        T = np.where(q > 0, 1.0, 0.0)
        Tdot = np.zeros_like(q)
    elif act.family == "erf":
        q = b * b * q
        T = a * a * (2 / np.pi) * np.arcsin(2 * q / (1 + 2 * q)) + c0 * c0
        Tdot = a * a * b * b * (4 / np.pi) / np.sqrt(1 + 4 * q)  # (1+2q)^2 - 4q^2 = 1 + 4q
    elif act.family == "sin":
        q = b * b * q
        T = a * a / 2 * (1 - np.cos(2 * c0) * np.exp(-2 * q))
        Tdot = a * a * b * b / 2 * (1 + np.cos(2 * c0) * np.exp(-2 * q))
    elif act.family == "gelu":
        D = np.sqrt(1 + 2 * q)  # (q+1)^2 - q^2
        g = np.arctan2(q, D)
        T = q / 4 + ((q * q + q * q * D * D) / ((q + 1) ** 2 * D) + q * g) / (2 * np.pi)
        Tdot = 1 / 4 + g / (2 * np.pi) + q / (2 * np.pi * D) * (1 / D**2 + (1 - q * q) / (q + 1) ** 2 + 1)
    elif act.family == "rectified_monomial":
        n = int(a)
        T = _double_factorial_odd(n) * q**n / 2 if n > 0 else np.where(q > 0, 0.5, 0.0)
        if n == 0:
            Tdot = np.zeros_like(q)
        elif n == 1:
            Tdot = np.where(q > 0, 0.5, 0.25)  # zero variance: orthogonal (theta = pi/2)
        else:
            Tdot = n * n * _double_factorial_odd(n - 1) * q ** (n - 1) / 2
    elif act.family == "numerical":
        return dual(act, q, q, q)
    else:
        raise NotImplementedError(f"no closed form for activation family {act.family!r}")
    T, Tdot = np.broadcast_arrays(T, Tdot)
    return np.array(T, dtype=np.float64), np.array(Tdot, dtype=np.float64)


def _fan_in(net, dim):
    """n_in of each dense layer in the standard parameterization (input dim, then the
    hidden widths); None in the NTK parameterization."""
    return None if net.parameterization == "ntk" else (dim, *tuple(net.widths))


def _network(net):
    if not isinstance(net, FullyConnected):
        raise TypeError(f"net must be an ntkcore.FullyConnected network, got {type(net).__name__}")
    return net


def kernels(net, x1, x2=None):
    """NNGP and NTK Gram matrices of ``net`` by the recursion of docs/math/2-recursion.md.

    Parameters
    ----------
    net : ntkcore.FullyConnected
        Uses ``net.depth``, ``net.activation``, the per-layer tuples
        ``net.W_std``, ``net.b_std`` (``depth + 1`` entries each) and, in the standard
        parameterization, ``net.widths``.
    x1 : array_like, shape (N1, d)
    x2 : array_like, shape (N2, d), optional
        ``None`` means ``x1``; the diagonal is then computed from the per-point
        variances (:func:`dual_diagonal`), as :func:`diagonal` does.

    Returns
    -------
    Kernels
        ``nngp`` (K) and ``ntk`` (Theta), float64 arrays of shape (N1, N2).
    """
    net = _network(net)
    symmetric = x2 is None
    x1 = as_points(x1, "x1", np.dtype(np.float64))
    x2 = x1 if symmetric else as_points(x2, "x2", np.dtype(np.float64), features=x1.shape[1])
    d = x1.shape[1]
    act = net.activation
    # input: Sigma = x.x'/d (per-point variances q1, q2; covariances c), Theta = 0
    q1 = np.sum(x1 * x1, axis=1) / d
    q2 = np.sum(x2 * x2, axis=1) / d
    c = x1 @ x2.T / d
    if symmetric:
        np.fill_diagonal(c, q1)
    theta = np.zeros_like(c)
    fan_in = _fan_in(net, d)
    for layer in range(net.depth + 1):
        w2 = net.W_std[layer] ** 2
        b2 = net.b_std[layer] ** 2
        if fan_in is not None:
            # Dense (std): Theta <- n_in Sigma_old + sigma_w^2 Theta + [b_std > 0]
            theta = fan_in[layer] * c + w2 * theta + (1.0 if b2 > 0 else 0.0)
        # Dense: Sigma <- sigma_w^2 Sigma + sigma_b^2 ; (ntk) Theta <- Sigma_new + sigma_w^2 Theta
        q1 = w2 * q1 + b2
        q2 = w2 * q2 + b2
        c = w2 * c + b2
        if fan_in is None:
            theta = c + w2 * theta
        if layer == net.depth:
            break
        # phi: Sigma <- T(Sigma) ; Theta <- Tdot(Sigma_old) * Theta
        T, Tdot = dual(act, q1[:, None], q2[None, :], c)
        if symmetric:
            T_diag, Tdot_diag = dual_diagonal(act, q1)
            np.fill_diagonal(T, T_diag)
            np.fill_diagonal(Tdot, Tdot_diag)
        theta = Tdot * theta
        c = T
        q1 = dual_diagonal(act, q1)[0]
        q2 = dual_diagonal(act, q2)[0]
    return Kernels(c, theta)


def diagonal(net, x):
    """``K(x_i, x_i)`` and ``Theta(x_i, x_i)`` per row, from the per-point variances.

    Parameters
    ----------
    net : ntkcore.FullyConnected
    x : array_like, shape (N, d)

    Returns
    -------
    Kernels
        ``nngp`` and ``ntk``, float64 arrays of shape (N,).
    """
    net = _network(net)
    x = as_points(x, "x", np.dtype(np.float64))
    act = net.activation
    q = np.sum(x * x, axis=1) / x.shape[1]
    theta = np.zeros_like(q)
    fan_in = _fan_in(net, x.shape[1])
    for layer in range(net.depth + 1):
        w2 = net.W_std[layer] ** 2
        b2 = net.b_std[layer] ** 2
        if fan_in is not None:
            theta = fan_in[layer] * q + w2 * theta + (1.0 if b2 > 0 else 0.0)
        q = w2 * q + b2
        if fan_in is None:
            theta = q + w2 * theta
        if layer == net.depth:
            break
        T, Tdot = dual_diagonal(act, q)
        theta = Tdot * theta
        q = T
    return Kernels(q, theta)


# --------------------------------------------------------------------------- layer lists


def _inputs(x, name):
    """Channels-last inputs (N, *spatial, C) as float64; integer arrays convert exactly."""
    arr = np.asarray(x)
    if arr.dtype.kind not in "fiu":
        raise TypeError(f"{name} must hold real numbers (float or integer), got dtype {arr.dtype}")
    if arr.ndim < 2 or arr.size == 0:
        raise ValueError(f"{name} must have shape (N, *spatial, C) with N, C >= 1, got shape {arr.shape}")
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite")
    return arr


def _window_index(size, window, stride, padding, layer):
    """Input position of tap t for output o, shape (out, window); ``size`` marks a zero pad.

    docs/math/7-convolutions.md: VALID shrinks the grid; SAME (XLA) has out = ceil(size / stride) and
    pad_before = floor(max((out - 1) stride + window - size, 0) / 2); CIRCULAR wraps.
    """
    if padding == "VALID":
        if size < window:
            raise ValueError(f"{layer!r}: an axis of {size} positions is smaller than the window {window} (VALID)")
        out, before = (size - window) // stride + 1, 0
    else:
        out = -(-size // stride)
        before = max((out - 1) * stride + window - size, 0) // 2
    index = np.arange(out)[:, None] * stride - before + np.arange(window)[None, :]
    if padding == "CIRCULAR":
        return index % size
    return np.where((index >= 0) & (index < size), index, size)


def _take(a, index, axis):
    """``a`` at positions ``index`` along ``axis``, where index == size reads 0."""
    pad = [(0, 0)] * a.ndim
    pad[axis] = (0, 1)
    return np.take(np.pad(a, pad), index, axis=axis)


def _conv_average(S, layer, k):
    """(1/|F|) sum_delta S[p + delta, p' + delta], one axis at a time (the same tap on both)."""
    batch = S.ndim - 2 * k
    for i, (f, s) in enumerate(zip(layer.filter_shape, layer.strides)):
        a, b = batch + i, batch + k + i
        ia = _window_index(S.shape[a], f, s, layer.padding, layer)
        ib = _window_index(S.shape[b], f, s, layer.padding, layer)
        S = sum(_take(_take(S, ia[:, t], a), ib[:, t], b) for t in range(f)) / f
    return S


def _pool_average(S, layer, k):
    """mean over a, b in the window of S[s p + a, s p' + b] (independent offsets)."""
    batch = S.ndim - 2 * k
    for i, (w, s) in enumerate(zip(layer.window_shape, layer.strides)):
        for axis in (batch + i, batch + k + i):
            index = _window_index(S.shape[axis], w, s, layer.padding, layer)
            S = sum(_take(S, index[:, t], axis) for t in range(w)) / w
    return S


def _spatial_diagonal(S, k):
    """S[..., p, p] over the flattened positions, shape (*batch, P)."""
    batch = S.shape[: S.ndim - 2 * k]
    P = int(np.prod(S.shape[S.ndim - k :], dtype=int))
    return np.diagonal(S.reshape((*batch, P, P)), axis1=-2, axis2=-1)


def _activate(act, S, Theta, q1, q2, exact):
    """Sigma <- T, Theta <- Tdot Theta entrywise; where ``exact``, from the variances alone."""
    T, Tdot = dual(act, q1, q2, S)
    if exact is not None:
        T_d, Tdot_d = dual_diagonal(act, np.broadcast_to(q1, S.shape))
        T, Tdot = np.where(exact, T_d, T), np.where(exact, Tdot_d, Tdot)
    return T, Tdot * Theta


def layer_kernels(layers, x1, x2=None):
    """NNGP and NTK Gram matrices of a network given as a list of layers (docs/math/7-convolutions.md).

    Carries, for every pair of inputs, Sigma[p, p'] and Theta[p, p'] over all pairs of
    positions (O(N1 N2 P^2) memory: for small problems), and for every input its own
    covariance, whose diagonal gives the variances q_p of the activations.

    Parameters
    ----------
    layers : sequence of ``ntkcore.layers`` values and activations (objects or names)
        Must end in a scalar state: a :class:`~ntkcore.layers.GlobalAvgPool` or
        :class:`~ntkcore.layers.Flatten` readout for spatial inputs.  Activations go through
        :func:`dual` entry by entry, Gauss-Hermite ones (``Numerical``) by its own 2-D rule
        of ``deg`` nodes per axis (default 100: give ``deg`` for tanh-like functions, whose
        rule converges slowly; deg^2 evaluations per position pair).
    x1 : array_like, shape ``(N1, *spatial, C)``
        Channels-last inputs: (N, H, W, C) images, (N, L, C) sequences or (N, d) vectors.
    x2 : array_like, shape ``(N2, *spatial2, C)``, optional
        ``None`` means ``x1`` (a symmetric Gram, its diagonal from the variances alone).

    Returns
    -------
    Kernels
        ``nngp`` and ``ntk``, float64 arrays of shape (N1, N2).
    """
    from . import layers as _layers

    symmetric = x2 is None
    x1 = _inputs(x1, "x1")
    x2 = x1 if symmetric else _inputs(x2, "x2")
    if x2.ndim != x1.ndim or x2.shape[-1] != x1.shape[-1]:
        raise ValueError(f"x2 must have x1's spatial rank and channels: x1 {x1.shape}, x2 {x2.shape}")
    k = x1.ndim - 2
    C = x1.shape[-1]
    n1, n2 = x1.shape[0], x2.shape[0]
    a = x1.reshape(n1, -1, C)
    b = x2.reshape(n2, -1, C)
    sp1, sp2 = x1.shape[1:-1], x2.shape[1:-1]
    # input: Sigma[p, p'] = sum_c x[p, c] x'[p', c] / C ; Theta = 0
    S = np.einsum("npc,mqc->nmpq", a, b).reshape((n1, n2, *sp1, *sp2)) / C
    self1 = np.einsum("npc,nqc->npq", a, a).reshape((n1, *sp1, *sp1)) / C
    self2 = np.einsum("npc,nqc->npq", b, b).reshape((n2, *sp2, *sp2)) / C
    Theta, theta1, theta2 = np.zeros_like(S), np.zeros_like(self1), np.zeros_like(self2)
    for layer in layers:
        if isinstance(layer, (_layers.Dense, _layers.Conv)):
            if isinstance(layer, _layers.Conv):
                if k == 0:
                    raise ValueError(f"{layer!r} needs spatial positions: inputs are (N, d) or a readout came before")
                if len(layer.filter_shape) != k:
                    raise ValueError(f"{layer!r}: filter_shape has {len(layer.filter_shape)} axes, inputs have {k}")
                conv = functools.partial(_conv_average, layer=layer, k=k)
            else:
                conv = lambda m: m  # noqa: E731
            w2, b2 = layer.W_std**2, layer.b_std**2
            # Sigma <- sigma_w^2 avg(Sigma) + sigma_b^2 ; Theta <- Sigma_new + sigma_w^2 avg(Theta)
            S, self1, self2 = (w2 * conv(m) + b2 for m in (S, self1, self2))
            Theta, theta1, theta2 = (s + w2 * conv(t) for s, t in ((S, Theta), (self1, theta1), (self2, theta2)))
        elif isinstance(layer, _layers.AvgPool):
            if k == 0 or len(layer.window_shape) != k:
                raise ValueError(f"{layer!r} needs inputs with {len(layer.window_shape)} spatial axes before a readout")
            S, self1, self2, Theta, theta1, theta2 = (
                _pool_average(m, layer, k) for m in (S, self1, self2, Theta, theta1, theta2)
            )
        elif isinstance(layer, (_layers.GlobalAvgPool, _layers.Flatten)):
            if k == 0:
                raise ValueError(f"{layer!r} needs spatial positions: inputs are (N, d) or a readout came before")
            if isinstance(layer, _layers.Flatten):
                if S.shape[2 : 2 + k] != S.shape[2 + k :]:
                    raise ValueError(
                        f"{layer!r} needs equal grids for x1 and x2, got {S.shape[2 : 2 + k]} and {S.shape[2 + k :]}"
                    )
                # K = mean_p Sigma[p, p]
                S, self1, self2, Theta, theta1, theta2 = (
                    _spatial_diagonal(m, k).mean(axis=-1) for m in (S, self1, self2, Theta, theta1, theta2)
                )
            else:  # K = mean_{p, p'} Sigma[p, p']
                S, self1, self2, Theta, theta1, theta2 = (
                    m.mean(axis=tuple(range(m.ndim - 2 * k, m.ndim))) for m in (S, self1, self2, Theta, theta1, theta2)
                )
            k = 0
        else:
            act = _activations.get(layer)
            q1, q2 = _spatial_diagonal(self1, k), _spatial_diagonal(self2, k)  # (N, P)
            one = (1,) * k
            q1_pair = q1.reshape((n1, 1, *self1.shape[1 : 1 + k], *one))
            q2_pair = q2.reshape((1, n2, *one, *self2.shape[1 : 1 + k]))
            eye1 = np.eye(q1.shape[1], dtype=bool).reshape(self1.shape[1:])
            eye2 = np.eye(q2.shape[1], dtype=bool).reshape(self2.shape[1:])
            pair_exact = (np.eye(n1, dtype=bool).reshape((n1, n1, *one, *one)) & eye1) if symmetric else None
            S_new, Theta = _activate(act, S, Theta, q1_pair, q2_pair, pair_exact)
            s1_new, theta1 = _activate(
                act,
                self1,
                theta1,
                q1.reshape((n1, *self1.shape[1 : 1 + k], *one)),
                q1.reshape((n1, *one, *self1.shape[1 : 1 + k])),
                eye1,
            )
            s2_new, theta2 = _activate(
                act,
                self2,
                theta2,
                q2.reshape((n2, *self2.shape[1 : 1 + k], *one)),
                q2.reshape((n2, *one, *self2.shape[1 : 1 + k])),
                eye2,
            )
            S, self1, self2 = S_new, s1_new, s2_new
    if k != 0:
        raise ValueError("layers must end in a scalar state: add a GlobalAvgPool() or Flatten() readout")
    return Kernels(S, Theta)

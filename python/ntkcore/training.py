"""Full-batch training of finite networks: one loop for every model.

Mathematics: docs/math/6-finite-width.md (losses, optimizers, the NTK change, the true-class
NTK and the classification loss bound).

>>> import numpy as np
>>> from ntkcore import finite, training
>>> net = finite.MLP([4, 64, 3], seed=0)
>>> x = np.random.default_rng(0).standard_normal((12, 4))
>>> labels = np.arange(12) % 3
>>> result = training.train(net, x, labels, 0.1, 20, loss="cross_entropy", optimizer="adam")
>>> result.loss.shape, result.accuracy.shape
((21,), (21,))

:func:`train` works on any model that offers, besides ``apply(x, *, dtype, n_threads)`` and
``ntk(x1, x2=None, *, output, dtype, n_threads)``, three private methods:

- ``_flat_parameters()``: the trainable parameters as a list of float64 arrays, which the
  loop only reads (it never changes them in place);
- ``_set_flat_parameters(arrays)``: replace them by a list of arrays of the same shapes;
- ``_vjp(x, cotangent, *, dtype, n_threads)``: the vector-Jacobian product ``J^T r``, i.e.
  the gradient with respect to the parameters of ``sum_{i,a} r_ia f_a(x_i)`` for a
  cotangent ``r`` of the outputs' shape (N, k), as a list of arrays shaped like the
  parameters.

:class:`ntkcore.finite.MLP` is one (its ``train`` calls :func:`train`).

Losses (summed over the points, no ``1/N``, as the squared loss of docs/math/5-gram-dynamics.md):

- ``"squared"``: ``L = 1/2 sum_i ||f(x_i) - y_i||^2``;
- ``"cross_entropy"``: ``L = -sum_i log softmax(f(x_i))_{y_i}`` with integer class labels
  ``y_i`` (or their one-hot rows).

Optimizers: ``"gd"``, ``theta <- theta - learning_rate * dL/dtheta``, and ``"adam"``
(Kingma and Ba 2015, with bias correction).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from ._validation import as_real_array, check_n_threads, choice, integer, real, resolve_dtype

__all__ = ["LOSSES", "OPTIMIZERS", "TrainResult", "cross_entropy_bound", "train", "true_class_ntk"]

LOSSES = ("squared", "cross_entropy")
OPTIMIZERS = ("gd", "adam")

# Largest N k for which a divergence message computes the eigenvalues of the full NTK.
_CHEAP_EIGVALS = 2000


class TrainResult(NamedTuple):
    """What :func:`train` records.

    Attributes
    ----------
    loss : ndarray, shape (steps + 1,)
        The loss before step ``t`` (the last entry: after training), float64.
    record_steps : ndarray of int, shape (R,)
        The steps at which the probe NTK was recorded (0, record_every, ..., steps).
    ntk_change : ndarray, shape (R,)
        The relative change ``||Theta_t - Theta_0||_F / ||Theta_0||_F`` (Frobenius norms,
        not squared) of the empirical NTK (``output="trace"``) on the probe set at those steps.
    ntk_initial, ntk_final : ndarray, shape (P, P)
        That NTK before and after training.
    accuracy : ndarray, shape (steps + 1,), or None
        For ``loss="cross_entropy"``: the fraction of training points whose largest output
        is their label, before step ``t`` (ties count as wrong unless the label is the first
        largest output, as ``numpy.argmax``); ``None`` for the squared loss.
    """

    loss: np.ndarray
    record_steps: np.ndarray
    ntk_change: np.ndarray
    ntk_initial: np.ndarray
    ntk_final: np.ndarray
    accuracy: np.ndarray | None = None


def _inputs(x, name, dtype):
    return as_real_array(x, name, dtype, (2, 3, 4, 5), "an array whose first axis indexes the points")


def _labels(y, n, k):
    """Integer class labels (N,) from labels or one-hot rows (N, k)."""
    arr = np.asarray(y) if not isinstance(y, (str, bytes)) else np.asarray(None)
    if arr.dtype.kind not in "fiu":
        raise TypeError(
            f"y must hold integer class labels of shape ({n},) or one-hot rows of shape ({n}, {k}) "
            f"for loss='cross_entropy', got dtype {arr.dtype}"
        )
    if arr.ndim == 1:
        if arr.dtype.kind == "f":
            raise TypeError(
                f"y of shape ({n},) must hold integer class labels for loss='cross_entropy', got dtype {arr.dtype}"
            )
        if arr.shape[0] != n:
            raise ValueError(f"y must have shape ({n},) (one label per point), got {arr.shape}")
        if arr.min() < 0 or arr.max() >= k:
            raise ValueError(f"y must hold class labels in [0, {k - 1}] (the network has {k} outputs)")
        return arr.astype(np.intp)
    if arr.ndim == 2:
        if arr.shape != (n, k):
            raise ValueError(f"one-hot y must have shape (N, k) = ({n}, {k}), got {arr.shape}")
        if not (np.isin(arr, (0, 1)).all() and (arr.sum(axis=1) == 1).all()):
            raise ValueError("one-hot y must have one 1 and k - 1 zeros in every row")
        return np.argmax(arr, axis=1).astype(np.intp)
    raise ValueError(f"y must have shape ({n},) (labels) or ({n}, {k}) (one-hot), got {arr.shape}")


def _squared_targets(y, n, k, dtype):
    arr = as_real_array(y, "y", dtype, (1, 2), f"of shape (N, k) = ({n}, {k})")
    if arr.ndim == 1 and k == 1:
        arr = arr[:, None]
    if arr.shape != (n, k):
        raise ValueError(f"y must have shape (N, k) = ({n}, {k}), got {arr.shape}")
    return arr


def _softmax(f):
    """Row-wise softmax of float64 logits, and their log-sum-exp."""
    top = f.max(axis=1, keepdims=True)
    e = np.exp(f - top)
    total = e.sum(axis=1, keepdims=True)
    return e / total, (top + np.log(total))[:, 0]


def _loss_and_cotangent(kind, f, target, dtype):
    """The loss (float64), dL/df (in ``dtype``) and the accuracy (or None) at outputs ``f``."""
    f64 = f.astype(np.float64)
    if kind == "squared":
        r = f64 - target
        with np.errstate(over="ignore"):
            loss = 0.5 * float(np.sum(r * r))
        if not math.isfinite(loss):
            raise OverflowError(
                f"the loss 1/2 ||f(x) - y||^2 overflows float64 "
                f"(max |f(x)| = {np.abs(f64).max():.3g}, max |y| = {np.abs(target).max():.3g})"
            )
        return loss, r.astype(dtype), None
    rows = np.arange(len(target))
    p, lse = _softmax(f64)
    loss = float(np.sum(lse - f64[rows, target]))
    r = p
    r[rows, target] -= 1.0
    return loss, r.astype(dtype), float(np.mean(np.argmax(f64, axis=1) == target))


class _Adam:
    def __init__(self, params, beta1, beta2, epsilon):
        self.b1, self.b2, self.eps = beta1, beta2, epsilon
        self.m = [np.zeros_like(p) for p in params]
        self.v = [np.zeros_like(p) for p in params]
        self.t = 0

    def step(self, params, grads, lr):
        self.t += 1
        c1, c2 = 1.0 - self.b1**self.t, 1.0 - self.b2**self.t
        new, ms, vs = [], [], []
        for p, g, m, v in zip(params, grads, self.m, self.v):
            g = g.astype(np.float64)
            m = self.b1 * m + (1.0 - self.b1) * g
            v = self.b2 * v + (1.0 - self.b2) * (g * g)
            new.append(p - lr * (m / c1) / (np.sqrt(v / c2) + self.eps))
            ms.append(m)
            vs.append(v)
        return new, (ms, vs)

    def commit(self, state):
        self.m, self.v = state


class _GradientDescent:
    def step(self, params, grads, lr):
        return [p - lr * g for p, g in zip(params, grads)], None

    def commit(self, state):
        pass


def train(
    model,
    x,
    y,
    learning_rate: float,
    steps: int,
    *,
    loss: str = "squared",
    optimizer: str = "gd",
    record_every: int | None = None,
    probe=None,
    beta1: float = 0.9,
    beta2: float = 0.999,
    epsilon: float = 1e-8,
    callback: Callable | None = None,
    dtype=None,
    n_threads: int | None = None,
) -> TrainResult:
    """Full-batch training of ``model`` on ``(x, y)``, updating its parameters in place.

    Parameters
    ----------
    model
        A finite network with the methods listed in the module docstring, e.g.
        :class:`ntkcore.finite.MLP`.
    x : array_like, shape (N, ...)
        The training inputs, in the shape ``model.apply`` takes.
    y : array_like
        ``loss="squared"``: targets of shape (N, k), or (N,) when k = 1.
        ``loss="cross_entropy"``: integer class labels in ``[0, k)`` of shape (N,), or
        one-hot rows of shape (N, k).
    learning_rate : float > 0
    steps : int >= 0
    loss : "squared" or "cross_entropy"
        ``1/2 sum_i ||f(x_i) - y_i||^2`` or ``-sum_i log softmax(f(x_i))_{y_i}``: sums over
        the points, no ``1/N`` (a mean would divide the gradient, hence the learning
        rate, by N).
    optimizer : "gd" or "adam"
        ``"gd"``: ``theta <- theta - learning_rate * g``.  ``"adam"``: with
        ``m <- beta1 m + (1 - beta1) g``, ``v <- beta2 v + (1 - beta2) g^2`` (from zero),
        ``theta <- theta - learning_rate * m_hat / (sqrt(v_hat) + epsilon)``,
        ``m_hat = m / (1 - beta1^t)``, ``v_hat = v / (1 - beta2^t)`` at step ``t >= 1``.
        Parameters and optimizer state are float64; gradients are computed in ``dtype``.
    record_every : int >= 1, optional
        Record the probe NTK every this many steps (and at the last one); default
        ``max(1, steps // 20)``.
    probe : array_like, shape (P, ...), optional
        Points on which the NTK is recorded; default ``x``.
    beta1, beta2 : float in [0, 1)
        Adam's decay rates.
    epsilon : float > 0
        Adam's denominator offset.
    callback : callable, optional
        ``callback(step, model)`` at every recorded step (0 included), after the probe NTK;
        e.g. to record :func:`true_class_ntk`.  It must not change the parameters.
    dtype : numpy.float32 or numpy.float64, optional
        Default: float32 when ``x`` is float32, float64 otherwise.
    n_threads : int >= 1, optional

    Returns
    -------
    TrainResult
        Bitwise the same for the same input and starting parameters, whatever ``n_threads``.

    Raises
    ------
    FloatingPointError
        If training diverges: the outputs, the loss, a gradient, the parameters or the probe
        NTK leave the floating-point range.  The message names the step and the learning
        rate (for gradient descent on the squared loss: compared with the stable range
        ``2 / lambda_max`` of the initial NTK of ``x`` when that is cheap).  The parameters
        are left at the last step whose values were finite.
    OverflowError
        If the initial network already overflows.
    ValueError, TypeError
        For an unknown loss or optimizer, labels out of range, or a shape that does not fit.
    """
    loss = choice(loss, "loss", LOSSES)
    optimizer = choice(optimizer, "optimizer", OPTIMIZERS)
    dtype = resolve_dtype(dtype, x)
    a = _inputs(x, "x", dtype)
    learning_rate = real(learning_rate, "learning_rate", minimum=0.0, strict=True)
    steps = integer(steps, "steps", minimum=0)
    record_every = max(1, steps // 20) if record_every is None else integer(record_every, "record_every", minimum=1)
    beta1 = real(beta1, "beta1", minimum=0.0, maximum=1.0)
    beta2 = real(beta2, "beta2", minimum=0.0, maximum=1.0)
    if beta1 == 1.0 or beta2 == 1.0:
        raise ValueError(f"beta1 and beta2 must be in [0, 1), got beta1={beta1:g}, beta2={beta2:g}")
    epsilon = real(epsilon, "epsilon", minimum=0.0, strict=True)
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable(step, model), got {callback!r}")
    p = a if probe is None else _inputs(probe, "probe", dtype)
    threads = check_n_threads(n_threads) or None

    f = model.apply(a, dtype=dtype, n_threads=threads)
    n, k = f.shape
    target = _squared_targets(y, n, k, dtype).astype(np.float64) if loss == "squared" else _labels(y, n, k)
    theta0 = model.ntk(p, dtype=dtype, n_threads=threads)
    norm0 = math.sqrt(float(np.sum(np.square(theta0, dtype=np.float64))))
    initial = model._flat_parameters()
    opt = _GradientDescent() if optimizer == "gd" else _Adam(initial, beta1, beta2, epsilon)
    losses, accuracies, record_steps, changes = [], [], [0], [0.0]
    theta = theta0
    if callback is not None:
        callback(0, model)
    done = 0  # steps taken
    try:
        for step in range(steps + 1):
            if step > 0:
                f = model.apply(a, dtype=dtype, n_threads=threads)
            value, cotangent, accuracy = _loss_and_cotangent(loss, f, target, dtype)
            losses.append(value)
            accuracies.append(accuracy)
            if step == steps:
                break
            grads = model._vjp(a, cotangent, dtype=dtype, n_threads=threads)
            with np.errstate(over="ignore", invalid="ignore"):  # checked just below
                new, state = opt.step(model._flat_parameters(), grads, learning_rate)
            if not all(np.isfinite(q).all() for q in new):
                raise OverflowError("the parameters overflow float64")
            model._set_flat_parameters(new)
            opt.commit(state)
            done = step + 1
            if done % record_every == 0 or done == steps:
                theta = model.ntk(p, dtype=dtype, n_threads=threads)
                diff = np.asarray(theta, dtype=np.float64) - theta0
                record_steps.append(done)
                changes.append(math.sqrt(float(np.sum(diff * diff))) / norm0 if norm0 > 0 else float("nan"))
                if callback is not None:
                    callback(done, model)
    except OverflowError as exc:
        if not losses:  # the initial network, not the training, is out of range
            raise
        advice = _rate_advice(model, learning_rate, initial, a, dtype, threads, loss == "squared" and optimizer == "gd")
        raise FloatingPointError(f"training diverged after {done} of {steps} steps: {exc}; {advice}") from exc
    return TrainResult(
        loss=np.asarray(losses),
        record_steps=np.asarray(record_steps),
        ntk_change=np.asarray(changes),
        ntk_initial=theta0,
        ntk_final=theta,
        accuracy=np.asarray(accuracies) if loss == "cross_entropy" else None,
    )


def _rate_advice(model, learning_rate, params, a, dtype, threads, linear):
    """The learning rate against the stable range 2 / lambda_max(Theta_0) of gradient descent
    on the linearised squared-loss dynamics (Theta_0: full NTK of ``a`` at ``params``), when
    that applies (``linear``) and is cheap."""
    plain = f"lower learning_rate={learning_rate:g}"
    if not linear:
        return plain
    current = model._flat_parameters()
    model._set_flat_parameters(params)
    try:
        n = a.shape[0] * model.apply(a[:1], dtype=dtype, n_threads=threads).shape[1]
        if n > _CHEAP_EIGVALS:
            return plain
        theta = model.ntk(a, output="full", dtype=dtype, n_threads=threads)
    except OverflowError:
        return plain
    finally:
        model._set_flat_parameters(current)
    stable = 2.0 / np.linalg.eigvalsh(theta.astype(np.float64))[-1]
    if learning_rate > stable:
        return f"learning_rate={learning_rate:g} exceeds the stable range ~2/lambda_max(Theta) = {stable:.3g}"
    return f"lower learning_rate={learning_rate:g} (2/lambda_max(Theta) = {stable:.3g} at initialisation)"


def true_class_ntk(model, x, labels, *, dtype=None, n_threads: int | None = None) -> np.ndarray:
    """The NTK of the true-class probability ``f~(x) = softmax(f(x))_{y(x)}``.

    ``Theta~(x_i, x_j) = g_i^T Theta_full(x_i, x_j) g_j`` with ``g_i = d f~(x_i) / d f``
    ``= p_i (e_{y_i} - s_i)``, ``s_i = softmax(f(x_i))``, ``p_i = s_{i, y_i}``
    (docs/math/6-finite-width.md).  Its smallest eigenvalue, ``ntkcore.lambda_min(theta)``,
    sets the classification loss bound :func:`cross_entropy_bound`.

    Parameters
    ----------
    model
        A finite network (module docstring) with k >= 2 outputs.
    x : array_like, shape (N, ...)
    labels : array_like of int, shape (N,), or one-hot of shape (N, k)
        The true classes ``y(x_i)``.
    dtype, n_threads : as for :func:`train`.

    Returns
    -------
    ndarray, shape (N, N), float64
        Symmetric positive semidefinite; rank at most ``k - 1`` per point, since
        ``sum_a g_ia = 0``.
    """
    dtype = resolve_dtype(dtype, x)
    a = _inputs(x, "x", dtype)
    threads = check_n_threads(n_threads) or None
    f = model.apply(a, dtype=dtype, n_threads=threads).astype(np.float64)
    n, k = f.shape
    y = _labels(labels, n, k)
    s, _ = _softmax(f)
    rows = np.arange(n)
    g = -s * s[rows, y][:, None]
    g[rows, y] += s[rows, y]
    full = model.ntk(a, output="full", dtype=dtype, n_threads=threads).astype(np.float64).reshape(n, k, n, k)
    return np.einsum("ia,iajb,jb->ij", g, full, g)


def cross_entropy_bound(initial_loss: float, n_points: int, lambda_min, learning_rate: float, steps) -> np.ndarray:
    """The gradient-flow bound on the summed cross-entropy loss (docs/math/6-finite-width.md).

    ``L_t <= -(N/2) log(exp(-2 L_0 / N) + 2 eta lambda t)``, where ``t`` counts steps of
    learning rate ``eta`` (flow time ``eta t``) and ``lambda`` is a lower bound on
    ``lambda_min`` of the true-class NTK ``Theta~`` of the N training points along the
    trajectory up to ``t``; with ``lambda_min`` given per step, ``lambda t`` becomes the
    sum of ``lambda_min`` over the earlier steps.  Clipped at 0 (the bound is exhausted
    when the argument of the log reaches 1).

    Parameters
    ----------
    initial_loss : float >= 0
        ``L_0 = -sum_i log softmax(f_0(x_i))_{y_i}``.
    n_points : int >= 1
    lambda_min : float >= 0, or array_like of shape (len(steps),)
        A constant, or ``lambda_min[j]`` for the interval ``[steps[j-1], steps[j]]``
        (``[0, steps[0]]`` for j = 0); the bound holds when each is a lower bound over
        its interval.
    learning_rate : float > 0
    steps : array_like of int >= 0, increasing
        The steps at which to evaluate the bound.

    Returns
    -------
    ndarray, shape (len(steps),)
    """
    initial_loss = real(initial_loss, "initial_loss", minimum=0.0)
    n_points = integer(n_points, "n_points", minimum=1)
    learning_rate = real(learning_rate, "learning_rate", minimum=0.0, strict=True)
    t = np.asarray(steps, dtype=np.float64)
    if t.ndim != 1 or (np.diff(t) < 0).any() or (t < 0).any():
        raise ValueError("steps must be a 1-D increasing array of steps >= 0")
    lam = np.broadcast_to(np.asarray(lambda_min, dtype=np.float64), t.shape) if np.ndim(lambda_min) else None
    if lam is None:
        integral = real(lambda_min, "lambda_min", minimum=0.0) * t
    else:
        if (lam < 0).any() or not np.isfinite(lam).all():
            raise ValueError("lambda_min must be finite and >= 0")
        integral = t[0] * lam[0] + np.concatenate(([0.0], np.cumsum(np.diff(t) * lam[1:])))
    arg = math.exp(-2.0 * initial_loss / n_points) + 2.0 * learning_rate * integral
    return np.maximum(-0.5 * n_points * np.log(np.minimum(arg, 1.0)), 0.0)

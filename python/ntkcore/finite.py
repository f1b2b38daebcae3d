"""Finite-width fully-connected networks and their empirical NTK.

Mathematics: docs/math/1-parameterization.md and docs/math/6-finite-width.md.

>>> import numpy as np
>>> from ntkcore import finite
>>> net = finite.MLP([8, 256, 256, 1], activation="relu", W_std=2**0.5, seed=0)
>>> x = np.random.default_rng(0).standard_normal((5, 8))
>>> net.apply(x).shape, net.ntk(x).shape
((5, 1), (5, 5))

The network is that of :class:`ntkcore.FullyConnected` at finite width, in the NTK
parameterization: with ``widths = [d, n_1, ..., n_L, k]``,

    z^1 = W_std / sqrt(d) * W^1 x + b_std * b^1,
    z^{l+1} = W_std / sqrt(n_l) * W^{l+1} phi(z^l) + b_std * b^{l+1},   f(x) = z^{L+1},

and the trainable parameters are the standard normal draws ``W^l`` and ``b^l``.

Randomness: the parameters are drawn in Python by ``numpy.random.default_rng(seed)``,
layer by layer, ``W^1`` (shape ``(n_1, d)``) then ``b^1`` (``(n_1,)``), then ``W^2``,
``b^2``, ...; each ``standard_normal`` in float64.  The draw therefore depends on the
seed alone, never on the thread count.

Reproducibility: outputs, NTKs, losses, gradients and training runs are bitwise the same
for a given input and dtype, from call to call and for every ``n_threads`` (each sum is
computed by one thread, in an order fixed by the shapes).

Range: a value that leaves the range of the dtype (outputs, NTK, loss or gradient, e.g.
for a huge ``W_std`` or inputs near the float32 limit) raises ``OverflowError`` naming
the quantity and the scales that set it, never returns inf or NaN; a training run that
diverges raises ``FloatingPointError`` (:meth:`MLP.train`).

The empirical NTK is assembled layer by layer from small Gram matrices of the forward
activations and the backpropagated vectors (docs/math/6-finite-width.md); no Jacobian is formed, so
its memory is the output plus ``O(N k sum(widths))``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple, cast

import numpy as np

from . import activations as _activations
from . import layers as _layers_mod
from . import training as _training
from ._native import core as _core
from ._validation import (
    as_points,
    as_real_array,
    check_n_threads,
    check_seed,
    choice,
    integer,
    integers,
    resolve_dtype,
)
from .network import FullyConnected, Kernels, _format_scales, _layer_scales
from .serial import Serial
from .training import TrainResult

__all__ = ["MLP", "Network", "TrainResult", "monte_carlo_kernels"]

_OUTPUTS = ("trace", "full")


def _widths(widths) -> tuple[int, ...]:
    if isinstance(widths, (Sequence, np.ndarray)) and len(widths) < 2:
        raise ValueError(f"widths must list at least the input and output sizes [d, k], got {list(widths)!r}")
    return integers(widths, "widths")


class MLP:
    """A finite-width fully-connected network in the NTK parameterization (docs/math/1-parameterization.md).

    Parameters
    ----------
    widths : sequence of int >= 1
        ``[d, n_1, ..., n_L, k]``: input dimension, the ``L`` hidden widths and the number
        of outputs; ``len(widths) - 1`` dense layers.
    activation : str or ntkcore.activations.Activation
        A closed-form family (``"relu"``, ``"leaky_relu"``, ``"abs"``, ``"identity"``,
        ``"sign"``, ``"erf"``, ``"gelu"``, ``ABRelu(a, b)``, ``Erf(a, b, c)``,
        ``Sin(a, b, c)``, ``Cos(a, b, c)``, ``RectifiedMonomial(n)``, ...), as for
        :class:`ntkcore.FullyConnected`.  ``sign`` and the step ``RectifiedMonomial(0)``
        have derivative 0.
    W_std, b_std : float >= 0, or one value per dense layer
        sigma_w and sigma_b.
    parameterization : "ntk"
        The only one implemented.
    seed : int >= 0
        Seed of ``numpy.random.default_rng`` for the initial parameters (module docstring).
    """

    def __init__(
        self,
        widths,
        activation="relu",
        W_std=1.0,
        b_std=0.0,
        parameterization: str = "ntk",
        seed: int | np.random.SeedSequence = 0,
    ):
        self._widths = _widths(widths)
        depth = len(self._widths) - 2
        self._activation = _activations.get(activation)
        self._W_std = _layer_scales(W_std, "W_std", depth)
        self._b_std = _layer_scales(b_std, "b_std", depth)
        if parameterization != "ntk":
            raise ValueError(
                f"parameterization must be 'ntk', got {parameterization!r} "
                "(the standard parameterization is not implemented yet)"
            )
        self._seed = check_seed(seed, sequence=True)
        rng = np.random.default_rng(self._seed)
        params = []
        for n_in, n_out in zip(self._widths[:-1], self._widths[1:]):
            w = rng.standard_normal((n_out, n_in))
            b = rng.standard_normal(n_out)
            params.append((w, b))
        self._params = params
        self._cast: dict = {}

    # --- description ------------------------------------------------------------------

    @property
    def widths(self) -> tuple[int, ...]:
        """``(d, n_1, ..., n_L, k)``."""
        return self._widths

    @property
    def depth(self) -> int:
        """Number of hidden layers L."""
        return len(self._widths) - 2

    @property
    def n_outputs(self) -> int:
        return self._widths[-1]

    @property
    def activation(self) -> _activations.Activation:
        return self._activation

    @property
    def W_std(self) -> tuple[float, ...]:
        return self._W_std

    @property
    def b_std(self) -> tuple[float, ...]:
        return self._b_std

    @property
    def architecture(self) -> FullyConnected:
        """The infinite-width limit of this network, as a :class:`ntkcore.FullyConnected`."""
        return FullyConnected(self.depth, self._activation, self._W_std, self._b_std)

    def __repr__(self) -> str:
        return (
            f"MLP(widths={list(self._widths)!r}, activation={self._activation!r}, "
            f"W_std={_format_scales(self._W_std)}, b_std={_format_scales(self._b_std)}, seed={self._seed!r})"
        )

    # --- parameters -------------------------------------------------------------------

    @property
    def parameters(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Copies of the parameters: one ``(W, b)`` pair per dense layer.

        ``W`` has shape ``(n_out, n_in)`` and ``b`` shape ``(n_out,)``, float64; they are
        the standard normal draws (the trainable parameters of the NTK
        parameterization), not the scaled weights.  Assign a list of the same shapes
        to set them.
        """
        return [(w.copy(), b.copy()) for w, b in self._params]

    @parameters.setter
    def parameters(self, value):
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
            raise TypeError("parameters must be a list of (W, b) pairs, one per dense layer")
        n = len(self._widths) - 1
        if len(value) != n:
            raise ValueError(f"parameters must have {n} (W, b) pairs (one per dense layer), got {len(value)}")
        new = []
        for m, pair in enumerate(value):
            if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                raise TypeError(f"parameters[{m}] must be a (W, b) pair")
            n_in, n_out = self._widths[m], self._widths[m + 1]
            arrays = []
            for name, arr, shape in (("W", pair[0], (n_out, n_in)), ("b", pair[1], (n_out,))):
                where = f"parameters[{m}] {name}"
                arr = np.asarray(arr)
                if arr.dtype.kind != "f":
                    raise TypeError(f"{where} must hold floating-point numbers, got dtype {arr.dtype}")
                if arr.shape != shape:
                    raise ValueError(f"{where} must have shape {shape}, got {arr.shape}")
                if not np.isfinite(arr).all():
                    raise ValueError(f"{where} must be finite")
                arrays.append(np.array(arr, dtype=np.float64, order="C"))
            new.append((arrays[0], arrays[1]))
        self._params = new
        self._cast = {}

    def _spec(self):
        act = self._activation
        return (act.family, act.core_params, list(self._W_std), list(self._b_std))

    def _core_args(self, dtype):
        spec = self._spec()
        if dtype not in self._cast:
            self._cast = {
                dtype: (
                    [np.ascontiguousarray(w, dtype=dtype) for w, _ in self._params],
                    [np.ascontiguousarray(b, dtype=dtype) for _, b in self._params],
                )
            }
        weights, biases = self._cast[dtype]
        return spec, weights, biases

    # --- computations -----------------------------------------------------------------

    def apply(self, x, *, dtype=None, n_threads: int | None = None) -> np.ndarray:
        """The network's outputs ``f(x)``.

        Parameters
        ----------
        x : array_like, shape (N, d)
        dtype : numpy.float32 or numpy.float64, optional
            Default: float32 when ``x`` is float32, float64 otherwise.
        n_threads : int >= 1, optional

        Returns
        -------
        ndarray, shape (N, k)

        Raises
        ------
        OverflowError
            If a layer's pre-activations leave the range of ``dtype``.
        """
        dtype = resolve_dtype(dtype, x)
        a = _feature_points(x, "x", dtype, self._widths[0])
        threads = check_n_threads(n_threads)
        spec, weights, biases = self._core_args(dtype)
        return _core.mlp_forward(spec, weights, biases, a, threads)

    def _hidden(self, a, dtype, threads):
        """The last hidden layer's post-activations h^L (the input when L = 0), (N, n_L)."""
        spec, weights, biases = self._core_args(dtype)
        return _core.mlp_forward(spec, weights, biases, a, threads, self.depth)

    def ntk(
        self,
        x1,
        x2=None,
        *,
        output: str = "trace",
        dtype=None,
        n_threads: int | None = None,
    ) -> np.ndarray:
        """The empirical NTK ``sum_p df(x)/dp df(x')/dp`` over all parameters p.

        Parameters
        ----------
        x1 : array_like, shape (N1, d)
        x2 : array_like, shape (N2, d), optional
            ``None`` means ``x1`` (the result is then exactly symmetric).
        output : "trace" or "full"
            ``"trace"``: the mean over the k outputs of the per-output kernels,
            ``(1/k) sum_j Theta_jj``, shape (N1, N2) (neural-tangents'
            ``trace_axes=(-1,)``).  ``"full"``: every output pair, shape
            ``(N1 * k, N2 * k)`` with row ``i * k + j`` for point i and output j (reshape
            to ``(N1, k, N2, k)``).
        dtype : numpy.float32 or numpy.float64, optional
        n_threads : int >= 1, optional

        Returns
        -------
        ndarray of ``dtype``

        Raises
        ------
        OverflowError
            If the forward pass or an NTK entry leaves the range of ``dtype``.
        """
        output = choice(output, "output", _OUTPUTS)
        dtype = resolve_dtype(dtype, x1, x2)
        a = _feature_points(x1, "x1", dtype, self._widths[0])
        b = None if x2 is None else _feature_points(x2, "x2", dtype, self._widths[0])
        threads = check_n_threads(n_threads)
        k = self._widths[-1] if output == "full" else 1
        n2 = a.shape[0] if b is None else b.shape[0]
        theta = np.empty((a.shape[0] * k, n2 * k), dtype=dtype)
        spec, weights, biases = self._core_args(dtype)
        _core.empirical_ntk(spec, weights, biases, a, b, output, theta, threads)
        return theta

    def loss_and_gradient(self, x, y, *, dtype=None, n_threads: int | None = None):
        """``L = 1/2 ||f(x) - y||^2`` and its gradient with respect to :attr:`parameters`.

        Parameters
        ----------
        x : array_like, shape (N, d)
        y : array_like, shape (N, k), or (N,) when k = 1

        dtype, n_threads : as for :meth:`ntk`.

        Returns
        -------
        (float, list of (dL/dW, dL/db) pairs shaped like :attr:`parameters`)
            Bitwise the same for the same input, whatever ``n_threads``.

        Raises
        ------
        OverflowError
            If the outputs, the loss or a gradient leave the range of ``dtype``.
        """
        dtype = resolve_dtype(dtype, x)
        a = _feature_points(x, "x", dtype, self._widths[0])
        t = self._targets(y, a.shape[0], dtype)
        return self._loss_gradient(a, t, dtype, check_n_threads(n_threads))

    def _targets(self, y, n, dtype):
        k = self._widths[-1]
        if isinstance(y, np.ndarray) and y.ndim == 1 and k == 1:
            y = y[:, None]
        elif not isinstance(y, np.ndarray):
            arr = np.asarray(y) if not isinstance(y, (str, bytes)) else None
            if arr is None or arr.dtype.kind not in "fiu":
                raise TypeError(f"y must be an array of real numbers of shape (N, {k}), got {y!r}")
            y = arr[:, None] if arr.ndim == 1 and k == 1 else arr
        if y.dtype.kind not in "fiu" or y.dtype.kind == "b":
            raise TypeError(f"y must hold real numbers, got dtype {y.dtype}")
        if y.shape != (n, k):
            raise ValueError(f"y must have shape (N, k) = ({n}, {k}), got {y.shape}")
        y = np.ascontiguousarray(y, dtype=dtype)
        if not np.isfinite(y).all():
            raise ValueError("y must be finite")
        return y

    def _loss_gradient(self, a, t, dtype, threads):
        spec, weights, biases = self._core_args(dtype)
        grad_w = [np.empty_like(w) for w in weights]
        grad_b = [np.empty_like(b) for b in biases]
        loss = _core.mlp_loss_gradient(spec, weights, biases, a, t, grad_w, grad_b, threads)
        return loss, list(zip(grad_w, grad_b))

    def _flat_parameters(self) -> list[np.ndarray]:
        """``[W^1, b^1, W^2, b^2, ...]`` (float64, not copies: read only); see ntkcore.training."""
        return [q for pair in self._params for q in pair]

    def _set_flat_parameters(self, arrays) -> None:
        """Replace the parameters by float64 arrays ordered as :meth:`_flat_parameters`."""
        self._params = [(arrays[2 * m], arrays[2 * m + 1]) for m in range(len(self._widths) - 1)]
        self._cast = {}

    def _vjp(self, x, cotangent, *, dtype, n_threads) -> list[np.ndarray]:
        """``J^T r``: the gradient of ``sum_{i,a} r_ia f_a(x_i)`` with respect to the
        parameters, ordered as :meth:`_flat_parameters`, in ``dtype``.

        ``x`` (N, d) and ``cotangent`` (N, k) are C-contiguous arrays of ``dtype``.
        """
        dtype = np.dtype(dtype)
        a = _feature_points(x, "x", dtype, self._widths[0])
        r = np.ascontiguousarray(cotangent, dtype=dtype)
        spec, weights, biases = self._core_args(dtype)
        grad_w = [np.empty_like(w) for w in weights]
        grad_b = [np.empty_like(b) for b in biases]
        _core.mlp_vjp(spec, weights, biases, a, r, grad_w, grad_b, check_n_threads(n_threads))
        return [g for pair in zip(grad_w, grad_b) for g in pair]

    def train(
        self,
        x,
        y,
        learning_rate: float,
        steps: int,
        *,
        loss: str = "squared",
        optimizer: str = "gd",
        record_every: int | None = None,
        probe=None,
        dtype=None,
        n_threads: int | None = None,
        **options,
    ) -> TrainResult:
        """Full-batch training by :func:`ntkcore.training.train`, updating :attr:`parameters` in place.

        Default: gradient descent on ``L = 1/2 ||f(x) - y||^2`` (docs/math/5-gram-dynamics.md,
        no 1/N), ``p <- p - learning_rate * dL/dp`` for ``steps`` steps (parameters kept in
        float64; gradients in ``dtype``).

        Parameters
        ----------
        x : array_like, shape (N, d)
        y : array_like
            ``loss="squared"``: shape (N, k), or (N,) when k = 1; ``loss="cross_entropy"``:
            integer labels (N,) in [0, k) or one-hot rows (N, k).
        learning_rate : float > 0
        steps : int >= 0
        loss : "squared" or "cross_entropy"
        optimizer : "gd" or "adam"
        record_every : int >= 1, optional
            Record the probe NTK every this many steps (and at the last one); default
            ``max(1, steps // 20)``.
        probe : array_like, shape (P, d), optional
            Points on which the NTK is recorded; default ``x``.
        **options
            ``beta1``, ``beta2``, ``epsilon``, ``callback``: as for
            :func:`ntkcore.training.train`.

        Returns
        -------
        TrainResult
            Bitwise the same for the same input and starting parameters, whatever
            ``n_threads``; ``ntk_change`` is ``||Theta_t - Theta_0||_F / ||Theta_0||_F``.

        Raises
        ------
        FloatingPointError
            If training diverges (:func:`ntkcore.training.train`); the parameters are left
            at the last step whose values were finite.
        OverflowError
            If the initial network already overflows (as :meth:`ntk`).
        """
        dtype = resolve_dtype(dtype, x)
        a = _feature_points(x, "x", dtype, self._widths[0])
        p = None if probe is None else _feature_points(probe, "probe", dtype, self._widths[0])
        return _training.train(
            self,
            a,
            y,
            learning_rate,
            steps,
            loss=loss,
            optimizer=optimizer,
            record_every=record_every,
            probe=p,
            dtype=dtype,
            n_threads=n_threads,
            **options,
        )


def _feature_points(x, name, dtype, features):
    """Points of the network's input dimension, with an error that names that dimension."""
    arr = as_points(x, name, dtype)
    if arr.shape[1] != features:
        raise ValueError(
            f"{name} must have {features} features per row (the network's input width widths[0]), got shape {arr.shape}"
        )
    return arr


def monte_carlo_kernels(
    net_or_architecture,
    x1,
    x2=None,
    *,
    width=None,
    n_samples: int = 10,
    seed: int = 0,
    n_outputs: int = 1,
    nngp_estimator: str = "output",
    dtype=None,
    n_threads: int | None = None,
) -> Kernels:
    """Monte Carlo estimates of the NNGP kernel and the NTK over random initialisations.

    Averages, over ``n_samples`` independently initialised finite networks, the output
    covariance ``f(x1) f(x2)^T / k`` (per output, averaged over the k outputs) and the
    empirical NTK (``output="trace"``).  As ``width`` grows these estimate the
    infinite-width kernels of the architecture (``kernels(x1, x2)`` of the
    ``FullyConnected`` or ``serial`` network; docs/math/6-finite-width.md).

    Statistical error: the NTK estimate fluctuates like ``1 / sqrt(width * n_samples)``
    (the empirical NTK of one network is within O(1/sqrt(width)) of the limit).  The
    output covariance of one network is a rank-k sample of a Gaussian process, so its
    error is ``O(1 / sqrt(n_samples * k))`` whatever the width.  ``nngp_estimator="hidden"``
    instead averages its expectation over the last Dense layer's parameters,
    ``W_std^2 / n h(x1) h(x2)^T + b_std^2`` with ``h`` that layer's input of width ``n``
    (the same kernel, unbiased for the same finite-width mean), whose error shrinks like
    ``1 / sqrt(width * n_samples)``.

    Parameters
    ----------
    net_or_architecture : ntkcore.FullyConnected, ntkcore.serial(...) network, MLP or Network
        An architecture (then ``width`` is required: the finite networks are
        ``Network(architecture, width, outputs=n_outputs)``), or a finite ``MLP`` or
        ``Network`` whose architecture, widths and outputs are used (its own parameters are
        not; ``width``, if given, replaces the hidden widths).
    x1 : array_like, shape (N1, d) or, for a serial network, (N1, H, W, C) or (N1, L, C)
    x2 : array_like, shape (N2, ...), optional
    width : int >= 1, or one int per hidden Dense and Conv layer (serial networks)
    n_samples : int >= 1
    seed : int >= 0
        Sample s uses the s-th child of ``numpy.random.SeedSequence(seed)``.
    n_outputs : int >= 1
        Outputs per network for an architecture (more outputs average more i.i.d. copies
        per network).
    nngp_estimator : "output" or "hidden"
        ``"output"``: ``f(x1) f(x2)^T / k``; ``"hidden"``: its conditional mean given the
        last Dense layer's input (see above).
    dtype, n_threads : as for :meth:`MLP.ntk`.

    Returns
    -------
    ntkcore.Kernels
        ``nngp`` and ``ntk``, each of shape (N1, N2); bitwise the same for every
        ``n_threads``.

    Raises
    ------
    OverflowError
        If a network's outputs or NTK, or the averages, leave the range of ``dtype``.
    """
    n_samples = integer(n_samples, "n_samples", minimum=1)
    seed = check_seed(seed, sequence=True)
    n_outputs = integer(n_outputs, "n_outputs", minimum=1)
    if not isinstance(nngp_estimator, str):
        raise TypeError(f"nngp_estimator must be 'output' or 'hidden', got {nngp_estimator!r}")
    if nngp_estimator not in ("output", "hidden"):
        raise ValueError(f"nngp_estimator must be 'output' or 'hidden', got {nngp_estimator!r}")
    arch = net_or_architecture
    if isinstance(arch, (MLP, Network)) and n_outputs != 1:
        raise ValueError("n_outputs applies to an architecture; a finite network has its own")
    if isinstance(arch, (Serial, Network)):
        return _serial_monte_carlo(arch, x1, x2, width, n_samples, seed, n_outputs, nngp_estimator, dtype, n_threads)
    if width is not None:
        width = integer(width, "width", minimum=1)
    dtype = resolve_dtype(dtype, x1, x2)
    a = as_points(x1, "x1", dtype)
    b = None if x2 is None else as_points(x2, "x2", dtype, features=a.shape[1])
    if isinstance(arch, FullyConnected):
        if arch.parameterization != "ntk":
            raise ValueError(
                "monte_carlo_kernels needs an NTK-parameterization architecture: the finite "
                f"networks implement only that one, got parameterization={arch.parameterization!r}"
            )
        if width is None:
            raise ValueError("width is required when net_or_architecture is an architecture")
        widths = [a.shape[1]] + [width] * arch.depth + [n_outputs]
        activation = arch.activation
        w_std, b_std = arch._scales()
    elif isinstance(arch, MLP):
        widths = list(arch.widths)
        if width is not None:
            widths[1:-1] = [width] * arch.depth
        if a.shape[1] != widths[0]:
            raise ValueError(
                f"x1 must have {widths[0]} features per row (the network's input width), got shape {a.shape}"
            )
        activation, w_std, b_std = arch.activation, arch.W_std, arch.b_std
    else:
        raise TypeError(
            "net_or_architecture must be an ntkcore.FullyConnected, an ntkcore.serial(...) network, "
            f"an ntkcore.finite.MLP or an ntkcore.finite.Network, got {type(arch).__name__}"
        )
    threads = check_n_threads(n_threads)

    def sample(child):
        net = MLP(widths, activation, w_std, b_std, seed=child)
        if nngp_estimator == "output":
            f1 = net.apply(a, dtype=dtype, n_threads=threads or None)
            f2 = f1 if b is None else net.apply(b, dtype=dtype, n_threads=threads or None)
            nngp = (f1.astype(np.float64) @ f2.astype(np.float64).T) / widths[-1]
        else:
            h1 = net._hidden(a, dtype, threads).astype(np.float64)
            h2 = h1 if b is None else net._hidden(b, dtype, threads).astype(np.float64)
            nngp = (w_std[-1] ** 2 / widths[-2]) * (h1 @ h2.T) + b_std[-1] ** 2
        return nngp, net.ntk(a, b, dtype=dtype, n_threads=threads or None)

    x_max = max(np.abs(a).max(), 0 if b is None else np.abs(b).max())
    return _average(sample, seed, n_samples, dtype, f"max |x| = {x_max:.3g}, max W_std = {max(w_std):.3g}")


def _average(sample, seed, n_samples, dtype, scales: str) -> Kernels:
    """The mean over the children of SeedSequence(seed) of sample(child) = (nngp, ntk)."""
    nngp = ntk = None
    with np.errstate(over="ignore", invalid="ignore"):  # checked below
        for child in np.random.SeedSequence(seed).spawn(n_samples):
            k, t = sample(child)
            nngp = k if nngp is None else nngp + k
            ntk = t.astype(np.float64) if ntk is None else ntk + t
        out = Kernels((nngp / n_samples).astype(dtype), (ntk / n_samples).astype(dtype))
    for name, value in zip(("NNGP", "NTK"), out):
        if not np.isfinite(value).all():
            raise OverflowError(
                f"monte_carlo_kernels: the {name} estimate overflows {dtype} (the networks' "
                f"outputs and NTKs fit, their products or sums do not); lower W_std or the "
                f"input scale ({scales})"
            )
    return out


def _serial_monte_carlo(arch, x1, x2, width, n_samples, seed, n_outputs, nngp_estimator, dtype, n_threads):
    if isinstance(arch, Network):
        net, outputs = arch.net, arch.n_outputs
        width = arch.widths if width is None else width
    else:
        net, outputs = arch, n_outputs
        if width is None:
            raise ValueError("width is required when net_or_architecture is an architecture")
    dtype = resolve_dtype(dtype, x1, x2)
    threads = check_n_threads(n_threads)
    a = as_real_array(x1, "x1", dtype, (2, 3, 4), "(N, H, W, C), (N, L, C) or (N, d)")
    b = None if x2 is None else as_real_array(x2, "x2", dtype, (2, 3, 4), "(N, H, W, C), (N, L, C) or (N, d)")
    if b is not None and (b.ndim != a.ndim or b.shape[-1] != a.shape[-1]):
        raise ValueError(f"x2 must have x1's spatial rank and channels: x1 has shape {a.shape}, x2 {b.shape}")
    Network(net, width, outputs=outputs)  # checks net and width before any sample

    def sample(child):
        finite_net = Network(net, width, outputs=outputs, seed=child)
        if nngp_estimator == "output":
            f1 = finite_net.apply(a, dtype=dtype, n_threads=threads or None).astype(np.float64)
            f2 = f1 if b is None else finite_net.apply(b, dtype=dtype, n_threads=threads or None).astype(np.float64)
            nngp = f1 @ f2.T / outputs
        else:
            h1, (w_var, b_var) = finite_net._readout_input(a, dtype, threads)
            h2 = h1 if b is None else finite_net._readout_input(b, dtype, threads)[0]
            nngp = w_var * (h1 @ h2.T) + b_var
        return nngp, finite_net.ntk(a, b, dtype=dtype, n_threads=threads or None)

    x_max = max(np.abs(a).max(), 0 if b is None else np.abs(b).max())
    return _average(sample, seed, n_samples, dtype, f"max |x| = {x_max:.3g}")


# --------------------------------------------------------------------------- layer networks


def _axis_taps(size: int, window: int, stride: int, padding: str, where: str) -> np.ndarray:
    """Input position read by tap t for output o along one axis, shape (out, window); ``size``: a zero pad.

    docs/math/7-convolutions.md: VALID shrinks the axis, SAME pads as XLA (out = ceil(size / stride),
    pad_before = floor(max((out - 1) stride + window - size, 0) / 2)), CIRCULAR wraps.
    """
    if padding == "VALID":
        if window > size:
            raise ValueError(f"{where}: an axis of {size} positions is smaller than the window {window} (VALID)")
        out, before = (size - window) // stride + 1, 0
    else:
        out = -(-size // stride)
        before = max((out - 1) * stride + window - size, 0) // 2
    pos = stride * np.arange(out)[:, None] + (np.arange(window)[None, :] - before)
    if padding == "CIRCULAR":
        return np.mod(pos, size)
    return np.where((pos >= 0) & (pos < size), pos, size)


def _grid_taps(grid, window, strides, padding, where):
    """The (P_out, F) table of input positions (``P_in``: a zero pad) of a 2-D window, and the output grid."""
    th = _axis_taps(grid[0], window[0], strides[0], padding, where)
    tw = _axis_taps(grid[1], window[1], strides[1], padding, where)
    valid = (th[:, None, :, None] < grid[0]) & (tw[None, :, None, :] < grid[1])
    flat = np.where(valid, th[:, None, :, None] * grid[1] + tw[None, :, None, :], grid[0] * grid[1])
    out = (th.shape[0], tw.shape[0])
    return np.ascontiguousarray(flat.reshape(out[0] * out[1], -1), dtype=np.int64), out


class _Step(NamedTuple):
    """One layer of a :class:`Network` for one input grid.

    kind: "weights" (Dense or Conv: ``taps`` (P_out, F), scales sigma_w / sqrt(fan_in) and
    sigma_b, ``param``: the position of its weight in the flat parameter list), "pool"
    (AvgPool: ``taps``), "gap", "flatten" or "act" (``layer``: the activation); ``taps`` is
    empty for the last three.
    """

    kind: str
    layer: object
    taps: np.ndarray = np.zeros((0, 0), dtype=np.int64)
    in_positions: int = 1
    w_scale: float = 0.0
    b_scale: float = 0.0
    param: int = -1


def _gather(x: np.ndarray, taps: np.ndarray, t: int) -> np.ndarray:
    """``x[:, taps[:, t], :]`` with zeros at the pads, for x of shape (M, P_in, C)."""
    column = taps[:, t]
    pad = column == x.shape[1]
    if not pad.any():
        return x[:, column, :]
    out = x[:, np.where(pad, 0, column), :]
    out[:, pad, :] = 0
    return out


def _scatter(grad: np.ndarray, taps: np.ndarray, t: int, into: np.ndarray) -> None:
    """``into[:, taps[:, t], :] += grad`` over the taps that are not pads (each position once)."""
    column = taps[:, t]
    keep = column < into.shape[1]
    if keep.all():
        into[:, column, :] += grad
    else:
        into[:, column[keep], :] += grad[:, keep, :]


def _pointwise(taps: np.ndarray) -> bool:
    """Whether a step's table is the identity (a dense layer acting position by position)."""
    return taps.shape[1] == 1 and bool(np.array_equal(taps[:, 0], np.arange(taps.shape[0])))


class Network:
    """A finite-width network of any :func:`ntkcore.serial` layer list, in the NTK parameterization.

    The infinite-width limit of ``Network(net, width)`` as ``width`` grows is ``net``'s kernels
    (``net.kernels``, docs/math/7-convolutions.md): with the layer's input ``h`` (P positions x C
    channels) and the standard normal parameters ``W``, ``b``,

    * ``Conv(filter_shape, strides, padding, W_std, b_std)``:
      ``z[p] = W_std / sqrt(F C) sum_t W[t]^T h[p + delta_t] + b_std b`` over the F taps of the
      filter (zeros outside the grid under SAME, wrapped under CIRCULAR, the grid and the
      strides of :class:`ntkcore.layers.Conv`);
    * ``Dense(W_std, b_std)``: ``z = W_std / sqrt(C) W^T h + b_std b`` at every position (a
      1 x 1 convolution), or on the whole vector after a readout;
    * ``AvgPool``: the mean over each window (zeros outside the grid under SAME, divisor the
      window size); ``GlobalAvgPool``: the mean over all positions; ``Flatten``: the P x C
      values as one vector, row-major over (position, channel), so that the next ``Dense`` has
      fan-in ``P C`` and the limit is the mean over the spatial diagonal of
      docs/math/7-convolutions.md (a ``Flatten`` should be followed by ``Dense``, as there);
    * activations: ``phi`` entrywise.

    Parameters
    ----------
    net : ntkcore.serial(...) network or ntkcore.FullyConnected
        Its last layer must be a ``Dense`` (the readout, of ``outputs`` units), acting on one
        position: spatial inputs need a ``GlobalAvgPool`` or ``Flatten`` before it.  A
        network that ends otherwise raises ``ValueError``.  Activations need phi and phi':
        the closed forms, the built-in Gauss-Hermite ones, or ``Numerical(fn, dfn)`` with
        both callables.  ``FullyConnected`` (NTK parameterization) is its layer list
        ``Dense, phi, ..., phi, Dense``.
    width : int >= 1, or a sequence of ints >= 1
        Output channels of every Dense and Conv layer but the last, or one per such layer.
    outputs : int >= 1
        Output units k of the last Dense.
    seed : int >= 0 or numpy.random.SeedSequence
        Seed of ``numpy.random.default_rng``: the parameters are drawn layer by layer, W then b,
        each ``standard_normal`` in float64, when the input shape is first known.
    input_shape : tuple of ints, optional
        The shape of one input without the batch axis, ``(H, W, C)``, ``(L, C)`` or ``(d,)``;
        default: that of the first input seen.  The parameters' shapes depend on the input
        channels and, with a Flatten, on the grid; later inputs must agree.

    Training: ``Network`` has no ``train`` yet; the generic loop (``ntkcore.training``) will
    drive it through its parameters and vector-Jacobian products.
    """

    def __init__(self, net, width, *, outputs: int = 1, seed: int | np.random.SeedSequence = 0, input_shape=None):
        self._net, self._layers = _layer_list(net)
        n_weighted = sum(isinstance(v, (_layers_mod.Dense, _layers_mod.Conv)) for v in self._layers)
        if not isinstance(self._layers[-1], _layers_mod.Dense):
            raise ValueError(
                f"Network: net must end in a Dense layer (the readout of `outputs` units), got {self._layers[-1]!r} "
                "last; append ntkcore.layers.Dense(...)"
            )
        hidden = n_weighted - 1
        if isinstance(width, (Sequence, np.ndarray)) and not isinstance(width, (str, bytes)):
            widths = integers(width, "width", length=hidden) if hidden else ()
            if not hidden and len(width) != 0:
                raise ValueError(f"width must list 0 entries (the network has no hidden Dense or Conv), got {width!r}")
        else:
            widths = (integer(width, "width", minimum=1),) * hidden
        self._widths = tuple(int(w) for w in widths)
        self._outputs = integer(outputs, "outputs", minimum=1)
        self._seed = check_seed(seed, sequence=True)
        for v in self._layers:
            if isinstance(v, _activations.Numerical) and not v.builtin and v.dfn is None:
                raise ValueError(f"Network: the activation {v!r} needs dfn (phi') for a finite network")
        self._input_shape: tuple[int, ...] | None = None
        self._params: list[np.ndarray] | None = None
        self._plans: dict = {}
        self._cast: dict = {}
        if input_shape is not None:
            shape = integers(input_shape, "input_shape")
            if not 1 <= len(shape) <= 3:
                raise ValueError(f"input_shape must be (H, W, C), (L, C) or (d,), got {input_shape!r}")
            self._ensure(tuple(shape))

    # --- description ------------------------------------------------------------------

    @property
    def net(self):
        """The network given (its infinite-width limit)."""
        return self._net

    @property
    def widths(self) -> tuple[int, ...]:
        """The output channels of the hidden Dense and Conv layers, in order."""
        return self._widths

    @property
    def n_outputs(self) -> int:
        return self._outputs

    @property
    def input_shape(self) -> tuple[int, ...] | None:
        """The shape of one input the parameters were drawn for (None: not yet known)."""
        return self._input_shape

    def __repr__(self) -> str:
        return (
            f"Network({self._net!r}, width={list(self._widths)!r}, outputs={self._outputs}, "
            f"seed={self._seed!r}, input_shape={self._input_shape!r})"
        )

    # --- structure --------------------------------------------------------------------

    def _plan(self, shape: tuple[int, ...]):
        """The steps and the parameter shapes for one input of ``shape`` (without the batch axis)."""
        if shape in self._plans:
            return self._plans[shape]
        rank = len(shape) - 1
        grid = ((*tuple(shape[:-1]), 1, 1))[:2]
        channels = shape[-1]
        steps: list[_Step] = []
        shapes: list[tuple[int, ...]] = []
        widths = iter(self._widths)
        for i, v in enumerate(self._layers):
            where = f"layer {i} ({v!r})"
            positions = grid[0] * grid[1]
            if isinstance(v, (_layers_mod.Conv, _layers_mod.AvgPool)):
                window = v.filter_shape if isinstance(v, _layers_mod.Conv) else v.window_shape
                if rank == 0:
                    raise ValueError(f"{where} needs spatial positions: the inputs are (N, d) or a readout came before")
                if len(window) != rank:
                    raise ValueError(f"{where} has {len(window)} spatial axes, the inputs have {rank}")
                pad = (1,) * (2 - rank)
                taps, grid = _grid_taps(
                    grid, tuple(window) + pad, tuple(cast(tuple, v.strides)) + pad, v.padding, where
                )
                if isinstance(v, _layers_mod.AvgPool):
                    steps.append(_Step("pool", v, taps, positions))
                    continue
                out = next(widths, self._outputs)
                fan_in = taps.shape[1] * channels
                steps.append(_Step("weights", v, taps, positions, v.W_std / math.sqrt(fan_in), v.b_std, len(shapes)))
                shapes += [(*tuple(v.filter_shape), channels, out), (out,)]
                channels = out
            elif isinstance(v, _layers_mod.Dense):
                last = i == len(self._layers) - 1
                if last and positions != 1:
                    raise ValueError(
                        f"{where}: the readout Dense acts on {positions} positions; spatial inputs need a "
                        "GlobalAvgPool or Flatten before it"
                    )
                out = self._outputs if last else next(widths)
                taps = np.arange(positions, dtype=np.int64)[:, None]
                steps.append(_Step("weights", v, taps, positions, v.W_std / math.sqrt(channels), v.b_std, len(shapes)))
                shapes += [(channels, out), (out,)]
                channels = out
            elif isinstance(v, (_layers_mod.GlobalAvgPool, _layers_mod.Flatten)):
                if rank == 0:
                    raise ValueError(f"{where} needs spatial positions: the inputs are (N, d) or a readout came before")
                flatten = isinstance(v, _layers_mod.Flatten)
                steps.append(_Step("flatten" if flatten else "gap", v, in_positions=positions))
                channels = channels * positions if flatten else channels
                grid, rank = (1, 1), 0
            else:
                steps.append(_Step("act", v))
        plan = (tuple(steps), tuple(shapes))
        self._plans[shape] = plan
        return plan

    def _ensure(self, shape: tuple[int, ...]):
        """The plan for inputs of ``shape``; draws the parameters for the first shape seen."""
        steps, shapes = self._plan(shape)
        if self._params is None:
            rng = np.random.default_rng(self._seed)
            params = [rng.standard_normal(s) for s in shapes]
            for p in params:
                p.flags.writeable = False
            self._params, self._input_shape = params, shape
        elif shapes != tuple(p.shape for p in self._params):
            raise ValueError(
                f"inputs of shape (N, {', '.join(map(str, shape))}) do not fit the parameters, drawn for inputs of "
                f"shape (N, {', '.join(map(str, self._input_shape or ()))}): the channels (or, with a Flatten, "
                "the grid) must agree"
            )
        return steps

    # --- parameters -------------------------------------------------------------------

    def _require_parameters(self) -> list[np.ndarray]:
        if self._params is None:
            raise ValueError(
                "the parameters are drawn when the input shape is known: pass input_shape= or call apply/ntk first"
            )
        return self._params

    @property
    def parameters(self) -> list[np.ndarray]:
        """Copies of the parameters, a flat list ``[W_1, b_1, W_2, b_2, ...]`` over the Dense and Conv layers.

        The standard normal draws (not the scaled weights), float64: a ``Conv`` weight has
        shape ``filter_shape + (C_in, C_out)`` (``(k_h, k_w, C_in, C_out)`` for images), a
        ``Dense`` weight ``(n_in, n_out)`` (``n_in = P C`` after a Flatten), every bias
        ``(n_out,)``.  The empirical NTK is ``J J^T`` with ``J`` the Jacobian of the outputs
        with respect to exactly these.  Assign a list of the same shapes to set them.
        """
        return [p.copy() for p in self._require_parameters()]

    @parameters.setter
    def parameters(self, value):
        self._set_flat_parameters(value)

    def _checked(self, value, name: str = "parameters") -> list[np.ndarray]:
        current = self._require_parameters()
        if isinstance(value, (str, bytes, np.ndarray)) or not isinstance(value, Sequence):
            raise TypeError(f"{name} must be a list of {len(current)} arrays [W_1, b_1, W_2, b_2, ...]")
        if len(value) != len(current):
            raise ValueError(f"{name} must have {len(current)} arrays [W_1, b_1, ...], got {len(value)}")
        out = []
        for m, (arr, ref) in enumerate(zip(value, current)):
            where = f"{name}[{m}] ({'W' if m % 2 == 0 else 'b'} of weighted layer {m // 2})"
            arr = np.asarray(arr)
            if arr.dtype.kind != "f":
                raise TypeError(f"{where} must hold floating-point numbers, got dtype {arr.dtype}")
            if arr.shape != ref.shape:
                raise ValueError(f"{where} must have shape {ref.shape}, got {arr.shape}")
            if not np.isfinite(arr).all():
                raise ValueError(f"{where} must be finite")
            out.append(arr)
        return out

    def _flat_parameters(self) -> list[np.ndarray]:
        """The parameter arrays themselves (read-only, float64), in the order of :attr:`parameters`."""
        return list(self._require_parameters())

    def _set_flat_parameters(self, value) -> None:
        """Replaces the parameters by float64 copies of ``value`` (validated as :attr:`parameters`)."""
        new = [np.array(a, dtype=np.float64, order="C") for a in self._checked(value)]
        for p in new:
            p.flags.writeable = False
        self._params = new
        self._cast = {}

    def _parameters_as(self, parameters, dtype) -> list[np.ndarray]:
        """The parameters (``parameters``, validated, or the network's own) in ``dtype``."""
        if parameters is not None:
            return [np.ascontiguousarray(a, dtype=dtype) for a in self._checked(parameters)]
        if dtype not in self._cast:
            self._cast = {dtype: [np.ascontiguousarray(p, dtype=dtype) for p in self._require_parameters()]}
        return self._cast[dtype]

    # --- passes -----------------------------------------------------------------------

    def _points(self, x, name: str, dtype):
        """(N, P, C) array of the inputs and the steps for their shape."""
        arr = as_real_array(x, name, dtype, (2, 3, 4), "(N, H, W, C), (N, L, C) or (N, d)")
        if self._input_shape is not None and len(arr.shape) - 1 != len(self._input_shape):
            raise ValueError(
                f"{name} must have {len(self._input_shape) + 1} axes, as the inputs of shape "
                f"(N, {', '.join(map(str, self._input_shape))}) the parameters were drawn for; got shape {arr.shape}"
            )
        steps = self._ensure(tuple(int(s) for s in arr.shape[1:]))
        n = arr.shape[0]
        return arr.reshape(n, -1, arr.shape[-1]), steps

    def _forward(self, x, steps, params, dtype, threads, keep: bool):
        """Outputs (N, k); with ``keep``, every weighted layer's input and every activation's phi'."""
        inputs: dict[int, np.ndarray] = {}
        slopes: dict[int, np.ndarray] = {}
        with np.errstate(over="ignore", invalid="ignore"):
            for s, step in enumerate(steps):
                if step.kind == "weights":
                    if keep:
                        inputs[s] = x
                    x = self._weighted(x, step, params, dtype)
                    if not np.isfinite(x).all():
                        raise OverflowError(
                            f"finite network overflows {dtype} in the pre-activations of layer {s} ({step.layer!r}); "
                            "lower W_std, b_std or the input scale"
                        )
                elif step.kind == "pool":
                    f = step.taps.shape[1]
                    out = _gather(x, step.taps, 0)
                    for t in range(1, f):
                        out += _gather(x, step.taps, t)
                    x = out / dtype.type(f)
                elif step.kind == "gap":
                    x = x.mean(axis=1, keepdims=True, dtype=dtype)
                elif step.kind == "flatten":
                    x = x.reshape(x.shape[0], 1, -1)
                else:
                    x, slope = _activate(step.layer, x, dtype, threads, keep)
                    if keep:
                        slopes[s] = slope
        return x.reshape(x.shape[0], -1), inputs, slopes

    @staticmethod
    def _weighted(x, step: _Step, params, dtype):
        w, b = params[step.param], params[step.param + 1]
        w = w.reshape(-1, w.shape[-2], w.shape[-1])  # (F, C_in, C_out)
        if _pointwise(step.taps):
            z = x @ w[0]
        else:
            z = _gather(x, step.taps, 0) @ w[0]
            for t in range(1, w.shape[0]):
                z += _gather(x, step.taps, t) @ w[t]
        z *= dtype.type(step.w_scale)
        if step.b_scale != 0.0:
            z += dtype.type(step.b_scale) * b
        return z

    def _backward(self, g, steps, params, inputs, slopes, dtype, on_weights):
        """Backpropagates ``g`` (M, 1, k), M = N m for m vectors per point, from the outputs down;
        calls ``on_weights(step, g)`` with the vectors at each weighted layer's output."""
        n = next(iter(inputs.values())).shape[0]
        first = min(inputs)
        for s in range(len(steps) - 1, first - 1, -1):
            step = steps[s]
            if step.kind == "weights":
                on_weights(s, step, g)
                if s == first:
                    break
                w = params[step.param]
                w = w.reshape(-1, w.shape[-2], w.shape[-1])
                scale = dtype.type(step.w_scale)
                if _pointwise(step.taps):
                    g = (g @ w[0].T) * scale
                else:
                    below = np.zeros((g.shape[0], step.in_positions, w.shape[1]), dtype=dtype)
                    for t in range(w.shape[0]):
                        _scatter(g @ w[t].T, step.taps, t, below)
                    g = below * scale
            elif step.kind == "pool":
                below = np.zeros((g.shape[0], step.in_positions, g.shape[2]), dtype=dtype)
                f = step.taps.shape[1]
                for t in range(f):
                    _scatter(g, step.taps, t, below)
                g = below / dtype.type(f)
            elif step.kind == "gap":
                g = np.broadcast_to(g / dtype.type(step.in_positions), (g.shape[0], step.in_positions, g.shape[2]))
            elif step.kind == "flatten":
                g = g.reshape(g.shape[0], step.in_positions, -1)
            else:
                m = g.shape[0] // n
                g = (g.reshape(n, m, *g.shape[1:]) * slopes[s][:, None]).reshape(g.shape)

    def apply(self, x, *, parameters=None, dtype=None, n_threads: int | None = None) -> np.ndarray:
        """The network's outputs ``f(x)``.

        Parameters
        ----------
        x : array_like, shape (N, H, W, C), (N, L, C) or (N, d)
        parameters : list of arrays, optional
            Use these (shapes of :attr:`parameters`) instead of the network's own.
        dtype : numpy.float32 or numpy.float64, optional
            Default: float32 when ``x`` is float32, float64 otherwise.
        n_threads : int >= 1, optional
            Threads of the activations (the matrix products use numpy's BLAS).

        Returns
        -------
        ndarray, shape (N, outputs)

        Raises
        ------
        OverflowError
            If a layer's pre-activations leave the range of ``dtype``.
        """
        dtype = resolve_dtype(dtype, x)
        a, steps = self._points(x, "x", dtype)
        params = self._parameters_as(parameters, dtype)
        return self._forward(a, steps, params, dtype, check_n_threads(n_threads), False)[0]

    def _vjp(self, x, cotangent, *, dtype, n_threads) -> list[np.ndarray]:
        """``J^T r``: the gradient of ``sum_{i, a} r[i, a] f_a(x_i)`` with respect to each parameter
        array, shaped like it, in ``dtype``.  ``cotangent`` r: (N, outputs)."""
        dtype = resolve_dtype(dtype, x)
        a, steps = self._points(x, "x", dtype)
        r = np.asarray(cotangent)
        if r.shape != (a.shape[0], self._outputs) or r.dtype.kind != "f":
            raise ValueError(f"cotangent must be a float array of shape (N, outputs) = {(a.shape[0], self._outputs)}")
        params = self._parameters_as(None, dtype)
        threads = check_n_threads(n_threads)
        _, inputs, slopes = self._forward(a, steps, params, dtype, threads, True)
        grads: list = [None] * len(params)

        def weights(s, step, g):
            h = inputs[s]
            f = step.taps.shape[1]
            gw = np.empty((f, h.shape[2], g.shape[2]), dtype=dtype)
            flat_g = g.reshape(-1, g.shape[2])
            for t in range(f):
                patch = h if _pointwise(step.taps) else _gather(h, step.taps, t)
                gw[t] = patch.reshape(-1, h.shape[2]).T @ flat_g
            grads[step.param] = (gw * dtype.type(step.w_scale)).reshape(params[step.param].shape)
            grads[step.param + 1] = flat_g.sum(axis=0) * dtype.type(step.b_scale)

        self._backward(np.ascontiguousarray(r, dtype=dtype)[:, None, :], steps, params, inputs, slopes, dtype, weights)
        return grads

    def _readout_input(self, x, dtype, threads):
        """The last Dense layer's input h (N, n) as float64, and (sigma_w^2 / n, sigma_b^2)."""
        a, steps = self._points(x, "x", dtype)
        _, inputs, _ = self._forward(a, steps, self._parameters_as(None, dtype), dtype, threads, True)
        last = steps[-1]
        return inputs[len(steps) - 1].reshape(a.shape[0], -1).astype(np.float64), (last.w_scale**2, last.b_scale**2)

    def _factors(self, a, steps, params, dtype, threads):
        """Per weighted layer, from the top: (h, g, taps, P_in) for the core, and the scales.

        h: (N, P_in C_in), the layer's inputs; g: (N, P_out k C_out), column (p k + a) C_out + c
        the derivative of output a with respect to channel c of the layer's output at position p.
        """
        _, inputs, slopes = self._forward(a, steps, params, dtype, threads, True)
        n, k = a.shape[0], self._outputs
        factors, scales = [], []

        def weights(s, step, g):
            h = inputs[s]
            factors.append(
                (
                    np.ascontiguousarray(h.reshape(n, -1)),
                    np.ascontiguousarray(g.reshape(n, k, *g.shape[1:]).transpose(0, 2, 1, 3)).reshape(n, -1),
                    step.taps,
                    step.in_positions,
                )
            )
            scales.append((step.w_scale**2, step.b_scale**2))

        start = np.ascontiguousarray(np.broadcast_to(np.eye(k, dtype=dtype), (n, k, k)).reshape(n * k, 1, k))
        self._backward(start, steps, params, inputs, slopes, dtype, weights)
        return factors, scales

    def train(
        self,
        x,
        y,
        learning_rate: float,
        steps: int,
        *,
        loss: str = "squared",
        optimizer: str = "gd",
        record_every: int | None = None,
        probe=None,
        dtype=None,
        n_threads: int | None = None,
        **options,
    ) -> TrainResult:
        """Full-batch training by :func:`ntkcore.training.train`, updating :attr:`parameters` in place.

        As :meth:`MLP.train`: ``loss`` is ``"squared"`` (``1/2 ||f(x) - y||^2``, y of shape
        (N, outputs) or (N,) for one output) or ``"cross_entropy"`` (softmax, labels (N,) in
        [0, outputs) or one-hot rows), ``optimizer`` ``"gd"`` or ``"adam"``; the probe NTK
        (``output="trace"``, on ``probe``, default ``x``) is recorded every ``record_every``
        steps.  ``x`` and ``probe`` are inputs as for :meth:`apply`; the parameters are
        drawn from ``x``'s shape if they were not yet.

        Returns
        -------
        TrainResult
            ``ntk_change`` is ``||Theta_t - Theta_0||_F / ||Theta_0||_F``.
        """
        dtype = resolve_dtype(dtype, x)
        self._points(x, "x", dtype)  # draws the parameters for x's shape, or checks it fits them
        return _training.train(
            self,
            x,
            y,
            learning_rate,
            steps,
            loss=loss,
            optimizer=optimizer,
            record_every=record_every,
            probe=probe,
            dtype=dtype,
            n_threads=n_threads,
            **options,
        )

    def ntk(
        self,
        x1,
        x2=None,
        *,
        output: str = "trace",
        parameters=None,
        dtype=None,
        n_threads: int | None = None,
    ) -> np.ndarray:
        """The empirical NTK ``J(x1) J(x2)^T`` over all :attr:`parameters`, without forming J.

        Computed layer by layer in the C++ core from the layers' inputs and backpropagated
        vectors (docs/math/6-finite-width.md): memory ``O(N k P sum(channels))`` for the
        vectors plus the output, never N x parameters.

        Parameters
        ----------
        x1 : array_like, shape (N1, H, W, C), (N1, L, C) or (N1, d)
        x2 : array_like, shape (N2, ...) with x1's channels, optional
            ``None`` means ``x1`` (the result is then exactly symmetric).
        output : "trace" or "full"
            ``"full"``: the (N1 k) x (N2 k) multi-output NTK, row ``i * k + a`` for point i
            and output a (reshape to (N1, k, N2, k)); ``"trace"``: the mean of its k
            diagonal blocks, (N1, N2).
        parameters : list of arrays, optional
            Use these (shapes of :attr:`parameters`) instead of the network's own.
        dtype : numpy.float32 or numpy.float64, optional
        n_threads : int >= 1, optional
            Threads of the core (bitwise the same result for every count).

        Returns
        -------
        ndarray of ``dtype``

        Raises
        ------
        OverflowError
            If the forward pass or an NTK entry leaves the range of ``dtype``.
        """
        output = choice(output, "output", _OUTPUTS)
        dtype = resolve_dtype(dtype, x1, x2)
        a, steps1 = self._points(x1, "x1", dtype)
        b, steps2 = (None, None) if x2 is None else self._points(x2, "x2", dtype)
        params = self._parameters_as(parameters, dtype)
        threads = check_n_threads(n_threads)
        f1, scales = self._factors(a, steps1, params, dtype, threads)
        f2 = None if b is None else self._factors(b, steps2, params, dtype, threads)[0]
        k = self._outputs if output == "full" else 1
        n2 = a.shape[0] if b is None else b.shape[0]
        theta = np.empty((a.shape[0] * k, n2 * k), dtype=dtype)
        _core.layer_empirical_ntk(scales, f1, f2, self._outputs, output, theta, threads)
        return theta


def _layer_list(net):
    """(net, its layers as a tuple) for a serial network or a FullyConnected."""
    if isinstance(net, FullyConnected):
        if net.parameterization != "ntk":
            raise ValueError(
                f"Network: the finite networks implement the NTK parameterization, got {net.parameterization!r}"
            )
        w_std, b_std = net._scales()
        act = _activations.get(net.activation)
        layers: list = []
        for m in range(net.depth + 1):
            layers += ([act] if m else []) + [_layers_mod.Dense(w_std[m], b_std[m])]
        return net, tuple(layers)
    if isinstance(net, Serial):
        return net, net.layers
    raise TypeError(f"net must be an ntkcore.serial(...) network or an ntkcore.FullyConnected, got {net!r}")


def _activate(act, z, dtype, threads, keep):
    """phi(z) (in place when the core evaluates it) and phi'(z) when ``keep``."""
    if isinstance(act, _activations.Numerical) and not act.builtin:
        flat = z.reshape(-1).astype(np.float64)
        h = np.asarray(act.fn(flat), dtype=dtype).reshape(z.shape)
        slope = np.asarray(act.dfn(flat), dtype=dtype).reshape(z.shape) if keep else None
        return h, slope
    if not z.flags.owndata or not z.flags.c_contiguous:  # a view of the inputs or of a kept array
        z = np.array(z, dtype=dtype, order="C")
    slope = np.empty_like(z) if keep else None
    _core.activation_values((act.family, act.core_params), z, slope, threads)
    return z, slope

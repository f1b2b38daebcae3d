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

from collections.abc import Sequence

import numpy as np

from . import activations as _activations
from . import training as _training
from ._native import core as _core
from ._validation import as_points, check_n_threads, check_seed, choice, integer, integers, resolve_dtype
from .network import FullyConnected, Kernels, _format_scales, _layer_scales
from .training import TrainResult

__all__ = ["MLP", "TrainResult", "monte_carlo_kernels"]

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
    net_or_architecture: MLP | FullyConnected,
    x1,
    x2=None,
    *,
    width: int | None = None,
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
    infinite-width kernels of ``ntkcore.FullyConnected(depth, activation, W_std, b_std)``
    (docs/math/6-finite-width.md).

    Statistical error: the NTK estimate fluctuates like ``1 / sqrt(width * n_samples)``
    (the empirical NTK of one network is within O(1/sqrt(width)) of the limit).  The
    output covariance of one network is a rank-k sample of a Gaussian process, so its
    error is ``O(1 / sqrt(n_samples * k))`` whatever the width.  ``nngp_estimator="hidden"``
    instead averages its expectation over the last layer's parameters,
    ``W_std^2 / n_L h^L(x1) h^L(x2)^T + b_std^2`` (the same kernel, unbiased for the same
    finite-width mean), whose error shrinks like ``1 / sqrt(width * n_samples)``.

    Parameters
    ----------
    net_or_architecture : ntkcore.FullyConnected or MLP
        A ``FullyConnected`` architecture (then ``width`` is required: every hidden
        layer gets that width, the input ``x1.shape[1]`` and the output ``n_outputs``),
        or an ``MLP`` whose widths, activation and scales are used (its own parameters
        are not; ``width``, if given, replaces every hidden width).
    x1 : array_like, shape (N1, d)
    x2 : array_like, shape (N2, d), optional
    width : int >= 1
    n_samples : int >= 1
    seed : int >= 0
        Sample s uses the s-th child of ``numpy.random.SeedSequence(seed)``.
    n_outputs : int >= 1
        Outputs per network for a ``FullyConnected`` architecture (more outputs average
        more i.i.d. copies per network).
    nngp_estimator : "output" or "hidden"
        ``"output"``: ``f(x1) f(x2)^T / k``; ``"hidden"``: its conditional mean given the
        last hidden layer (see above).
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
    if width is not None:
        width = integer(width, "width", minimum=1)
    dtype = resolve_dtype(dtype, x1, x2)
    a = as_points(x1, "x1", dtype)
    b = None if x2 is None else as_points(x2, "x2", dtype, features=a.shape[1])
    if isinstance(net_or_architecture, FullyConnected):
        arch = net_or_architecture
        if arch.parameterization != "ntk":
            raise ValueError(
                "monte_carlo_kernels needs an NTK-parameterization architecture: the finite "
                f"networks implement only that one, got parameterization={arch.parameterization!r}"
            )
        if width is None:
            raise ValueError("width is required when net_or_architecture is a FullyConnected")
        widths = [a.shape[1]] + [width] * arch.depth + [n_outputs]
        activation = arch.activation
        w_std, b_std = arch._scales()
    elif isinstance(net_or_architecture, MLP):
        net = net_or_architecture
        if n_outputs != 1:
            raise ValueError("n_outputs applies to a FullyConnected architecture; an MLP has its own")
        widths = list(net.widths)
        if width is not None:
            widths[1:-1] = [width] * net.depth
        if a.shape[1] != widths[0]:
            raise ValueError(
                f"x1 must have {widths[0]} features per row (the network's input width), got shape {a.shape}"
            )
        activation, w_std, b_std = net.activation, net.W_std, net.b_std
    else:
        raise TypeError(
            "net_or_architecture must be an ntkcore.FullyConnected or an ntkcore.finite.MLP, "
            f"got {type(net_or_architecture).__name__}"
        )
    threads = check_n_threads(n_threads)
    n2 = a.shape[0] if b is None else b.shape[0]
    nngp = np.zeros((a.shape[0], n2), dtype=np.float64)
    ntk = np.zeros((a.shape[0], n2), dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):  # checked below
        for child in np.random.SeedSequence(seed).spawn(n_samples):
            net = MLP(widths, activation, w_std, b_std, seed=child)
            if nngp_estimator == "output":
                f1 = net.apply(a, dtype=dtype, n_threads=threads or None)
                f2 = f1 if b is None else net.apply(b, dtype=dtype, n_threads=threads or None)
                nngp += (f1.astype(np.float64) @ f2.astype(np.float64).T) / widths[-1]
            else:
                h1 = net._hidden(a, dtype, threads).astype(np.float64)
                h2 = h1 if b is None else net._hidden(b, dtype, threads).astype(np.float64)
                nngp += (w_std[-1] ** 2 / widths[-2]) * (h1 @ h2.T) + b_std[-1] ** 2
            ntk += net.ntk(a, b, dtype=dtype, n_threads=threads or None)
        out = Kernels((nngp / n_samples).astype(dtype), (ntk / n_samples).astype(dtype))
    for name, value in zip(("NNGP", "NTK"), out):
        if not np.isfinite(value).all():
            x_max = max(np.abs(a).max(), 0 if b is None else np.abs(b).max())
            raise OverflowError(
                f"monte_carlo_kernels: the {name} estimate overflows {dtype} (the networks' "
                f"outputs and NTKs fit, their products or sums do not); lower W_std or the "
                f"input scale (max |x| = {x_max:.3g}, max W_std = {max(w_std):.3g})"
            )
    return out

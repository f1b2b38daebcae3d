"""Networks as lists of layers (docs/math/7-convolutions.md): ``ntkcore.serial(...)``, the convolutional NTK.

>>> import numpy as np, ntkcore
>>> from ntkcore import layers
>>> net = ntkcore.serial(layers.Conv((3, 3), padding="SAME", W_std=2**0.5, b_std=0.1), "relu",
...                      layers.GlobalAvgPool(), layers.Dense(W_std=2**0.5, b_std=0.1))
>>> net.ntk(np.random.default_rng(0).standard_normal((4, 8, 8, 1))).shape
(4, 4)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import numpy as np

from . import activations as _activations
from . import layers as _layers
from ._native import core as _core
from ._progress import Progress
from ._validation import as_real_array, check_n_threads, explain_memory_error, resolve_dtype
from .network import Kernels, float32_range

__all__ = ["Serial", "serial"]

_LAYERS = (_layers.Dense, _layers.Conv, _layers.AvgPool, _layers.GlobalAvgPool, _layers.Flatten)


def _layer(value, position: int):
    if isinstance(value, _LAYERS):
        return value
    try:
        return _activations.get(value)
    except TypeError:
        raise TypeError(
            f"layer {position}: expected an ntkcore.layers value or an activation (object or name), got {value!r}"
        ) from None


@dataclass(frozen=True)
class Serial:
    """A network given as a sequence of layers, applied in order (see :func:`serial`)."""

    layers: tuple[object, ...]

    def __post_init__(self):
        values = tuple(_layer(v, i) for i, v in enumerate(self.layers))
        if not values:
            raise ValueError("serial needs at least one layer")
        object.__setattr__(self, "layers", values)

    def __repr__(self) -> str:
        return "serial(" + ", ".join(repr(v) for v in self.layers) + ")"

    def _spec(self, rank: int) -> list:
        """The layer list as the core takes it, for inputs with ``rank`` spatial axes."""
        spec: list[tuple] = []
        for i, v in enumerate(self.layers):
            if isinstance(v, (_layers.Conv, _layers.AvgPool)):
                window = v.filter_shape if isinstance(v, _layers.Conv) else v.window_shape
                if len(window) != rank:
                    raise ValueError(f"layer {i} ({v!r}) has {len(window)} spatial axes, the inputs have {rank}")
                pad = (1,) * (2 - rank)  # sequences are H x 1 grids
                entry = (tuple(window) + pad, tuple(cast(tuple, v.strides)) + pad, v.padding)
                if isinstance(v, _layers.Conv):
                    spec.append(("conv", *entry, v.W_std**2, v.b_std**2))
                else:
                    spec.append(("avg_pool", *entry))
            elif isinstance(v, _layers.Dense):
                spec.append(("dense", v.W_std**2, v.b_std**2))
            elif isinstance(v, _layers.GlobalAvgPool):
                spec.append(("gap",))
            elif isinstance(v, _layers.Flatten):
                spec.append(("flatten",))
            else:
                act = cast(_activations.Activation, v)
                spec.append(("act", (act.family, act.core_params)))
        return spec

    def kernels(self, x1, x2=None, *, dtype=None, n_threads: int | None = None, progress=False) -> Kernels:
        """NNGP and NTK Gram matrices between the inputs ``x1`` and ``x2``.

        Parameters
        ----------
        x1 : array_like, shape (N1, H, W, C), (N1, L, C) or (N1, d)
            Channels-last images, sequences or vectors; floating or integer (converted exactly).
        x2 : array_like, shape (N2, H2, W2, C) (the same rank and channels), optional
            ``None`` means ``x1``: one triangle of image pairs, mirrored.  The grids may differ
            unless a Flatten readout needs them equal.
        dtype : numpy.float32 or numpy.float64, optional
            Default: float32 when every input is float32, float64 otherwise.
        n_threads : int, optional
            Threads over input pairs (default: all OpenMP offers).
        progress : bool or callable(done, total)
            Report the input pairs finished (the tiles, for a dense chain on vectors):
            ``True`` shows a tqdm bar (when tqdm is installed) or a line on stderr; a
            callable is called on this thread at most every 50 ms and at the end.  Ctrl-C,
            or an exception it raises, ends the run.

        Returns
        -------
        Kernels
            ``nngp`` and ``ntk``, (N1, N2) arrays of ``dtype``.
        """
        report = Progress(progress, "serial kernels", unit="pairs")
        dtype = resolve_dtype(dtype, x1, x2)
        a, grid1, channels = _inputs(x1, "x1", dtype)
        if x2 is None:
            b, grid2 = None, grid1
        else:
            b, grid2, channels2 = _inputs(x2, "x2", dtype)
            if np.ndim(x2) != np.ndim(x1) or channels2 != channels:
                raise ValueError(
                    f"x2 must have x1's spatial rank and channels: x1 has shape {np.shape(x1)}, x2 {np.shape(x2)}"
                )
        threads = check_n_threads(n_threads)
        n2 = a.shape[0] if b is None else b.shape[0]
        shaped = (a.reshape(np.shape(x1)), None if b is None else b.reshape(np.shape(x2)))
        outputs = f"two {a.shape[0]} x {n2} {dtype.name} outputs"
        with (
            float32_range(self.diagonal, dtype, *shaped),
            explain_memory_error(outputs, 2.0 * a.shape[0] * n2 * dtype.itemsize),
            report,
        ):
            spec = self._spec(np.ndim(x1) - 2)
            return Kernels(*_core.layer_gram(spec, a, grid1, b, grid2, channels, threads, progress=report.callback))

    def nngp(self, x1, x2=None, *, dtype=None, n_threads=None) -> np.ndarray:
        """The NNGP Gram matrix K, shape (N1, N2); arguments as :meth:`kernels`."""
        return self.kernels(x1, x2, dtype=dtype, n_threads=n_threads).nngp

    def ntk(self, x1, x2=None, *, dtype=None, n_threads=None) -> np.ndarray:
        """The NTK Gram matrix Theta, shape (N1, N2); arguments as :meth:`kernels`."""
        return self.kernels(x1, x2, dtype=dtype, n_threads=n_threads).ntk

    def diagonal(self, x, *, dtype=None, n_threads=None) -> Kernels:
        """``K(x_i, x_i)`` and ``Theta(x_i, x_i)`` for each input, shape (N,): one chain per input."""
        dtype = resolve_dtype(dtype, x)
        a, grid, channels = _inputs(x, "x", dtype)
        with float32_range(self.diagonal, dtype, a.reshape(np.shape(x))):
            return Kernels(
                *_core.layer_diagonal(self._spec(np.ndim(x) - 2), a, grid, channels, check_n_threads(n_threads))
            )


def serial(*layers) -> Serial:
    """A network from its layers in order: ``ntkcore.layers`` values and activations.

    ``serial(layers.Conv((3, 3), padding="SAME", W_std=2**0.5, b_std=0.1), "relu",
    layers.GlobalAvgPool(), layers.Dense(W_std=2**0.5, b_std=0.1))`` is the infinite-width
    limit (channels -> infinity) of that CNN in the NTK parameterization, with the
    conventions of neural-tangents' stax.  Activations may differ from layer to layer;
    spatial inputs need a GlobalAvgPool or Flatten readout.

    Gauss-Hermite activations (:class:`ntkcore.activations.Numerical`: the built-ins such
    as ``"tanh"``, ``"softplus"``, ``"silu"``, or a numpy callable) may stand at any
    position.  Their Hermite coefficients are computed once per (input, position) and
    layer, the degree chosen from the extreme pre-activation variances over all inputs
    and positions of that layer, with the accuracy policy of ``Numerical``
    (:class:`~ntkcore.activations.AccuracyError` naming the layer, or an
    :class:`~ntkcore.activations.AccuracyWarning` for a fixed ``deg``).  Memory: per such
    layer, N x P x K coefficients of phi and of phi' (K terms, at most the degree; in
    float64 while they are computed, then in ``dtype``).

    Without pooling (no AvgPool or GlobalAvgPool, hence a Flatten readout) and with one
    grid for x1 and x2, only the spatial diagonal ``Sigma[p, p]`` is ever needed (docs/math/7-convolutions.md)
    : the kernels then cost O(P) per pair and layer instead of O(P^2), chosen
    automatically.
    """
    return Serial(tuple(layers))


def _inputs(x, name: str, dtype: np.dtype):
    """(N, P * C) C-contiguous array, the core's grid (h, w, spatial) and the channels."""
    arr = as_real_array(x, name, dtype, (2, 3, 4), "(N, H, W, C), (N, L, C) or (N, d)")
    n, channels = arr.shape[0], arr.shape[-1]
    spatial = arr.shape[1:-1]
    grid = (*((*spatial, 1, 1))[:2], bool(spatial))
    return arr.reshape(n, -1), grid, channels

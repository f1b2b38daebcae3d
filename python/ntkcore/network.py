"""Fully-connected architectures and their infinite-width kernels.

Mathematics: docs/math/1-parameterization.md to docs/math/3-dual-maps.md.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, NamedTuple, Union, cast

import numpy as np

from . import activations as _activations
from . import layers as _layers
from ._native import core as _core
from ._progress import Progress
from ._validation import as_points, check_n_threads, explain_memory_error, integers, real, resolve_dtype

__all__ = ["FullyConnected", "Kernels"]

Scale = Union[float, Sequence[float]]


class Kernels(NamedTuple):
    """The NNGP kernel ``nngp`` (K) and the neural tangent kernel ``ntk`` (Theta).

    Gram matrices of shape (N1, N2), or 1-D arrays of shape (N,) from
    :meth:`FullyConnected.diagonal`.  Units: output variance of the network
    (the scale of ``f(x)**2``).
    """

    nngp: np.ndarray
    ntk: np.ndarray


def _layer_scales(value, name: str, depth: int) -> tuple[float, ...]:
    """A scalar or one value per dense layer (``depth + 1``), as a tuple of floats >= 0."""
    if isinstance(value, (str, bytes)) or isinstance(value, bool):
        raise TypeError(f"{name} must be a number or a sequence of {depth + 1} numbers, got {value!r}")
    if isinstance(value, numbers.Real):
        values = (value,) * (depth + 1)
    else:
        try:
            values = tuple(np.asarray(value).tolist())
        except Exception as exc:  # pragma: no cover - exotic sequences
            raise TypeError(f"{name} must be a number or a sequence of numbers") from exc
        if np.ndim(value) != 1 or len(values) != depth + 1:
            raise ValueError(
                f"{name} must be a scalar or have one entry per dense layer (depth + 1 = "
                f"{depth + 1}), got shape {np.shape(value)}"
            )
    return tuple(real(v, name, minimum=0.0, finite_square=True) for v in values)


def _hidden_widths(value, depth: int) -> tuple[int, ...]:
    """An int or one int >= 1 per hidden layer (``depth``), as a tuple of ints."""
    return integers(value, f"widths (one per hidden layer, depth = {depth})", length=depth)


def _format_scales(values: tuple[float, ...]) -> str:
    """Per-layer scales for a repr: the scalar when all layers share it, else the tuple."""
    return repr(values[0]) if len(set(values)) == 1 else repr(values)


@dataclass(frozen=True)
class FullyConnected:
    """A deep fully-connected network in the infinite-width limit.

    ``depth`` hidden layers, i.e. ``depth + 1`` dense layers with ``depth``
    activations in between::

        Dense -> phi -> Dense -> ... -> phi -> Dense

    Parameters
    ----------
    depth : int >= 0
        Number of hidden layers (activations).
    activation : str or ntkcore.activations.Activation
        ``"relu"``, ``"erf"``, ... or an activation object such as ``Erf(a=2)``.
    W_std, b_std : float >= 0, or a sequence of ``depth + 1`` floats
        Weight and bias standard deviations (sigma_w, sigma_b), one per dense
        layer when a sequence is given.  Stored as tuples.
    parameterization : "ntk" or "standard"
        docs/math/1-parameterization.md to 2-recursion.md.  Both give the same NNGP kernel; the
        standard parameterization's NTK, ``Theta <- n_in Sigma + W_std^2 Theta + [b_std > 0]`` per dense layer, grows
        with the widths.
    widths : int >= 1 or a sequence of ``depth`` ints, standard parameterization only
        The hidden widths n_1..n_L (the fan-in of dense layers 2..L+1; the first layer's is
        the input dimension).  An int is used for every hidden layer; stored as a tuple.
        Required for ``"standard"``, refused for ``"ntk"``.
    """

    depth: int
    activation: _activations.Activation = _activations.Relu()  # noqa: RUF009 (activations are immutable values)
    W_std: Scale = 1.0
    b_std: Scale = 0.0
    parameterization: str = "ntk"
    widths: tuple[int, ...] | None = None

    def __post_init__(self):
        depth = self.depth
        if isinstance(depth, bool) or not isinstance(depth, numbers.Integral):
            raise TypeError(f"depth must be an integer >= 0, got {depth!r}")
        if depth < 0:
            raise ValueError(f"depth must be >= 0, got {depth}")
        depth = int(depth)
        object.__setattr__(self, "depth", depth)
        object.__setattr__(self, "activation", _activations.get(self.activation))
        object.__setattr__(self, "W_std", _layer_scales(self.W_std, "W_std", depth))
        object.__setattr__(self, "b_std", _layer_scales(self.b_std, "b_std", depth))
        if self.parameterization not in ("ntk", "standard"):
            raise ValueError(f"parameterization must be 'ntk' or 'standard', got {self.parameterization!r}")
        if self.parameterization == "standard":
            if self.widths is None:
                raise ValueError("widths (the hidden widths) are required for parameterization='standard'")
            object.__setattr__(self, "widths", _hidden_widths(self.widths, depth))
        elif self.widths is not None:
            raise ValueError(
                "widths only apply to parameterization='standard': the NTK parameterization's "
                "kernels do not depend on the widths"
            )

    def _scales(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """(W_std, b_std) of every dense layer (``depth + 1`` entries each)."""
        return cast("tuple[float, ...]", self.W_std), cast("tuple[float, ...]", self.b_std)

    def __repr__(self) -> str:
        return (
            f"FullyConnected(depth={self.depth}, activation={self.activation!r}, "
            f"W_std={_format_scales(self._scales()[0])}, b_std={_format_scales(self._scales()[1])}, "
            f"parameterization={self.parameterization!r}"
            + ("" if self.widths is None else f", widths={self.widths!r}")
            + ")"
        )

    @property
    def layers(self) -> tuple:
        """The equivalent layer list: ``(Dense, activation, Dense, ..., activation, Dense)``.

        ``depth + 1`` :class:`ntkcore.layers.Dense` layers with this network's ``W_std`` and
        ``b_std``, the activation between each two; ``ntkcore.serial(*net.layers)`` has the same
        kernels on (N, d) inputs (the layer-list core runs such chains on this network's fused
        engine).  NTK parameterization only: ValueError for ``"standard"``.
        """
        if self.parameterization != "ntk":
            raise ValueError("layer lists use the NTK parameterization; this network is 'standard'")
        w_std, b_std = self._scales()
        out: list[object] = [_layers.Dense(W_std=w_std[0], b_std=b_std[0])]
        for w, b in zip(w_std[1:], b_std[1:]):
            out += [self.activation, _layers.Dense(W_std=w, b_std=b)]
        return tuple(out)

    def as_serial(self):
        """``ntkcore.serial(*self.layers)``: this network as a layer list (see :attr:`layers`)."""
        from .serial import serial

        return serial(*self.layers)

    def _core_network(self):
        act = self.activation
        return (
            act.family,
            act.core_params,
            [w * w for w in self.W_std],
            [b * b for b in self.b_std],
            None if self.widths is None else [float(n) for n in self.widths],
        )

    def kernels(
        self,
        x1,
        x2=None,
        *,
        dtype=None,
        n_threads: int | None = None,
        progress=False,
    ) -> Kernels:
        """NNGP and NTK Gram matrices between the rows of ``x1`` and ``x2``.

        Parameters
        ----------
        x1 : array_like, shape (N1, d)
            Input points, one per row; any real floating array-like.
        x2 : array_like, shape (N2, d), optional
            Second set of points; ``None`` means ``x1`` and computes one
            triangle of the symmetric result.
        dtype : numpy.float32 or numpy.float64, optional
            Precision of the computation and of the result.  Default: float32
            when every input is float32, float64 otherwise.
        n_threads : int >= 1, optional
            Worker threads (default: all the OpenMP runtime offers).
        progress : bool or callable(done, total)
            Report the 64 x 64 tiles finished: ``True`` shows a tqdm bar (when tqdm is
            installed) or a line on stderr; a callable is called on this thread at most
            every 50 ms and at the end.  Ctrl-C, or an exception it raises, ends the run.

        Returns
        -------
        Kernels
            ``nngp`` and ``ntk``, each an (N1, N2) array of ``dtype``.
        """
        report = Progress(progress, "FullyConnected.kernels")
        dtype = resolve_dtype(dtype, x1, x2)
        a = as_points(x1, "x1", dtype)
        b = None if x2 is None else as_points(x2, "x2", dtype, features=a.shape[1])
        threads = check_n_threads(n_threads)
        n2 = a.shape[0] if b is None else b.shape[0]
        outputs = f"two {a.shape[0]} x {n2} {dtype.name} outputs"
        with (
            float32_range(self.diagonal, dtype, a, b),
            explain_memory_error(outputs, 2.0 * a.shape[0] * n2 * dtype.itemsize),
        ):
            with report:
                result = Kernels(*_core.gram(self._core_network(), a, b, threads, progress=report.callback))
            # A cross kernel's diagonals are checked against the float64 range only (entries can
            # fit when one set's K(x, x) does not): two reductions find an entry that did not.
            if not all(np.isfinite(k.max()) and np.isfinite(k.min()) for k in result):
                raise OverflowError("kernels overflow: an entry exceeds the floating-point range")
        return result

    def nngp(self, x1, x2=None, *, dtype=None, n_threads=None) -> np.ndarray:
        """The NNGP Gram matrix K, shape (N1, N2); arguments as :meth:`kernels`."""
        return self.kernels(x1, x2, dtype=dtype, n_threads=n_threads).nngp

    def ntk(self, x1, x2=None, *, dtype=None, n_threads=None) -> np.ndarray:
        """The NTK Gram matrix Theta, shape (N1, N2); arguments as :meth:`kernels`."""
        return self.kernels(x1, x2, dtype=dtype, n_threads=n_threads).ntk

    def diagonal(self, x, *, dtype=None) -> Kernels:
        """``K(x_i, x_i)`` and ``Theta(x_i, x_i)`` for each row, in O(N) time and memory.

        Parameters
        ----------
        x : array_like, shape (N, d)

        Returns
        -------
        Kernels
            ``nngp`` and ``ntk``, 1-D arrays of shape (N,).
        """
        dtype = resolve_dtype(dtype, x)
        a = as_points(x, "x", dtype)
        nngp = np.empty(a.shape[0], dtype=dtype)
        ntk = np.empty(a.shape[0], dtype=dtype)
        with float32_range(self.diagonal, dtype, a):
            _core.diagonal(self._core_network(), a, nngp, ntk)
        return Kernels(nngp, ntk)


@contextmanager
def float32_range(diagonal: Callable[..., Kernels], dtype: np.dtype, *points: np.ndarray | None) -> Iterator[None]:
    """In float32, explain an overflow and warn of an underflow by the float64 diagonal.

    Every entry obeys ``|K(x, x')| <= sqrt(K(x, x) K(x', x'))``, so the per-point values
    ``diagonal(x, dtype=numpy.float64)`` (O(N) work next to the Gram's O(N^2)) tell whether
    the kernels' scale fits float32.
    """
    if dtype != np.float32:
        yield
        return
    given = [p for p in points if p is not None]
    tiny, huge = float(np.finfo(np.float32).tiny), float(np.finfo(np.float32).max)
    try:
        yield
    except OverflowError as exc:
        try:
            diagonals = [diagonal(p, dtype=np.float64) for p in given]
        except OverflowError:
            raise exc from None
        largest = max(float(np.max(np.abs(d.ntk))) for d in diagonals)
        scale = max(float(np.max(np.mean(p.reshape(len(p), -1).astype(np.float64) ** 2, axis=1))) for p in given)
        raise OverflowError(
            f"float32 kernels overflow: they exceed float32's largest {huge:.3g} (in float64, Theta(x, x) "
            f"reaches {largest:.3g}; the inputs' mean square is up to {scale:.3g}); use "
            "dtype=numpy.float64, or rescale the inputs or lower W_std"
        ) from exc
    smallest = math.inf
    for p in given:
        d = diagonal(p, dtype=np.float64)
        values = np.concatenate([d.nngp, d.ntk])
        values = values[values > 0]
        if values.size:
            smallest = min(smallest, float(values.min()))
    if smallest < tiny:
        warnings.warn(
            f"float32 kernels underflow: K(x, x) or Theta(x, x) is as small as {smallest:.3g}, below "
            f"float32's smallest normal number {tiny:.3g}, so entries are 0 or lose digits; "
            "use dtype=numpy.float64",
            RuntimeWarning,
            stacklevel=4,
        )

"""Layers of a network given as a list (docs/math/7-convolutions.md, the conventions of neural-tangents' stax).

Each layer is an immutable, comparable value.  A network is a sequence of them, with
activations (``ntkcore.activations`` objects or names) at any position::

    [Conv((3, 3), padding="SAME", W_std=2**0.5, b_std=0.1), "relu",
     Conv((3, 3), padding="SAME", W_std=2**0.5, b_std=0.1), "relu",
     GlobalAvgPool(), Dense(W_std=2**0.5, b_std=0.1)]

Inputs are channels-last: (N, H, W, C) images, (N, L, C) sequences, or (N, d) vectors (no
spatial axes: a fully-connected network).  The state of a pair of inputs is a covariance
over pairs of positions until a readout (:class:`GlobalAvgPool` or :class:`Flatten`)
reduces it to one number; a :class:`Dense` layer before the readout acts on the channels
at every position (a 1 x 1 convolution).  NTK parameterization throughout.

:func:`ntkcore.reference.layer_kernels` evaluates such a list in plain numpy (the oracle).
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

from ._validation import integers, real

__all__ = ["PADDINGS", "AvgPool", "Conv", "Dense", "Flatten", "GlobalAvgPool"]

PADDINGS = ("VALID", "SAME", "CIRCULAR")


def _scale(value, name: str, owner: str) -> float:
    """A standard deviation: a finite real >= 0 whose square is finite too."""
    return real(value, f"{owner}: {name}", minimum=0.0, finite_square=True)


def _shape(value, name: str, owner: str, rank: int | None = None) -> tuple[int, ...]:
    """A tuple of integers >= 1 (one per spatial axis)."""
    if isinstance(value, numbers.Number):
        raise TypeError(f"{owner}: {name} must be a tuple of integers >= 1, such as (3, 3), got {value!r}")
    values = integers(value, f"{owner}: {name}")
    if rank is not None and len(values) != rank:
        raise ValueError(f"{owner}: {name} must have {rank} entries (one per spatial axis), got {value!r}")
    return tuple(int(v) for v in values)


def _padding(value, owner: str) -> str:
    if not isinstance(value, str) or value.upper() not in PADDINGS:
        raise ValueError(f"{owner}: padding must be one of {', '.join(PADDINGS)}, got {value!r}")
    return value.upper()


@dataclass(frozen=True)
class Dense:
    """A dense layer: ``Sigma <- W_std^2 Sigma + b_std^2``, ``Theta <- Sigma + W_std^2 Theta``.

    On spatial inputs it acts on the channels at every position (a 1 x 1 convolution).
    """

    W_std: float = 1.0
    b_std: float = 0.0

    def __post_init__(self):
        object.__setattr__(self, "W_std", _scale(self.W_std, "W_std", "Dense"))
        object.__setattr__(self, "b_std", _scale(self.b_std, "b_std", "Dense"))


@dataclass(frozen=True)
class Conv:
    """A convolution over the spatial axes, averaged over its filter (docs/math/7-convolutions.md).

    Parameters
    ----------
    filter_shape : tuple of ints >= 1
        One entry per spatial axis: ``(3, 3)`` for images, ``(3,)`` for sequences.
    strides : tuple of ints >= 1, optional
        Default 1 along every axis.
    padding : "VALID", "SAME" or "CIRCULAR"
        VALID (the default, as neural-tangents, Keras and PyTorch) shrinks the grid; SAME
        pads with zeros as XLA does (``out = ceil(in / stride)``, the extra padding after);
        CIRCULAR wraps around.  With SAME the divisor stays the filter size.
    W_std, b_std : float >= 0
    """

    filter_shape: tuple[int, ...]
    strides: tuple[int, ...] | None = None
    padding: str = "VALID"
    W_std: float = 1.0
    b_std: float = 0.0

    def __post_init__(self):
        shape = _shape(self.filter_shape, "filter_shape", "Conv")
        object.__setattr__(self, "filter_shape", shape)
        strides = (1,) * len(shape) if self.strides is None else _shape(self.strides, "strides", "Conv", len(shape))
        object.__setattr__(self, "strides", strides)
        object.__setattr__(self, "padding", _padding(self.padding, "Conv"))
        object.__setattr__(self, "W_std", _scale(self.W_std, "W_std", "Conv"))
        object.__setattr__(self, "b_std", _scale(self.b_std, "b_std", "Conv"))


@dataclass(frozen=True)
class AvgPool:
    """Average pooling over windows of positions (neural-tangents' edge handling: zeros
    outside the grid under SAME, divisor the window size).

    Parameters
    ----------
    window_shape : tuple of ints >= 1, one per spatial axis
    strides : tuple of ints >= 1, optional
        Default 1 along every axis (as neural-tangents).
    padding : "VALID", "SAME" or "CIRCULAR"
    """

    window_shape: tuple[int, ...]
    strides: tuple[int, ...] | None = None
    padding: str = "VALID"

    def __post_init__(self):
        shape = _shape(self.window_shape, "window_shape", "AvgPool")
        object.__setattr__(self, "window_shape", shape)
        strides = (1,) * len(shape) if self.strides is None else _shape(self.strides, "strides", "AvgPool", len(shape))
        object.__setattr__(self, "strides", strides)
        object.__setattr__(self, "padding", _padding(self.padding, "AvgPool"))


@dataclass(frozen=True)
class GlobalAvgPool:
    """Readout: the mean over every pair of positions, ``K = mean_{p, p'} Sigma[p, p']``."""


@dataclass(frozen=True)
class Flatten:
    """Readout: the mean over the spatial diagonal, ``K = mean_p Sigma[p, p]`` (equal grids)."""

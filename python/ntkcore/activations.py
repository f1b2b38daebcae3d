"""Activation functions with closed-form dual maps (SPEC sec. 3).

Each activation is an immutable, comparable value.  The kernels only need its
dual maps ``T(Sigma) = E[phi(u) phi(v)]`` and ``Tdot(Sigma) = E[phi'(u) phi'(v)]``
for ``(u, v) ~ N(0, Sigma)``; the closed forms live in the C++ core and, as plain
numpy, in :mod:`ntkcore.reference`.

Every activation belongs to one *family* that the core evaluates:

* ``ab_relu`` -- the piecewise-linear ``phi(x) = a x (x < 0), b x (x >= 0)``:
  :class:`ABRelu`, :class:`Relu`, :class:`LeakyRelu`, :class:`Abs`, :class:`Identity`;
* ``sign`` -- :class:`Sign`;
* ``erf`` -- ``a erf(b x) + c``: :class:`Erf`, :class:`SigmoidLike`.

Activations may also be given by name (see :func:`get`).
"""

from __future__ import annotations

import difflib
import math
import numbers
from dataclasses import dataclass
from typing import ClassVar, Dict, Tuple, Type, Union

__all__ = [
    "Activation",
    "ABRelu",
    "Relu",
    "LeakyRelu",
    "Abs",
    "Identity",
    "Sign",
    "Erf",
    "SigmoidLike",
    "get",
]


def _finite_float(value, name: str, owner: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{owner}: {name} must be a real number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{owner}: {name} must be finite, got {value!r}")
    return value


class Activation:
    """Base class of the activations: subclasses define ``family`` and ``core_params``."""

    family: ClassVar[str]

    @property
    def core_params(self) -> Tuple[float, float, float]:
        """Three parameters of the family, in the order the core expects."""
        raise NotImplementedError


@dataclass(frozen=True)
class ABRelu(Activation):
    """``phi(x) = a * x`` for ``x < 0`` and ``b * x`` for ``x >= 0``."""

    a: float = 0.0
    b: float = 1.0
    family: ClassVar[str] = "ab_relu"

    def __post_init__(self):
        object.__setattr__(self, "a", _finite_float(self.a, "a", "ABRelu"))
        object.__setattr__(self, "b", _finite_float(self.b, "b", "ABRelu"))

    @property
    def core_params(self):
        return (self.a, self.b, 0.0)


@dataclass(frozen=True)
class Relu(Activation):
    """``phi(x) = max(x, 0)``."""

    family: ClassVar[str] = "ab_relu"

    @property
    def core_params(self):
        return (0.0, 1.0, 0.0)


@dataclass(frozen=True)
class LeakyRelu(Activation):
    """``phi(x) = alpha * x`` for ``x < 0``, ``x`` otherwise."""

    alpha: float = 0.01
    family: ClassVar[str] = "ab_relu"

    def __post_init__(self):
        object.__setattr__(self, "alpha", _finite_float(self.alpha, "alpha", "LeakyRelu"))

    @property
    def core_params(self):
        return (self.alpha, 1.0, 0.0)


@dataclass(frozen=True)
class Abs(Activation):
    """``phi(x) = |x|``."""

    family: ClassVar[str] = "ab_relu"

    @property
    def core_params(self):
        return (-1.0, 1.0, 0.0)


@dataclass(frozen=True)
class Identity(Activation):
    """``phi(x) = x`` (the network is then linear)."""

    family: ClassVar[str] = "ab_relu"

    @property
    def core_params(self):
        return (1.0, 1.0, 0.0)


@dataclass(frozen=True)
class Sign(Activation):
    """``phi(x) = sign(x)`` (``sign(0) = 0``); its derivative is zero almost everywhere."""

    family: ClassVar[str] = "sign"

    @property
    def core_params(self):
        return (0.0, 0.0, 0.0)


@dataclass(frozen=True)
class Erf(Activation):
    """``phi(x) = a * erf(b * x) + c``."""

    a: float = 1.0
    b: float = 1.0
    c: float = 0.0
    family: ClassVar[str] = "erf"

    def __post_init__(self):
        for name in ("a", "b", "c"):
            object.__setattr__(self, name, _finite_float(getattr(self, name), name, "Erf"))

    @property
    def core_params(self):
        return (self.a, self.b, self.c)


@dataclass(frozen=True)
class SigmoidLike(Activation):
    """``0.5 * erf(x / 2.40206) + 0.5``: neural-tangents' erf approximation of the logistic."""

    family: ClassVar[str] = "erf"

    @property
    def core_params(self):
        return (0.5, 1.0 / 2.40206, 0.5)


_BY_NAME: Dict[str, Type[Activation]] = {
    "relu": Relu,
    "leakyrelu": LeakyRelu,
    "abrelu": ABRelu,
    "abs": Abs,
    "identity": Identity,
    "linear": Identity,
    "sign": Sign,
    "erf": Erf,
    "sigmoidlike": SigmoidLike,
}


def get(activation: Union[str, Activation]) -> Activation:
    """Return an :class:`Activation` for an activation object or its name.

    Names are case-insensitive and ignore ``_`` and ``-`` (``"leaky_relu"``,
    ``"LeakyRelu"``); named activations take their default parameters.
    """
    if isinstance(activation, Activation):
        return activation
    if isinstance(activation, type) and issubclass(activation, Activation):
        return activation()
    if not isinstance(activation, str):
        raise TypeError(
            "activation must be an ntkcore.activations object or a name such as 'relu', "
            f"got {activation!r}"
        )
    key = activation.lower().replace("_", "").replace("-", "")
    if key in _BY_NAME:
        return _BY_NAME[key]()
    names = sorted({cls.__name__ for cls in _BY_NAME.values()})
    close = difflib.get_close_matches(key, list(_BY_NAME), n=1, cutoff=0.6)
    hint = f" Did you mean {_BY_NAME[close[0]].__name__!r}?" if close else ""
    raise ValueError(f"unknown activation {activation!r}.{hint} Known: {', '.join(names)}.")

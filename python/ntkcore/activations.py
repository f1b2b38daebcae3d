"""Activation functions with closed-form dual maps (docs/math/3-dual-maps.md).

Each activation is an immutable, comparable value.  The kernels only need its
dual maps ``T(Sigma) = E[phi(u) phi(v)]`` and ``Tdot(Sigma) = E[phi'(u) phi'(v)]``
for ``(u, v) ~ N(0, Sigma)``; the closed forms live in the C++ core and, as plain
numpy, in :mod:`ntkcore.reference`.

Every activation belongs to one *family* that the core evaluates:

* ``ab_relu`` -- the piecewise-linear ``phi(x) = a x (x < 0), b x (x >= 0)``:
  :class:`ABRelu`, :class:`Relu`, :class:`LeakyRelu`, :class:`Abs`, :class:`Identity`;
* ``sign`` -- :class:`Sign`;
* ``erf`` -- ``a erf(b x) + c``: :class:`Erf`, :class:`SigmoidLike`;
* ``sin`` -- ``a sin(b x + c)``: :class:`Sin`, :class:`Cos` (``c + pi/2``);
* ``gelu`` -- ``x Phi(x)``: :class:`Gelu`;
* ``rectified_monomial`` -- ``max(x, 0)**n``, ``n = 0..4``: :class:`RectifiedMonomial`;
* ``numerical`` -- any activation known pointwise, by Gauss-Hermite expectations
  (docs/math/4-gauss-hermite.md): :class:`Numerical`, with the built-ins ``tanh``, ``sigmoid``,
  ``softplus``, ``gelu``, ``silu`` (``swish``), ``elu``, ``selu``, ``mish``, ``sin``,
  ``cos``, ``erf`` or a vectorised Python callable.

Activations may also be given by name (see :func:`get`); the names of built-ins without a
closed form (``"tanh"``, ``"softplus"``, ...) give :class:`Numerical`.
"""

from __future__ import annotations

import difflib
import math
import numbers
from dataclasses import dataclass
from typing import Callable, ClassVar

from ._validation import real

__all__ = [
    "ABRelu",
    "Abs",
    "AccuracyError",
    "AccuracyWarning",
    "Activation",
    "Cos",
    "Erf",
    "Gelu",
    "Identity",
    "LeakyRelu",
    "Numerical",
    "RectifiedMonomial",
    "Relu",
    "SigmoidLike",
    "Sign",
    "Sin",
    "get",
]


def _finite_fields(obj, names, gain=None) -> None:
    """Replace each named field of a frozen activation by its checked float value.

    The dual maps hold the fields' squares (and, with ``gain = (a, b)``, ``(a b)**2``, the
    derivative's scale), which must stay finite too.
    """
    owner = type(obj).__name__
    for name in names:
        object.__setattr__(obj, name, real(getattr(obj, name), f"{owner}: {name}", finite_square=True))
    if gain is not None:
        a, b = (getattr(obj, name) for name in gain)
        if not math.isfinite((a * b) * (a * b)):
            raise ValueError(f"{owner}: {gain[0]} * {gain[1]} = {a * b!r} is too large (its square overflows)")


class AccuracyError(ArithmeticError):
    """A :class:`Numerical` activation's kernels cannot reach the target accuracy.

    Raised when the automatic Gauss-Hermite degree reaches its limit with the coefficient
    tails still above the target (large pre-activation variances, where the function has
    features too narrow for the rule); the message names the layer, the variance and the
    estimated error.
    """


class AccuracyWarning(RuntimeWarning):
    """A :class:`Numerical` activation's fixed ``deg`` leaves an error above the target.

    Turn it into an error with ``warnings.simplefilter("error", AccuracyWarning)``.
    """


class Activation:
    """Base class of the activations: subclasses define ``family`` and ``core_params``.

    Not an activation itself: :func:`get` (and so every network) refuses it with TypeError.
    """

    family: ClassVar[str]
    # Names that :func:`get` maps to this class (lower case, without "_" and "-").
    names: ClassVar[tuple[str, ...]] = ()

    @property
    def core_params(self) -> tuple[float, float, float]:
        """Three parameters of the family, in the order the core expects."""
        raise NotImplementedError


@dataclass(frozen=True)
class ABRelu(Activation):
    """``phi(x) = a * x`` for ``x < 0`` and ``b * x`` for ``x >= 0``."""

    a: float = 0.0
    b: float = 1.0
    family: ClassVar[str] = "ab_relu"
    names: ClassVar[tuple[str, ...]] = ("abrelu",)

    def __post_init__(self):
        _finite_fields(self, ("a", "b"))

    @property
    def core_params(self):
        return (self.a, self.b, 0.0)


@dataclass(frozen=True)
class Relu(Activation):
    """``phi(x) = max(x, 0)``."""

    family: ClassVar[str] = "ab_relu"
    names: ClassVar[tuple[str, ...]] = ("relu",)

    @property
    def core_params(self):
        return (0.0, 1.0, 0.0)


@dataclass(frozen=True)
class LeakyRelu(Activation):
    """``phi(x) = alpha * x`` for ``x < 0``, ``x`` otherwise."""

    alpha: float = 0.01
    family: ClassVar[str] = "ab_relu"
    names: ClassVar[tuple[str, ...]] = ("leakyrelu",)

    def __post_init__(self):
        _finite_fields(self, ("alpha",))

    @property
    def core_params(self):
        return (self.alpha, 1.0, 0.0)


@dataclass(frozen=True)
class Abs(Activation):
    """``phi(x) = |x|``."""

    family: ClassVar[str] = "ab_relu"
    names: ClassVar[tuple[str, ...]] = ("abs",)

    @property
    def core_params(self):
        return (-1.0, 1.0, 0.0)


@dataclass(frozen=True)
class Identity(Activation):
    """``phi(x) = x`` (the network is then linear)."""

    family: ClassVar[str] = "ab_relu"
    names: ClassVar[tuple[str, ...]] = ("identity", "linear")

    @property
    def core_params(self):
        return (1.0, 1.0, 0.0)


@dataclass(frozen=True)
class Sign(Activation):
    """``phi(x) = sign(x)`` (``sign(0) = 0``); its derivative is zero almost everywhere."""

    family: ClassVar[str] = "sign"
    names: ClassVar[tuple[str, ...]] = ("sign",)

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
    names: ClassVar[tuple[str, ...]] = ("erf",)

    def __post_init__(self):
        _finite_fields(self, ("a", "b", "c"), gain=("a", "b"))

    @property
    def core_params(self):
        return (self.a, self.b, self.c)


@dataclass(frozen=True)
class SigmoidLike(Activation):
    """``0.5 * erf(x / 2.40206) + 0.5``: neural-tangents' erf approximation of the logistic."""

    family: ClassVar[str] = "erf"
    names: ClassVar[tuple[str, ...]] = ("sigmoidlike",)

    @property
    def core_params(self):
        return (0.5, 1.0 / 2.40206, 0.5)


@dataclass(frozen=True)
class Sin(Activation):
    """``phi(x) = a * sin(b * x + c)``.

    Kernels agree with a 50-digit evaluation to ~1e-15 relative to their natural scale
    ``sqrt(K(x, x) K(x', x'))``, collinear pairs included: the dual maps depend on the
    covariance alone, never on the angle between the points.
    """

    a: float = 1.0
    b: float = 1.0
    c: float = 0.0
    family: ClassVar[str] = "sin"
    names: ClassVar[tuple[str, ...]] = ("sin",)

    def __post_init__(self):
        _finite_fields(self, ("a", "b", "c"), gain=("a", "b"))

    @property
    def core_params(self):
        return (self.a, self.b, self.c)


@dataclass(frozen=True)
class Cos(Activation):
    """``phi(x) = a * cos(b * x + c)``: the ``sin`` family with phase ``c + pi/2``.

    Accuracy as :class:`Sin`.
    """

    a: float = 1.0
    b: float = 1.0
    c: float = 0.0
    family: ClassVar[str] = "sin"
    names: ClassVar[tuple[str, ...]] = ("cos",)

    def __post_init__(self):
        _finite_fields(self, ("a", "b", "c"), gain=("a", "b"))

    @property
    def core_params(self):
        return (self.a, self.b, self.c + math.pi / 2)


@dataclass(frozen=True)
class Gelu(Activation):
    """``phi(x) = x * Phi(x)``, Phi the standard normal CDF (the exact, erf-based GELU).

    Kernels agree with a 50-digit evaluation to ~1e-15 relative to their natural scale,
    collinear pairs included: the dual maps depend on the angle only through
    ``sqrt(1 + q1 + q2 + q1 q2 - c^2) >= 1``.
    """

    family: ClassVar[str] = "gelu"
    names: ClassVar[tuple[str, ...]] = ("gelu",)

    @property
    def core_params(self):
        return (0.0, 0.0, 0.0)


@dataclass(frozen=True)
class RectifiedMonomial(Activation):
    """``phi(x) = max(x, 0)**n`` for an integer ``n`` in 0..4 (Cho & Saul's arc-cosine kernels).

    ``n = 0`` is the step ``1[x > 0]`` (derivative 0 almost everywhere, so its NTK is
    the NNGP kernel of the last layer, as for :class:`Sign`); ``n = 1`` is :class:`Relu`.
    For ``n >= 2`` the output variance grows like ``q**n`` per layer, so deep networks
    overflow quickly unless ``W_std`` is small.

    Accuracy against a 50-digit evaluation, relative to ``sqrt(K(x, x) K(x', x'))``, every
    pair (duplicate, rescaled, negated and nearly collinear ones included): ~1e-16 times
    ``n**depth``, the problem's own condition number (measured 3e-15, 7e-15, 1.6e-14 for
    n = 2, 3, 4 at depth 3).  The step, like Sign, is only backward stable for pairs at
    angles below ~1e-8: measured 5e-11 at angle 4e-10 and up to 1e-6 at angle ~1e-16 (depth 3).
    """

    n: int = 1
    family: ClassVar[str] = "rectified_monomial"
    names: ClassVar[tuple[str, ...]] = ("rectifiedmonomial",)

    def __post_init__(self):
        n = self.n
        if isinstance(n, bool) or not isinstance(n, numbers.Integral):
            raise TypeError(f"RectifiedMonomial: n must be an integer in 0..4, got {n!r}")
        if not 0 <= n <= 4:
            raise ValueError(f"RectifiedMonomial: n must be in 0..4, got {n!r}")
        object.__setattr__(self, "n", int(n))

    @property
    def core_params(self):
        return (float(self.n), 0.0, 0.0)


# Built-ins of the numerical family: phi and phi' in the core (cpp/include/ntkcore/elementwise.hpp).
BUILTINS = ("tanh", "sigmoid", "softplus", "gelu", "silu", "elu", "selu", "mish", "sin", "cos", "erf")
_BUILTIN_ALIASES = {"swish": "silu"}
_MAX_DEGREE = 4096


@dataclass(frozen=True)
class Numerical(Activation):
    """Any activation, by Gauss-Hermite expectations of ``phi`` and ``phi'`` (docs/math/4-gauss-hermite.md).

    ``T`` and ``Tdot`` come from the Hermite (Mehler) series of ``phi``: each point's
    Hermite coefficients at its variance are computed once per layer by a Gauss-Hermite
    rule of ``deg`` nodes (O(N deg) evaluations of ``fn``), and each Gram entry sums the
    series in O(deg), so that degrees in the hundreds, which tanh-like functions need for
    near machine precision, cost little.  Near-collinear pairs keep full accuracy.

    Parameters
    ----------
    fn : str or callable
        A built-in name (``"tanh"``, ``"sigmoid"``, ``"softplus"``, ``"gelu"``, ``"silu"``
        or ``"swish"``, ``"elu"``, ``"selu"``, ``"mish"``, ``"sin"``, ``"cos"``, ``"erf"``:
        phi and phi' in C++, usable by finite networks too), or a vectorised numpy callable
        mapping a float64 array of shape (M,) to a real array of shape (M,).  Callables are
        called with up to ~256K points at a time, O(N deg) points per layer in all, never
        per Gram entry, on the calling thread.
    dfn : callable, optional
        ``phi'`` for a callable ``fn``.  Without it, ``Tdot = dT/dc`` by Price's theorem
        from the series of ``phi`` alone (a zero-variance point takes ``phi'(0)`` by a
        central difference, ~1e-10 relative).
    deg : int in [1, 4096], optional
        Nodes of the Gauss-Hermite rule (all of them then enter the series).  Default:
        chosen per layer, growing from 64 to at most 2048, until the Hermite coefficients
        of phi and phi' beyond 3/4 of the degree hold at most 1e-7 of their norm and
        ``E[phi^2]``, ``E[phi'^2]`` changed by at most 1e-7 from the previous degree (the
        kernels' error is then ~1e-14 relative: it is about quadratic in the tail), and the
        series is cut where its tail is below rounding.

    Accuracy and its limits: large pre-activation variances ``q`` defeat the rule, because
    ``phi(sqrt(q) z)`` then has features of width ``1 / sqrt(q)`` (tanh, sigmoid and erf
    approach a step, softplus, silu and gelu a kink) that the nodes, ~``1 / sqrt(deg)``
    apart, cannot resolve.  The result is never silently unconverged:

    * automatic degree: if 2048 nodes leave the estimate (the tail, or the change with the
      degree) above 1e-7 at some layer, :class:`AccuracyError` (an ArithmeticError) is
      raised, naming the layer, the variance and the estimate.  The largest ``q`` accepted
      (measured): tanh ~10, erf and mish ~25, sigmoid ~40, silu ~45, gelu ~50, softplus
      ~60; sin and cos beyond 1e4.  elu and selu, whose derivatives have a kink, are always
      refused (2048 nodes leave ~1e-4 in the NTK): give them a fixed ``deg``.  Where it is
      raised, lower ``W_std``, ``b_std`` or the input scale, use a closed form
      (:class:`Erf`, :class:`Gelu`, :class:`Sin`) or fix ``deg``;
    * fixed ``deg``: the result is returned, with an :class:`AccuracyWarning` (a
      RuntimeWarning) when the estimate exceeds 1e-7 at some layer (the first such layer
      is named).  neural-tangents' ``deg=25`` is accurate to ~1e-4..1e-2 only and warns.

    Memory: per layer, N x K coefficients of phi and of phi' (K <= deg terms), also for
    the matrix-free eigen solvers.
    """

    fn: str | Callable = "tanh"
    dfn: Callable | None = None
    deg: int | None = None
    family: ClassVar[str] = "numerical"

    def __post_init__(self):
        fn = self.fn
        if isinstance(fn, str):
            key = fn.lower().replace("_", "").replace("-", "")
            key = _BUILTIN_ALIASES.get(key, key)
            if key not in BUILTINS:
                close = difflib.get_close_matches(key, list(BUILTINS) + list(_BUILTIN_ALIASES), n=1, cutoff=0.6)
                hint = f" Did you mean {close[0]!r}?" if close else ""
                raise ValueError(f"Numerical: unknown built-in {fn!r}.{hint} Known: {', '.join(BUILTINS)}.")
            object.__setattr__(self, "fn", key)
            if self.dfn is not None:
                raise ValueError(f"Numerical: dfn is only for a callable fn; the built-in {key!r} has its own")
        elif not callable(fn):
            raise TypeError(f"Numerical: fn must be a built-in name or a callable, got {fn!r}")
        if self.dfn is not None and not callable(self.dfn):
            raise TypeError(f"Numerical: dfn must be a callable or None, got {self.dfn!r}")
        deg = self.deg
        if deg is not None:
            if isinstance(deg, bool) or not isinstance(deg, numbers.Integral):
                raise TypeError(f"Numerical: deg must be an integer in [1, {_MAX_DEGREE}] or None, got {deg!r}")
            if not 1 <= deg <= _MAX_DEGREE:
                raise ValueError(f"Numerical: deg must be in [1, {_MAX_DEGREE}], got {deg}")
            object.__setattr__(self, "deg", int(deg))

    @property
    def builtin(self) -> bool:
        """Whether ``fn`` is a built-in (phi and phi' in the core)."""
        return isinstance(self.fn, str)

    @property
    def core_params(self):
        return (self.fn, self.dfn, self.deg or 0)


def _concrete(cls: type[Activation]):
    for sub in cls.__subclasses__():
        yield sub
        yield from _concrete(sub)


# The one name table: each class lists its own names (a new closed form is one class here
# and one family in the core, cpp/include/ntkcore/activation_families.hpp).
_BY_NAME: dict[str, type[Activation]] = {name: cls for cls in _concrete(Activation) for name in cls.names}


def get(activation: str | Activation) -> Activation:
    """Return an :class:`Activation` for an activation object or its name.

    Names are case-insensitive and ignore ``_`` and ``-`` (``"leaky_relu"``,
    ``"LeakyRelu"``); named activations take their default parameters.  Names of built-ins
    without a closed form give ``Numerical(name)``.
    """
    if isinstance(activation, type) and issubclass(activation, Activation):
        activation = activation()
    if isinstance(activation, Activation):
        if getattr(type(activation), "family", None) is None:
            raise TypeError(
                f"{type(activation).__name__} is not a concrete activation (no family): use one "
                "such as Relu(), Erf() or Numerical('tanh')"
            )
        return activation
    if not isinstance(activation, str):
        raise TypeError(
            f"activation must be an ntkcore.activations object or a name such as 'relu', got {activation!r}"
        )
    key = activation.lower().replace("_", "").replace("-", "")
    if key in _BY_NAME:
        return _BY_NAME[key]()
    if key in BUILTINS or key in _BUILTIN_ALIASES:
        return Numerical(key)
    names = sorted({cls.__name__ for cls in _BY_NAME.values()} | set(BUILTINS))
    close = difflib.get_close_matches(key, list(_BY_NAME) + list(BUILTINS), n=1, cutoff=0.6)
    suggestion = (_BY_NAME[close[0]].__name__ if close[0] in _BY_NAME else close[0]) if close else None
    hint = f" Did you mean {suggestion!r}?" if close else ""
    raise ValueError(f"unknown activation {activation!r}.{hint} Known: {', '.join(names)}.")

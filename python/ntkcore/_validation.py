"""Argument checks shared by the public functions: clear errors, one conversion."""

from __future__ import annotations

import contextlib
import math
import numbers
from collections.abc import Iterator

import numpy as np

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def resolve_dtype(dtype, *arrays) -> np.dtype:
    """The computation dtype: ``dtype`` if given, else float32 when every array is float32."""
    if dtype is None:
        given = [a for a in arrays if a is not None]
        if given and all(isinstance(a, np.ndarray) and a.dtype == np.float32 for a in given):
            return np.dtype(np.float32)
        return np.dtype(np.float64)
    try:
        resolved = np.dtype(dtype)
    except TypeError as exc:
        raise TypeError(f"dtype must be numpy.float32 or numpy.float64, got {dtype!r}") from exc
    if resolved not in _FLOATS:
        raise TypeError(f"dtype must be numpy.float32 or numpy.float64, got {resolved}")
    return resolved


def as_real_array(x, name: str, dtype: np.dtype, ndims: tuple, shape_text: str) -> np.ndarray:
    """``x`` as a C-contiguous, finite array of ``dtype`` with ``ndim`` in ``ndims`` and no
    empty axis, copied only when it must be.

    Integer arrays are converted exactly (ValueError if a value is beyond the significand of
    ``dtype``: 2^53 for float64, 2^24 for float32).  Raises TypeError for bool, complex, object
    and string arrays, and ValueError for a wrong shape (``shape_text`` names the expected one),
    an empty axis, or NaN/inf.
    """
    if isinstance(x, np.ndarray):
        arr = x
    else:
        try:
            arr = np.asarray(x)
        except (ValueError, TypeError) as exc:
            raise TypeError(f"{name} must be an array of real numbers, {shape_text}: {exc}") from exc
    kind = arr.dtype.kind
    if kind not in "fiu":
        what = {"b": "boolean", "c": "complex", "O": "object", "U": "string", "S": "string"}.get(kind, str(arr.dtype))
        raise TypeError(f"{name} must hold real numbers (floating-point or integer), got {what} dtype {arr.dtype}")
    if kind in "iu" and arr.size:
        # Integers (uint8 images, counts) convert exactly while they fit the significand.
        limit = 2 ** (np.finfo(dtype).nmant + 1)
        if int(arr.max()) > limit or int(arr.min()) < -limit:
            raise ValueError(
                f"{name} holds integers beyond +-2^{np.finfo(dtype).nmant + 1}, which {dtype} cannot "
                f"represent exactly; convert explicitly, e.g. {name}.astype(numpy.float64)"
            )
    if arr.ndim not in ndims:
        raise ValueError(f"{name} must be {shape_text}, got shape {arr.shape}")
    if 0 in arr.shape:
        raise ValueError(f"{name} must have at least one row and one column, got shape {arr.shape}")
    arr = np.ascontiguousarray(arr, dtype=dtype)
    finite = np.isfinite(arr)
    if not finite.all():
        where = tuple(int(i) for i in np.argwhere(~finite)[0])
        raise ValueError(f"{name} must be finite; {name}[{', '.join(map(str, where))}] = {arr[where]}")
    return arr


def as_points(x, name: str, dtype: np.dtype, features: int | None = None) -> np.ndarray:
    """``x`` as a C-contiguous (N, d) array of ``dtype`` (see :func:`as_real_array`); a feature
    dimension other than ``features`` is a ValueError."""
    arr = as_real_array(x, name, dtype, (2,), "2-D of shape (N, d)")
    if features is not None and arr.shape[1] != features:
        raise ValueError(
            f"{name} has {arr.shape[1]} features per row but x1 has {features}: "
            f"expected shape (N2, {features}), got {arr.shape}"
        )
    return arr


# Counts the core takes as std::size_t: beyond this they could not be honoured anyway.
_MAX_COUNT = 2**62
# More threads than this would only exhaust the process's resources.
MAX_THREADS = 4096


def optional_positive_int(value, name: str, maximum: int = _MAX_COUNT) -> int:
    """``value`` as an int in [1, maximum], or 0 (the core's "choose for me") for None."""
    if value is None:
        return 0
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be a positive integer or None, got {value!r}")
    return integer(value, name, minimum=1, maximum=maximum)


def check_n_threads(n_threads) -> int:
    """``n_threads`` as an int in [1, MAX_THREADS], or 0 for 'as many as OpenMP offers'."""
    return optional_positive_int(n_threads, "n_threads", MAX_THREADS)


def real(
    value,
    name: str,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    strict: bool = False,
    finite_square: bool = False,
    infinite: bool = False,
) -> float:
    """``value`` as a finite float in the range [minimum, maximum] (open ends when ``strict``),
    or +inf as well with ``infinite`` (e.g. the end of training, t = inf).

    TypeError for anything but a real number (bool included); ValueError for NaN, inf, a value
    out of range, or, with ``finite_square``, one whose square overflows (the recursions hold
    the squares of standard deviations).
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    if infinite and value == math.inf:
        return value
    low = minimum is None or (value > minimum if strict else value >= minimum)
    high = maximum is None or (value < maximum if strict else value <= maximum)
    if not (math.isfinite(value) and low and high):
        allowed = _range_text(minimum, maximum, strict, finite=True) + (" or inf" if infinite else "")
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    if finite_square and not math.isfinite(value * value):
        raise ValueError(f"{name} = {value!r} is too large: its square overflows")
    return value


def integer(value, name: str, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """``value`` as an int in [minimum, maximum]: TypeError for non-integers (bool included),
    ValueError out of range."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer {_range_text(minimum, maximum)}, got {value!r}")
    number = int(value)
    if (minimum is not None and number < minimum) or (maximum is not None and number > maximum):
        raise ValueError(f"{name} must be {_range_text(minimum, maximum)}, got {number}")
    return number


def integers(value, name: str, *, minimum: int = 1, length: int | None = None) -> tuple[int, ...]:
    """A sequence (or, with ``length``, also a single integer repeated) of ints >= minimum."""
    if isinstance(value, (str, bytes, bool, np.bool_)):
        raise TypeError(f"{name} must be a sequence of integers >= {minimum}, got {value!r}")
    if length is not None and isinstance(value, numbers.Integral):
        value = (value,) * length
    try:
        values = tuple(value)
    except TypeError as exc:
        raise TypeError(f"{name} must be a sequence of integers >= {minimum}, got {value!r}") from exc
    if (length is None and not values) or (length is not None and len(values) != length):
        expected = f"{length} entries" if length is not None else "at least one entry"
        raise ValueError(f"{name} must have {expected}, got {value!r}")
    return tuple(integer(v, f"{name}[{i}]", minimum=minimum) for i, v in enumerate(values))


def flag(value, name: str) -> bool:
    """``value`` as a bool; TypeError for anything but True or False."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def choice(value, name: str, options) -> str:
    """One of the strings ``options``: TypeError for a non-string, ValueError for another one."""
    listed = " or ".join(repr(o) for o in options)
    if not isinstance(value, str):
        raise TypeError(f"{name} must be {listed}, got {value!r}")
    if value not in options:
        raise ValueError(f"{name} must be {listed}, got {value!r}")
    return value


def check_seed(seed, *, sequence: bool = False):
    """A seed: an int in [0, 2**64) (TypeError for other kinds, ValueError out of range), or,
    with ``sequence``, a numpy SeedSequence as it is."""
    if sequence and isinstance(seed, np.random.SeedSequence):
        return seed
    return integer(seed, "seed", minimum=0, maximum=2**64 - 1)


def float64_array(value, name: str) -> np.ndarray:
    """``value`` as a float64 array of any shape (integers convert; TypeError for bool,
    complex, object and string arrays), copied only when it must be."""
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError) as exc:
        raise TypeError(f"{name} must be an array of real numbers: {exc}") from exc
    if arr.dtype.kind not in "fiu":
        raise TypeError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    return np.asarray(arr, dtype=np.float64)


def targets(y, name: str, n: int) -> np.ndarray:
    """``y`` of shape (n,) or (n, k), as float64."""
    arr = float64_array(y, name)
    if arr.ndim not in (1, 2) or arr.shape[0] != n or arr.size == 0:
        raise ValueError(f"{name} must have shape ({n},) or ({n}, k) with k >= 1, got {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} must be finite")
    return arr


def _number_text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, int) and value >= 2**32 and value & (value + 1) == 0:
        return f"2**{value.bit_length()} - 1"
    if isinstance(value, int) and value >= 2**32 and value & (value - 1) == 0:
        return f"2**{value.bit_length() - 1}"
    return str(value) if isinstance(value, int) else f"{value:g}"


def _range_text(minimum, maximum, strict: bool = False, finite: bool = False) -> str:
    lo, hi = ("(", ")") if strict else ("[", "]")
    low, high = _number_text(minimum), _number_text(maximum)
    if minimum is not None and maximum is not None:
        text = f"in {lo}{low}, {high}{hi}"
    elif minimum is not None:
        text = f"{'>' if strict else '>='} {low}"
    elif maximum is not None:
        text = f"{'<' if strict else '<='} {high}"
    else:
        text = ""
    return ("finite " + text if text else "finite") if finite else text


def gib(nbytes: float) -> str:
    """A byte count for a message, in GiB."""
    return f"{nbytes / 2**30:.3g} GiB"


@contextlib.contextmanager
def explain_memory_error(what: str, nbytes: float) -> Iterator[None]:
    """Re-raise a MemoryError (std::bad_alloc from the core) naming what was allocated."""
    try:
        yield
    except MemoryError as exc:
        raise MemoryError(f"out of memory: {what} need {gib(nbytes)}") from exc

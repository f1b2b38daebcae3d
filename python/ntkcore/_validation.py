"""Argument checks shared by the public functions: clear errors, one conversion."""

from __future__ import annotations

import contextlib
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
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be a positive integer or None, got {value!r}")
    if not 1 <= value <= maximum:
        raise ValueError(f"{name} must be in [1, {maximum}], got {value}")
    return int(value)


def check_n_threads(n_threads) -> int:
    """``n_threads`` as an int in [1, MAX_THREADS], or 0 for 'as many as OpenMP offers'."""
    return optional_positive_int(n_threads, "n_threads", MAX_THREADS)


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

"""Loads the compiled core: the widest instruction-set variant this CPU runs.

The wheel carries ``_core`` (baseline x86-64 or the platform default) and, on x86-64,
``_core_avx2`` and ``_core_avx512``: the same code compiled for wider vectors.  Set
``NTKCORE_ISA`` to ``baseline``, ``avx2`` or ``avx512`` to choose one explicitly.
"""

from __future__ import annotations

import importlib
import os

from . import _core as _baseline

_MODULES = {"baseline": "_core", "avx2": "_core_avx2", "avx512": "_core_avx512"}
_ORDER = ["avx512", "avx2", "baseline"]


def available_isas() -> list:
    """Instruction-set variants that are installed and that this CPU can run."""
    supported = _ORDER[_ORDER.index(_baseline.best_isa()) :]
    found = []
    for isa in supported:
        try:
            importlib.import_module(f".{_MODULES[isa]}", __package__)
        except ImportError:
            continue
        found.append(isa)
    return found


def load(isa: str = ""):
    """The compiled module for ``isa`` (default: ``NTKCORE_ISA`` or the widest available)."""
    isa = isa or os.environ.get("NTKCORE_ISA", "")
    if isa:
        if isa not in _MODULES:
            raise ValueError(f"NTKCORE_ISA must be one of {sorted(_MODULES)}, got {isa!r}")
        if isa not in available_isas():
            raise ImportError(f"ntkcore: the {isa} variant is not installed or this CPU cannot run it")
        return importlib.import_module(f".{_MODULES[isa]}", __package__)
    return importlib.import_module(f".{_MODULES[available_isas()[0]]}", __package__)


core = load()
isa = next(name for name, module in _MODULES.items() if module == core.__name__.rsplit(".", 1)[-1])

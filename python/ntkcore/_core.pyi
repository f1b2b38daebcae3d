# Type stubs of the compiled modules ntkcore._core, _core_avx2 and _core_avx512 (same API).
from collections.abc import Sequence
from typing import Callable, Union

import numpy as np
import numpy.typing as npt

# (family, (a, b, c), w_var per dense layer, b_var per dense layer[, widths]): widths None or
# absent for the NTK parameterization, the hidden widths for the standard one (kernels only;
# the finite-MLP functions take the 4-entry form).  The "numerical" family has
# (fn: built-in name or callable, dfn: callable or None, degree: int, 0 = automatic) in
# place of (a, b, c).
ActivationParams = Union[
    tuple[float, float, float],
    tuple[str | Callable[[np.ndarray], np.ndarray], Callable[[np.ndarray], np.ndarray] | None, int],
]
NetworkSpec = Union[
    tuple[str, ActivationParams, Sequence[float], Sequence[float]],
    tuple[str, ActivationParams, Sequence[float], Sequence[float], Sequence[float] | None],
]

openmp: bool

def best_isa() -> str: ...
def max_threads() -> int: ...
def gram(
    network: NetworkSpec,
    x1: npt.NDArray[np.floating],
    x2: npt.NDArray[np.floating] | None,
    n_threads: int = 0,
    tile_rows: int = 64,
    tile_cols: int = 64,
) -> tuple[npt.NDArray[np.floating], npt.NDArray[np.floating]]: ...
def hermite_rule(degree: int) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]: ...
def diagonal(
    network: NetworkSpec,
    x: npt.NDArray[np.floating],
    nngp: npt.NDArray[np.floating],
    ntk: npt.NDArray[np.floating],
) -> None: ...

# Type stubs of the compiled modules ntkcore._core, _core_avx2 and _core_avx512 (one API).
# Private: the ntkcore package validates every argument before it calls these.  Each function
# taking arrays exists for float32 and float64 (the output arrays share the inputs' dtype).
from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt

_FloatArray = npt.NDArray[np.floating]
_Phi = Callable[[np.ndarray], np.ndarray]

# The activation's parameters: (a, b, c) of a closed-form family, or, for the "numerical"
# family, (fn: built-in name or callable, dfn: callable or None, degree: int, 0 = automatic).
_ActivationParams = tuple[float, float, float] | tuple[str | _Phi, _Phi | None, int]
# A fully-connected network for the kernels: (family, params, W_std**2 per dense layer,
# b_std**2 per dense layer, hidden widths or None).  Widths None: NTK parameterization; the
# hidden widths: the standard parameterization.
_KernelNetworkSpec = tuple[str, _ActivationParams, Sequence[float], Sequence[float], Sequence[float] | None]
# A finite MLP: (family, params, W_std per dense layer, b_std per dense layer): standard
# deviations, not variances.
_MLPSpec = tuple[str, _ActivationParams, Sequence[float], Sequence[float]]
# A serial network's layers: ("dense", W_std**2, b_std**2), ("conv", window, strides, padding,
# W_std**2, b_std**2), ("avg_pool", window, strides, padding), ("gap",), ("flatten",) and
# ("act", (family, params)); windows and strides are (h, w) pairs.
_LayerSpec = list[tuple]
# (h, w, spatial): the input grid (a sequence is an h x 1 grid; spatial False for (N, d) rows).
_GridSpec = tuple[int, int, bool]

def best_isa() -> str: ...
def activation_families() -> dict[str, dict[str, bool]]: ...
def gram(
    network: _KernelNetworkSpec,
    x1: _FloatArray,
    x2: _FloatArray | None,
    n_threads: int = 0,
    tile_rows: int = 64,
    tile_cols: int = 64,
    progress: Callable[[int, int], object] | None = None,
) -> tuple[_FloatArray, _FloatArray]: ...
def diagonal(network: _KernelNetworkSpec, x: _FloatArray, nngp: _FloatArray, ntk: _FloatArray) -> None: ...
def hyper_gram(
    network: _KernelNetworkSpec,
    kernel: str,
    x1: npt.NDArray[np.float64],
    x2: npt.NDArray[np.float64] | None,
    n_threads: int = 0,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]: ...
def hermite_rule(degree: int) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]: ...
def layer_gram(
    layers: _LayerSpec,
    x1: _FloatArray,
    grid1: _GridSpec,
    x2: _FloatArray | None,
    grid2: _GridSpec,
    channels: int,
    n_threads: int = 0,
    progress: Callable[[int, int], object] | None = None,
) -> tuple[_FloatArray, _FloatArray]: ...
def layer_diagonal(
    layers: _LayerSpec, x: _FloatArray, grid: _GridSpec, channels: int, n_threads: int = 0
) -> tuple[_FloatArray, _FloatArray]: ...
def mlp_forward(
    network: _MLPSpec,
    weights: Sequence[_FloatArray],
    biases: Sequence[_FloatArray],
    x: _FloatArray,
    n_threads: int = 0,
    layer: int = -1,
) -> _FloatArray: ...
def empirical_ntk(
    network: _MLPSpec,
    weights: Sequence[_FloatArray],
    biases: Sequence[_FloatArray],
    x1: _FloatArray,
    x2: _FloatArray | None,
    output: str,
    theta: _FloatArray,
    n_threads: int = 0,
) -> None: ...
def mlp_loss_gradient(
    network: _MLPSpec,
    weights: Sequence[_FloatArray],
    biases: Sequence[_FloatArray],
    x: _FloatArray,
    y: _FloatArray,
    grad_w: Sequence[_FloatArray],
    grad_b: Sequence[_FloatArray],
    n_threads: int = 0,
) -> float: ...
def mlp_vjp(
    network: _MLPSpec,
    weights: Sequence[_FloatArray],
    biases: Sequence[_FloatArray],
    x: _FloatArray,
    cotangent: _FloatArray,
    grad_w: Sequence[_FloatArray],
    grad_b: Sequence[_FloatArray],
    n_threads: int = 0,
) -> None: ...

# Per Dense or Conv layer of a finite layer network: (h, g, taps, P_in).
_LayerFactors = tuple[_FloatArray, _FloatArray, npt.NDArray[np.int64], int]

def layer_empirical_ntk(
    scales: Sequence[tuple[float, float]],
    layers1: list[_LayerFactors],
    layers2: list[_LayerFactors] | None,
    k: int,
    output: str,
    theta: _FloatArray,
    n_threads: int = 0,
) -> None: ...
def activation_values(
    activation: tuple[str, _ActivationParams],
    h: _FloatArray,
    dphi: _FloatArray | None,
    n_threads: int = 0,
) -> None: ...
def symmetry_report(K: _FloatArray, n_threads: int = 0) -> tuple[float, float, int, int]: ...

# (values, vectors, residuals, norm_estimate, passes, converged, rounding_limited)
_EigenResult = tuple[npt.NDArray[np.float64], _FloatArray, npt.NDArray[np.float64], float, int, bool, bool]

def eigsh_dense(
    K: _FloatArray,
    k: int,
    which: str,
    tol: float = 0.0,
    block_size: int = 0,
    max_basis: int = 0,
    max_passes: int = 0,
    seed: int = 0,
    n_threads: int = 0,
    values_only: bool = False,
    magnitude: float = 0.0,
) -> _EigenResult: ...
def eigsh_kernel(
    network: _KernelNetworkSpec,
    x: _FloatArray,
    kernel: str,
    k: int,
    which: str,
    tol: float = 0.0,
    block_size: int = 0,
    max_basis: int = 0,
    max_passes: int = 0,
    seed: int = 0,
    n_threads: int = 0,
    tile: int = 0,
) -> _EigenResult: ...
def eigsh_operator(
    apply: Callable[[np.ndarray], np.ndarray],
    n: int,
    magnitude: float,
    k: int,
    which: str,
    tol: float = 0.0,
    block_size: int = 0,
    max_basis: int = 0,
    max_passes: int = 0,
    seed: int = 0,
) -> _EigenResult: ...
def kernel_product(
    network: _KernelNetworkSpec,
    x1: _FloatArray,
    x2: _FloatArray | None,
    ntk: bool,
    v: _FloatArray,
    n_threads: int = 0,
    tile: int = 0,
    progress: Callable[[int, int], object] | None = None,
) -> _FloatArray: ...

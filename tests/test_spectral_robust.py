"""Eigen solvers without silent wrong answers (issue 9): scale invariance, graded spectra,
bitwise reproducibility, overflow."""

import math
import warnings

import ntkcore
import numpy as np
import pytest

NET = ntkcore.FullyConnected(3, "relu", W_std=2**0.5, b_std=0.1)
EPS = np.finfo(np.float64).eps


def sphere(n, d=8, seed=0):
    x = np.random.default_rng(seed).standard_normal((n, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def theta():
    return NET.ntk(sphere(150, seed=1))


def rotated(values, seed):
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((len(values), len(values))))
    a = (q * values) @ q.T
    return (a + a.T) / 2


def check_pairs(a, values, vectors, which, k, tol=1e-10):
    """The pairs are eigenpairs of a to tol ||a|| (residual, orthonormality, against LAPACK)."""
    exact = np.linalg.eigvalsh(a)
    norm = np.abs(exact).max()
    expected = exact[-k:] if which == "largest" else exact[:k]
    assert values.shape == (k,) and np.all(np.diff(values) >= 0)
    assert np.allclose(values, expected, rtol=0, atol=100 * tol * norm)
    residual = np.linalg.norm(a @ vectors - vectors * values, axis=0)
    assert residual.max() <= 100 * tol * norm
    assert np.allclose(vectors.T @ vectors, np.eye(k), atol=1e-10)


# --- scale invariance ------------------------------------------------------------------------


@pytest.mark.parametrize("power", [-1000, -560, -133, -40, 40, 133, 560, 1000])
def test_power_of_two_scaling_is_exact(theta, power):
    # The solver scales by a power of two itself, so 2^j K gives exactly 2^j times the results.
    c = 2.0**power
    scaled = theta * c
    assert ntkcore.lambda_max(scaled) == c * ntkcore.lambda_max(theta)
    assert ntkcore.lambda_min(scaled) == c * ntkcore.lambda_min(theta)
    for which in ("largest", "smallest"):
        values, vectors = ntkcore.eigsh(theta, k=3, which=which)
        values_c, vectors_c = ntkcore.eigsh(scaled, k=3, which=which)
        assert np.array_equal(values_c, c * values) and np.array_equal(vectors_c, vectors)
    assert ntkcore.condition_number(scaled) == ntkcore.condition_number(theta)


@pytest.mark.parametrize("c", [1e-300, 1e-170, 1e-40, 1e40, 1e170, 1e300])
def test_any_scale(theta, c):
    exact = np.linalg.eigvalsh(theta)
    scaled = theta * c
    assert ntkcore.lambda_max(scaled) == pytest.approx(c * exact[-1], rel=1e-12)
    assert ntkcore.lambda_min(scaled) == pytest.approx(c * exact[0], rel=1e-9)
    assert ntkcore.condition_number(scaled) == pytest.approx(exact[-1] / exact[0], rel=1e-8)
    for which in ("largest", "smallest"):
        values, vectors = ntkcore.eigsh(scaled, k=4, which=which)
        check_pairs(theta, values / c, vectors, which, 4)
    assert np.allclose(ntkcore.spectrum(scaled) / c, exact, rtol=0, atol=1e-12 * exact[-1])


@pytest.mark.parametrize("power", [-100, -60, 60, 100])
def test_float32_scales(theta, power):
    # float32 spans 1e-38 .. 3e38: K * 2^100 ~ 1e30 and its inverse used to leave that range.
    a = theta.astype(np.float32)
    c = np.float32(2.0**power)
    assert ntkcore.lambda_max(a * c) == c * ntkcore.lambda_max(a)
    assert ntkcore.lambda_min(a * c) == c * ntkcore.lambda_min(a)
    exact = np.linalg.eigvalsh(theta)
    assert ntkcore.lambda_min(a * c) / c == pytest.approx(exact[0], rel=1e-3)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_zero_matrix(dtype):
    zero = np.zeros((7, 7), dtype=dtype)
    assert ntkcore.lambda_min(zero) == 0.0 and ntkcore.lambda_max(zero) == 0.0
    assert ntkcore.condition_number(zero) == math.inf
    for which in ("largest", "smallest"):
        values, vectors = ntkcore.eigsh(zero, k=3, which=which)
        assert np.array_equal(values, np.zeros(3)) and values.dtype == dtype
        assert np.allclose(vectors.T @ vectors, np.eye(3), atol=1e-6)
    assert np.array_equal(ntkcore.spectrum(zero), np.zeros(7))
    assert ntkcore.loss_bound(zero, np.ones(7), 5.0) == pytest.approx(7.0)


@pytest.mark.parametrize("w_std", [1e-10, 1e10])
def test_huge_and_tiny_network_kernels(w_std):
    net = ntkcore.FullyConnected(1, "relu", W_std=w_std)
    x = sphere(60, seed=2)
    a = net.ntk(x)
    exact = np.linalg.eigvalsh(a)
    assert ntkcore.lambda_min(a) == pytest.approx(exact[0], rel=1e-8)
    assert ntkcore.condition_number(a) == pytest.approx(exact[-1] / exact[0], rel=1e-7)
    check_pairs(a, *ntkcore.eigsh(a, k=3, which="smallest"), "smallest", 3)
    # matrix-free: the scale comes from the diagonal of the Gram
    assert ntkcore.lambda_max(net, x) == pytest.approx(exact[-1], rel=1e-10)
    assert ntkcore.lambda_min(net, x, max_passes=3000) == pytest.approx(exact[0], rel=1e-5)
    check_pairs(a, *ntkcore.eigsh(net, x, k=2, which="largest"), "largest", 2)


def test_matrix_free_tiny_kernel():
    # Every Gram entry below 1e-160: squared norms of the Lanczos vectors used to underflow.
    net = ntkcore.FullyConnected(2, "relu", W_std=1e-28)
    x = sphere(80, seed=3)
    a = net.ntk(x)
    assert np.abs(a).max() < 1e-160
    exact = np.linalg.eigvalsh(a)
    assert ntkcore.lambda_max(net, x) == pytest.approx(exact[-1], rel=1e-10)
    check_pairs(a, *ntkcore.eigsh(net, x, k=3), "largest", 3)


# --- overflow -----------------------------------------------------------------------------------


def test_float32_matrix_free_overflow():
    x = sphere(200, seed=1)
    big = (x * 3e18).astype(np.float32)
    gram = NET.ntk(big)  # finite in float32, but lambda_max ~ 4e38 is not
    assert np.isfinite(gram).all() and np.linalg.eigvalsh(gram.astype(np.float64))[-1] > 3.5e38
    with pytest.raises(OverflowError, match="float64"):
        ntkcore.eigsh(NET, big, k=1)
    with pytest.raises(OverflowError, match="exceeds"):
        ntkcore.eigsh(gram, k=1)
    # a tenth of that is representable, and found
    small = (x * 1e18).astype(np.float32)
    exact = np.linalg.eigvalsh(NET.ntk(small).astype(np.float64))
    values = ntkcore.eigsh(NET, small, k=2, return_eigenvectors=False)
    assert values.dtype == np.float32 and np.isfinite(values).all()
    assert np.allclose(values, exact[-2:], rtol=1e-4)
    assert ntkcore.lambda_max(NET.ntk(small)) == pytest.approx(exact[-1], rel=1e-4)


def test_near_the_top_of_float64():
    a = NET.ntk(sphere(50, seed=4))
    exact = np.linalg.eigvalsh(a)
    c = 1e308 / np.abs(a).max()
    huge = a * c
    assert np.isfinite(huge).all()
    with pytest.raises(OverflowError, match="exceeds"):  # lambda_max ~ 1e309
        ntkcore.spectrum(huge)
    with pytest.raises(OverflowError, match="exceeds"):
        ntkcore.lambda_max(huge)
    c = 1e306 / exact[-1]  # eigenvalues all finite now
    values = ntkcore.spectrum(a * c)
    assert np.isfinite(values).all() and np.allclose(values / c, exact, rtol=0, atol=1e-12 * exact[-1])
    assert ntkcore.lambda_max(a * c) == pytest.approx(c * exact[-1], rel=1e-12)
    assert ntkcore.lambda_min(a * c) == pytest.approx(c * exact[0], rel=1e-8)


# --- graded spectra ------------------------------------------------------------------------------


GRADED = [
    np.logspace(-200, 0, 20),
    np.logspace(-30, 0, 50),
    np.logspace(-16, 0, 80),
    np.concatenate([[1e-20, 1e-13], np.logspace(-3, 0, 40)]),
    np.concatenate([np.logspace(-14, -10, 6), np.logspace(-2, 0, 60)]),
]


@pytest.mark.parametrize("spectrum", range(len(GRADED)))
@pytest.mark.parametrize("k", [2, 3, 6])
@pytest.mark.parametrize("rotate", [False, True])
def test_graded_spectrum_smallest(spectrum, k, rotate):
    lam = GRADED[spectrum]
    a = rotated(lam, seed=spectrum) if rotate else np.diag(lam)
    values, vectors = ntkcore.eigsh(a, k=k, which="smallest")
    check_pairs(a, values, vectors, "smallest", k)


def test_graded_issue_example():
    a = np.diag(np.logspace(-200, 0, 20))
    values, vectors = ntkcore.eigsh(a, k=3, which="smallest")
    assert np.all(np.abs(values) <= 1e-10)
    assert np.linalg.norm(a @ vectors - vectors * values, axis=0).max() <= 1e-10
    assert 0 <= ntkcore.lambda_min(a) <= 20 * EPS  # the Rayleigh quotient: N eps ||K|| absolute


def test_graded_but_resolvable_bottom_keeps_relative_accuracy():
    # lambda_1 = 1e-9 and lambda_2 = 1e-6 are both found to high relative accuracy.
    lam = np.concatenate([[1e-9, 1e-6], np.linspace(0.1, 1.0, 60)])
    a = rotated(lam, seed=11)
    exact = np.linalg.eigvalsh(a)
    values, vectors = ntkcore.eigsh(a, k=2, which="smallest")
    assert np.allclose(values, exact[:2], rtol=1e-6, atol=0)
    check_pairs(a, values, vectors, "smallest", 2)


def test_tolerance_below_the_rounding_floor(theta):
    # A tol no rounding can meet is raised to the floor, without shifting or warnings.
    exact = np.linalg.eigvalsh(theta)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ntkcore.lambda_min(theta, tol=1e-16) == pytest.approx(exact[0], rel=1e-10)
        values, vectors = ntkcore.eigsh(theta, k=3, which="smallest", tol=1e-16)
        check_pairs(theta, values, vectors, "smallest", 3, tol=1e-13)
        values, vectors = ntkcore.eigsh(theta, k=3, tol=1e-16)
        check_pairs(theta, values, vectors, "largest", 3, tol=1e-13)


# --- bitwise reproducibility ---------------------------------------------------------------------


def assert_identical(runs):
    for values, vectors in runs[1:]:
        assert np.array_equal(values, runs[0][0]) and np.array_equal(vectors, runs[0][1])


@pytest.fixture(scope="module")
def large():
    # With 32 vectors per block, large enough that the dense products and the Cholesky
    # solves run on threads.
    return NET.ntk(sphere(1300, seed=5))


@pytest.mark.parametrize("which", ["largest", "smallest"])
def test_dense_bitwise_reproducible(large, which):
    runs = [ntkcore.eigsh(large, k=3, block_size=32, which=which, n_threads=t) for t in (1, 2, None, 2)]
    assert_identical(runs)
    assert len({ntkcore.lambda_min(large, n_threads=t) for t in (1, 2, 2)}) == 1


@pytest.mark.parametrize("which", ["largest", "smallest"])
def test_matrix_free_bitwise_reproducible(which):
    x = sphere(330, seed=6)  # not a multiple of the tile edge; threaded operator
    passes = 3000 if which == "smallest" else None
    runs = [ntkcore.eigsh(NET, x, k=3, which=which, n_threads=t, max_passes=passes) for t in (1, 2, None, 2)]
    assert_identical(runs)
    assert len({ntkcore.lambda_min(NET, x, n_threads=t, max_passes=3000) for t in (1, 2, 2)}) == 1
    assert len({ntkcore.lambda_max(NET, x, n_threads=t) for t in (1, 2, 2)}) == 1


def test_first_nonfinite_entry_is_reported_whatever_the_threads():
    a = NET.ntk(sphere(700, seed=4))
    a[600, 650] = a[650, 600] = np.nan
    a[20, 690] = np.inf
    for t in (1, 2):
        with pytest.raises(ValueError, match=r"K\[20, 690\] = inf"):
            ntkcore.eigsh(a, k=2, n_threads=t)

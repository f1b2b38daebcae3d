"""Extreme eigen solvers (docs/math/5-gram-dynamics.md): against LAPACK, dense vs matrix-free, hard spectra,
bad input."""

import math

import ntkcore
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

NET = ntkcore.FullyConnected(3, "relu", W_std=2**0.5, b_std=0.1)


def sphere(n, d=8, seed=0):
    x = np.random.default_rng(seed).standard_normal((n, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def points():
    return sphere(260, seed=1)


@pytest.fixture(scope="module")
def grams(points):
    return NET.kernels(points)


def check_pairs(a, values, vectors, which, k, tol=1e-9):
    """Eigenvalues within tol * ||K|| (an absolute bound, the solver's promise), residuals,
    orthonormality."""
    exact = np.linalg.eigvalsh(a)
    expected = exact[-k:] if which == "largest" else exact[:k]
    norm = exact[-1]
    assert values.shape == (k,) and vectors.shape == (len(a), k)
    assert np.all(np.diff(values) >= 0)
    assert np.allclose(values, expected, rtol=0, atol=tol * norm)
    residual = np.linalg.norm(a @ vectors - vectors * values, axis=0)
    assert residual.max() <= 1e-8 * norm
    assert np.allclose(vectors.T @ vectors, np.eye(k), atol=1e-10)


@pytest.mark.parametrize("which", ["largest", "smallest"])
@pytest.mark.parametrize("k", [1, 4, 11])
@pytest.mark.parametrize("kernel", ["ntk", "nngp"])
def test_dense_eigenpairs_match_lapack(grams, which, k, kernel):
    a = getattr(grams, kernel)
    values, vectors = ntkcore.eigsh(a, k=k, which=which)
    check_pairs(a, values, vectors, which, k)


@pytest.mark.parametrize("which", ["largest", "smallest"])
@pytest.mark.parametrize("kernel", ["ntk", "nngp"])
def test_matrix_free_equals_dense(points, grams, which, kernel):
    a = getattr(grams, kernel)
    k = 3
    dense, _ = ntkcore.eigsh(a, k=k, which=which)
    free, vectors = ntkcore.eigsh(NET, points, k=k, which=which, kernel=kernel, max_passes=3000)
    norm = dense.max() if which == "largest" else np.linalg.eigvalsh(a)[-1]
    assert np.allclose(free, dense, rtol=0, atol=1e-9 * norm)
    check_pairs(a, free, vectors, which, k)


def test_matrix_free_thread_counts_and_tiles_agree(points):
    one = ntkcore.eigsh(NET, points, k=5, n_threads=1, return_eigenvectors=False)
    two = ntkcore.eigsh(NET, points, k=5, n_threads=2, return_eigenvectors=False)
    assert np.array_equal(one, two)  # bitwise: the sums do not depend on the threads
    x = sphere(300, seed=9)  # not a multiple of the tile edge
    assert np.allclose(
        ntkcore.eigsh(NET, x, k=2, return_eigenvectors=False), np.linalg.eigvalsh(NET.ntk(x))[-2:], rtol=1e-11
    )


def test_float32(grams, points):
    a = grams.ntk.astype(np.float32)
    values, vectors = ntkcore.eigsh(a, k=3)
    assert values.dtype == np.float32 and vectors.dtype == np.float32
    exact = np.linalg.eigvalsh(grams.ntk)
    assert np.allclose(values, exact[-3:], rtol=1e-4)
    assert ntkcore.lambda_min(a) == pytest.approx(exact[0], rel=1e-3)
    free = ntkcore.eigsh(NET, points.astype(np.float32), k=2, return_eigenvectors=False)
    assert free.dtype == np.float32 and np.allclose(free, exact[-2:], rtol=1e-4)


def test_scalar_functions(points, grams):
    a = grams.ntk
    exact = np.linalg.eigvalsh(a)
    assert ntkcore.lambda_max(a) == pytest.approx(exact[-1], rel=1e-12)
    assert ntkcore.lambda_min(a) == pytest.approx(exact[0], rel=1e-10)
    assert ntkcore.condition_number(a) == pytest.approx(exact[-1] / exact[0], rel=1e-9)
    assert ntkcore.lambda_max(NET, points) == pytest.approx(exact[-1], rel=1e-12)
    assert ntkcore.lambda_min(NET, points, max_passes=3000) == pytest.approx(exact[0], rel=1e-5)
    assert ntkcore.lambda_max(NET, points, kernel="nngp") == pytest.approx(np.linalg.eigvalsh(grams.nngp)[-1])
    assert np.allclose(ntkcore.spectrum(a), exact)
    assert np.allclose(ntkcore.spectrum(NET, points, kernel="nngp"), np.linalg.eigvalsh(grams.nngp))


def test_return_eigenvectors_false_and_seed(grams):
    a = grams.ntk
    values = ntkcore.eigsh(a, k=2, return_eigenvectors=False)
    assert isinstance(values, np.ndarray) and values.shape == (2,)
    assert np.allclose(values, ntkcore.eigsh(a, k=2, seed=12345, return_eigenvectors=False), rtol=1e-12)


# --- hard spectra ----------------------------------------------------------------------------


def test_duplicate_points_give_a_singular_gram():
    x = sphere(60, seed=3)
    x = np.vstack([x, x[:5]])
    theta = NET.ntk(x)
    top = np.linalg.eigvalsh(theta)[-1]
    lo = ntkcore.lambda_min(theta)
    assert abs(lo) <= 1e-10 * top  # rounding level, documented
    assert ntkcore.condition_number(theta) == math.inf
    values, vectors = ntkcore.eigsh(theta, k=5, which="smallest")
    assert np.all(np.abs(values) <= 1e-10 * top)
    # the null vectors are differences of duplicated points
    dup = np.zeros(len(x))
    dup[0], dup[60] = 1, -1
    assert np.linalg.norm(vectors.T @ dup) == pytest.approx(np.sqrt(2), rel=1e-6)


def test_low_rank_and_repeated_eigenvalues():
    rng = np.random.default_rng(5)
    b = rng.standard_normal((80, 4))
    low = b @ b.T  # rank 4: the Krylov space becomes invariant, blocks deflate
    check_pairs(low, *ntkcore.eigsh(low, k=4), "largest", 4)
    check_pairs(low, *ntkcore.eigsh(low, k=6, which="smallest"), "smallest", 6, tol=1e-10)
    ident = np.eye(50) * 3.0  # every eigenvalue repeated
    values, vectors = ntkcore.eigsh(ident, k=7)
    assert np.allclose(values, 3.0) and np.allclose(vectors.T @ vectors, np.eye(7), atol=1e-12)
    assert ntkcore.condition_number(ident) == pytest.approx(1.0)


def test_ill_conditioned():
    rng = np.random.default_rng(6)
    q, _ = np.linalg.qr(rng.standard_normal((120, 120)))
    lam = np.logspace(0, -11, 120)
    a = (q * lam) @ q.T
    a = (a + a.T) / 2
    assert ntkcore.lambda_min(a) == pytest.approx(1e-11, rel=1e-3)  # error ~ N eps ||a||
    assert ntkcore.condition_number(a) == pytest.approx(1e11, rel=1e-3)
    check_pairs(a, *ntkcore.eigsh(a, k=3), "largest", 3)


@pytest.mark.parametrize("top", [1e2, 1e6, 1e9])
def test_clustered_bottom_of_the_spectrum(top):
    # The bottom of an NTK spectrum is a near-continuum: 1 / lambda separates it poorly.  The
    # exact eigenvalues are known by construction; at top = 1e6 the single-precision first
    # look at the bottom is off by far more than the cluster's spacing.
    rng = np.random.default_rng(7)
    n = 600
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    lam = np.concatenate([1.0 + 1e-3 * np.arange(40), np.geomspace(1.1, top, n - 40)])
    a = (q * lam) @ q.T
    a = (a + a.T) / 2
    exact = np.linalg.eigvalsh(a)  # the construction is exact to ~eps * top
    assert ntkcore.lambda_min(a) == pytest.approx(exact[0], rel=1e-8 + 50 * np.finfo(float).eps * top)
    values, vectors = ntkcore.eigsh(a, k=5, which="smallest")
    check_pairs(a, values, vectors, "smallest", 5)


def test_symmetry_and_finiteness_are_checked_everywhere():
    a = NET.ntk(sphere(700, seed=4))  # large enough for the threaded scan
    bad = a.copy()
    bad[613, 17] += 1e-6 * np.abs(a).max()
    with pytest.raises(ValueError, match="symmetric"):
        ntkcore.lambda_min(bad)
    bad[613, 17] = a[613, 17] + 1e-10 * np.abs(a).max()  # rounding-level: accepted
    assert ntkcore.lambda_max(bad) == pytest.approx(ntkcore.lambda_max(a), rel=1e-9)
    for dtype in (np.float64, np.float32):
        bad = a.astype(dtype)
        bad[650, 3] = np.inf
        with pytest.raises(ValueError, match=r"K\[650, 3\] = inf"):
            ntkcore.eigsh(bad, k=2)


def test_tiny_matrices():
    assert ntkcore.lambda_min(np.array([[2.5]])) == pytest.approx(2.5)
    values, _vectors = ntkcore.eigsh(np.array([[2.0, 1.0], [1.0, 2.0]]), k=2)
    assert np.allclose(values, [1.0, 3.0])


@settings(max_examples=20, deadline=None)
@given(
    n=st.integers(1, 70), k=st.integers(1, 8), seed=st.integers(0, 1000), which=st.sampled_from(["largest", "smallest"])
)
def test_random_psd_matrices(n, k, seed, which):
    k = min(k, n)
    rng = np.random.default_rng(seed)
    b = rng.standard_normal((n, n + 3))
    a = b @ b.T / n
    values, vectors = ntkcore.eigsh(a, k=k, which=which)
    check_pairs(a, values, vectors, which, k)


def test_non_convergence_warns(grams):
    with pytest.warns(RuntimeWarning, match="did not converge"):
        ntkcore.eigsh(grams.ntk, k=3, which="largest", max_passes=1, tol=1e-14)


# --- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad, error, match",
    [
        (np.ones((3, 4)), ValueError, "square"),
        (np.ones(3), ValueError, "square"),
        (np.ones((2, 2, 2)), ValueError, "square"),
        (np.ones((0, 0)), ValueError, "empty"),
        (np.eye(3, dtype=int), TypeError, "floating"),
        (np.eye(3, dtype=complex), TypeError, "floating"),
        (np.array([[1.0, np.nan], [np.nan, 1.0]]), ValueError, "finite"),
        (np.array([[1.0, 0.5], [0.2, 1.0]]), ValueError, "symmetric"),
        ("abc", TypeError, "floating"),
    ],
)
def test_bad_matrix(bad, error, match):
    for fn in (ntkcore.eigsh, ntkcore.lambda_min, ntkcore.lambda_max, ntkcore.condition_number, ntkcore.spectrum):
        with pytest.raises(error, match=match):
            fn(bad)


def test_bad_options(grams, points):
    a = grams.ntk
    for k in (0, 261, -1):
        with pytest.raises(ValueError, match="k must be in"):
            ntkcore.eigsh(a, k=k)
    for k in (1.5, True, "2"):
        with pytest.raises(TypeError, match="k must be"):
            ntkcore.eigsh(a, k=k)
    with pytest.raises(ValueError, match="which"):
        ntkcore.eigsh(a, which="middle")
    for tol in (0.0, -1e-3, 1.0, np.nan):
        with pytest.raises(ValueError, match="tol"):
            ntkcore.eigsh(a, tol=tol)
    with pytest.raises(TypeError, match="tol"):
        ntkcore.eigsh(a, tol="small")
    with pytest.raises(TypeError, match="return_eigenvectors"):
        ntkcore.eigsh(a, return_eigenvectors="yes")
    with pytest.raises(TypeError, match="keyword"):
        ntkcore.eigsh(a, 6)
    with pytest.raises(TypeError, match="only used with a network"):
        ntkcore.eigsh(a, points)
    with pytest.raises(ValueError, match="x is required"):
        ntkcore.eigsh(NET)
    with pytest.raises(ValueError, match="kernel"):
        ntkcore.eigsh(NET, points, kernel="cntk")
    with pytest.raises(ValueError, match="x must be 2-D"):
        ntkcore.lambda_max(NET, points[0])
    with pytest.raises(TypeError, match="x must hold real numbers"):
        ntkcore.lambda_max(NET, points.astype(complex))
    with pytest.raises(ValueError, match="n_threads"):
        ntkcore.eigsh(a, n_threads=0)
    with pytest.raises(ValueError, match="block_size"):
        ntkcore.eigsh(a, block_size=0)
    with pytest.raises(ValueError, match="max_passes"):
        ntkcore.eigsh(a, max_passes=-2)
    with pytest.raises(ValueError, match="seed"):
        ntkcore.eigsh(a, seed=-1)
    with pytest.raises(TypeError, match="seed"):
        ntkcore.eigsh(a, seed=1.5)
    with pytest.raises(ValueError, match="x is required"):
        ntkcore.spectrum(NET)


def test_indefinite_matrix_has_no_smallest_path():
    a = np.diag([3.0, 2.0, -1.0])
    with pytest.raises(ValueError, match="positive semidefinite"):
        ntkcore.lambda_min(a)
    assert ntkcore.lambda_max(a) == pytest.approx(3.0)


def test_keyboard_interrupt_stops_a_matrix_free_solve():
    import _thread
    import threading
    import time

    x = np.random.default_rng(0).standard_normal((4000, 16))
    slow = ntkcore.FullyConnected(100, "relu", W_std=1.4, b_std=0.1)
    timer = threading.Timer(0.3, _thread.interrupt_main)
    start = time.perf_counter()
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        ntkcore.eigsh(slow, x, k=2, which="smallest", n_threads=2)
    timer.join()
    assert time.perf_counter() - start < 10


# --- progress: the same solve over ntkcore.regression.kernel_product ----------------------------


@pytest.mark.parametrize("which", ["largest", "smallest"])
def test_progress_reports_tiles_and_gives_the_same_eigenpairs(points, grams, which):
    calls = []
    values, vectors = ntkcore.eigsh(
        NET, points, k=3, which=which, max_passes=4000, progress=lambda d, t: calls.append((d, t))
    )
    check_pairs(grams.ntk, values, vectors, which, 3)
    done = [d for d, _ in calls]
    assert done == sorted(done) and calls[-1][0] == calls[-1][1] > 0
    again = ntkcore.eigsh(NET, points, k=3, which=which, max_passes=4000, progress=lambda d, t: None)
    np.testing.assert_array_equal(again[0], values)  # bitwise reproducible


def test_progress_true_writes_to_stderr(points, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "tqdm", None)  # the plain stderr line
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    ntkcore.eigsh(NET, points, k=2, kernel="nngp", progress=True)
    assert "eigsh:" in capsys.readouterr().err


def test_progress_for_a_serial_network_works_from_row_blocks():
    net = ntkcore.serial(
        ntkcore.layers.Conv((2,), W_std=1.3, b_std=0.2), "erf", ntkcore.layers.Flatten(), ntkcore.layers.Dense()
    )
    x = np.random.default_rng(5).standard_normal((50, 6, 2))
    values = ntkcore.eigsh(net, x, k=2, kernel="nngp", return_eigenvectors=False, progress=lambda d, t: None)
    np.testing.assert_allclose(values, np.linalg.eigvalsh(net.nngp(x))[-2:], rtol=1e-10)


def test_an_exception_in_the_progress_callback_ends_the_solve(points):
    def fail(done, total):
        raise RuntimeError("enough")

    with pytest.raises(RuntimeError, match="enough"):
        ntkcore.eigsh(NET, points, k=2, progress=fail)


def test_progress_and_client_need_a_network(points, grams):
    with pytest.raises(TypeError, match="apply to a network"):
        ntkcore.eigsh(grams.ntk, k=2, progress=True)
    with pytest.raises(TypeError, match="progress must be"):
        ntkcore.eigsh(NET, points, k=2, progress="yes")
    with pytest.raises(ValueError, match="x is required"):
        ntkcore.eigsh(NET, k=2, progress=True)

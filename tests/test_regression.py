"""ntkcore.KernelRegression and the matrix-free kernel product (issue 14).

Truths: ``net.kernels`` (the Gram driver, itself checked against the numpy reference in
test_reference.py) times a vector, and ``numpy.linalg.solve`` on the dense regularized Gram.
"""

import _thread
import importlib
import math
import sys
import threading
import time
import warnings

import ntkcore
import numpy as np
import pytest
from ntkcore import layers, regression
from ntkcore.regression import KernelRegression, kernel_product

NET = ntkcore.FullyConnected(3, "relu", W_std=2**0.5, b_std=0.1)
ERF = ntkcore.FullyConnected(2, "erf", W_std=1.3, b_std=0.2)


def points(n, d=5, seed=0):
    return np.random.default_rng(seed).standard_normal((n, d))


def targets(x, k=None, seed=1):
    rng = np.random.default_rng(seed)
    base = np.sin(x @ rng.standard_normal(x.shape[1]))
    return base if k is None else np.stack([base * (j + 1) + rng.standard_normal(len(x)) * 0.1 for j in range(k)], 1)


def dense_truth(net, kernel, x, y, x_test, diag_reg, absolute=False):
    """(alpha, prediction) from numpy on the dense Gram matrices."""
    k = getattr(net.kernels(x), kernel)
    ridge = diag_reg if absolute else diag_reg * np.trace(k) / len(x)
    alpha = np.linalg.solve(k + ridge * np.eye(len(x)), y)
    return alpha, getattr(net.kernels(x_test, x), kernel) @ alpha


def rel(a, b):
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


# --- the matrix-free product ---------------------------------------------------------------------


@pytest.mark.parametrize("kernel", ["ntk", "nngp"])
@pytest.mark.parametrize("net", [NET, ERF], ids=["relu", "erf"])
def test_symmetric_product_equals_gram_times_v(net, kernel):
    x = points(300)  # 300 = 2 full 128-tiles and a partial one
    v = np.random.default_rng(2).standard_normal((300, 3))
    truth = getattr(net.kernels(x), kernel) @ v
    assert rel(kernel_product(net, x, None, v, kernel=kernel), truth) < 1e-12


@pytest.mark.parametrize("kernel", ["ntk", "nngp"])
def test_cross_product_equals_gram_times_v(kernel):
    x1, x2 = points(200, seed=3), points(261, seed=4)
    v = np.random.default_rng(5).standard_normal(261)
    out = kernel_product(NET, x1, x2, v, kernel=kernel)
    assert out.shape == (200,)
    assert rel(out, getattr(NET.kernels(x1, x2), kernel) @ v) < 1e-12


def test_product_in_float32_inputs_is_float64_of_those_inputs():
    x = points(150).astype(np.float32)
    v = np.ones((150, 2))
    np.testing.assert_array_equal(kernel_product(NET, x, None, v), kernel_product(NET, x.astype(np.float64), None, v))


@pytest.mark.parametrize("x2", [None, "cross"])
def test_product_is_bitwise_the_same_for_any_thread_count(x2):
    x = points(700)
    other = None if x2 is None else points(650, seed=9)
    v = np.random.default_rng(6).standard_normal((700 if x2 is None else 650, 2))
    one = kernel_product(NET, x, other, v, n_threads=1)
    np.testing.assert_array_equal(one, kernel_product(NET, x, other, v, n_threads=2))
    np.testing.assert_array_equal(one, kernel_product(NET, x, other, v, n_threads=3))


def test_serial_network_product_equals_its_gram_times_v():
    net = ntkcore.serial(layers.Conv((3, 3), padding="SAME", W_std=1.4), "relu", layers.GlobalAvgPool(), layers.Dense())
    x = np.random.default_rng(0).standard_normal((12, 5, 5, 2))
    v = np.random.default_rng(1).standard_normal((12, 2))
    assert rel(kernel_product(net, x, None, v), net.ntk(x) @ v) < 1e-12


def test_product_reports_progress_up_to_the_tile_count():
    calls = []
    x = points(600)
    kernel_product(NET, x, None, np.ones(600), progress=lambda done, total: calls.append((done, total)))
    tiles = math.ceil(600 / 128) * (math.ceil(600 / 128) + 1) // 2
    assert calls[-1] == (tiles, tiles)
    assert all(t == tiles and 0 <= d <= t for d, t in calls)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)


def test_an_exception_in_the_progress_callback_ends_the_product():
    x = points(3000)
    slow = ntkcore.FullyConnected(60, "relu", W_std=1.4, b_std=0.1)

    def fail(done, total):
        if done > 0:
            raise RuntimeError("stop here")

    before = threading.active_count()
    start = time.perf_counter()
    with pytest.raises(RuntimeError, match="stop here"):
        kernel_product(slow, x, None, np.ones(3000), progress=fail, n_threads=2)
    assert time.perf_counter() - start < 30
    assert threading.active_count() == before


def test_keyboard_interrupt_stops_the_product_and_leaves_no_thread():
    x = points(4000)
    slow = ntkcore.FullyConnected(100, "relu", W_std=1.4, b_std=0.1)
    before = threading.active_count()
    timer = threading.Timer(0.5, _thread.interrupt_main)
    start = time.perf_counter()
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        kernel_product(slow, x, None, np.ones(4000), n_threads=2)
    timer.join()
    assert time.perf_counter() - start < 10
    assert threading.active_count() == before


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        (("net", points(5), None, np.ones(5)), {}, TypeError, "net must be"),
        ((NET, points(5), None, np.ones(4)), {}, ValueError, r"v must have shape \(5,\)"),
        ((NET, points(5), points(3), np.ones(5)), {}, ValueError, r"v must have shape \(3,\)"),
        ((NET, points(5), points(3, d=4), np.ones(3)), {}, ValueError, "x2 has 4 features"),
        ((NET, points(5), None, np.ones(5)), {"kernel": "rbf"}, ValueError, "kernel must be"),
        ((NET, points(5), None, np.full(5, np.nan)), {}, ValueError, "v must be finite"),
        ((NET, points(5), None, np.ones(5)), {"progress": 3}, TypeError, "progress must be"),
        ((NET, np.ones(5), None, np.ones(5)), {}, ValueError, "x1 must be 2-D"),
    ],
)
def test_product_rejects_bad_input(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        kernel_product(*args, **kwargs)


# --- cholesky ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kernel", ["ntk", "nngp"])
@pytest.mark.parametrize("k", [None, 3])
def test_cholesky_equals_numpy_solve(kernel, k):
    x, x_test = points(250), points(40, seed=7)
    y = targets(x, k)
    model = KernelRegression(NET, kernel=kernel, diag_reg=1e-3, solver="cholesky").fit(x, y)
    alpha, prediction = dense_truth(NET, kernel, x, y, x_test, 1e-3)
    assert model.solver_ == "cholesky" and model.iterations_ == 0
    assert model.alpha_.shape == y.shape and model.predict(x_test).shape == prediction.shape
    assert rel(model.alpha_, alpha) < 1e-9
    assert rel(model.predict(x_test), prediction) < 1e-10
    assert model.residual_ < 1e-12


def test_absolute_ridge_is_used_as_given():
    x, x_test = points(120), points(10, seed=7)
    y = targets(x)
    model = KernelRegression(ERF, diag_reg=0.5, solver="cholesky", diag_reg_absolute_scale=True).fit(x, y)
    assert model.ridge_ == 0.5
    assert rel(model.predict(x_test), dense_truth(ERF, "ntk", x, y, x_test, 0.5, absolute=True)[1]) < 1e-10


def test_cholesky_without_ridge_refuses_a_singular_gram():
    x = np.repeat(points(20), 2, axis=0)
    with pytest.raises(ValueError, match="singular"):
        KernelRegression(NET, diag_reg=0.0, solver="cholesky").fit(x, np.ones(40))


# --- pcg -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "k", "kernel"), [(600, None, "ntk"), (1200, 3, "ntk"), (900, 2, "nngp")])
def test_pcg_predictions_equal_cholesky(n, k, kernel):
    x, x_test = points(n), points(50, seed=8)
    y = targets(x, k)
    exact = KernelRegression(NET, kernel=kernel, diag_reg=1e-3, solver="cholesky").fit(x, y)
    pcg = KernelRegression(NET, kernel=kernel, diag_reg=1e-3, solver="pcg", tol=1e-11).fit(x, y)
    assert pcg.solver_ == "pcg" and 0 < pcg.iterations_ < 1000
    assert pcg.residual_ <= 1e-11
    assert pcg.alpha_.shape == y.shape
    assert rel(pcg.predict(x_test), exact.predict(x_test)) < 1e-8
    assert rel(pcg.predict(x[:30]), y[:30] - exact.ridge_ * exact.alpha_[:30]) < 1e-8


def test_pcg_residual_is_the_true_one_and_below_tol():
    x = points(500)
    y = targets(x, 2)
    model = KernelRegression(ERF, diag_reg=1e-2, solver="pcg", tol=1e-6).fit(x, y)
    k = ERF.ntk(x) + model.ridge_ * np.eye(500)
    true = np.max(np.linalg.norm(y - k @ model.alpha_, axis=0) / np.linalg.norm(y, axis=0))
    assert model.residual_ <= 1e-6
    assert model.residual_ == pytest.approx(true, rel=1e-6, abs=1e-15)


def test_pcg_with_a_zero_target_column():
    x = points(300)
    y = np.stack([targets(x), np.zeros(300)], 1)
    model = KernelRegression(NET, diag_reg=1e-3, solver="pcg", tol=1e-10).fit(x, y)
    np.testing.assert_array_equal(model.alpha_[:, 1], 0.0)
    assert model.residual_ <= 1e-10


def test_pcg_landmarks_given_as_count_or_points():
    x, x_test = points(700), points(20, seed=8)
    y = targets(x)
    exact = KernelRegression(NET, diag_reg=1e-3, solver="cholesky").fit(x, y).predict(x_test)
    auto = KernelRegression(NET, diag_reg=1e-3, solver="pcg", tol=1e-11).fit(x, y)
    assert auto.landmarks_.shape == (max(64, math.ceil(4 * math.sqrt(700))), 5)
    many = KernelRegression(NET, diag_reg=1e-3, solver="pcg", tol=1e-11, landmarks=400).fit(x, y)
    assert many.landmarks_.shape == (400, 5)
    assert many.iterations_ < auto.iterations_  # a better preconditioner
    outside = points(80, seed=11)
    given = KernelRegression(NET, diag_reg=1e-3, solver="pcg", tol=1e-11, landmarks=outside).fit(x, y)
    np.testing.assert_array_equal(given.landmarks_, outside)
    for model in (auto, many, given):
        assert rel(model.predict(x_test), exact) < 1e-8


def test_pcg_landmark_sample_follows_the_seed():
    x = points(300)
    a = KernelRegression(NET, solver="pcg", landmarks=50, seed=3).fit(x, targets(x))
    b = KernelRegression(NET, solver="pcg", landmarks=50, seed=3).fit(x, targets(x))
    c = KernelRegression(NET, solver="pcg", landmarks=50, seed=4).fit(x, targets(x))
    np.testing.assert_array_equal(a.landmarks_, b.landmarks_)
    assert not np.array_equal(a.landmarks_, c.landmarks_)


def test_pcg_on_a_serial_network_equals_cholesky():
    net = ntkcore.serial(layers.Conv((3, 3), padding="SAME", W_std=1.4), "relu", layers.GlobalAvgPool(), layers.Dense())
    x = np.random.default_rng(0).standard_normal((40, 5, 5, 2))
    x_test = np.random.default_rng(1).standard_normal((6, 5, 5, 2))
    y = np.random.default_rng(2).standard_normal((40, 2))
    exact = KernelRegression(net, diag_reg=1e-2, solver="cholesky").fit(x, y)
    pcg = KernelRegression(net, diag_reg=1e-2, solver="pcg", tol=1e-12, landmarks=10).fit(x, y)
    assert rel(pcg.predict(x_test), exact.predict(x_test)) < 1e-8
    assert rel(exact.predict(x_test), dense_truth(net, "ntk", x, y, x_test, 1e-2)[1]) < 1e-10


def test_pcg_that_stops_at_max_iter_warns_and_reports_its_residual():
    x = points(400)
    with pytest.warns(RuntimeWarning, match="did not reach tol"):
        model = KernelRegression(NET, diag_reg=1e-6, solver="pcg", tol=1e-14, landmarks=2, max_iter=3).fit(
            x, targets(x)
        )
    assert model.iterations_ == 3 and model.residual_ > 1e-14


def test_float32_inputs_fit_as_their_float64_values():
    x, x_test = points(300).astype(np.float32), points(10, seed=3).astype(np.float32)
    y = targets(x.astype(np.float64)).astype(np.float32)
    for solver in ("cholesky", "pcg"):
        a = KernelRegression(NET, solver=solver, tol=1e-10).fit(x, y)
        b = KernelRegression(NET, solver=solver, tol=1e-10).fit(x.astype(np.float64), y.astype(np.float64))
        np.testing.assert_array_equal(a.predict(x_test), b.predict(x_test.astype(np.float64)))
        assert a.predict(x_test).dtype == np.float64


def test_auto_takes_cholesky_for_small_problems_and_pcg_without_memory(monkeypatch):
    x = points(200)
    assert KernelRegression(NET).fit(x, targets(x)).solver_ == "cholesky"
    monkeypatch.setattr(regression, "_available_memory", lambda: 2 * 16 * 200**2)  # the Gram fits in half
    assert KernelRegression(NET).fit(x, targets(x)).solver_ == "cholesky"
    monkeypatch.setattr(regression, "_available_memory", lambda: 2 * 16 * 200**2 - 1)
    assert KernelRegression(NET).fit(x, targets(x)).solver_ == "pcg"
    monkeypatch.setattr(regression, "_CHOLESKY_MAX_N", 199)
    monkeypatch.setattr(regression, "_available_memory", lambda: 1e15)
    assert KernelRegression(NET).fit(x, targets(x)).solver_ == "pcg"


# --- progress and interruption -------------------------------------------------------------------


def test_fit_progress_callback_counts_tiles_and_ends_at_the_true_total():
    x = points(400)
    calls = []
    model = KernelRegression(NET, solver="pcg", tol=1e-8, progress=lambda d, t: calls.append((d, t))).fit(x, targets(x))
    tiles = math.ceil(400 / 128) * (math.ceil(400 / 128) + 1) // 2
    passes = model.iterations_ + 1
    assert calls[-1] == (tiles * passes, tiles * passes)
    assert all(d <= t for d, t in calls[:-1]) and all(t >= tiles * passes for _, t in calls[:-1])
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)


def test_progress_true_without_tqdm_writes_a_line_to_stderr(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tqdm", None)
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    x = points(300)
    model = KernelRegression(NET, solver="pcg", progress=True).fit(x, targets(x))
    err = capsys.readouterr().err
    tiles = 6 * (model.iterations_ + 1)
    assert err.endswith(f"KernelRegression.fit: {tiles}/{tiles} tiles\n")
    model.predict(points(5))
    assert capsys.readouterr().err.endswith("KernelRegression.predict: 3/3 tiles\n")


def test_keyboard_interrupt_stops_fit():
    x = points(3000)
    slow = ntkcore.FullyConnected(60, "relu", W_std=1.4, b_std=0.1)
    before = threading.active_count()
    timer = threading.Timer(1.0, _thread.interrupt_main)
    start = time.perf_counter()
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        KernelRegression(slow, solver="pcg", landmarks=20, n_threads=2).fit(x, targets(x))
    timer.join()
    assert time.perf_counter() - start < 15
    assert threading.active_count() == before


# --- argument checks -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"net": "relu"}, TypeError, "net must be"),
        ({"kernel": "rbf"}, ValueError, "kernel must be"),
        ({"solver": "lu"}, ValueError, "solver must be"),
        ({"solver": 1}, TypeError, "solver must be"),
        ({"tol": 0.0}, ValueError, "tol must be"),
        ({"tol": 1.0}, ValueError, "tol must be"),
        ({"diag_reg": -1.0}, ValueError, "diag_reg must be"),
        ({"diag_reg": "1"}, TypeError, "diag_reg must be"),
        ({"diag_reg": 0.0, "solver": "pcg"}, ValueError, "needs diag_reg > 0"),
        ({"landmarks": 0}, ValueError, "landmarks must be"),
        ({"landmarks": True}, TypeError, "landmarks must be"),
        ({"landmarks": "many"}, TypeError, "landmarks must"),
        ({"progress": "yes"}, TypeError, "progress must be"),
        ({"client": object(), "solver": "cholesky"}, ValueError, "use solver='pcg'"),
        ({"max_iter": 0}, ValueError, "max_iter must be"),
        ({"n_threads": 0}, ValueError, "n_threads must be"),
        ({"diag_reg_absolute_scale": 1}, TypeError, "diag_reg_absolute_scale must be"),
    ],
)
def test_constructor_rejects_bad_arguments(kwargs, error, match):
    kwargs = {"net": NET, **kwargs}
    with pytest.raises(error, match=match):
        KernelRegression(**kwargs)


@pytest.mark.parametrize(
    ("x", "y", "error", "match"),
    [
        (points(10), np.ones(9), ValueError, r"y must have shape \(10,\)"),
        (points(10), np.ones((10, 0)), ValueError, "y must have shape"),
        (points(10), np.full(10, np.inf), ValueError, "y must be finite"),
        (points(10), np.ones(10, dtype=complex), TypeError, "y must hold real numbers"),
        (np.ones(10), np.ones(10), ValueError, "x must be 2-D"),
        (points(10).astype(complex), np.ones(10), TypeError, "x must hold real numbers"),
    ],
)
def test_fit_rejects_bad_data(x, y, error, match):
    with pytest.raises(error, match=match):
        KernelRegression(NET).fit(x, y)


def test_fit_and_predict_reject_inconsistent_points():
    model = KernelRegression(NET, solver="pcg", landmarks=11)
    with pytest.raises(ValueError, match="at most N = 10"):
        model.fit(points(10), np.ones(10))
    with pytest.raises(ValueError, match="landmarks has 3 features"):
        KernelRegression(NET, solver="pcg", landmarks=points(4, d=3)).fit(points(10), np.ones(10))
    with pytest.raises(ValueError, match="needs fit"):
        KernelRegression(NET).predict(points(3))
    fitted = KernelRegression(NET).fit(points(10), np.ones(10))
    with pytest.raises(ValueError, match="x_test has 4 features"):
        fitted.predict(points(3, d=4))


def test_exported_from_the_package():
    assert ntkcore.KernelRegression is KernelRegression


def test_dask_module_names_the_extra_when_dask_is_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)
    monkeypatch.delitem(sys.modules, "ntkcore.dask", raising=False)
    with warnings.catch_warnings(), pytest.raises(ImportError, match=r"ntkcore\[dask\]"):
        importlib.import_module("ntkcore.dask")


def test_core_product_in_float32():
    from ntkcore._native import core

    x = points(300).astype(np.float32)
    v = np.random.default_rng(3).standard_normal((300, 2)).astype(np.float32)
    out = core.kernel_product(NET._core_network(), x, None, True, v)
    assert out.dtype == np.float32
    assert rel(out.astype(np.float64), NET.ntk(x).astype(np.float64) @ v) < 1e-5


def test_cg_restarts_from_the_true_residual_and_reports_it():
    # tol = 1e-16 is below float64's rounding of the true residual, while CG's recursive residual
    # keeps falling: every time it passes tol, CG restarts from the true residual, until max_iter.
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.standard_normal((200, 200)))
    a = (q * np.logspace(0, 1, 200)) @ q.T
    y = rng.standard_normal((200, 2))
    passes = []

    def apply(v):
        passes.append(v.shape)
        return a @ v

    alpha, residual, iterations = regression._conjugate_gradients(apply, lambda r: r.copy(), y, 1e-16, 300)
    true = np.max(np.linalg.norm(y - a @ alpha, axis=0) / np.linalg.norm(y, axis=0))
    assert iterations == 300 and len(passes) > iterations + 1  # restarts happened
    assert residual == pytest.approx(true, rel=1e-9) and 1e-16 < residual < 1e-14


def test_pcg_holds_no_n_by_n_array():
    # tracemalloc sees numpy's allocations (not the core's, which are O(N k) plus tiles for pcg):
    # the cholesky path holds N x N arrays, pcg's largest is the N x m landmark block.
    import tracemalloc

    x = points(2000)
    y = targets(x)
    peaks = {}
    for solver in ("cholesky", "pcg"):
        tracemalloc.start()
        KernelRegression(NET, solver=solver).fit(x, y).predict(x[:100])
        peaks[solver] = tracemalloc.get_traced_memory()[1] / (8 * 2000**2)
        tracemalloc.stop()
    assert peaks["cholesky"] >= 1.0
    assert peaks["pcg"] < 0.35

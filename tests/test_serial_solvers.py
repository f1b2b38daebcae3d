"""Serial (convolutional) networks in everything that takes a network: the eigen solvers and
the infinite ensemble.  Truths: ``reference.layer_kernels`` (plain numpy) with numpy's
``eigvalsh``/``solve``, and the fully-connected network that a Dense-only layer list equals."""

import ntkcore
import numpy as np
import pytest
from ntkcore import layers as L
from ntkcore import reference
from ntkcore.dynamics import ensemble_predict, max_learning_rate
from ntkcore.spectral import condition_number, eigsh, lambda_max, lambda_min, spectrum

RNG = np.random.default_rng(5)
CNN = [
    L.Conv((3, 3), padding="SAME", W_std=1.4, b_std=0.1),
    "relu",
    L.Conv((2, 2), W_std=1.2),
    "erf",
    L.GlobalAvgPool(),
]
X = RNG.standard_normal((12, 5, 5, 2))
X_TEST = RNG.standard_normal((4, 5, 5, 2))
Y = RNG.standard_normal((12, 2))


@pytest.fixture(scope="module")
def exact():
    return (
        reference.layer_kernels(CNN, X),
        reference.layer_kernels(CNN, X_TEST, X),
        reference.layer_kernels(CNN, X_TEST),
    )


@pytest.mark.parametrize("kernel", ["ntk", "nngp"])
def test_eigen_solvers_take_a_serial_network(exact, kernel):
    net = ntkcore.serial(*CNN)
    want = np.linalg.eigvalsh(getattr(exact[0], kernel))
    top = want[-1]
    values, vectors = eigsh(net, X, k=3, kernel=kernel)
    np.testing.assert_allclose(values, want[-3:], rtol=0, atol=1e-10 * top)
    gram = getattr(exact[0], kernel)
    assert np.linalg.norm(gram @ vectors - vectors * values, axis=0).max() <= 1e-8 * top
    assert abs(lambda_max(net, X, kernel=kernel) - top) <= 1e-10 * top
    assert abs(lambda_min(net, X, kernel=kernel) - want[0]) <= 1e-10 * top
    assert condition_number(net, X, kernel=kernel) == pytest.approx(top / want[0], rel=1e-6)
    np.testing.assert_allclose(spectrum(net, X, kernel=kernel), want, rtol=0, atol=1e-12 * top)
    assert max_learning_rate(net, X, kernel=kernel) == pytest.approx(2 / top, rel=1e-10)


def test_eigsh_on_a_serial_network_in_float32(exact):
    values = eigsh(ntkcore.serial(*CNN), X.astype(np.float32), k=2, return_eigenvectors=False)
    assert values.dtype == np.float32
    want = np.linalg.eigvalsh(exact[0].ntk)[-2:]
    np.testing.assert_allclose(values, want, rtol=1e-4)


@pytest.mark.parametrize("kernel", ["ntk", "nngp"])
def test_ensemble_of_a_serial_network_at_infinite_time(exact, kernel):
    """t = inf: mean K* K^-1 Y; the NNGP covariance K** - K* K^-1 K*^T (Bayesian inference)."""
    train, cross, test = exact
    g, g_star = getattr(train, kernel), getattr(cross, kernel)
    got = ensemble_predict(ntkcore.serial(*CNN), X, Y, X_TEST, np.inf, kernel=kernel)
    np.testing.assert_allclose(got.mean, g_star @ np.linalg.solve(g, Y), rtol=1e-8, atol=1e-10)
    if kernel == "nngp":
        want = test.nngp - cross.nngp @ np.linalg.solve(train.nngp, cross.nngp.T)
        np.testing.assert_allclose(got.covariance, want, rtol=0, atol=1e-9 * np.abs(test.nngp).max())


def test_dense_serial_network_has_the_fully_connected_ensemble():
    x, x_test = RNG.standard_normal((10, 4)), RNG.standard_normal((3, 4))
    y = RNG.standard_normal(10)
    fc = ntkcore.FullyConnected(2, "relu", W_std=1.5, b_std=0.2)
    dense = ntkcore.serial(L.Dense(1.5, 0.2), "relu", L.Dense(1.5, 0.2), "relu", L.Dense(1.5, 0.2))
    for t in (0.7, np.inf):
        a = ensemble_predict(fc, x, y, x_test, t, diag_reg=1e-3)
        b = ensemble_predict(dense, x, y, x_test, t, diag_reg=1e-3)
        np.testing.assert_allclose(b.mean, a.mean, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(b.covariance, a.covariance, rtol=1e-9, atol=1e-11)


def test_serial_inputs_are_checked_by_the_network():
    net = ntkcore.serial(*CNN)
    with pytest.raises(ValueError, match=r"channels|layer"):
        ensemble_predict(net, X, Y, RNG.standard_normal((4, 5, 5, 3)), 1.0)
    with pytest.raises(ValueError, match="y_train"):
        ensemble_predict(net, X, Y[:5], X_TEST, 1.0)
    with pytest.raises(TypeError, match="x_train"):
        ensemble_predict(net, X.astype(complex), Y, X_TEST, 1.0)
    with pytest.raises(ValueError, match="x is required"):
        eigsh(net, None, k=2)

"""ntkcore.sklearn: estimators (check_estimator, Pipeline, GridSearchCV) and GP kernels."""

import pickle

import ntkcore
import numpy as np
import pytest
from ntkcore import reference

sklearn = pytest.importorskip("sklearn")

from ntkcore.sklearn import NNGPKernel, NTKClassifier, NTKKernel, NTKRegressor  # noqa: E402
from sklearn.base import clone  # noqa: E402
from sklearn.gaussian_process import GaussianProcessRegressor  # noqa: E402
from sklearn.gaussian_process.kernels import ConstantKernel, WhiteKernel  # noqa: E402
from sklearn.model_selection import GridSearchCV  # noqa: E402
from sklearn.pipeline import Pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import check_estimator  # noqa: E402


def data(n=30, d=4, k=None, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d))
    y = rng.standard_normal(n if k is None else (n, k))
    return x, y


def expm_sym(a, t):
    values, vectors = np.linalg.eigh(a)
    return (vectors * np.exp(-values * t)) @ vectors.T


# --- estimators ------------------------------------------------------------------------------


@pytest.mark.parametrize("estimator", [NTKRegressor(), NTKClassifier()], ids=["regressor", "classifier"])
def test_check_estimator(estimator):
    failures = [
        r for r in check_estimator(estimator, on_fail=None) if r["status"] == "failed" or r["exception"] is not None
    ]
    # checks are skipped only for missing optional packages (pandas) or array-API support
    assert [(r["check_name"], str(r["exception"])) for r in failures if r["status"] != "skipped"] == []
    for r in failures:
        assert r["check_name"] in ("check_array_api_input",) or "pandas" in str(r["exception"])


@pytest.mark.parametrize("kernel", ["ntk", "nngp"])
@pytest.mark.parametrize("t", [np.inf, 0.7])
def test_regressor_is_kernel_regression(kernel, t):
    x, y = data(k=2)
    xt, _ = data(8, seed=1)
    model = NTKRegressor(depth=2, activation="erf", W_std=1.4, b_std=0.2, kernel=kernel, t=t, diag_reg=1e-3).fit(x, y)
    net = ntkcore.FullyConnected(2, "erf", W_std=1.4, b_std=0.2)
    g = getattr(reference.kernels(net, x), kernel)
    g = g + 1e-3 * np.trace(g) / len(g) * np.eye(len(g))
    g_test = getattr(reference.kernels(net, xt, x), kernel)
    decay = 0 if np.isinf(t) else expm_sym(g, t)
    expected = g_test @ np.linalg.solve(g, (np.eye(len(g)) - decay) @ y)
    assert np.allclose(model.predict(xt), expected, rtol=1e-8, atol=1e-10)


def test_regressor_std_and_cov_are_the_gp_posterior():
    x, y = data()
    xt, _ = data(6, seed=1)
    net = ntkcore.FullyConnected(3, "relu", W_std=1.5, b_std=0.1)
    model = NTKRegressor(depth=3, W_std=1.5, b_std=0.1, kernel="nngp", diag_reg=1e-4).fit(x, y)
    k = reference.kernels(net, x).nngp
    k = k + 1e-4 * np.trace(k) / len(k) * np.eye(len(k))
    ks, kss = reference.kernels(net, xt, x).nngp, reference.kernels(net, xt).nngp
    cov = kss - ks @ np.linalg.solve(k, ks.T)
    mean, got_cov = model.predict(xt, return_cov=True)
    assert np.allclose(mean, ks @ np.linalg.solve(k, y), rtol=1e-8, atol=1e-10)
    assert np.allclose(got_cov, cov, rtol=1e-6, atol=1e-9)
    _, std = model.predict(xt, return_std=True)
    assert np.allclose(std, np.sqrt(np.diagonal(cov)), rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="at most one"):
        model.predict(xt, return_std=True, return_cov=True)


def test_regressor_ntk_std_is_the_infinite_ensemble_and_multi_output_shapes():
    x, y = data(k=3)
    xt, _ = data(5, seed=1)
    net = ntkcore.FullyConnected(2, "relu", W_std=1.5, b_std=0.1)
    model = NTKRegressor(net, t=2.0, diag_reg=0.0).fit(x, y)
    expected = ntkcore.ensemble_predict(net, x, y, xt, 2.0)
    mean, std = model.predict(xt, return_std=True)
    assert mean.shape == (5, 3) and std.shape == (5, 3)
    assert np.allclose(mean, expected.mean, rtol=1e-9, atol=1e-12)
    assert np.allclose(std, np.sqrt(np.diagonal(expected.covariance))[:, None], rtol=1e-9, atol=1e-12)
    _, cov = model.predict(xt, return_cov=True)
    assert cov.shape == (5, 5, 3)


def test_classifier_regresses_centred_one_hot_targets():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 3))
    labels = np.array(["a", "b", "c"])[np.argmax(x, axis=1)]
    xt = rng.standard_normal((10, 3))
    model = NTKClassifier(depth=2, W_std=1.5, b_std=0.1, diag_reg=1e-3).fit(x, labels)
    onehot = (labels[:, None] == np.array(["a", "b", "c"])).astype(float) - 1 / 3
    regression = NTKRegressor(depth=2, W_std=1.5, b_std=0.1, diag_reg=1e-3).fit(x, onehot).predict(xt)
    assert np.allclose(model.decision_function(xt), regression, rtol=1e-10, atol=1e-12)
    assert np.array_equal(model.predict(xt), np.array(["a", "b", "c"])[np.argmax(regression, axis=1)])
    assert model.score(x, labels) == 1.0  # it interpolates the training set
    binary = NTKClassifier(depth=2).fit(x, labels == "a")
    scores = binary.decision_function(xt)
    assert scores.shape == (10,)
    assert np.array_equal(binary.predict(xt), scores > 0)


def test_clone_pickle_pipeline_and_grid_search():
    x, y = data(40)
    model = Pipeline([("scale", StandardScaler()), ("ntk", NTKRegressor(diag_reg=1e-2))])
    grid = {
        "ntk__depth": [1, 3],
        "ntk__activation": ["relu", "erf"],
        "ntk__W_std": [1.0, 2.0],
        "ntk__b_std": [0.0, 0.5],
    }
    search = GridSearchCV(model, grid, cv=3).fit(x, y)
    assert len(search.cv_results_["params"]) == 16
    assert set(search.best_params_) == set(grid)
    best = search.best_estimator_
    assert np.allclose(pickle.loads(pickle.dumps(best)).predict(x), best.predict(x), rtol=0, atol=0)
    fresh = clone(best)
    assert fresh.get_params()["ntk__depth"] == search.best_params_["ntk__depth"]
    assert np.allclose(fresh.fit(x, y).predict(x), best.predict(x), rtol=1e-12, atol=1e-12)


def test_serial_cnn_network():
    rng = np.random.default_rng(0)
    images, y = rng.standard_normal((12, 5, 5, 2)), rng.standard_normal(12)
    L = ntkcore.layers
    net = ntkcore.serial(L.Conv((3, 3), padding="SAME", W_std=1.5, b_std=0.1), "relu", L.GlobalAvgPool(), L.Dense())
    model = NTKRegressor(net, diag_reg=1e-3).fit(images[:9], y[:9])
    k = net.ntk(images[:9])
    k = k + 1e-3 * np.trace(k) / 9 * np.eye(9)
    expected = net.ntk(images[9:], images[:9]) @ np.linalg.solve(k, y[:9])
    assert np.allclose(model.predict(images[9:]), expected, rtol=1e-9, atol=1e-12)
    # the infinite ensemble at t = inf (docs/math/5-gram-dynamics.md):
    # K** - G* A K*^T - K* A G*^T + G* A K A G*^T, A = G^-1
    train, test = net.kernels(images[:9]), net.kernels(images[9:], images[:9])
    a = np.linalg.inv(k)
    cross = test.ntk @ a @ test.nngp.T
    cov = net.nngp(images[9:]) - cross - cross.T + test.ntk @ a @ train.nngp @ a @ test.ntk.T
    _, std = model.predict(images[9:], return_std=True)
    assert np.allclose(std, np.sqrt(np.diagonal(cov)), rtol=1e-7, atol=1e-9)


def test_parameter_errors():
    x, y = data()
    with pytest.raises(ValueError, match="cannot be combined"):
        NTKRegressor(ntkcore.FullyConnected(2), W_std=2.0).fit(x, y)
    with pytest.raises(TypeError, match="network"):
        NTKRegressor("relu").fit(x, y)
    with pytest.raises(ValueError, match="kernel"):
        NTKRegressor(kernel="cntk").fit(x, y)
    with pytest.raises(ValueError, match="t must"):
        NTKRegressor(t=-1.0).fit(x, y)
    with pytest.raises(ValueError, match="diag_reg"):
        NTKRegressor(diag_reg=-1.0).fit(x, y)
    with pytest.raises(ValueError, match="depth"):
        NTKRegressor(depth=-1).fit(x, y)
    with pytest.raises(ValueError):
        NTKRegressor(activation="nope").fit(x, y)


# --- GP kernels -------------------------------------------------------------------------------


NET = ntkcore.FullyConnected(3, "relu")


@pytest.mark.parametrize("cls, which", [(NTKKernel, "ntk"), (NNGPKernel, "nngp")])
def test_kernel_values_diag_and_cross_kernels(cls, which):
    x, _ = data(10)
    xt, _ = data(4, seed=1)
    kern = cls(NET, W_std=1.3, b_std=0.2)
    net = ntkcore.FullyConnected(3, "relu", W_std=1.3, b_std=0.2)
    assert np.allclose(kern(x), getattr(reference.kernels(net, x), which), rtol=1e-13, atol=0)
    assert np.allclose(kern(xt, x), getattr(reference.kernels(net, xt, x), which), rtol=1e-12, atol=1e-15)
    assert np.allclose(kern.diag(x), np.diagonal(kern(x)), rtol=1e-14, atol=0)
    assert not kern.is_stationary()


@pytest.mark.parametrize("cls", [NTKKernel, NNGPKernel])
def test_kernel_gradient_against_finite_differences_of_theta(cls):
    x, _ = data(12)
    kern = cls(ntkcore.FullyConnected(2, "erf"), W_std=1.3, b_std=0.2) + WhiteKernel(0.1)
    _, grad = kern(x, eval_gradient=True)
    assert grad.shape == (12, 12, 3)
    assert [h.name for h in kern.hyperparameters] == ["k1__W_std", "k1__b_std", "k2__noise_level"]
    h = 1e-4
    for i in range(3):
        step = np.zeros(3)
        step[i] = h
        fd = (kern.clone_with_theta(kern.theta + step)(x) - kern.clone_with_theta(kern.theta - step)(x)) / (2 * h)
        assert np.allclose(grad[..., i], fd, rtol=1e-6, atol=1e-9 * np.abs(fd).max())


def test_fixed_and_zero_hyperparameters():
    x, _ = data(6)
    kern = NTKKernel(NET, W_std=1.5, b_std=0.0)
    assert kern.n_dims == 1 and kern.hyperparameter_b_std.fixed
    assert kern(x, eval_gradient=True)[1].shape == (6, 6, 1)
    fixed = NTKKernel(NET, W_std=1.5, b_std=0.3, W_std_bounds="fixed")
    assert [h.name for h in fixed.hyperparameters if not h.fixed] == ["b_std"]
    assert np.allclose(fixed.theta, [np.log(0.3)])
    assert np.allclose(fixed.bounds, np.log([[1e-4, 1e2]]))
    none = NTKKernel(NET, W_std=1.5, b_std=0.0, W_std_bounds="fixed")
    assert none(x, eval_gradient=True)[1].shape == (6, 6, 0)
    with pytest.raises(ValueError, match="Y is None"):
        kern(x, x, eval_gradient=True)


def test_kernel_algebra_clone_pickle():
    x, _ = data(8)
    base = NNGPKernel(NET, W_std=1.2, b_std=0.1)
    product = ConstantKernel(2.0) * base
    k, grad = product(x, eval_gradient=True)
    assert np.allclose(k, 2.0 * base(x), rtol=1e-14)
    assert grad.shape == (8, 8, 3)
    assert np.allclose(grad[..., 1:], 2.0 * base(x, eval_gradient=True)[1], rtol=1e-14)
    assert pickle.loads(pickle.dumps(base)) == base
    assert clone(base) == base
    again = base.clone_with_theta(base.theta)
    assert np.isclose(again.W_std, 1.2, rtol=1e-15) and np.isclose(again.b_std, 0.1, rtol=1e-15)


def test_gaussian_process_regressor_fits_and_agrees_with_our_likelihood():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 3))
    y = np.sin(x[:, 0]) + 0.1 * rng.standard_normal(40)
    kernel = NNGPKernel(ntkcore.FullyConnected(2, "relu"), W_std=1.0, b_std=0.5) + WhiteKernel(0.1)
    gp = GaussianProcessRegressor(kernel, alpha=1e-10, random_state=0).fit(x, y)
    fitted = gp.kernel_
    assert not np.allclose(fitted.theta, kernel.theta)
    net = ntkcore.FullyConnected(2, "relu", W_std=fitted.k1.W_std, b_std=fitted.k1.b_std)
    ours = ntkcore.log_marginal_likelihood(net, x, y, noise=fitted.k2.noise_level + 1e-10)
    assert np.isclose(ours, gp.log_marginal_likelihood_value_, rtol=1e-9)
    assert gp.log_marginal_likelihood_value_ > gp.log_marginal_likelihood(kernel.theta)


def test_kernel_errors():
    x, _ = data(5)
    with pytest.raises(TypeError, match="network"):
        NTKKernel("relu")(x)
    with pytest.raises(NotImplementedError, match="gradients"):
        NTKKernel(ntkcore.FullyConnected(2, "gelu"), b_std=0.1)(x, eval_gradient=True)
    serial = ntkcore.serial(ntkcore.layers.Dense(), "relu", ntkcore.layers.Dense())
    kern = NTKKernel(serial, W_std=1.4, b_std=0.1)
    assert np.allclose(kern(x), NTKKernel(ntkcore.FullyConnected(1, "relu"), W_std=1.4, b_std=0.1)(x), rtol=1e-12)
    with pytest.raises(TypeError, match="FullyConnected"):
        kern(x, eval_gradient=True)

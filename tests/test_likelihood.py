"""log_marginal_likelihood (value and exact gradient) and fit_hyperparameters."""

import dataclasses

import ntkcore
import numpy as np
import pytest
from ntkcore import reference


def problem(n=30, k=None, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 3))
    y = np.sin(x[:, :1] * 1.5 + x[:, 1:2]) + 0.1 * rng.standard_normal((n, 1 if k is None else k))
    return x, (y[:, 0] if k is None else y)


def gaussian_logpdf(y, cov):
    """log N(y; 0, cov) of each column, summed (numpy: slogdet and solve)."""
    y = y.reshape(len(y), -1)
    _, logdet = np.linalg.slogdet(cov)
    quad = np.sum(y * np.linalg.solve(cov, y))
    return -0.5 * quad - 0.5 * y.shape[1] * (logdet + len(y) * np.log(2 * np.pi))


@pytest.mark.parametrize("kernel", ["nngp", "ntk"])
@pytest.mark.parametrize("k", [None, 2])
def test_value_is_the_gaussian_log_density(kernel, k):
    x, y = problem(k=k)
    net = ntkcore.FullyConnected(2, "erf", W_std=1.3, b_std=0.2)
    cov = getattr(reference.kernels(net, x), kernel) + 0.05 * np.eye(len(x))
    expected = gaussian_logpdf(y, cov)
    assert np.isclose(ntkcore.log_marginal_likelihood(net, x, y, kernel=kernel, noise=0.05), expected, rtol=1e-10)
    value, _ = ntkcore.log_marginal_likelihood(net, x, y, kernel=kernel, noise=0.05, eval_gradient=True)
    assert np.isclose(value, expected, rtol=1e-10)


@pytest.mark.parametrize("act", ["relu", "erf", "sin"])
@pytest.mark.parametrize("kernel", ["nngp", "ntk"])
def test_gradient_matches_central_differences(act, kernel):
    x, y = problem(k=2)
    net = ntkcore.FullyConnected(3, act, W_std=1.2, b_std=0.3)
    noise = 0.05
    _, gradient = ntkcore.log_marginal_likelihood(net, x, y, kernel=kernel, noise=noise, eval_gradient=True)

    def at(s, p):
        factors = np.exp(s * (np.arange(3) == p))
        trial = dataclasses.replace(net, W_std=1.2 * factors[0], b_std=0.3 * factors[1])
        return ntkcore.log_marginal_likelihood(trial, x, y, kernel=kernel, noise=noise * factors[2])

    h = 1e-3
    fd = [(8 * (at(h, p) - at(-h, p)) - (at(2 * h, p) - at(-2 * h, p))) / (12 * h) for p in range(3)]
    assert np.allclose(gradient, fd, rtol=1e-6, atol=1e-8)


def test_fit_hyperparameters_reaches_a_stationary_maximum():
    pytest.importorskip("scipy")
    x, y = problem(40)
    start = ntkcore.FullyConnected(2, "relu", W_std=1.0, b_std=0.1)
    before = ntkcore.log_marginal_likelihood(start, x, y, noise=0.5)
    fit = ntkcore.fit_hyperparameters(start, x, y, noise=0.5)
    assert isinstance(fit, ntkcore.HyperparameterFit)
    assert fit.log_marginal_likelihood > before + 1.0
    value, gradient = ntkcore.log_marginal_likelihood(fit.network, x, y, noise=fit.noise, eval_gradient=True)
    assert np.isclose(value, fit.log_marginal_likelihood, rtol=1e-12)
    values = np.log([fit.network.W_std[0], fit.network.b_std[0], fit.noise])
    low, high = np.log([1e-2, 1e-4, 1e-8]), np.log([1e2, 1e2, 1e2])
    interior = (values > low + 1e-6) & (values < high - 1e-6)
    assert np.all(np.abs(gradient[interior]) < 1e-3 * max(1.0, abs(value)))


def test_fit_only_some_hyperparameters():
    pytest.importorskip("scipy")
    x, y = problem(25)
    start = ntkcore.FullyConnected(2, "relu", W_std=1.0, b_std=0.0)
    fit = ntkcore.fit_hyperparameters(start, x, y, noise=0.1, tune=("W_std",), bounds={"W_std": (0.5, 3.0)})
    assert fit.noise == 0.1 and fit.network.b_std == (0.0,) * 3
    assert 0.5 <= fit.network.W_std[0] <= 3.0
    with pytest.raises(ValueError, match="log space"):
        ntkcore.fit_hyperparameters(start, x, y, tune=("b_std",))
    with pytest.raises(ValueError, match="tune"):
        ntkcore.fit_hyperparameters(start, x, y, tune=("depth",))
    with pytest.raises(ValueError, match="bounds"):
        ntkcore.fit_hyperparameters(start, x, y, bounds={"W_std": (2.0, 1.0)})
    with pytest.raises(ValueError, match="shared"):
        ntkcore.fit_hyperparameters(ntkcore.FullyConnected(1, "relu", W_std=[1.0, 2.0]), x, y)


def test_errors():
    x, y = problem(10)
    net = ntkcore.FullyConnected(2, "relu", W_std=1.2)
    with pytest.raises(ValueError, match="noise"):
        ntkcore.log_marginal_likelihood(net, x, y, noise=-1.0)
    with pytest.raises(ValueError, match="kernel"):
        ntkcore.log_marginal_likelihood(net, x, y, kernel="rbf")
    with pytest.raises(ValueError, match="shape"):
        ntkcore.log_marginal_likelihood(net, x, y[:5])
    with pytest.raises(TypeError, match="FullyConnected"):
        ntkcore.log_marginal_likelihood("relu", x, y)
    duplicated = np.vstack([x, x[:1]])
    with pytest.raises(ValueError, match="positive definite"):
        ntkcore.log_marginal_likelihood(net, duplicated, np.append(y, y[0]), noise=0.0)
    with pytest.raises(NotImplementedError, match="gradients"):
        ntkcore.log_marginal_likelihood(ntkcore.FullyConnected(2, "gelu"), x, y, eval_gradient=True)


def test_sklearn_module_without_scikit_learn_names_the_extra():
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['sklearn'] = None\n"
        "try:\n    import ntkcore.sklearn\nexcept ImportError as e:\n    print(e)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "ntkcore[sklearn]" in out and "extra" in out

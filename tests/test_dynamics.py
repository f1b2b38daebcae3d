"""Training dynamics (docs/math/5-gram-dynamics.md): gradient flow, infinite ensembles, loss curve and bound."""

import ntkcore
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

NET = ntkcore.FullyConnected(3, "relu", W_std=2**0.5, b_std=0.1)


def sphere(n, d=6, seed=0):
    x = np.random.default_rng(seed).standard_normal((n, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def problem():
    x = sphere(40, seed=1)
    xt = sphere(7, seed=2)
    y = np.random.default_rng(3).standard_normal((40, 3))
    return x, xt, y, NET.kernels(x), NET.kernels(xt, x), NET.kernels(xt)


def expm(a):
    return pytest.importorskip("scipy.linalg").expm(a)


# --- GradientFlow --------------------------------------------------------------------------


@pytest.mark.parametrize("lr, t", [(1.0, 0.0), (1.0, 0.05), (0.3, 2.0), (2.0, 40.0)])
def test_gradient_flow_equals_matrix_exponential(problem, lr, t):
    _x, _xt, y, kdd, ktd, _ = problem
    theta, theta_td = kdd.ntk, ktd.ntk
    rng = np.random.default_rng(4)
    f0, f0t = rng.standard_normal(y.shape), rng.standard_normal((7, 3))
    out = ntkcore.GradientFlow(theta, y, learning_rate=lr).predict(t, theta_td, f0, f0t)
    e = expm(-lr * t * theta)
    r0 = f0 - y
    assert np.allclose(out.train, y + e @ r0, rtol=1e-9, atol=1e-9)
    test = f0t - theta_td @ np.linalg.solve(theta, (np.eye(len(y)) - e) @ r0)
    assert np.allclose(out.test, test, rtol=1e-8, atol=1e-8)


def test_gradient_flow_infinite_time_is_kernel_regression(problem):
    _x, _xt, y, kdd, ktd, _ = problem
    out = ntkcore.GradientFlow(kdd.ntk, y).predict(np.inf, ktd.ntk)
    assert np.allclose(out.train, y)
    assert np.allclose(out.test, ktd.ntk @ np.linalg.solve(kdd.ntk, y), rtol=1e-9, atol=1e-10)
    # a long finite time approaches it
    late = ntkcore.GradientFlow(kdd.ntk, y).predict(1e6, ktd.ntk)
    assert np.allclose(late.test, out.test, atol=1e-6)


def test_gradient_flow_time_arrays_and_vector_shapes(problem):
    _x, _xt, y, kdd, ktd, _ = problem
    flow = ntkcore.GradientFlow(kdd.ntk, y)
    t = np.array([[0.0, 0.5, np.inf], [1.0, 2.0, 3.0]])
    out = flow.predict(t, ktd.ntk)
    assert out.train.shape == (2, 3, 40, 3) and out.test.shape == (2, 3, 7, 3)
    for index in np.ndindex(t.shape):
        single = flow.predict(t[index], ktd.ntk)
        assert np.allclose(out.train[index], single.train) and np.allclose(out.test[index], single.test)
    # targets of shape (N,) give outputs without the trailing axis, column by column
    one = ntkcore.GradientFlow(kdd.ntk, y[:, 1]).predict([0.5, np.inf], ktd.ntk)
    assert one.train.shape == (2, 40) and one.test.shape == (2, 7)
    assert np.allclose(one.test, flow.predict([0.5, np.inf], ktd.ntk).test[..., 1])
    assert flow.predict(0.5).test is None


def test_normalize_by_size_rescales_time(problem):
    _x, _xt, y, kdd, ktd, _ = problem
    a = ntkcore.GradientFlow(kdd.ntk, y, normalize_by_size=True).predict(6.0, ktd.ntk)
    b = ntkcore.GradientFlow(kdd.ntk, y).predict(6.0 / y.size, ktd.ntk)
    assert np.allclose(a.train, b.train) and np.allclose(a.test, b.test)


def test_diag_reg_relative_and_absolute(problem):
    _x, _xt, y, kdd, ktd, _ = problem
    theta = kdd.ntk
    mean_diag = np.trace(theta) / len(theta)
    rel = ntkcore.GradientFlow(theta, y, diag_reg=0.1).predict(np.inf, ktd.ntk).test
    ab = (
        ntkcore.GradientFlow(theta, y, diag_reg=0.1 * mean_diag, diag_reg_absolute_scale=True)
        .predict(np.inf, ktd.ntk)
        .test
    )
    direct = ktd.ntk @ np.linalg.solve(theta + 0.1 * mean_diag * np.eye(len(theta)), y)
    assert np.allclose(rel, direct) and np.allclose(ab, direct)


def test_singular_kernel_needs_a_ridge_at_infinite_time():
    x = sphere(10, seed=5)
    x = np.vstack([x, x[:3]])  # duplicate points: a singular Gram matrix
    theta = NET.ntk(x)
    y = np.arange(13.0)
    flow = ntkcore.GradientFlow(theta, y)
    with pytest.raises(ValueError, match="diag_reg"):
        flow.predict(np.inf, theta[:2])
    finite = flow.predict(3.0, theta[:2])  # finite times are fine: null space keeps its residual
    assert np.all(np.isfinite(finite.test))
    out = ntkcore.GradientFlow(theta, y, diag_reg=1e-6).predict(np.inf, theta[:2])
    assert np.all(np.isfinite(out.test))


# --- the infinite ensemble ----------------------------------------------------------------------


def test_ensemble_ntk_mean_is_gradient_flow_from_zero(problem):
    x, xt, y, kdd, ktd, _ = problem
    g = ntkcore.ensemble_predict(NET, x, y, xt, [0.7, np.inf], compute_cov=False)
    flow = ntkcore.GradientFlow(kdd.ntk, y).predict([0.7, np.inf], ktd.ntk)
    assert np.allclose(g.mean, flow.test) and g.covariance is None


def test_ensemble_nngp_at_infinity_is_the_gp_posterior(problem):
    x, xt, y, kdd, ktd, ktt = problem
    g = ntkcore.ensemble_predict(NET, x, y, xt, np.inf, kernel="nngp")
    k, ks, kss = kdd.nngp, ktd.nngp, ktt.nngp
    assert np.allclose(g.mean, ks @ np.linalg.solve(k, y), atol=1e-10)
    assert np.allclose(g.covariance, kss - ks @ np.linalg.solve(k, ks.T), atol=1e-9)


def test_ensemble_covariance_formulas_at_finite_time(problem):
    x, xt, y, kdd, ktd, ktt = problem
    t = 0.4
    th, ths, k, ks, kss = kdd.ntk, ktd.ntk, kdd.nngp, ktd.nngp, ktt.nngp
    a = np.linalg.solve(th, np.eye(len(th)) - expm(-th * t))
    g = ntkcore.ensemble_predict(NET, x, y, xt, t)
    cov = kss - ths @ a @ ks.T - ks @ a.T @ ths.T + ths @ a @ k @ a.T @ ths.T
    assert np.allclose(g.mean, ths @ a @ y, atol=1e-10)
    assert np.allclose(g.covariance, cov, atol=1e-9)
    assert np.allclose(g.covariance, g.covariance.T, atol=1e-12)
    assert np.linalg.eigvalsh(g.covariance).min() > -1e-9
    gn = ntkcore.ensemble_predict(NET, x, y, xt, t, kernel="nngp")
    e2 = np.eye(len(k)) - expm(-2 * t * k)
    assert np.allclose(gn.covariance, kss - ks @ np.linalg.solve(k, e2) @ ks.T, atol=1e-9)


def test_ensemble_on_training_points(problem):
    x, _xt, y, kdd, _ktd, _ = problem
    g = ntkcore.ensemble_predict(NET, x, y, None, [0.0, 1.0, np.inf])
    assert g.mean.shape == (3, 40, 3) and g.covariance.shape == (3, 40, 40)
    assert np.allclose(g.mean[0], 0) and np.allclose(g.covariance[0], kdd.nngp)
    assert np.allclose(g.mean[2], y) and np.allclose(g.covariance[2], 0)
    e = expm(-kdd.ntk)
    assert np.allclose(g.covariance[1], e @ kdd.nngp @ e, atol=1e-10)


def test_ensemble_matches_neural_tangents():
    """Runs only where neural_tangents is installed (not in the default test environment)."""
    nt = pytest.importorskip("neural_tangents")
    from jax import config

    config.update("jax_enable_x64", True)
    stax = nt.stax
    layers = []
    for _ in range(3):
        layers += [stax.Dense(1, W_std=2**0.5, b_std=0.1), stax.Relu()]
    _, _, kernel_fn = stax.serial(*layers, stax.Dense(1, W_std=2**0.5, b_std=0.1))
    x, xt = sphere(30, d=5, seed=11), sphere(6, d=5, seed=12)
    y = np.random.default_rng(13).standard_normal((30, 2))
    for diag_reg in (0.0, 1e-3):
        predict = nt.predict.gradient_descent_mse_ensemble(kernel_fn, x, y, learning_rate=0.5, diag_reg=diag_reg)
        for t in (0.5, 20.0, None):
            for get in ("ntk", "nngp"):
                ref = predict(t=t, x_test=xt, get=get, compute_cov=True)
                ours = ntkcore.ensemble_predict(
                    NET,
                    x,
                    y,
                    xt,
                    np.inf if t is None else t,
                    kernel=get,
                    learning_rate=0.5,
                    diag_reg=diag_reg,
                    normalize_by_size=True,
                )
                assert ours.mean.shape == np.shape(ref.mean) and ours.covariance.shape == np.shape(ref.covariance)
                assert np.allclose(ours.mean, np.asarray(ref.mean), rtol=1e-7, atol=1e-9), (t, get)
                assert np.allclose(ours.covariance, np.asarray(ref.covariance), rtol=1e-7, atol=1e-9), (t, get)
        fn = nt.predict.gradient_descent_mse(kernel_fn(x, None, "ntk"), y, learning_rate=0.5, diag_reg=diag_reg)
        f0, f0t = np.full(y.shape, 0.3), np.full((6, 2), -0.2)
        ref_train, ref_test = fn(t=3.0, fx_train_0=f0, fx_test_0=f0t, k_test_train=kernel_fn(xt, x, "ntk"))
        ours = ntkcore.GradientFlow(
            NET.ntk(x), y, learning_rate=0.5, diag_reg=diag_reg, normalize_by_size=True
        ).predict(3.0, NET.ntk(xt, x), f0, f0t)
        assert ours.train.shape == np.shape(ref_train) and ours.test.shape == np.shape(ref_test)
        assert np.allclose(ours.train, np.asarray(ref_train), rtol=1e-7, atol=1e-9)
        assert np.allclose(ours.test, np.asarray(ref_test), rtol=1e-7, atol=1e-9)


# --- loss curve, bound, learning rate --------------------------------------------------------


def test_loss_curve_equals_predicted_residual(problem):
    _x, _xt, y, kdd, _, _ = problem
    r0 = -y
    t = np.array([0.0, 0.1, 1.0, 10.0])
    train = ntkcore.GradientFlow(kdd.ntk, y, learning_rate=0.5).predict(t).train
    expected = np.sum((train - y) ** 2, axis=(1, 2))
    assert np.allclose(ntkcore.loss_curve(kdd.ntk, r0, t, learning_rate=0.5), expected, rtol=1e-10)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10**6), t=st.floats(0, 50), lr=st.floats(0.01, 3))
def test_loss_curve_never_above_the_bounds(seed, t, lr):
    rng = np.random.default_rng(seed)
    x = sphere(25, seed=seed)
    theta = NET.ntk(x)
    r0 = rng.standard_normal((25, 2))
    curve = ntkcore.loss_curve(theta, r0, t, learning_rate=lr)
    bound = ntkcore.loss_bound(theta, r0, t, learning_rate=lr)
    seed_bound = ntkcore.loss_bound(theta, r0, t, learning_rate=lr, seed_form=True)
    assert curve <= bound * (1 + 1e-12) + 1e-300
    assert bound <= seed_bound * (1 + 1e-12)
    assert ntkcore.loss_bound(theta, r0, 0.0) == pytest.approx(np.sum(r0**2))


def test_loss_bound_is_tight_along_the_bottom_eigenvector(problem):
    _x, _xt, _y, kdd, _, _ = problem
    _values, vectors = np.linalg.eigh(kdd.ntk)
    r0 = vectors[:, 0]
    t = [0.5, 5.0]
    assert np.allclose(ntkcore.loss_curve(kdd.ntk, r0, t), ntkcore.loss_bound(kdd.ntk, r0, t), rtol=1e-7)
    assert ntkcore.loss_bound(kdd.ntk, r0, np.inf) == 0.0


def test_max_learning_rate_separates_convergence_from_divergence(problem):
    x, _xt, y, kdd, _, _ = problem
    theta = kdd.ntk
    lr = ntkcore.max_learning_rate(theta)
    assert lr == pytest.approx(2 / np.linalg.eigvalsh(theta)[-1], rel=1e-10)
    assert ntkcore.max_learning_rate(NET, x) == pytest.approx(lr, rel=1e-8)

    def residual_after(eta, steps=400):
        r = -y.copy()
        for _ in range(steps):
            r = r - eta * theta @ r
        return np.linalg.norm(r)

    assert residual_after(0.98 * lr) < np.linalg.norm(y)
    assert residual_after(1.02 * lr) > 1e3 * np.linalg.norm(y)


# --- bad input -----------------------------------------------------------------------------------


def test_gradient_flow_bad_arguments(problem):
    _x, _xt, y, kdd, ktd, _ = problem
    k = kdd.ntk
    with pytest.raises(ValueError, match="k_train_train"):
        ntkcore.GradientFlow(k[:, :5], y)
    with pytest.raises(TypeError, match="k_train_train"):
        ntkcore.GradientFlow(k.astype(int), y)
    with pytest.raises(ValueError, match="y_train"):
        ntkcore.GradientFlow(k, y[:5])
    with pytest.raises(ValueError, match="y_train"):
        ntkcore.GradientFlow(k, np.full((40, 2), np.nan))
    with pytest.raises(TypeError, match="y_train"):
        ntkcore.GradientFlow(k, np.array(["a"] * 40))
    for bad in (0.0, -1.0, np.inf):
        with pytest.raises(ValueError, match="learning_rate"):
            ntkcore.GradientFlow(k, y, learning_rate=bad)
    with pytest.raises(TypeError, match="learning_rate"):
        ntkcore.GradientFlow(k, y, learning_rate="1")
    with pytest.raises(ValueError, match="diag_reg"):
        ntkcore.GradientFlow(k, y, diag_reg=-1e-3)
    with pytest.raises(TypeError, match="diag_reg_absolute_scale"):
        ntkcore.GradientFlow(k, y, diag_reg_absolute_scale="no")
    with pytest.raises(TypeError, match="normalize_by_size"):
        ntkcore.GradientFlow(k, y, normalize_by_size=1)
    flow = ntkcore.GradientFlow(k, y)
    for bad in (-1.0, np.nan, [0.1, -0.1]):
        with pytest.raises(ValueError, match="t must be"):
            flow.predict(bad)
    with pytest.raises(TypeError, match="t must"):
        flow.predict("soon")
    with pytest.raises(ValueError, match="k_test_train"):
        flow.predict(1.0, ktd.ntk[:, :5])
    with pytest.raises(ValueError, match="k_test_train"):
        flow.predict(1.0, np.full((3, 40), np.inf))
    with pytest.raises(ValueError, match="f0_train"):
        flow.predict(1.0, f0_train=np.zeros((40, 2)))
    with pytest.raises(ValueError, match="f0_test"):
        flow.predict(1.0, f0_test=np.zeros((7, 3)))
    with pytest.raises(ValueError, match="f0_test"):
        flow.predict(1.0, ktd.ntk, f0_test=np.zeros((7, 2)))


def test_ensemble_and_loss_bad_arguments(problem):
    x, xt, y, kdd, _, _ = problem
    with pytest.raises(TypeError, match="net"):
        ntkcore.ensemble_predict(kdd.ntk, x, y, xt, 1.0)
    with pytest.raises(ValueError, match="kernel"):
        ntkcore.ensemble_predict(NET, x, y, xt, 1.0, kernel="cntk")
    with pytest.raises(ValueError, match="x_test"):
        ntkcore.ensemble_predict(NET, x, y, xt[:, :3], 1.0)
    with pytest.raises(ValueError, match="y_train"):
        ntkcore.ensemble_predict(NET, x, y[:3], xt, 1.0)
    with pytest.raises(ValueError, match="t must"):
        ntkcore.ensemble_predict(NET, x, y, xt, -2.0)
    with pytest.raises(TypeError, match="compute_cov"):
        ntkcore.ensemble_predict(NET, x, y, xt, 1.0, compute_cov=None)
    with pytest.raises(ValueError, match="r0"):
        ntkcore.loss_curve(kdd.ntk, y[:4], 1.0)
    with pytest.raises(ValueError, match="K must be symmetric"):
        ntkcore.loss_bound(kdd.ntk + np.triu(np.ones((40, 40))), y, 1.0)
    with pytest.raises(TypeError, match="seed_form"):
        ntkcore.loss_bound(kdd.ntk, y, 1.0, seed_form="yes")
    with pytest.raises(ValueError, match="learning_rate"):
        ntkcore.loss_curve(kdd.ntk, y, 1.0, learning_rate=0)
    with pytest.raises(ValueError, match="positive eigenvalue"):
        ntkcore.max_learning_rate(np.zeros((3, 3)))


# --- kernels that are not PSD, and kernels of any scale (issue 9) ------------------------------


def indefinite(theta):
    """theta shifted down by twice its smallest eigenvalue: positive diagonal, one negative eigenvalue."""
    return theta - 2 * np.linalg.eigvalsh(theta)[0] * np.eye(len(theta))


@pytest.mark.parametrize("make", [lambda k: -k, indefinite, lambda k: -1e-40 * k, lambda k: 1e40 * indefinite(k)])
def test_kernels_that_are_not_psd_are_named(problem, make):
    _x, _xt, y, kdd, ktd, _ = problem
    bad = make(kdd.ntk)
    r0 = np.ones(len(y))
    with pytest.raises(ValueError, match="k_train_train must be positive semidefinite"):
        ntkcore.GradientFlow(bad, y).predict(np.inf, ktd.ntk)
    with pytest.raises(ValueError, match="k_train_train must be positive semidefinite"):
        ntkcore.GradientFlow(bad, y).predict([0.5, 2.0])
    for fn in (ntkcore.loss_curve, ntkcore.loss_bound):
        with pytest.raises(ValueError, match="positive semidefinite"):
            fn(bad, r0, 1.0)
    if np.diagonal(bad).min() < 0:
        with pytest.raises(ValueError, match="K must be positive semidefinite"):
            ntkcore.max_learning_rate(bad)


def test_singular_but_psd_kernel_still_blames_duplicates():
    x = sphere(30, seed=8)
    theta = NET.ntk(np.vstack([x, x[:3]]))
    y = np.random.default_rng(0).standard_normal(33)
    with pytest.raises(ValueError, match="duplicate training points"):
        ntkcore.GradientFlow(theta, y).predict(np.inf, theta[:4])
    ntkcore.GradientFlow(theta, y).predict(3.0)  # rounding-level negative eigenvalues are fine


def test_zero_kernel_learning_rate():
    with pytest.raises(ValueError, match="zero"):
        ntkcore.max_learning_rate(np.zeros((4, 4)))


@pytest.mark.parametrize("c", [1e-40, 1e40, 2.0**-600, 1e200])
def test_dynamics_are_scale_invariant(problem, c):
    # Scaling the kernel by c and the learning rate by 1 / c changes nothing.
    _x, _xt, y, kdd, ktd, _ = problem
    theta, theta_td = kdd.ntk, ktd.ntk
    r0 = np.random.default_rng(9).standard_normal(y.shape)
    t = [0.0, 0.3, 4.0, np.inf]
    ref = ntkcore.GradientFlow(theta, y).predict(t, theta_td)
    out = ntkcore.GradientFlow(theta * c, y, learning_rate=1 / c).predict(t, theta_td * c)
    assert np.allclose(out.train, ref.train, rtol=1e-9, atol=1e-9)
    assert np.allclose(out.test, ref.test, rtol=1e-8, atol=1e-8)
    for fn in (ntkcore.loss_curve, ntkcore.loss_bound):
        assert np.allclose(fn(theta * c, r0, t, learning_rate=1 / c), fn(theta, r0, t), rtol=1e-7)
    assert ntkcore.max_learning_rate(theta * c) == pytest.approx(ntkcore.max_learning_rate(theta) / c, rel=1e-10)


@pytest.mark.parametrize("w_std", [1e-10, 1e10])
def test_ensemble_of_huge_and_tiny_networks(problem, w_std):
    # Without biases the ReLU kernels are homogeneous in W_std: t = inf does not depend on it.
    x, xt, y = problem[:3]
    ref = ntkcore.ensemble_predict(ntkcore.FullyConnected(2, "relu"), x, y, xt, np.inf)
    net = ntkcore.FullyConnected(2, "relu", W_std=w_std)
    out = ntkcore.ensemble_predict(net, x, y, xt, np.inf)
    assert np.allclose(out.mean, ref.mean, rtol=1e-8, atol=1e-8)
    scale = net.nngp(x[:1])[0, 0] / ntkcore.FullyConnected(2, "relu").nngp(x[:1])[0, 0]  # about W_std^6
    assert np.allclose(out.covariance / scale, ref.covariance, rtol=1e-6, atol=1e-8)
    rate = ntkcore.max_learning_rate(net, x)
    assert rate == pytest.approx(ntkcore.max_learning_rate(ntkcore.FullyConnected(2, "relu"), x) / scale, rel=1e-10)
    assert np.isfinite(ntkcore.loss_bound(net.ntk(x), np.ones(len(x)), [1.0, 10.0])).all()

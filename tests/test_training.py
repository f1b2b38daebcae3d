"""The training loop (ntkcore.training) on finite MLPs: optimizers, losses, records, bad input.

Oracles: the plain-numpy Jacobian of test_finite (chain rule, itself checked there against
central differences), central differences of the losses and of softmax_y(f), and the
gradient-flow bound derived in docs/math/6-finite-width.md.
"""

import numpy as np
import pytest
from ntkcore import finite, training
from test_finite import flat, np_forward, np_jacobian, unflat


def _points(seed, n, d):
    return np.random.default_rng(seed).standard_normal((n, d))


def _net(widths=(3, 6, 5, 3), seed=4):
    return finite.MLP(list(widths), "erf", W_std=1.4, b_std=0.3, seed=seed)


def _np_softmax(f):
    e = np.exp(f - f.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _np_cross_entropy(f, labels):
    s = _np_softmax(f)
    return -np.sum(np.log(s[np.arange(len(labels)), labels]))


def _np_loss_grad(net, p, x, y, loss):
    """Loss and flat gradient from the numpy oracle at flat parameters p."""
    params = unflat(net, p)
    f = np_forward(net, params, x)[2]
    if loss == "squared":
        r = f - y
        value = 0.5 * np.sum(r * r)
    else:
        r = _np_softmax(f)
        r[np.arange(len(y)), y] -= 1
        value = _np_cross_entropy(f, y)
    return value, np_jacobian(net, params, x).T @ r.ravel()


# --- the model protocol --------------------------------------------------------------------


def test_vjp_is_jacobian_transpose_times_cotangent_by_central_differences():
    net = _net()
    x, r = _points(1, 6, 3), _points(2, 6, 3)
    p0 = flat(net.parameters)
    h = 1e-6
    jac = np.empty((6 * 3, p0.size))
    for j in range(p0.size):
        plus, minus = p0.copy(), p0.copy()
        plus[j] += h
        minus[j] -= h
        net.parameters = unflat(net, plus)
        fp = net.apply(x)
        net.parameters = unflat(net, minus)
        jac[:, j] = ((fp - net.apply(x)) / (2 * h)).ravel()
    net.parameters = unflat(net, p0)
    vjp = np.concatenate([g.ravel() for g in net._vjp(x, r, dtype=np.float64, n_threads=None)])
    np.testing.assert_allclose(vjp, jac.T @ r.ravel(), rtol=1e-7, atol=1e-8)


def test_flat_parameters_round_trip_in_layer_order():
    net = _net()
    flat_list = net._flat_parameters()
    assert [q.shape for q in flat_list] == [(6, 3), (6,), (5, 6), (5,), (3, 5), (3,)]
    np.testing.assert_array_equal(np.concatenate([q.ravel() for q in flat_list]), flat(net.parameters))
    net._set_flat_parameters([2 * q for q in flat_list])
    np.testing.assert_array_equal(flat(net.parameters), 2 * np.concatenate([q.ravel() for q in flat_list]))


def test_cross_entropy_gradient_by_central_differences():
    net = _net()
    x, labels = _points(3, 7, 3), np.array([0, 1, 2, 2, 1, 0, 1])
    f = net.apply(x)
    value, cotangent, accuracy = training._loss_and_cotangent("cross_entropy", f, labels, np.dtype(np.float64))
    assert value == pytest.approx(_np_cross_entropy(f, labels), rel=1e-13)
    assert accuracy == np.mean(np.argmax(f, axis=1) == labels)
    grad = np.concatenate([g.ravel() for g in net._vjp(x, cotangent, dtype=np.float64, n_threads=None)])
    p0, h = flat(net.parameters), 1e-6
    fd = np.empty_like(p0)
    for j in range(p0.size):
        vals = []
        for sign in (1, -1):
            p = p0.copy()
            p[j] += sign * h
            net.parameters = unflat(net, p)
            vals.append(_np_cross_entropy(net.apply(x), labels))
        fd[j] = (vals[0] - vals[1]) / (2 * h)
    np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-8)


# --- optimizers against a numpy reference ------------------------------------------------


@pytest.mark.parametrize("loss", ["squared", "cross_entropy"])
def test_gradient_descent_matches_numpy_reference(loss):
    net = _net()
    x = _points(4, 8, 3)
    y = _points(5, 8, 3) if loss == "squared" else np.arange(8) % 3
    p, lr, steps = flat(net.parameters), 0.05, 7
    losses = []
    for _ in range(steps):
        value, g = _np_loss_grad(net, p, x, y, loss)
        losses.append(value)
        p = p - lr * g
    losses.append(_np_loss_grad(net, p, x, y, loss)[0])
    result = training.train(net, x, y, lr, steps, loss=loss, optimizer="gd")
    np.testing.assert_allclose(result.loss, losses, rtol=1e-12)
    np.testing.assert_allclose(flat(net.parameters), p, rtol=1e-11, atol=1e-13)


@pytest.mark.parametrize("loss", ["squared", "cross_entropy"])
def test_adam_matches_numpy_reference(loss):
    net = _net(seed=9)
    x = _points(6, 8, 3)
    y = _points(7, 8, 3) if loss == "squared" else (np.arange(8) * 2) % 3
    p, lr, b1, b2, eps, steps = flat(net.parameters), 0.01, 0.8, 0.99, 1e-7, 9
    m, v = np.zeros_like(p), np.zeros_like(p)
    losses = []
    for t in range(1, steps + 1):
        value, g = _np_loss_grad(net, p, x, y, loss)
        losses.append(value)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        p = p - lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
    losses.append(_np_loss_grad(net, p, x, y, loss)[0])
    result = net.train(x, y, lr, steps, loss=loss, optimizer="adam", beta1=b1, beta2=b2, epsilon=eps)
    np.testing.assert_allclose(result.loss, losses, rtol=1e-10)
    np.testing.assert_allclose(flat(net.parameters), p, rtol=1e-9, atol=1e-12)
    assert result.loss[-1] < result.loss[0]


# --- records -------------------------------------------------------------------------------


def test_ntk_change_is_the_relative_frobenius_norm_and_accuracy_the_hit_rate():
    net = _net((4, 32, 3), seed=2)
    x, labels = _points(8, 10, 4), np.arange(10) % 3
    probe = _points(9, 5, 4)
    theta0 = net.ntk(probe)
    acc0 = np.mean(np.argmax(net.apply(x), axis=1) == labels)
    seen = []
    result = net.train(
        x,
        labels,
        0.02,
        9,
        loss="cross_entropy",
        optimizer="adam",
        record_every=4,
        probe=probe,
        callback=lambda step, model: seen.append((step, net.ntk(probe))),
    )
    assert list(result.record_steps) == [0, 4, 8, 9] == [s for s, _ in seen]
    for (_, theta), change in zip(seen, result.ntk_change):
        assert change == pytest.approx(np.linalg.norm(theta - theta0) / np.linalg.norm(theta0), rel=1e-12)
    np.testing.assert_array_equal(result.ntk_initial, theta0)
    np.testing.assert_array_equal(result.ntk_final, net.ntk(probe))
    assert result.ntk_change[-1] > 0
    assert result.accuracy.shape == (10,)
    assert result.accuracy[0] == acc0
    assert result.accuracy[-1] == np.mean(np.argmax(net.apply(x), axis=1) == labels)
    assert result.loss[-1] == pytest.approx(_np_cross_entropy(net.apply(x), labels), rel=1e-13)
    squared = _net((4, 8, 3)).train(x, _points(10, 10, 3), 0.01, 2)
    assert squared.accuracy is None


def test_one_hot_labels_train_as_integer_labels():
    x, labels = _points(11, 9, 3), np.array([2, 0, 1, 1, 2, 0, 0, 1, 2])
    runs = []
    for y in (labels, np.eye(3)[labels], np.eye(3, dtype=int)[labels]):
        net = _net()
        runs.append((net.train(x, y, 0.05, 4, loss="cross_entropy").loss, flat(net.parameters)))
    for loss, p in runs[1:]:
        np.testing.assert_array_equal(loss, runs[0][0])
        np.testing.assert_array_equal(p, runs[0][1])


# --- true-class NTK and the loss bound ------------------------------------------------------


def test_true_class_ntk_is_the_gram_of_the_softmax_y_jacobian():
    net = _net()
    x, labels = _points(12, 6, 3), np.array([0, 2, 1, 1, 0, 2])
    p0, h = flat(net.parameters), 1e-6

    def prob(p):
        net.parameters = unflat(net, p)
        return _np_softmax(net.apply(x))[np.arange(6), labels]

    jac = np.empty((6, p0.size))
    for j in range(p0.size):
        plus, minus = p0.copy(), p0.copy()
        plus[j] += h
        minus[j] -= h
        jac[:, j] = (prob(plus) - prob(minus)) / (2 * h)
    net.parameters = unflat(net, p0)
    theta = training.true_class_ntk(net, x, labels)
    np.testing.assert_allclose(theta, jac @ jac.T, rtol=1e-6, atol=1e-10)
    np.testing.assert_allclose(training.true_class_ntk(net, x, np.eye(3)[labels]), theta, rtol=1e-15)


def test_cross_entropy_loss_stays_below_the_gradient_flow_bound():
    # Small learning rate: gradient descent follows the flow the bound is derived for.
    net = finite.MLP([4, 64, 3], "erf", W_std=1.5, b_std=0.2, seed=3)
    x = _points(13, 6, 4)
    labels = np.array([0, 1, 2, 0, 1, 2])
    lams = []
    lr, steps = 2e-3, 600
    result = net.train(
        x,
        labels,
        lr,
        steps,
        loss="cross_entropy",
        record_every=1,
        callback=lambda step, model: lams.append(np.linalg.eigvalsh(training.true_class_ntk(model, x, labels))[0]),
    )
    assert len(lams) == steps + 1 and min(lams) > 0
    t = np.arange(steps + 1)
    bound = training.cross_entropy_bound(result.loss[0], 6, min(lams), lr, t)
    assert bound[0] == pytest.approx(result.loss[0], rel=1e-12)
    assert np.all(result.loss <= bound + 1e-9)
    # With the per-step lambda_min (the minimum of the two ends of each step) it is tighter
    # and still holds; the exponential form L_0 exp(-2 eta lambda t) is looser.
    per_step = np.minimum(lams, np.concatenate(([lams[0]], lams[:-1])))
    tight = training.cross_entropy_bound(result.loss[0], 6, per_step, lr, t)
    assert np.all(tight <= bound + 1e-12) and np.all(result.loss <= tight + 1e-9)
    assert np.all(bound <= result.loss[0] * np.exp(-2 * lr * min(lams) * t) + 1e-12)
    assert result.loss[-1] < result.loss[0]


def test_cross_entropy_bound_closed_form_and_exhaustion():
    # lambda t large enough that exp(-2 L0 / N) + 2 eta lambda t >= 1: the bound is 0.
    b = training.cross_entropy_bound(3.0, 2, 0.5, 0.1, [0, 1, 10, 100])
    expected = -np.log(np.exp(-3.0) + 0.1 * np.array([0, 1, 10, 100]))
    np.testing.assert_allclose(b[:2], expected[:2], rtol=1e-14)
    assert b[-1] == 0


# --- precision and bad input ---------------------------------------------------------------


def test_float32_training_tracks_float64():
    x, labels = _points(14, 12, 3), np.arange(12) % 3
    runs = {}
    for dtype in (np.float32, np.float64):
        net = _net()
        res = net.train(x.astype(dtype), labels, 0.01, 10, loss="cross_entropy", optimizer="adam")
        assert res.ntk_initial.dtype == dtype and res.loss.dtype == np.float64
        runs[dtype] = (res, flat(net.parameters))
    np.testing.assert_allclose(runs[np.float32][0].loss, runs[np.float64][0].loss, rtol=1e-5)
    np.testing.assert_allclose(runs[np.float32][1], runs[np.float64][1], rtol=1e-3, atol=1e-4)
    theta32 = training.true_class_ntk(_net(), x.astype(np.float32), labels)
    np.testing.assert_allclose(theta32, training.true_class_ntk(_net(), x, labels), rtol=1e-4, atol=1e-6)


def test_bad_input_raises_clear_errors():
    net = _net()
    x, labels = _points(15, 5, 3), np.array([0, 1, 2, 1, 0])
    ce = {"loss": "cross_entropy"}
    cases = [
        (lambda: net.train(x, labels, 0.1, 1, loss="hinge"), ValueError, "loss must be .squared. or .cross_entropy."),
        (lambda: net.train(x, labels, 0.1, 1, **ce, optimizer="sgd"), ValueError, "optimizer must be .gd. or .adam."),
        (lambda: net.train(x, labels + 1, 0.1, 1, **ce), ValueError, r"class labels in \[0, 2\]"),
        (lambda: net.train(x, labels - 1, 0.1, 1, **ce), ValueError, r"class labels in \[0, 2\]"),
        (lambda: net.train(x, labels[:4], 0.1, 1, **ce), ValueError, r"shape \(5,\)"),
        (lambda: net.train(x, labels.astype(float), 0.1, 1, **ce), TypeError, "integer class labels"),
        (lambda: net.train(x, np.eye(4)[labels], 0.1, 1, **ce), ValueError, r"shape \(N, k\) = \(5, 3\)"),
        (lambda: net.train(x, 2 * np.eye(3)[labels], 0.1, 1, **ce), ValueError, "one 1 and k - 1 zeros"),
        (lambda: net.train(x, labels[:, None, None], 0.1, 1, **ce), ValueError, "labels"),
        (lambda: net.train(x, "abc", 0.1, 1, **ce), TypeError, "integer class labels"),
        (lambda: net.train(x, labels, 0.1, 1, optimizer="adam", beta1=1.0), ValueError, "beta1"),
        (lambda: net.train(x, labels, 0.1, 1, optimizer="adam", beta2=-0.1), ValueError, "beta2"),
        (lambda: net.train(x, labels, 0.1, 1, optimizer="adam", epsilon=0.0), ValueError, "epsilon"),
        (lambda: net.train(x, labels, 0.1, 1, **ce, callback=3), TypeError, "callback must be callable"),
        (lambda: net.train(x, labels, 0.1, 1, **ce, momentum=0.9), TypeError, "momentum"),
        (lambda: training.train(net, x[:, :2], labels, 0.1, 1, **ce), ValueError, "3 features"),
        (lambda: training.true_class_ntk(net, x, labels + 3), ValueError, "class labels"),
        (lambda: training.cross_entropy_bound(1.0, 2, -1.0, 0.1, [0, 1]), ValueError, "lambda_min"),
        (lambda: training.cross_entropy_bound(1.0, 2, 1.0, 0.1, [2, 1]), ValueError, "increasing"),
    ]
    for call, error, pattern in cases:
        with pytest.raises(error, match=pattern):
            call()


@pytest.mark.parametrize("optimizer", ["gd", "adam"])
def test_cross_entropy_divergence_names_the_step_and_keeps_parameters_finite(optimizer):
    net = finite.MLP([3, 16, 16, 3], "relu", W_std=1.5, seed=1)
    x, labels = _points(16, 6, 3), np.arange(6) % 3
    diverged = (
        r"training diverged after [1-9]\d* of 50 steps: finite network overflows float64.*lower learning_rate=1e\+200"
    )
    with pytest.raises(FloatingPointError, match=diverged):
        net.train(x, labels, 1e200, 50, loss="cross_entropy", optimizer=optimizer)
    assert all(np.isfinite(w).all() and np.isfinite(b).all() for w, b in net.parameters)

"""Finite-width layer networks (ntkcore.finite.Network): outputs, Jacobian, empirical NTK, Monte Carlo limit.

Oracles: an independent plain-numpy forward pass (np.pad and strided slices, one filter tap at a
time); the explicit Jacobian, one row per point and output from unit cotangents of the
network's vector-Jacobian product, itself checked against central differences of the outputs;
the NTK as that Jacobian times its transpose; the analytic kernels of the same layer list for
the Monte Carlo limit; finite.MLP for the fully-connected case.
"""

import math

import ntkcore
import numpy as np
import pytest
from ntkcore import activations as act
from ntkcore import finite
from ntkcore import layers as L

_erf = np.vectorize(math.erf)
_SQRT2 = math.sqrt(2.0)


def _phi(activation, z):
    """phi in plain numpy for the activations these tests use."""
    if activation.family == "ab_relu":
        a, b, _ = activation.core_params
        return np.where(z < 0, a * z, b * z)
    if activation.family == "erf":
        a, b, c = activation.core_params
        return a * _erf(b * z) + c
    if activation.family == "gelu":
        return z * 0.5 * (1 + _erf(z / _SQRT2))
    if activation.family == "numerical" and activation.fn == "tanh":
        return np.tanh(z)
    raise NotImplementedError(activation)


def _pad(x, axis, size, window, stride, padding):
    """x padded along ``axis`` for a window: (padded, output size)."""
    if padding == "VALID":
        return x, (size - window) // stride + 1
    out = -(-size // stride)
    total = max((out - 1) * stride + window - size, 0)
    widths = [(0, 0)] * x.ndim
    widths[axis] = (total // 2, total - total // 2)
    return np.pad(x, widths, mode="wrap" if padding == "CIRCULAR" else "constant"), out


def _window_sum(x, window, strides, padding, weights=None):
    """sum over taps (a, b) of x[:, s0 o0 + a, s1 o1 + b] (times weights[a, b]), x (N, H, W, C)."""
    x, oh = _pad(x, 1, x.shape[1], window[0], strides[0], padding)
    x, ow = _pad(x, 2, x.shape[2], window[1], strides[1], padding)
    total = 0
    for a in range(window[0]):
        for b in range(window[1]):
            part = x[:, a : a + strides[0] * (oh - 1) + 1 : strides[0], b : b + strides[1] * (ow - 1) + 1 : strides[1]]
            total = total + (part if weights is None else part @ weights[a, b])
    return total


def np_apply(net, params, x):
    """The network's outputs in plain numpy, inputs (N, H, W, C), (N, L, C) or (N, d)."""
    h = np.asarray(x, dtype=np.float64)
    h = h.reshape(h.shape[0], *(((*h.shape[1:-1], 1, 1))[:2]), h.shape[-1])
    params = list(params)
    for layer in net.layers:
        if isinstance(layer, L.Conv):
            w, b = params.pop(0), params.pop(0)
            shape = ((*tuple(layer.filter_shape), 1))[:2]
            w = w.reshape(*shape, *w.shape[-2:])
            strides = ((*tuple(layer.strides), 1))[:2]
            fan_in = shape[0] * shape[1] * h.shape[-1]
            h = layer.W_std / math.sqrt(fan_in) * _window_sum(h, shape, strides, layer.padding, w) + layer.b_std * b
        elif isinstance(layer, L.Dense):
            w, b = params.pop(0), params.pop(0)
            h = layer.W_std / math.sqrt(h.shape[-1]) * h @ w + layer.b_std * b
        elif isinstance(layer, L.AvgPool):
            window = ((*tuple(layer.window_shape), 1))[:2]
            strides = ((*tuple(layer.strides), 1))[:2]
            h = _window_sum(h, window, strides, layer.padding) / (window[0] * window[1])
        elif isinstance(layer, L.GlobalAvgPool):
            h = h.mean(axis=(1, 2), keepdims=True)
        elif isinstance(layer, L.Flatten):
            h = h.reshape(h.shape[0], 1, 1, -1)
        else:
            h = _phi(layer, h)
    return h.reshape(h.shape[0], -1)


def jacobian(network, x):
    """(N k, #params): row i k + a from the cotangent e_{i a} of the network's vector-Jacobian product."""
    n, k = x.shape[0], network.n_outputs
    rows = []
    for i in range(n):
        for a in range(k):
            r = np.zeros((n, k))
            r[i, a] = 1.0
            rows.append(np.concatenate([g.ravel() for g in network._vjp(x, r, dtype=np.float64, n_threads=None)]))
    return np.array(rows)


def central_jacobian(network, x, step=1e-5):
    params = network.parameters
    cols = []
    for m, p in enumerate(params):
        for idx in np.ndindex(p.shape):
            plus = [q.copy() for q in params]
            minus = [q.copy() for q in params]
            plus[m][idx] += step
            minus[m][idx] -= step
            cols.append((network.apply(x, parameters=plus) - network.apply(x, parameters=minus)).ravel() / (2 * step))
    return np.array(cols).T


def _rel(a, b):
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


# Small networks covering the layers, paddings, strides and activations.
NETS = {
    "same-gap": (
        ntkcore.serial(
            L.Conv((3, 3), padding="SAME", W_std=1.4, b_std=0.3), "relu", L.GlobalAvgPool(), L.Dense(1.2, 0.2)
        ),
        (5, 5, 2),
    ),
    "valid-stride-flatten": (
        ntkcore.serial(
            L.Conv((2, 3), strides=(2, 1), padding="VALID", W_std=1.3, b_std=0.1),
            "erf",
            L.Flatten(),
            L.Dense(1.1, 0.4),
        ),
        (5, 4, 2),
    ),
    "circular-pool": (
        ntkcore.serial(
            L.Conv((3, 3), strides=(2, 2), padding="CIRCULAR", W_std=1.5, b_std=0.2),
            "gelu",
            L.AvgPool((2, 2), strides=(1, 1), padding="SAME"),
            L.Conv((2, 2), padding="SAME", W_std=1.2, b_std=0.0),
            act.Erf(1.0, 0.8, 0.1),
            L.Dense(1.3, 0.3),
            "relu",
            L.GlobalAvgPool(),
            L.Dense(1.0, 0.1),
        ),
        (5, 6, 3),
    ),
    "sequence-tanh": (
        ntkcore.serial(
            L.Conv((3,), padding="SAME", W_std=1.2, b_std=0.2),
            act.Numerical("tanh"),
            L.AvgPool((2,), strides=(2,), padding="VALID"),
            L.Flatten(),
            L.Dense(1.4, 0.1),
            "gelu",
            L.Dense(1.0, 0.2),
        ),
        (6, 2),
    ),
    "vectors": (ntkcore.serial(L.Dense(1.3, 0.2), "erf", L.Dense(1.2, 0.1), "relu", L.Dense(1.0, 0.3)), (4,)),
}


def _network(name, outputs=3, width=4, seed=0):
    net, shape = NETS[name]
    return finite.Network(net, width, outputs=outputs, seed=seed), shape


def _x(shape, n, seed):
    return np.random.default_rng(seed).standard_normal((n, *shape))


@pytest.mark.parametrize("name", NETS)
def test_outputs_match_numpy(name):
    network, shape = _network(name)
    x = _x(shape, 4, 1)
    out = network.apply(x)
    assert out.shape == (4, 3)
    np.testing.assert_allclose(out, np_apply(NETS[name][0], network.parameters, x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["valid-stride-flatten", "circular-pool", "sequence-tanh", "vectors"])
def test_jacobian_matches_central_differences(name):
    network, shape = _network(name, outputs=2, width=3)
    x = _x(shape, 3, 2)
    j = jacobian(network, x)
    # Central differences: error ~ step^2 f''' ~ 1e-10 plus rounding ~ 1e-16 / step ~ 1e-11.
    np.testing.assert_allclose(j, central_jacobian(network, x), rtol=0, atol=1e-7 * np.abs(j).max())


@pytest.mark.parametrize("name", NETS)
@pytest.mark.parametrize("cross", [False, True])
def test_ntk_is_jacobian_product(name, cross):
    network, shape = _network(name)
    x1 = _x(shape, 4, 3)
    x2 = _x(shape, 3, 4) if cross else None
    j1 = jacobian(network, x1)
    j2 = j1 if x2 is None else jacobian(network, x2)
    full = j1 @ j2.T
    k = network.n_outputs
    got = network.ntk(x1, x2, output="full")
    assert got.shape == full.shape
    assert _rel(got, full) < 1e-10
    trace = full.reshape(x1.shape[0], k, -1, k).diagonal(axis1=1, axis2=3).mean(axis=-1)
    assert _rel(network.ntk(x1, x2), trace) < 1e-10
    if x2 is None:
        np.testing.assert_array_equal(got, got.T)


def test_gap_network_takes_different_grids_for_x1_and_x2():
    network, _ = _network("same-gap")
    x1, x2 = _x((5, 5, 2), 3, 5), _x((4, 6, 2), 2, 6)
    full = jacobian(network, x1) @ jacobian(network, x2).T
    assert _rel(network.ntk(x1, x2, output="full"), full) < 1e-10


def test_float32_agrees_with_float64_and_threads_do_not_change_results():
    network, shape = _network("circular-pool")
    x = _x(shape, 6, 7)
    t64 = network.ntk(x, output="full")
    t32 = network.ntk(x.astype(np.float32), output="full")
    assert t32.dtype == np.float32 and t64.dtype == np.float64
    assert _rel(t32, t64) < 1e-4
    assert network.apply(x.astype(np.float32)).dtype == np.float32
    for output in ("trace", "full"):
        one = network.ntk(x, output=output, n_threads=1)
        for threads in (2, 3):
            np.testing.assert_array_equal(network.ntk(x, output=output, n_threads=threads), one)


def test_callable_gauss_hermite_activation_with_derivative():
    net = ntkcore.serial(
        L.Conv((2, 2), padding="SAME", W_std=1.3, b_std=0.1),
        act.Numerical(np.tanh, dfn=lambda z: 1 - np.tanh(z) ** 2),
        L.GlobalAvgPool(),
        L.Dense(1.0, 0.2),
    )
    builtin = ntkcore.serial(*[act.Numerical("tanh") if isinstance(v, act.Numerical) else v for v in net.layers])
    x = _x((3, 3, 2), 4, 8)
    a, b = finite.Network(net, 5, outputs=2), finite.Network(builtin, 5, outputs=2)
    np.testing.assert_allclose(a.ntk(x, output="full"), b.ntk(x, output="full"), rtol=1e-12)
    assert _rel(a.ntk(x, output="full"), jacobian(a, x) @ jacobian(a, x).T) < 1e-10
    with pytest.raises(ValueError, match="needs dfn"):
        finite.Network(ntkcore.serial(act.Numerical(np.tanh), L.Dense()), 3)


def test_fully_connected_is_the_mlp():
    arch = ntkcore.FullyConnected(2, "erf", W_std=[1.2, 1.4, 0.9], b_std=[0.1, 0.3, 0.2])
    network = finite.Network(arch, [6, 5], outputs=2, seed=3, input_shape=(4,))
    mlp = finite.MLP([4, 6, 5, 2], "erf", W_std=[1.2, 1.4, 0.9], b_std=[0.1, 0.3, 0.2])
    params = network.parameters
    mlp.parameters = [(params[m].T, params[m + 1]) for m in range(0, len(params), 2)]
    x, x2 = _x((4,), 5, 9), _x((4,), 3, 10)
    np.testing.assert_allclose(network.apply(x), mlp.apply(x), rtol=1e-12)
    for output in ("trace", "full"):
        np.testing.assert_allclose(network.ntk(x, x2, output=output), mlp.ntk(x, x2, output=output), rtol=1e-11)


def test_parameters_are_draws_in_layer_order_and_round_trip():
    net, shape = NETS["circular-pool"]
    network = finite.Network(net, [4, 5, 6], outputs=3, input_shape=shape)
    params = network.parameters
    assert [p.shape for p in params] == [(3, 3, 3, 4), (4,), (2, 2, 4, 5), (5,), (5, 6), (6,), (6, 3), (3,)]
    rng = np.random.default_rng(0)
    for p in params:
        np.testing.assert_array_equal(p, rng.standard_normal(p.shape))
    params[0][0, 0, 0, 0] = 7.0  # a copy
    assert network.parameters[0][0, 0, 0, 0] != 7.0
    network.parameters = params
    assert network.parameters[0][0, 0, 0, 0] == 7.0
    flat = network._flat_parameters()
    with pytest.raises(ValueError):
        flat[0][0, 0, 0, 0] = 1.0  # read-only
    x = _x(shape, 3, 11)
    other = [p + 0.5 for p in params]
    before = network.apply(x)
    np.testing.assert_allclose(network.apply(x, parameters=other), np_apply(NETS["circular-pool"][0], other, x))
    np.testing.assert_array_equal(network.apply(x), before)
    network._set_flat_parameters(other)
    np.testing.assert_array_equal(network.apply(x), network.apply(x, parameters=other))


def test_parameters_wait_for_the_input_shape():
    network = finite.Network(NETS["same-gap"][0], 3)
    with pytest.raises(ValueError, match="input_shape"):
        _ = network.parameters
    network.apply(_x((5, 5, 2), 2, 0))
    assert network.input_shape == (5, 5, 2)
    assert network.parameters[0].shape == (3, 3, 2, 3)


@pytest.mark.parametrize("loss", ["squared", "cross_entropy"])
def test_train_takes_gradient_steps_of_the_loss(loss):
    """Two GD steps of Network.train against steps built from the central-difference
    Jacobian of the loss's output gradient (squared: f - y; cross-entropy: softmax(f) - onehot)."""
    network, shape = _network("same-gap", outputs=3, seed=4)
    x = _x(shape, 6, seed=5)
    labels = np.array([0, 1, 2, 2, 1, 0])
    y = np.eye(3)[labels]
    target = labels if loss == "cross_entropy" else y
    network.apply(x)  # draws the parameters
    params = network.parameters
    rate = 0.05
    for _ in range(2):
        f = np_apply(network.net, params, x)
        if loss == "squared":
            r = f - y
        else:
            e = np.exp(f - f.max(axis=1, keepdims=True))
            r = e / e.sum(axis=1, keepdims=True) - y
        probe = finite.Network(network.net, 4, outputs=3, seed=4, input_shape=shape)
        probe.parameters = params
        grad = central_jacobian(probe, x).T @ r.ravel()
        flat = np.concatenate([p.ravel() for p in params]) - rate * grad
        params = np.split(flat, np.cumsum([p.size for p in params])[:-1])
        params = [q.reshape(p.shape) for q, p in zip(params, network.parameters)]
    result = network.train(x, target, rate, 2, loss=loss)
    assert result.loss.shape == (3,)
    for got, want in zip(network.parameters, params):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-7 * max(1.0, np.max(np.abs(want))))


def test_train_draws_the_parameters_from_the_inputs():
    net, shape = NETS["vectors"]
    network = finite.Network(net, 5, outputs=2, seed=0)
    result = network.train(_x(shape, 8, seed=1), np.array([0, 1] * 4), 0.1, 3, loss="cross_entropy")
    assert network.input_shape == shape and result.accuracy.shape == (4,)


def test_bad_arguments_raise():
    net, shape = NETS["valid-stride-flatten"]
    network = finite.Network(net, 3, outputs=2)
    x = _x(shape, 3, 12)
    network.apply(x)
    cases = [
        (lambda: finite.Network("relu", 3), TypeError, "net must be"),
        (lambda: finite.Network(ntkcore.serial(L.Dense(), "relu"), 3), ValueError, "must end in a Dense"),
        (lambda: finite.Network(net, [3, 4]), ValueError, "width"),
        (lambda: finite.Network(net, 0), ValueError, "width"),
        (lambda: finite.Network(net, 2.5), TypeError, "width"),
        (lambda: finite.Network(net, 3, outputs=0), ValueError, "outputs"),
        (lambda: finite.Network(net, 3, seed=-1), ValueError, "seed"),
        (
            lambda: finite.Network(ntkcore.FullyConnected(1, "relu", parameterization="standard", widths=4), 3),
            ValueError,
            "NTK parameterization",
        ),
        (
            lambda: finite.Network(ntkcore.serial(L.Conv((3, 3)), "relu", L.Dense()), 3, input_shape=(5, 5, 1)),
            ValueError,
            "GlobalAvgPool or Flatten",
        ),
        (lambda: finite.Network(net, 3, input_shape=(2, 2, 1)), ValueError, "smaller than the window"),
        (lambda: finite.Network(net, 3, input_shape=(5,)), ValueError, "needs spatial positions"),
        (lambda: network.apply(x[..., :1]), ValueError, "do not fit the parameters"),
        (lambda: network.apply(x[:, :, :3]), ValueError, "do not fit the parameters"),  # Flatten: the grid
        (lambda: network.apply(x[0]), ValueError, "axes"),
        (lambda: network.apply(x.astype(bool)), TypeError, "x"),
        (lambda: network.apply(np.full_like(x, np.nan)), ValueError, "finite"),
        (lambda: network.ntk(x, output="diag"), ValueError, "output"),
        (lambda: network.ntk(x, x[..., :1]), ValueError, "do not fit"),
        (lambda: network.ntk(x, n_threads=0), ValueError, "n_threads"),
        (lambda: network.ntk(x, dtype=np.int32), TypeError, "dtype"),
        (lambda: setattr(network, "parameters", network.parameters[:-1]), ValueError, "must have 4 arrays"),
        (lambda: setattr(network, "parameters", np.zeros(4)), TypeError, "list of 4 arrays"),
        (lambda: network.apply(x, parameters=[p[..., :1] for p in network.parameters]), ValueError, "shape"),
        (lambda: network.apply(x, parameters=[p.astype(int) for p in network.parameters]), TypeError, "floating"),
        (lambda: network.apply(x, parameters=[p * np.inf for p in network.parameters]), ValueError, "finite"),
        (lambda: network._vjp(x, np.zeros((3, 3)), dtype=None, n_threads=None), ValueError, "cotangent"),
    ]
    for call, exc, match in cases:
        with pytest.raises(exc, match=match):
            call()


def test_overflow_raises():
    net = ntkcore.serial(L.Conv((2, 2), W_std=1e30), "relu", L.GlobalAvgPool(), L.Dense(1e30))
    network = finite.Network(net, 3)
    x = _x((3, 3, 1), 2, 13).astype(np.float32)
    with pytest.raises(OverflowError, match="float32"):
        network.ntk(x)


def test_against_torch_func():
    torch = pytest.importorskip("torch")
    from torch.func import jacrev

    network, shape = _network("same-gap")
    params = network.parameters
    x = _x(shape, 4, 14)

    def f(w, b, w2, b2, xs):
        h = torch.nn.functional.conv2d(xs.permute(0, 3, 1, 2), w.permute(3, 2, 0, 1), padding=1)
        layer = NETS["same-gap"][0].layers
        h = layer[0].W_std / math.sqrt(9 * shape[-1]) * h + layer[0].b_std * b[:, None, None]
        h = torch.relu(h).mean(dim=(2, 3))
        return layer[3].W_std / math.sqrt(h.shape[1]) * h @ w2 + layer[3].b_std * b2

    tp = [torch.tensor(p) for p in params]
    xt = torch.tensor(x)
    jac = jacrev(f, argnums=(0, 1, 2, 3))(*tp, xt)
    j = torch.cat([t.reshape(x.shape[0] * network.n_outputs, -1) for t in jac], dim=1).numpy()
    assert _rel(network.ntk(x, output="full"), j @ j.T) < 1e-10


# --- Monte Carlo limit -----------------------------------------------------------------

MC_NET = ntkcore.serial(
    L.Conv((3, 3), padding="SAME", W_std=1.4, b_std=0.2),
    "relu",
    L.Conv((2, 2), strides=(2, 2), padding="VALID", W_std=1.3, b_std=0.1),
    "erf",
    L.Flatten(),
    L.Dense(1.2, 0.3),
)


def test_monte_carlo_error_shrinks_like_one_over_sqrt_width_times_samples():
    """Per-sample NTKs and hidden-layer NNGPs at two widths: the mean's error against the analytic
    kernels must lie within 4 standard errors (estimated from the samples' own spread: the
    predicted error of a mean of independent draws; the finite-width bias, O(1/width), is below
    it at these sizes), and the standard error times sqrt(width * n_samples) must stay within a
    factor 2 between the widths (the 1/sqrt(width * n_samples) law)."""
    x = _x((4, 4, 2), 4, 15)
    exact = MC_NET.kernels(x)
    n_samples = 12
    scaled = {}
    for width in (32, 256):
        draws = [
            finite.monte_carlo_kernels(
                MC_NET, x, width=width, n_samples=1, seed=100 * width + s, nngp_estimator="hidden"
            )
            for s in range(n_samples)
        ]
        for kind in ("ntk", "nngp"):
            values = np.array([getattr(d, kind) for d in draws])
            mean = values.mean(axis=0)
            standard_error = np.linalg.norm(values.std(axis=0, ddof=1)) / math.sqrt(n_samples)
            error = np.linalg.norm(mean - getattr(exact, kind))
            assert error < 4 * standard_error, (kind, width, error, standard_error)
            scaled[kind, width] = standard_error * math.sqrt(width * n_samples) / np.linalg.norm(getattr(exact, kind))
    for kind in ("ntk", "nngp"):
        assert 0.5 < scaled[kind, 32] / scaled[kind, 256] < 2.0, scaled
    averaged = finite.monte_carlo_kernels(MC_NET, x, width=32, n_samples=3, seed=1)
    again = finite.monte_carlo_kernels(finite.Network(MC_NET, 32), x, n_samples=3, seed=1)
    np.testing.assert_array_equal(averaged.ntk, again.ntk)
    np.testing.assert_array_equal(averaged.nngp, again.nngp)


def test_monte_carlo_rejects_bad_serial_arguments():
    x = _x((4, 4, 2), 3, 16)
    with pytest.raises(ValueError, match="width is required"):
        finite.monte_carlo_kernels(MC_NET, x)
    with pytest.raises(ValueError, match="width"):
        finite.monte_carlo_kernels(MC_NET, x, width=[3, 4, 5])
    with pytest.raises(ValueError, match="x2"):
        finite.monte_carlo_kernels(MC_NET, x, x[..., :1], width=3)
    with pytest.raises(ValueError, match="n_outputs"):
        finite.monte_carlo_kernels(finite.Network(MC_NET, 3), x, n_outputs=2)


def test_keyboard_interrupt_stops_the_core():
    import _thread
    import threading
    import time

    net = ntkcore.serial(L.Conv((3, 3), padding="SAME"), "relu", L.GlobalAvgPool(), L.Dense())
    network = finite.Network(net, 64, outputs=10)
    x = _x((8, 8, 1), 250, 17)
    f64 = np.dtype(np.float64)
    a, steps = network._points(x, "x", f64)
    factors, scales = network._factors(a, steps, network._parameters_as(None, f64), f64, 2)
    theta = np.empty((2500, 2500))  # ~1e11 flops: seconds
    timer = threading.Timer(0.3, _thread.interrupt_main)
    start = time.perf_counter()
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        finite._core.layer_empirical_ntk(scales, factors, None, 10, "full", theta, 2)
    timer.join()
    assert time.perf_counter() - start < 2.0

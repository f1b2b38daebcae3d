"""Finite-width MLPs (ntkcore.finite): empirical NTK, Monte Carlo limit, training, bad input.

The oracle is an explicit Jacobian built in plain numpy from the chain rule (one row per
point and output, one column per parameter), itself checked against central differences.
"""

import math

import ntkcore
import numpy as np
import pytest
from ntkcore import activations as act
from ntkcore import finite

_erf = np.vectorize(math.erf)


# --- plain-numpy oracle ------------------------------------------------------------------


def _phi(activation, z):
    """phi(z) and phi'(z) in plain numpy for the closed-form families."""
    if activation.family == "ab_relu":
        a, b, _ = activation.core_params
        return np.where(z < 0, a * z, b * z), np.where(z < 0, a, b) + 0 * z
    if activation.family == "sign":
        return np.sign(z), 0 * z
    if activation.family == "erf":
        a, b, c = activation.core_params
        return a * _erf(b * z) + c, a * b * 2 / np.sqrt(np.pi) * np.exp(-((b * z) ** 2))
    raise NotImplementedError(f"no numpy phi for the {activation.family!r} family in this oracle")


def np_forward(net, params, x):
    """Post-activations h^0..h^L, derivatives phi'(z^1..z^L) and outputs, plain numpy."""
    hs, ds = [x], []
    h = x
    for m, (w, b) in enumerate(params):
        z = net.W_std[m] / np.sqrt(w.shape[1]) * h @ w.T + net.b_std[m] * b
        if m == len(params) - 1:
            return hs, ds, z
        h, d = _phi(net.activation, z)
        hs.append(h)
        ds.append(d)


def np_jacobian(net, params, x):
    """d f_j(x_i) / d p for every parameter p (flattened W^1, b^1, W^2, ...): (N k, P)."""
    hs, ds, out = np_forward(net, params, x)
    n, k = out.shape
    layers = len(params)
    rows = []
    for i in range(n):
        for j in range(k):
            cols = [None] * layers
            g = np.zeros(k)
            g[j] = 1.0  # d f_j / d z^{L+1}
            for m in reversed(range(layers)):
                w, _ = params[m]
                ws, bs = net.W_std[m] / np.sqrt(w.shape[1]), net.b_std[m]
                cols[m] = np.concatenate([np.outer(g, ws * hs[m][i]).ravel(), bs * g])
                if m > 0:
                    g = ws * (g @ w) * ds[m - 1][i]
            rows.append(np.concatenate(cols))
    return np.array(rows)


def flat(params):
    return np.concatenate([np.concatenate([w.ravel(), b]) for w, b in params])


def unflat(net, v):
    out, i = [], 0
    for n_in, n_out in zip(net.widths[:-1], net.widths[1:]):
        w = v[i : i + n_in * n_out].reshape(n_out, n_in)
        i += n_in * n_out
        out.append((w, v[i : i + n_out]))
        i += n_out
    return out


NETS = [
    ([3, 5, 4, 2], "relu", 2**0.5, 0.3),
    ([3, 5, 4, 2], act.LeakyRelu(0.2), 1.2, 0.5),
    ([4, 6, 3], "abs", 1.0, 0.1),
    ([4, 6, 6, 6, 1], "identity", [1.0, 1.3, 0.7, 1.1], [0.0, 0.2, 0.4, 0.1]),
    ([3, 7, 5, 3], act.Erf(a=1.3, b=0.8, c=0.2), 1.5, 0.4),
    ([3, 4, 4, 2], "sign", 1.0, 0.3),
    ([5, 2], "relu", 1.0, 0.7),  # depth 0: a linear model
    ([2, 3, 1], act.ABRelu(a=-0.5, b=2.0), 1.1, 0.0),
]


@pytest.fixture(params=range(len(NETS)), ids=lambda i: f"{NETS[i][1]}-{NETS[i][0]}")
def net(request):
    widths, activation, w_std, b_std = NETS[request.param]
    return finite.MLP(widths, activation, W_std=w_std, b_std=b_std, seed=request.param)


def _points(seed, n, d):
    return np.random.default_rng(seed).standard_normal((n, d))


# --- the empirical NTK is J J^T ----------------------------------------------------------


def test_oracle_jacobian_matches_central_differences():
    net = finite.MLP([3, 5, 4, 2], act.Erf(a=1.3, b=0.8, c=0.2), W_std=1.5, b_std=0.4, seed=3)
    params = net.parameters
    x = _points(0, 4, 3)
    p0, eps = flat(params), 1e-6
    numeric = np.empty((8, p0.size))
    for q in range(p0.size):
        e = np.zeros_like(p0)
        e[q] = eps
        hi = np_forward(net, unflat(net, p0 + e), x)[2]
        lo = np_forward(net, unflat(net, p0 - e), x)[2]
        numeric[:, q] = ((hi - lo) / (2 * eps)).ravel()
    np.testing.assert_allclose(np_jacobian(net, params, x), numeric, atol=1e-8)


def test_outputs_match_numpy(net):
    x = _points(1, 6, net.widths[0])
    np.testing.assert_allclose(net.apply(x), np_forward(net, net.parameters, x)[2], rtol=1e-13, atol=1e-13)


def test_full_ntk_is_jacobian_product(net):
    x1, x2 = _points(2, 5, net.widths[0]), _points(3, 4, net.widths[0])
    j1, j2 = np_jacobian(net, net.parameters, x1), np_jacobian(net, net.parameters, x2)
    expected = j1 @ j2.T
    scale = np.abs(expected).max()
    assert np.abs(net.ntk(x1, x2, output="full") - expected).max() <= 1e-10 * scale
    assert np.abs(net.ntk(x1, output="full") - j1 @ j1.T).max() <= 1e-10 * scale


def test_trace_ntk_is_mean_over_outputs(net):
    x1, x2 = _points(4, 5, net.widths[0]), _points(5, 3, net.widths[0])
    k = net.n_outputs
    j1, j2 = np_jacobian(net, net.parameters, x1), np_jacobian(net, net.parameters, x2)
    blocks = (j1 @ j2.T).reshape(5, k, 3, k)
    expected = np.mean([blocks[:, j, :, j] for j in range(k)], axis=0)
    theta = net.ntk(x1, x2)
    assert theta.shape == (5, 3)
    np.testing.assert_allclose(theta, expected, rtol=1e-10, atol=1e-10 * np.abs(expected).max())


def test_symmetric_ntk_is_exactly_symmetric_and_equals_cross(net):
    x = _points(6, 150, net.widths[0])
    for output in ("trace", "full"):
        theta = net.ntk(x, output=output)
        assert np.array_equal(theta, theta.T)
        cross = net.ntk(x, x, output=output)
        np.testing.assert_allclose(theta, cross, rtol=1e-12, atol=1e-12 * np.abs(cross).max())
    assert np.all(np.linalg.eigvalsh(net.ntk(x[:20])) > -1e-10 * np.abs(net.ntk(x[:20])).max())


def test_against_torch_func():
    torch = pytest.importorskip("torch")
    from torch.func import jacrev

    torch.set_default_dtype(torch.float64)
    widths, w_std, b_std = [4, 16, 8, 3], 1.4, 0.3
    net = finite.MLP(widths, "erf", W_std=w_std, b_std=b_std, seed=11)
    params = {}
    for m, (w, b) in enumerate(net.parameters):
        params[f"w{m}"] = torch.tensor(w)
        params[f"b{m}"] = torch.tensor(b)

    class Net(torch.nn.Module):
        def forward(self, x, **p):
            h = x
            for m in range(len(widths) - 1):
                z = w_std / math.sqrt(widths[m]) * h @ p[f"w{m}"].T + b_std * p[f"b{m}"]
                h = torch.erf(z) if m < len(widths) - 2 else z
            return h

    model = Net()

    def f(p, x):
        return model(x, **p)

    x1, x2 = _points(7, 6, 4), _points(8, 5, 4)
    t1, t2 = torch.tensor(x1), torch.tensor(x2)
    j1 = jacrev(f)(params, t1)
    j2 = jacrev(f)(params, t2)
    full = sum(
        torch.einsum("iaP,jbP->iajb", j1[name].reshape(6, 3, -1), j2[name].reshape(5, 3, -1)) for name in params
    ).numpy()
    np.testing.assert_allclose(net.ntk(x1, x2, output="full").reshape(6, 3, 5, 3), full, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(net.apply(x1), f(params, t1).numpy(), rtol=1e-12, atol=1e-14)


# --- Monte Carlo over initialisations converges to the analytic kernels ----------------


def _rel(a, b):
    return np.linalg.norm(a - b) / np.linalg.norm(b)


@pytest.mark.parametrize(
    "activation, w_std, b_std",
    [
        ("relu", 2**0.5, 0.1),
        (act.Erf(a=1.0, b=1.2), 1.5, 0.3),
        ("abs", 1.0, 0.2),
        (act.Sin(1.2, 1.1, 0.3), 1.3, 0.2),
        (act.Cos(), 1.2, 0.1),
        ("gelu", 1.5, 0.1),
        (act.RectifiedMonomial(0), 1.0, 0.3),
        ("tanh", 1.5, 0.1),
    ],
)
def test_monte_carlo_converges_like_one_over_sqrt_width_times_samples(activation, w_std, b_std):
    arch = ntkcore.FullyConnected(2, activation, W_std=w_std, b_std=b_std)
    x = _points(9, 6, 5)
    exact = arch.kernels(x)
    n_samples = 20
    errors = {}
    for width in (32, 512):
        mc = finite.monte_carlo_kernels(arch, x, width=width, n_samples=n_samples, seed=width, nngp_estimator="hidden")
        errors[width] = (_rel(mc.ntk, exact.ntk), _rel(mc.nngp, exact.nngp))
        # Fluctuations ~ C / sqrt(width * n_samples) with C ~ 1..3 measured: margin 3x.
        bound = 8.0 / math.sqrt(width * n_samples)
        assert errors[width][0] < bound, (width, errors[width])
        assert errors[width][1] < bound, (width, errors[width])
    # 16x the width: the errors should shrink ~4x; ask for 2x.
    assert errors[512][0] < errors[32][0] / 2
    assert errors[512][1] < errors[32][1] / 2


def test_monte_carlo_output_covariance_converges_in_samples():
    arch = ntkcore.FullyConnected(1, "relu", W_std=2**0.5, b_std=0.2)
    x = _points(10, 5, 4)
    exact = arch.nngp(x)
    few = finite.monte_carlo_kernels(arch, x, width=64, n_samples=25, seed=1, n_outputs=4)
    many = finite.monte_carlo_kernels(arch, x, width=64, n_samples=400, seed=2, n_outputs=4)
    # Error ~ 1 / sqrt(n_samples * k): 0.1 and 0.025 expected.
    assert _rel(few.nngp, exact) < 0.4
    assert _rel(many.nngp, exact) < 0.1
    assert _rel(many.nngp, exact) < _rel(few.nngp, exact)


def test_monte_carlo_accepts_an_mlp_and_is_reproducible():
    net = finite.MLP([4, 32, 32, 1], "erf", W_std=1.3, b_std=0.2, seed=5)
    x, x2 = _points(11, 4, 4), _points(12, 3, 4)
    a = finite.monte_carlo_kernels(net, x, x2, n_samples=3, seed=7)
    b = finite.monte_carlo_kernels(net.architecture, x, x2, width=32, n_samples=3, seed=7)
    assert a.ntk.shape == a.nngp.shape == (4, 3)
    np.testing.assert_array_equal(a.ntk, b.ntk)
    np.testing.assert_array_equal(a.nngp, b.nngp)
    c = finite.monte_carlo_kernels(net, x, x2, n_samples=3, seed=8)
    assert not np.array_equal(a.ntk, c.ntk)
    wide = finite.monte_carlo_kernels(net, x, n_samples=2, width=64)
    assert wide.ntk.shape == (4, 4)


# --- training ----------------------------------------------------------------------------


def test_gradient_descent_matches_numpy():
    net = finite.MLP([3, 6, 5, 2], "erf", W_std=1.4, b_std=0.3, seed=4)
    x, y = _points(13, 7, 3), _points(14, 7, 2)
    params = net.parameters
    p, lr, steps = flat(params), 0.05, 12
    losses = []
    for _ in range(steps):
        ps = unflat(net, p)
        r = np_forward(net, ps, x)[2] - y
        losses.append(0.5 * np.sum(r * r))
        p = p - lr * np_jacobian(net, ps, x).T @ r.ravel()
    r = np_forward(net, unflat(net, p), x)[2] - y
    losses.append(0.5 * np.sum(r * r))
    theta0 = net.ntk(x)

    result = net.train(x, y, learning_rate=lr, steps=steps, record_every=5)
    np.testing.assert_allclose(result.loss, losses, rtol=1e-12)
    np.testing.assert_allclose(flat(net.parameters), p, rtol=1e-11, atol=1e-13)
    assert list(result.record_steps) == [0, 5, 10, 12]
    np.testing.assert_array_equal(result.ntk_initial, theta0)
    final = net.ntk(x)
    np.testing.assert_array_equal(result.ntk_final, final)
    change = np.linalg.norm(final - theta0) / np.linalg.norm(theta0)
    assert result.ntk_change[0] == 0 and result.ntk_change[-1] == pytest.approx(change, rel=1e-12)
    assert result.loss[-1] < result.loss[0]


def test_loss_and_gradient_is_jacobian_transpose_residual(net):
    x = _points(15, 5, net.widths[0])
    y = _points(16, 5, net.n_outputs)
    loss, grads = net.loss_and_gradient(x, y)
    r = np_forward(net, net.parameters, x)[2] - y
    assert loss == pytest.approx(0.5 * np.sum(r * r), rel=1e-13)
    np.testing.assert_allclose(flat(grads), np_jacobian(net, net.parameters, x).T @ r.ravel(), rtol=1e-11, atol=1e-12)


def test_ntk_moves_less_for_wider_networks():
    x = _points(17, 10, 4)
    y = np.sin(x.sum(axis=1))
    changes = []
    for width in (16, 1024):
        net = finite.MLP([4, width, width, 1], "relu", W_std=2**0.5, seed=1)
        lam = np.linalg.eigvalsh(net.ntk(x))[-1]
        res = net.train(x, y, learning_rate=1.0 / lam, steps=50, probe=x[:5])
        assert res.loss[-1] < 0.5 * res.loss[0]
        changes.append(res.ntk_change[-1])
    assert changes[1] < changes[0] / 4


# --- reproducibility, threads, precision -------------------------------------------------


def test_parameters_come_from_default_rng_in_layer_order():
    net = finite.MLP([3, 4, 2], seed=42)
    rng = np.random.default_rng(42)
    expected = []
    for n_in, n_out in ((3, 4), (4, 2)):
        w = rng.standard_normal((n_out, n_in))
        expected.append((w, rng.standard_normal(n_out)))
    for (w, b), (we, be) in zip(net.parameters, expected):
        np.testing.assert_array_equal(w, we)
        np.testing.assert_array_equal(b, be)
    assert not np.array_equal(finite.MLP([3, 4, 2], seed=43).parameters[0][0], expected[0][0])


def test_results_do_not_depend_on_thread_count():
    net = finite.MLP([16, 128, 128, 3], "erf", W_std=1.5, b_std=0.2, seed=3)
    x, x2 = _points(18, 300, 16), _points(19, 130, 16)
    for args in ((x,), (x, x2)):
        one = net.ntk(*args, n_threads=1)
        two = net.ntk(*args, n_threads=2)
        np.testing.assert_array_equal(one, two)
        np.testing.assert_array_equal(
            net.ntk(*args, output="full", n_threads=1), net.ntk(*args, output="full", n_threads=2)
        )
    np.testing.assert_array_equal(net.apply(x, n_threads=1), net.apply(x, n_threads=2))
    mc1 = finite.monte_carlo_kernels(net, x[:20], n_samples=2, n_threads=1)
    mc2 = finite.monte_carlo_kernels(net, x[:20], n_samples=2, n_threads=2)
    np.testing.assert_array_equal(mc1.ntk, mc2.ntk)


def test_float32_agrees_with_float64():
    net = finite.MLP([8, 64, 64, 2], "relu", W_std=2**0.5, b_std=0.1, seed=2)
    x = _points(20, 40, 8)
    t64 = net.ntk(x)
    t32 = net.ntk(x.astype(np.float32))
    assert t32.dtype == np.float32 and t64.dtype == np.float64
    assert _rel(t32, t64) < 1e-5
    assert net.ntk(x, dtype=np.float32).dtype == np.float32
    f32 = net.apply(x, dtype=np.float32)
    assert f32.dtype == np.float32 and _rel(f32, net.apply(x)) < 1e-5
    full32 = net.ntk(x[:10], x[:7], output="full", dtype="float32")
    assert _rel(full32, net.ntk(x[:10], x[:7], output="full")) < 1e-5


def test_parameters_round_trip_and_are_copies():
    net = finite.MLP([3, 4, 2], b_std=0.5, seed=0)
    x = _points(21, 5, 3)
    before = net.ntk(x)
    params = net.parameters
    params[0][0][:] = 0.0  # a copy: the network is unchanged
    np.testing.assert_array_equal(net.ntk(x), before)
    net.parameters = [(2 * w, b) for w, b in net.parameters]
    assert not np.array_equal(net.ntk(x), before)
    net.parameters = [(w.astype(np.float32), b) for w, b in net.parameters]
    assert net.parameters[0][0].dtype == np.float64
    assert net.architecture == ntkcore.FullyConnected(1, "relu", W_std=1.0, b_std=0.5)
    assert "MLP(widths=[3, 4, 2]" in repr(net)


# --- bad input ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(widths=5), TypeError, "widths"),
        (dict(widths="34"), TypeError, "widths"),
        (dict(widths=[3]), ValueError, "widths"),
        (dict(widths=[3, 0, 1]), ValueError, r"widths\[1\]"),
        (dict(widths=[3, 2.0, 1]), TypeError, r"widths\[1\]"),
        (dict(widths=[3, True, 1]), TypeError, r"widths\[1\]"),
        (dict(activation="rellu"), ValueError, "activation"),
        (dict(activation=3), TypeError, "activation"),
        (dict(W_std=-1.0), ValueError, "W_std"),
        (dict(W_std=[1.0, 2.0, 3.0]), ValueError, "W_std"),
        (dict(W_std="1"), TypeError, "W_std"),
        (dict(b_std=float("nan")), ValueError, "b_std"),
        (dict(parameterization="standard"), ValueError, "parameterization"),
        (dict(seed=-1), ValueError, "seed"),
        (dict(seed=1.5), TypeError, "seed"),
    ],
)
def test_constructor_rejects_bad_arguments(kwargs, exc, match):
    args = dict(widths=[3, 4, 1])
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        finite.MLP(**args)


@pytest.mark.parametrize(
    "value, exc, match",
    [
        ("ab", TypeError, "parameters"),
        ([], ValueError, "2 \\(W, b\\) pairs"),
        ([(np.zeros((4, 3)),), (np.zeros((1, 4)), np.zeros(1))], TypeError, r"parameters\[0\]"),
        ([(np.zeros((3, 4)), np.zeros(4)), (np.zeros((1, 4)), np.zeros(1))], ValueError, r"parameters\[0\] W"),
        ([(np.zeros((4, 3)), np.zeros(3)), (np.zeros((1, 4)), np.zeros(1))], ValueError, r"parameters\[0\] b"),
        ([(np.zeros((4, 3), int), np.zeros(4)), (np.zeros((1, 4)), np.zeros(1))], TypeError, "floating"),
        ([(np.zeros((4, 3)), np.zeros(4)), (np.full((1, 4), np.inf), np.zeros(1))], ValueError, "finite"),
    ],
)
def test_parameters_setter_rejects_bad_values(value, exc, match):
    net = finite.MLP([3, 4, 1])
    with pytest.raises(exc, match=match):
        net.parameters = value


def test_computations_reject_bad_arguments():
    net = finite.MLP([3, 4, 2])
    x = _points(22, 5, 3)
    cases = [
        (lambda: net.apply(x[:, :2]), ValueError, "x must have 3 features"),
        (lambda: net.apply(x[0]), ValueError, "x must be 2-D"),
        (lambda: net.apply(x.astype(complex)), TypeError, "x must hold real numbers"),
        (lambda: net.apply(np.full((2, 3), np.nan)), ValueError, "x must be finite"),
        (lambda: net.apply(x, dtype=np.int32), TypeError, "dtype"),
        (lambda: net.apply(x, n_threads=0), ValueError, "n_threads"),
        (lambda: net.ntk(x[:, :2]), ValueError, "x1 must have 3 features"),
        (lambda: net.ntk(x, x[:, :2]), ValueError, "x2 must have 3 features"),
        (lambda: net.ntk(x, output="diag"), ValueError, "output"),
        (lambda: net.ntk(x, output=None), TypeError, "output"),
        (lambda: net.ntk(x, n_threads=1.0), TypeError, "n_threads"),
        (lambda: net.ntk(x, dtype="complex128"), TypeError, "dtype"),
        (lambda: net.train(x, x, 0.1, 1), ValueError, "y must have shape"),
        (lambda: net.train(x, "y", 0.1, 1), TypeError, "y must"),
        (lambda: net.train(x, np.full((5, 2), np.nan), 0.1, 1), ValueError, "y must be finite"),
        (lambda: net.train(x, x[:, :2] * 0, 0.0, 1), ValueError, "learning_rate"),
        (lambda: net.train(x, x[:, :2] * 0, "0.1", 1), TypeError, "learning_rate"),
        (lambda: net.train(x, x[:, :2] * 0, 0.1, -1), ValueError, "steps"),
        (lambda: net.train(x, x[:, :2] * 0, 0.1, 2.0), TypeError, "steps"),
        (lambda: net.train(x, x[:, :2] * 0, 0.1, 2, record_every=0), ValueError, "record_every"),
        (lambda: net.train(x, x[:, :2] * 0, 0.1, 2, probe=x[:, :1]), ValueError, "probe must have 3"),
        (lambda: net.loss_and_gradient(x, x), ValueError, "y must have shape"),
    ]
    for call, exc, match in cases:
        with pytest.raises(exc, match=match):
            call()


def test_monte_carlo_rejects_bad_arguments():
    arch = ntkcore.FullyConnected(1, "relu")
    net = finite.MLP([3, 4, 1])
    x = _points(23, 4, 3)
    cases = [
        (lambda: finite.monte_carlo_kernels("relu", x, width=4), TypeError, "net_or_architecture"),
        (lambda: finite.monte_carlo_kernels(arch, x), ValueError, "width is required"),
        (lambda: finite.monte_carlo_kernels(arch, x, width=0), ValueError, "width"),
        (lambda: finite.monte_carlo_kernels(arch, x, width=4.0), TypeError, "width"),
        (lambda: finite.monte_carlo_kernels(arch, x, width=4, n_samples=0), ValueError, "n_samples"),
        (lambda: finite.monte_carlo_kernels(arch, x, width=4, seed=-2), ValueError, "seed"),
        (lambda: finite.monte_carlo_kernels(arch, x, width=4, n_outputs=0), ValueError, "n_outputs"),
        (lambda: finite.monte_carlo_kernels(arch, x, width=4, nngp_estimator="last"), ValueError, "nngp_estimator"),
        (lambda: finite.monte_carlo_kernels(arch, x, width=4, nngp_estimator=1), TypeError, "nngp_estimator"),
        (lambda: finite.monte_carlo_kernels(arch, x, x[:, :2], width=4), ValueError, "x2"),
        (lambda: finite.monte_carlo_kernels(net, x[:, :2]), ValueError, "x1 must have 3 features"),
        (lambda: finite.monte_carlo_kernels(net, x, n_outputs=2), ValueError, "n_outputs"),
        (lambda: finite.monte_carlo_kernels(arch, x.astype(bool), width=4), TypeError, "x1"),
    ]
    for call, exc, match in cases:
        with pytest.raises(exc, match=match):
            call()


# --- values beyond the floating-point range ---------------------------------------------

_TOP = {np.float32: 3e38, np.float64: 1.7e308}  # near the largest finite value


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "widths, activation, w_std, at_top, layer",
    # float32 overflows at layer 1 whenever W_std / sqrt(d) does.
    # W_std = 1.3e154 is the largest scale whose square (the kernels' factor) is finite.
    [
        ([4, 8, 8, 1], "relu", 1.3e154, False, "[123] of 3"),  # float64: ~1e308 at layer 2, 1e462 at 3
        ([4, 8, 1], "relu", 1.0, True, "1 of 2"),  # inputs near the top of the range
        ([4, 8, 8, 2], "erf", 1.0, True, "1 of 3"),  # a bounded activation
        ([4, 8, 1], act.RectifiedMonomial(2), 1.3e154, False, "[12] of 2"),
    ],  # float64: phi overflows
)
def test_forward_beyond_the_float_range_raises(dtype, widths, activation, w_std, at_top, layer):
    net = finite.MLP(widths, activation, W_std=w_std, seed=1)
    x = _points(24, 3, widths[0])
    if at_top:
        x *= _TOP[dtype] / np.abs(x).max()
    x, y = x.astype(dtype), np.zeros((3, widths[-1]), dtype)
    match = f"overflows {np.dtype(dtype).name} in the pre-activations of dense layer "
    for call in (
        lambda: net.apply(x),
        lambda: net.ntk(x),
        lambda: net.ntk(x, x[:1]),
        lambda: net.loss_and_gradient(x, y),
        lambda: net.train(x, y, 0.1, 2),
    ):
        with pytest.raises(OverflowError, match=match + layer):
            call()
    with pytest.raises(OverflowError, match=match):  # other networks, maybe another layer
        finite.monte_carlo_kernels(net, x, n_samples=1)


@pytest.mark.parametrize("dtype, w_std", [(np.float32, 1e7), (np.float64, 1e55)])
def test_ntk_and_gradient_beyond_the_float_range_raise(dtype, w_std):
    # Outputs ~ W_std^3 fit dtype, the NTK ~ W_std^6 and the gradients ~ W_std^5 do not
    # (float64: nor the loss ~ W_std^6, which is checked first).
    net = finite.MLP([4, 8, 8, 1], "relu", W_std=w_std, seed=2)
    x = _points(25, 5, 4).astype(dtype)
    assert np.isfinite(net.apply(x)).all()
    with pytest.raises(OverflowError, match=r"in the empirical NTK .*max W_std = 1e"):
        net.ntk(x)
    with pytest.raises(OverflowError, match="in the empirical NTK"):
        finite.monte_carlo_kernels(net, x, n_samples=1)
    with pytest.raises(OverflowError, match="in the loss"):
        net.loss_and_gradient(x, np.zeros(5, dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_loss_beyond_the_float_range_raises(dtype):
    net = finite.MLP([3, 6, 1], "erf", seed=3)
    x = _points(26, 4, 3).astype(dtype)
    y = np.full(4, 1e300 if dtype == np.float64 else 3e38, dtype)
    # float64: the loss 2e600; float32: the loss fits double, its gradient not float32.
    loss = r"in the loss 1/2 \|\|f\(x\) - y\|\|\^2 with max \|y\| = 1e\+300"
    with pytest.raises(OverflowError, match=loss if dtype == np.float64 else "in the loss gradient"):
        net.loss_and_gradient(x, y)


@pytest.mark.parametrize("dtype", [np.float32])
def test_monte_carlo_averages_beyond_the_float_range_raise(dtype):
    # A linear model f = W_std / 8 w.x on x = w / |w| (w: the sampled weights, |w|^2 ~ 64):
    # its output and its NTK W_std^2 / 64 fit dtype, the output covariance f^2 does not.
    # (In float64 this needs W_std^2 beyond the range, which construction already refuses.)
    theta = 2e37
    net = finite.MLP([64, 1], W_std=8 * theta**0.5)
    w = finite.MLP([64, 1], seed=np.random.SeedSequence(0).spawn(1)[0]).parameters[0][0]
    assert (w**2).sum() / 2 > float(np.finfo(dtype).max) / theta
    x = (w / np.linalg.norm(w)).astype(dtype)
    with pytest.raises(OverflowError, match=f"NNGP estimate overflows {np.dtype(dtype).name}"):
        finite.monte_carlo_kernels(net, x, n_samples=1, seed=0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_training_with_too_large_a_learning_rate_raises(dtype):
    # erf: relu units may all die instead, and then the loss stays finite.
    net = finite.MLP([4, 16, 16, 1], "erf", W_std=2**0.5, b_std=0.1, seed=5)
    x, y = _points(28, 10, 4).astype(dtype), np.sin(_points(29, 10, 1)).astype(dtype)
    stable = 2 / np.linalg.eigvalsh(net.ntk(x).astype(np.float64))[-1]
    diverged = (
        r"training diverged after \d+ of 1000 steps: (finite network|the loss 1/2 \|\|f\(x\) - y\|\|\^2) overflows"
    )
    with pytest.raises(FloatingPointError, match=diverged) as info:
        net.train(x, y, learning_rate=10.0, steps=1000)
    assert f"learning_rate=10 exceeds the stable range ~2/lambda_max(Theta) = {stable:.3g}" in str(info.value)
    assert isinstance(info.value.__cause__, OverflowError)
    assert all(np.isfinite(w).all() and np.isfinite(b).all() for w, b in net.parameters)
    # A rate whose first step already overflows the parameters.
    with pytest.raises(FloatingPointError, match="after 0 of 3 steps: the parameters overflow float64"):
        finite.MLP([4, 16, 1], seed=6).train(x, y * dtype(1e30), learning_rate=1e300, steps=3)


# --- bitwise reproducibility -------------------------------------------------------------


def test_loss_and_gradient_are_bitwise_reproducible():
    net = finite.MLP([16, 200, 130, 3], "erf", W_std=1.5, b_std=0.2, seed=3)
    x, y = _points(30, 300, 16), _points(31, 300, 3)
    for dtype in (np.float32, np.float64):
        loss, grads = net.loss_and_gradient(x, y, dtype=dtype)
        for n_threads in [None] * 29 + [1, 2]:
            again, other = net.loss_and_gradient(x, y, dtype=dtype, n_threads=n_threads)
            assert again == loss
            for (gw, gb), (ow, ob) in zip(grads, other):
                assert np.array_equal(gw, ow) and np.array_equal(gb, ob)


def test_gradient_does_not_depend_on_where_numpy_puts_it():
    # The cause of the irreproducible bias gradients: where a vectorised sum starts
    # depended on the alignment of the output array.
    from ntkcore._native import core

    net = finite.MLP([8, 100, 70, 2], "relu", W_std=1.4, b_std=0.5, seed=7)
    x, y = _points(32, 90, 8), _points(33, 90, 2)
    spec, weights, biases = net._core_args(np.dtype(np.float64))

    def at_offset(shape, offset):  # `offset` doubles past a 64-byte boundary
        n = int(np.prod(shape))
        raw = np.empty(n + 16)
        start = (-raw.ctypes.data // 8) % 8 + offset
        return raw[start : start + n].reshape(shape)

    results = set()
    for offset in range(4):
        gw = [at_offset(w.shape, offset) for w in weights]
        gb = [at_offset(b.shape, offset) for b in biases]
        core.mlp_loss_gradient(spec, weights, biases, x, y, gw, gb, 1)
        results.add(b"".join(g.tobytes() for g in gw + gb))
    assert len(results) == 1


def test_ntk_and_training_are_bitwise_reproducible():
    x, y = _points(34, 150, 16), _points(35, 150, 2)
    net = finite.MLP([16, 160, 96, 2], "gelu", W_std=1.3, b_std=0.1, seed=8)
    for output in ("trace", "full"):
        first = net.ntk(x, x[:70], output=output)
        for n_threads in [None] * 29 + [1, 2]:
            assert np.array_equal(net.ntk(x, x[:70], output=output, n_threads=n_threads), first)
    runs = []
    for n_threads in (1, 2):
        net = finite.MLP([16, 160, 96, 2], "gelu", W_std=1.3, b_std=0.1, seed=8)
        runs.append((net.train(x, y, learning_rate=0.01, steps=6, n_threads=n_threads), net.parameters))
    (one, p1), (two, p2) = runs
    for a, b in zip(one, two):
        assert np.array_equal(a, b)
    assert np.array_equal(flat(p1), flat(p2))


# --- interruption ------------------------------------------------------------------------


def test_keyboard_interrupt_stops_loss_and_gradient():
    import _thread
    import threading
    import time

    net = finite.MLP([64, 2048, 2048, 2048, 1], "relu", W_std=2**0.5, seed=9)  # seconds per call
    x, y = _points(36, 2048, 64), _points(37, 2048, 1)
    timer = threading.Timer(0.3, _thread.interrupt_main)
    start = time.perf_counter()
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        net.loss_and_gradient(x, y, n_threads=2)
    timer.join()
    assert time.perf_counter() - start < 2.0

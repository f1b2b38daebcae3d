"""The standard parameterization (docs/math/1-parameterization.md to 2-recursion.md): same NNGP as the NTK
parameterization, an NTK built from the widths, ``Theta <- n_in Sigma_old + W_std^2 Theta + [b_std > 0]``.

Independent truths: the NTK-parameterization NNGP, a hand-derived depth-1 ReLU NTK, a
numpy Monte Carlo of the empirical NTK of a wide standard-parameterization network
(``ntkcore.finite`` implements only the NTK parameterization), and the 50-digit recursion.
"""

import math

import ntkcore
import numpy as np
import pytest
from cases import ACTIVATIONS
from kernel_checks import awkward_points, natural_scale
from mp_reference import mp_kernels
from ntkcore import activations as act
from ntkcore import finite, reference
from test_core_accuracy import errors_against_50_digits

W_STD = [1.1, 1.6, 0.9, 1.4]
B_STD = [0.0, 0.2, 0.1, 0.3]
WIDTHS = [3, 50, 7]


def standard(activation, widths=WIDTHS, **kwargs):
    kwargs = {"W_std": W_STD, "b_std": B_STD, **kwargs}
    return ntkcore.FullyConnected(len(widths), activation, parameterization="standard", widths=widths, **kwargs)


@pytest.mark.parametrize("activation", ACTIVATIONS, ids=repr)
def test_nngp_is_the_ntk_parameterization_nngp(activation):
    rng = np.random.default_rng(1)
    x1, x2 = rng.standard_normal((20, 5)), rng.standard_normal((9, 5))
    ntk_net = ntkcore.FullyConnected(3, activation, W_std=W_STD, b_std=B_STD)
    for x_b in (None, x2):
        np.testing.assert_array_equal(standard(activation).nngp(x1, x_b), ntk_net.nngp(x1, x_b))
    np.testing.assert_array_equal(standard(activation).diagonal(x1).nngp, ntk_net.diagonal(x1).nngp)


@pytest.mark.parametrize("activation", ACTIVATIONS, ids=repr)
def test_core_matches_reference(activation):
    """Generic pairs against the numpy oracle (1e-12 of the natural scale), float32 (1e-5)."""
    rng = np.random.default_rng(2)
    x1, x2 = rng.standard_normal((40, 6)), rng.standard_normal((25, 6))
    net = standard(activation)
    for x_b in (None, x2):
        got, ref = net.kernels(x1, x_b), reference.kernels(net, x1, x_b)
        single = net.kernels(x1.astype(np.float32), None if x_b is None else x_b.astype(np.float32))
        d1 = net.diagonal(x1)
        d2 = d1 if x_b is None else net.diagonal(x_b)
        for name in ("nngp", "ntk"):
            scale = natural_scale(getattr(d1, name), getattr(d2, name))
            assert (np.abs(getattr(got, name) - getattr(ref, name)) / scale).max() <= 1e-12
            assert (np.abs(getattr(single, name) - getattr(got, name)) / scale).max() <= 1e-5
    ref_diag = reference.diagonal(net, x1)
    np.testing.assert_allclose(net.diagonal(x1).ntk, ref_diag.ntk, rtol=1e-13)


@pytest.mark.parametrize("activation", [act.Relu(), act.Erf(1.3, 0.7, 0.2), act.Gelu(), act.Sign()], ids=repr)
def test_core_against_50_digits_on_collinear_pairs(activation):
    x = awkward_points()
    net = standard(activation, b_std=0.1)
    for x1, x2 in ((x, None), (x[:7], x[7:])):
        for name, err in errors_against_50_digits(net, x1, x2):
            if isinstance(activation, act.Sign) and x2 is None:
                assert err[10, 11] <= 1e-9  # forward-unstable pair, see test_core_accuracy
                err[10, 11] = err[11, 10] = 0
            assert err.max() <= 2e-14, (name, err.max())


def _relu_duals(q1, q2, c):
    """ReLU's T and Tdot (Cho & Saul, order 1), written out for the hand derivation."""
    theta = np.arccos(np.clip(c / np.sqrt(q1 * q2), -1, 1))
    return (np.sqrt(q1 * q2) * np.sin(theta) + (np.pi - theta) * c) / (2 * np.pi), (np.pi - theta) / (2 * np.pi)


@pytest.mark.parametrize("b_std", [0.0, 0.4])
def test_depth_one_relu_by_hand(b_std):
    """f = W2 relu(W1 x + b1) + b2, W_l ~ N(0, W_std^2 / n_in), b ~ N(0, b_std^2).  Summing
    the squared gradients: Theta = h.h' + [b] + sum_k W2_k^2 relu'(z_k) relu'(z'_k) (x.x' + [b]),
    i.e. n1 T(Sigma1) + W_std^2 Tdot(Sigma1) (x.x' + [b]) + [b], Sigma1 = W_std^2 x.x'/d + b_std^2.
    Depth 0: Theta = x.x' + [b]."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((6, 4))
    w, n1, d = 1.3, 17, x.shape[1]
    one = 1.0 if b_std > 0 else 0.0
    gram = x @ x.T
    sq = np.diag(gram)
    sigma = w * w * gram / d + b_std**2
    q = w * w * sq / d + b_std**2
    T, Tdot = _relu_duals(q[:, None], q[None, :], sigma)
    expected = n1 * T + w * w * Tdot * (gram + one) + one
    net = ntkcore.FullyConnected(1, "relu", W_std=w, b_std=b_std, parameterization="standard", widths=n1)
    got = net.ntk(x, x.copy())  # cross call: no diagonal special-casing
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12 * np.abs(expected).max())
    shallow = ntkcore.FullyConnected(0, "relu", W_std=w, b_std=b_std, parameterization="standard", widths=[])
    np.testing.assert_allclose(shallow.ntk(x), gram + one, rtol=1e-14)


def test_depth_one_against_monte_carlo_of_a_wide_network():
    """One standard-parameterization network of width 20000 in numpy, its empirical NTK
    summed unit by unit: depth 1 makes the hidden pre-activations exactly Gaussian, so the
    sum is an unbiased estimate whose standard error comes from the per-unit terms; each
    entry must lie within 5 of them."""
    from scipy.special import erf

    rng = np.random.default_rng(4)
    x = rng.standard_normal((5, 3))
    d, n1, w, b = x.shape[1], 20000, 1.2, 0.3
    W1 = rng.standard_normal((n1, d)) * w / math.sqrt(d)
    b1 = rng.standard_normal(n1) * b
    W2 = rng.standard_normal(n1) * w / math.sqrt(n1)
    z = x @ W1.T + b1  # (N, n1)
    h, dh = erf(z), 2 / math.sqrt(math.pi) * np.exp(-z * z)
    # per-unit terms of Theta(x_i, x_j): the output weight's h h', the hidden weights' and
    # bias's W2^2 phi' phi' (x.x' + 1); the output bias adds 1
    units = h[:, None, :] * h[None, :, :] + (W2**2 * dh)[:, None, :] * dh[None, :, :] * (x @ x.T + 1)[:, :, None]
    empirical = units.sum(axis=2) + 1
    se = math.sqrt(n1) * units.std(axis=2, ddof=1)
    net = ntkcore.FullyConnected(1, "erf", W_std=w, b_std=b, parameterization="standard", widths=n1)
    assert np.all(np.abs(empirical - net.ntk(x)) <= 5 * se)


def test_value_semantics_include_widths():
    a = standard("relu")
    assert a == standard(act.Relu(), widths=tuple(WIDTHS)) and hash(a) == hash(standard("relu"))
    assert a != standard("relu", widths=[3, 50, 8])
    assert a.widths == (3, 50, 7)
    assert ntkcore.FullyConnected(3, parameterization="standard", widths=np.int64(5)).widths == (5, 5, 5)
    assert "widths=(3, 50, 7)" in repr(a)
    assert eval(repr(a), {"FullyConnected": ntkcore.FullyConnected, **vars(act)}) == a
    assert "widths" not in repr(ntkcore.FullyConnected(2, "relu"))


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"parameterization": "standard"}, ValueError, "widths"),
        ({"parameterization": "standard", "widths": [4, 4]}, ValueError, "widths"),
        ({"parameterization": "standard", "widths": [4, 0, 4]}, ValueError, "widths"),
        ({"parameterization": "standard", "widths": -2}, ValueError, "widths"),
        ({"parameterization": "standard", "widths": [4, 2.5, 4]}, TypeError, "widths"),
        ({"parameterization": "standard", "widths": "444"}, TypeError, "widths"),
        ({"parameterization": "standard", "widths": [4, True, 4]}, TypeError, "widths"),
        ({"widths": [4, 4, 4]}, ValueError, "widths"),
        ({"parameterization": "ntk", "widths": 4}, ValueError, "widths"),
        ({"parameterization": "mup", "widths": 4}, ValueError, "parameterization"),
    ],
)
def test_bad_widths_and_parameterizations(kwargs, error, match):
    with pytest.raises(error, match=match):
        ntkcore.FullyConnected(3, "relu", **kwargs)


def test_core_and_monte_carlo_refuse_inconsistent_specs():
    core = ntkcore._native.core
    x = np.ones((2, 3))
    for widths in ([4.0], [4.0, 0.0], [4.0, float("nan")]):
        with pytest.raises(ValueError, match="widths"):
            core.gram(("ab_relu", (0.0, 1.0, 0.0), [1.0] * 3, [0.0] * 3, widths), x, None, 1)
    with pytest.raises(ValueError, match="parameterization"):
        finite.monte_carlo_kernels(standard("relu"), x, width=8)


@pytest.mark.parametrize("activation, W_std, b_std", [("relu", 1.0, 0.0), ("erf", 1.5, 0.1), ("gelu", 1.3, 0.1)])
def test_depth_1000_against_50_digits(activation, W_std, b_std):
    """The per-layer power-of-two scaling puts n_in Sigma and the bias's 1 in each layer's
    units: ReLU with W_std = 1 halves Sigma per layer (2^-1000 at the end, far below what the
    unscaled recursion could hold in its intermediate products).  Bound as the NTK
    parameterization's depth-1000 test (1e-11); measured ~4e-14 at depth 300."""
    x = awkward_points(n=6, dim=4, seed=3)
    net = ntkcore.FullyConnected(1000, activation, W_std=W_std, b_std=b_std, parameterization="standard", widths=64)
    exact = mp_kernels(net, x)
    got = net.kernels(x)
    for i, name in enumerate(("nngp", "ntk")):
        scale = natural_scale(np.diag(exact[i]), np.diag(exact[i]))
        assert np.isfinite(getattr(got, name)).all()
        err = np.abs(getattr(got, name) - exact[i]) / np.where(scale > 0, scale, 1)
        assert err.max() <= 1e-11, (name, err.max())

"""Exact hyperparameter gradients d/dlog W_std, d/dlog b_std of K and Theta (hyper_gradients.hpp)."""

import dataclasses

import mpmath as mp
import ntkcore
import numpy as np
import pytest
from mp_reference import mp_dual
from ntkcore import activations as A
from ntkcore import reference

DIFFERENTIABLE = [
    "relu",
    A.LeakyRelu(0.2),
    A.Abs(),
    A.Identity(),
    A.ABRelu(-0.3, 1.2),
    "sign",
    "erf",
    A.Erf(a=1.3, b=0.7, c=0.2),
    "sin",
    A.Sin(a=1.1, b=0.8, c=0.3),
    "cos",
    A.RectifiedMonomial(0),
    A.RectifiedMonomial(1),
    A.RectifiedMonomial(2),
    A.RectifiedMonomial(3),
]


def points(n, d=5, seed=0):
    return np.random.default_rng(seed).standard_normal((n, d))


def scaled(net, p, s):
    """``net`` with every layer's W_std (p = 0) or b_std (p = 1) multiplied by exp(s)."""
    if p == 0:
        return dataclasses.replace(net, W_std=[w * np.exp(s) for w in net.W_std])
    return dataclasses.replace(net, b_std=[b * np.exp(s) for b in net.b_std])


def central_difference(f, h):
    """Fourth-order central difference of f at 0 with step h (truncation O(h^4))."""
    return (8 * (f(h) - f(-h)) - (f(2 * h) - f(-2 * h))) / (12 * h)


def finite_gradient(net, x1, x2, kernel, h):
    return np.stack(
        [central_difference(lambda s, p=p: getattr(scaled(net, p, s).kernels(x1, x2), kernel), h) for p in (0, 1)],
        axis=-1,
    )


@pytest.mark.parametrize("act", DIFFERENTIABLE, ids=repr)
@pytest.mark.parametrize("kernel", ["nngp", "ntk"])
@pytest.mark.parametrize("cross", [False, True])
def test_gradients_match_central_differences(act, kernel, cross):
    net = ntkcore.FullyConnected(3, act, W_std=1.3, b_std=0.4)
    x1 = points(9)
    x2 = points(6, seed=1) if cross else None
    value, gradient = ntkcore.hyper_gradients(net, x1, x2, kernel=kernel)
    assert gradient.shape == (*value.shape, 2) and value.shape == (9, 6 if cross else 9)
    # the values are the value path's
    assert np.array_equal(value, getattr(net.kernels(x1, x2), kernel))
    # the step per case: monomials of degree n grow like W_std^(2 n^depth), so their steps are smaller
    degree = max(1, net.activation.n) if isinstance(net.activation, A.RectifiedMonomial) else 1
    fd = finite_gradient(net, x1, x2, kernel, h=2e-3 / degree**2)
    scale = np.abs(fd).max()
    assert np.all(np.abs(gradient - fd) <= 1e-6 * np.abs(fd) + 1e-9 * scale)


@pytest.mark.parametrize("act", ["relu", "erf", A.Sin(a=1.1, b=0.8, c=0.3), A.RectifiedMonomial(2)], ids=repr)
def test_gradients_match_mpmath_differentiation(act):
    """d/dlog W_std, d/dlog b_std of one pair's K and Theta from a 50-digit recursion, by mpmath.diff."""
    net = ntkcore.FullyConnected(2, act, W_std=1.2, b_std=0.3)
    x = points(2, d=4, seed=3)
    family, params = net.activation.family, net.activation.core_params

    def pair(sw, sb):
        w2, b2 = (1.2 * mp.e**sw) ** 2, (0.3 * mp.e**sb) ** 2
        dim = mp.mpf(x.shape[1])
        p = [[mp.mpf(float(v)) for v in row] for row in x]
        q1, q2, c = (mp.fdot(a, b) / dim for a, b in ((p[0], p[0]), (p[1], p[1]), (p[0], p[1])))
        q1, q2, c = w2 * q1 + b2, w2 * q2 + b2, w2 * c + b2
        theta = c
        for _ in range(net.depth):
            t, tdot = mp_dual(family, params, q1, q2, c)
            theta = w2 * t + b2 + w2 * tdot * theta
            c = w2 * t + b2
            q1, q2 = (w2 * mp_dual(family, params, q, q, q)[0] + b2 for q in (q1, q2))
        return c, theta

    with mp.workdps(50):
        expected = [
            [float(mp.diff(lambda s, k=k: pair(s, 0)[k], 0)), float(mp.diff(lambda s, k=k: pair(0, s)[k], 0))]
            for k in (0, 1)
        ]
    for k, kernel in enumerate(("nngp", "ntk")):
        _, gradient = ntkcore.hyper_gradients(net, x, kernel=kernel)
        assert np.allclose(gradient[0, 1], expected[k], rtol=1e-12, atol=0)


def test_diagonal_and_symmetry():
    net = ntkcore.FullyConnected(4, "relu", W_std=1.4, b_std=0.2)
    x = points(70, d=3)  # several tiles of 64
    for kernel in ("nngp", "ntk"):
        _, gradient = ntkcore.hyper_gradients(net, x, kernel=kernel)
        assert np.array_equal(gradient, gradient.transpose(1, 0, 2))
        fd = np.stack(
            [
                central_difference(lambda s, p=p, kernel=kernel: getattr(scaled(net, p, s).diagonal(x), kernel), 2e-3)
                for p in (0, 1)
            ],
            axis=-1,
        )
        assert np.allclose(np.diagonal(gradient, axis1=0, axis2=1).T, fd, rtol=1e-8, atol=0)


def test_duplicate_points_in_a_cross_kernel():
    net = ntkcore.FullyConnected(3, "relu", W_std=1.5, b_std=0.2)
    x = points(5)
    _, gradient = ntkcore.hyper_gradients(net, x, x.copy(), kernel="ntk")
    _, symmetric = ntkcore.hyper_gradients(net, x, kernel="ntk")
    assert np.allclose(gradient, symmetric, rtol=1e-7, atol=0)


def test_zero_bias_has_zero_bias_derivative_and_scaling_identity():
    # Without biases, ReLU kernels are homogeneous: K = W_std^(2 (depth + 1)) K(W_std = 1).
    depth = 3
    net = ntkcore.FullyConnected(depth, "relu", W_std=1.7, b_std=0.0)
    x = points(8)
    for kernel, power in (("nngp", 2 * (depth + 1)), ("ntk", 2 * (depth + 1))):
        value, gradient = ntkcore.hyper_gradients(net, x, kernel=kernel)
        assert np.all(gradient[..., 1] == 0)
        assert np.allclose(gradient[..., 0], power * value, rtol=1e-13, atol=0)


def test_per_layer_scales_move_together():
    net = ntkcore.FullyConnected(2, "erf", W_std=[1.1, 1.6, 0.9], b_std=[0.1, 0.3, 0.2])
    x1, x2 = points(6), points(4, seed=2)
    _, gradient = ntkcore.hyper_gradients(net, x1, x2, kernel="ntk")
    fd = finite_gradient(net, x1, x2, "ntk", h=2e-3)
    assert np.allclose(gradient, fd, rtol=1e-7, atol=0)


def test_float32_inputs_are_computed_in_float64():
    net = ntkcore.FullyConnected(2, "relu", W_std=1.2, b_std=0.1)
    x = points(5).astype(np.float32)
    value, gradient = ntkcore.hyper_gradients(net, x, kernel="nngp")
    assert value.dtype == gradient.dtype == np.float64
    assert np.allclose(value, reference.kernels(net, x.astype(np.float64)).nngp, rtol=1e-13, atol=0)


@pytest.mark.parametrize(
    "net, error",
    [
        (ntkcore.FullyConnected(2, "gelu"), NotImplementedError),
        (ntkcore.FullyConnected(2, "tanh"), NotImplementedError),
        (ntkcore.FullyConnected(2, "relu", parameterization="standard", widths=8), NotImplementedError),
        (ntkcore.serial(ntkcore.layers.Dense(), "relu", ntkcore.layers.Dense()), TypeError),
    ],
    ids=["gelu", "hermite", "standard", "serial"],
)
def test_unsupported_networks_are_refused(net, error):
    with pytest.raises(error):
        ntkcore.hyper_gradients(net, points(3))


def test_argument_errors():
    net = ntkcore.FullyConnected(2, "relu")
    with pytest.raises(ValueError, match="kernel"):
        ntkcore.hyper_gradients(net, points(3), kernel="cntk")
    with pytest.raises(ValueError, match="x2"):
        ntkcore.hyper_gradients(net, points(3), points(3, d=4))
    with pytest.raises(ValueError):
        ntkcore.hyper_gradients(net, np.full((3, 5), np.nan))

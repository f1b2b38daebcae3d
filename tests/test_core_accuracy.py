"""The compiled core against the oracles: the numpy reference recursion on generic pairs
(1e-12) and the 50-digit mpmath recursion on every pair, collinear ones and very deep
networks included (docs/math/3a-collinearity.md)."""

import ntkcore
import numpy as np
import pytest
from cases import ACTIVATIONS
from kernel_checks import awkward_points, natural_scale
from mp_reference import mp_kernels
from ntkcore import activations as act
from ntkcore import reference


@pytest.mark.parametrize("activation", ACTIVATIONS, ids=repr)
@pytest.mark.parametrize("cross", [False, True])
def test_core_matches_reference_on_generic_pairs(activation, cross):
    rng = np.random.default_rng(2)
    x1 = rng.standard_normal((60, 7))
    x2 = rng.standard_normal((45, 7)) if cross else None
    net = ntkcore.FullyConnected(4, activation, W_std=[1.1, 1.6, 0.9, 1.4, 1.2], b_std=[0.0, 0.2, 0.1, 0.3, 0.05])
    got, ref = net.kernels(x1, x2), reference.kernels(net, x1, x2)
    d1 = net.diagonal(x1)
    d2 = d1 if x2 is None else net.diagonal(x2)
    for name in ("nngp", "ntk"):
        scale = natural_scale(getattr(d1, name), getattr(d2, name))
        err = np.abs(getattr(got, name) - getattr(ref, name)) / scale
        assert err.max() <= 1e-12, (name, err.max())


def errors_against_50_digits(net, x1, x2=None):
    """(name, |core - 50 digits| / sqrt(K(x, x) K(x', x'))) for the NNGP and the NTK."""
    exact = mp_kernels(net, x1, x2)
    got = net.kernels(x1, x2)
    d1 = net.diagonal(x1)
    d2 = d1 if x2 is None else net.diagonal(x2)
    for i, name in enumerate(("nngp", "ntk")):
        scale = natural_scale(getattr(d1, name), getattr(d2, name))
        yield name, np.abs(getattr(got, name) - exact[i]) / np.where(scale > 0, scale, 1)


@pytest.mark.parametrize("activation", ACTIVATIONS, ids=repr)
def test_core_is_exact_on_collinear_pairs(activation):
    """Every pair of the awkward set, symmetric and cross, against 50 digits."""
    x = awkward_points()
    net = ntkcore.FullyConnected(3, activation, W_std=1.5, b_std=0.1)
    for x1, x2 in ((x, None), (x[:7], x[7:])):
        for name, err in errors_against_50_digits(net, x1, x2):
            if activation in (act.Sign(), act.RectifiedMonomial(0)) and x2 is None:
                # sign's T = 1 - 2 theta / pi (and the step's (pi - theta) / (2 pi)) has infinite
                # slope at theta = 0 and every layer takes a square root of the angle: the pair that
                # differs by 1e-9 (angle 4e-10)
                # inherits the ~1e-16 rounding of the input angle amplified to ~1e-10.  The core
                # is backward stable there, not forward exact; all other pairs are exact.
                assert err[10, 11] <= 1e-9
                err[10, 11] = err[11, 10] = 0
            assert err.max() <= 2e-14, (name, err.max(), np.unravel_index(err.argmax(), err.shape))


def test_collinear_pairs_where_the_plain_formula_fails():
    """On nearly collinear pairs in d = 100 the plain recursion is ~1e-8 off in the NTK
    (docs/math/3a-collinearity.md); the core must not be."""
    rng = np.random.default_rng(4)
    base = rng.standard_normal((6, 100))
    x = np.vstack([base, base + 1e-7 * rng.standard_normal((6, 100)), -3.0 * base])
    net = ntkcore.FullyConnected(3, "relu", W_std=2**0.5, b_std=0.0)
    exact = mp_kernels(net, x)
    got = net.kernels(x)
    plain = reference.kernels(net, x)
    scale = natural_scale(np.diag(exact[1]), np.diag(exact[1]))
    assert (np.abs(got.ntk - exact[1]) / scale).max() <= 1e-14
    assert (np.abs(plain.ntk - exact[1]) / scale).max() > 1e-11  # the oracle itself is off here


@pytest.mark.parametrize(
    "activation, W_std, b_std",
    [
        ("relu", 1.0, 0.0),
        ("relu", 1.9, 0.0),
        ("relu", 2**0.5, 0.1),
        ("abs", 1.0, 0.0),
        ("erf", 1.0, 0.1),
        ("erf", 1.5, 0.1),
        ("sigmoid_like", 3.0, 0.0),
        ("leaky_relu", 1.2, 0.0),
    ],
)
def test_depth_1000_against_50_digits(activation, W_std, b_std):
    x = awkward_points(n=6, dim=4, seed=3)
    net = ntkcore.FullyConnected(1000, activation, W_std=W_std, b_std=b_std)
    exact = mp_kernels(net, x)
    got = net.kernels(x)
    for i, name in enumerate(("nngp", "ntk")):
        e = exact[i]
        scale = natural_scale(np.diag(e), np.diag(e))
        assert np.isfinite(getattr(got, name)).all()
        err = np.abs(getattr(got, name) - e) / np.where(scale > 0, scale, 1)
        assert err.max() <= 1e-11, (name, err.max())

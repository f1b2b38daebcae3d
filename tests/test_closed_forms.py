"""The closed-form activations Sin, Cos, Gelu and RectifiedMonomial (docs/math/3-dual-maps.md).

Independent truths: 2-D Gauss-Hermite quadrature at degree 200 for the entire functions
(sin, cos, gelu: converged to ~1e-15), mpmath differentiation for Tdot = dT/dc (Price's
theorem), the 50-digit recursion of ``mp_reference`` for the core on awkward and nearly
collinear inputs, and ReLU's own closed form for ``RectifiedMonomial(1)``.  The shared
suites (``cases.ACTIVATIONS``) cover the bounded families; RectifiedMonomial of order
n >= 2, whose variances grow like ``q**n`` per layer, is covered here at moderate scales.
"""

import functools
import math

import ntkcore
import numpy as np
import pytest
from cases import ACTIVATIONS
from kernel_checks import awkward_points, natural_scale
from mp_reference import mp_dual, mp_kernels
from mpmath import mp, mpf
from ntkcore import activations as act
from ntkcore import finite, reference
from numpy.polynomial.hermite_e import hermegauss
from test_core_accuracy import errors_against_50_digits

SMOOTH = [act.Sin(), act.Sin(1.3, 0.7, 0.4), act.Cos(0.8, 1.2, 0.1), act.Gelu()]
MONOMIALS = [act.RectifiedMonomial(n) for n in range(5)]


def _gelu(x):
    from scipy.special import ndtr

    return x * ndtr(x)


def _gelu_prime(x):
    from scipy.special import ndtr

    return ndtr(x) + x * np.exp(-x * x / 2) / math.sqrt(2 * math.pi)


def phi_and_derivative(activation):
    """phi and phi', written from the activations' definitions."""
    if isinstance(activation, act.Gelu):
        return _gelu, _gelu_prime
    a, b, c0 = activation.a, activation.b, activation.c
    if isinstance(activation, act.Cos):
        return (lambda x: a * np.cos(b * x + c0)), (lambda x: -a * b * np.sin(b * x + c0))
    return (lambda x: a * np.sin(b * x + c0)), (lambda x: a * b * np.cos(b * x + c0))


@functools.cache
def _hermite_rule(degree):
    x, w = hermegauss(degree)
    return x, w / math.sqrt(2 * math.pi)


def hermite_expectation(f, g, q1, q2, c, degree=200):
    """E[f(u) g(v)], (u, v) ~ N(0, [[q1, c], [c, q2]]), by a degree^2 tensor Gauss-Hermite rule."""
    x, w = _hermite_rule(degree)
    u = math.sqrt(q1) * x[:, None]
    v = c / math.sqrt(q1) * x[:, None] + math.sqrt(max(q2 - c * c / q1, 0.0)) * x[None, :]
    return float(np.sum(w[:, None] * w[None, :] * f(u) * g(v)))


# (q1, q2, c): generic, strongly (anti)correlated, exactly (anti)collinear, orthogonal, tiny
SIGMAS = [
    (1.0, 1.0, 0.3),
    (0.7, 2.3, -0.9),
    (1.0, 4.0, 1.998),
    (2.25, 1.0, -1.5),
    (1.0, 4.0, 2.0),
    (3.0, 0.2, 0.0),
    (1e-3, 2e-3, 1.2e-3),
]


@pytest.mark.parametrize("sigma", SIGMAS, ids=lambda s: "q1={:g},q2={:g},c={:g}".format(*s))
@pytest.mark.parametrize("activation", SMOOTH, ids=repr)
def test_smooth_duals_match_quadrature(activation, sigma):
    """reference.dual and mp_dual against degree-200 quadrature, relative to the natural
    scale sqrt(T(q1) T(q2)): 1e-13 (measured ~1e-15)."""
    q1, q2, c = sigma
    phi, dphi = phi_and_derivative(activation)
    T_quad = hermite_expectation(phi, phi, q1, q2, c)
    Tdot_quad = hermite_expectation(dphi, dphi, q1, q2, c)
    T_scale = math.sqrt(hermite_expectation(phi, phi, q1, q1, q1) * hermite_expectation(phi, phi, q2, q2, q2))
    Tdot_scale = math.sqrt(hermite_expectation(dphi, dphi, q1, q1, q1) * hermite_expectation(dphi, dphi, q2, q2, q2))
    T, Tdot = reference.dual(activation, q1, q2, c)
    with mp.workdps(30):
        mT, mTdot = mp_dual(activation.family, activation.core_params, mpf(q1), mpf(q2), mpf(c))
    for value in (T, float(mT)):
        assert abs(value - T_quad) <= 1e-13 * T_scale, (value, T_quad)
    for value in (Tdot, float(mTdot)):
        assert abs(value - Tdot_quad) <= 1e-13 * Tdot_scale, (value, Tdot_quad)
    T_diag, Tdot_diag = reference.dual_diagonal(activation, q1)
    assert abs(T_diag - hermite_expectation(phi, phi, q1, q1, q1)) <= 1e-13 * T_scale
    assert abs(Tdot_diag - hermite_expectation(dphi, dphi, q1, q1, q1)) <= 1e-13 * Tdot_scale


@pytest.mark.parametrize(
    "sigma",
    [(1.0, 1.0, 0.3), (0.7, 2.3, -0.9), (1.0, 4.0, 1.9), (2.0, 0.5, -0.99)],
    ids=lambda s: "q1={:g},q2={:g},c={:g}".format(*s),
)
@pytest.mark.parametrize("activation", SMOOTH + MONOMIALS[1:], ids=repr)
def test_tdot_is_the_derivative_of_t(activation, sigma):
    """Price's theorem: Tdot = dT/dc (for relu^n: n^2 times the order n - 1 kernel)."""
    with mp.workdps(40):
        q1, q2, c = (mpf(v) for v in sigma)
        family, params = activation.family, activation.core_params
        slope = mp.diff(lambda t: mp_dual(family, params, q1, q2, t)[0], c)
        Tdot = mp_dual(family, params, q1, q2, c)[1]
        assert abs(slope - Tdot) <= mpf(10) ** -30 * abs(Tdot)


@pytest.mark.parametrize("activation", [act.Sin(), act.Cos(1.2, 0.9, 0.3)])
def test_sin_keeps_nearly_collinear_pairs_of_large_variance(activation):
    # q ~ 3e3: c - (q1 + q2) / 2 by subtraction would lose ~1e-10 of the kernel
    x = 60.0 * np.random.default_rng(11).standard_normal((4, 5))
    x[1] = x[0] * (1 + 1e-13)
    x[2] = x[0] + 1e-9 * np.random.default_rng(12).standard_normal(5)
    net = ntkcore.FullyConnected(2, activation, W_std=1.0, b_std=0.1)
    got = net.kernels(x)
    nngp, ntk = mp_kernels(net, x)
    scale_k = natural_scale(np.diag(nngp), np.diag(nngp))
    scale_t = natural_scale(np.diag(ntk), np.diag(ntk))
    assert np.max(np.abs(got.nngp - nngp) / scale_k) < 1e-13
    assert np.max(np.abs(got.ntk - ntk) / scale_t) < 1e-13


def test_rectified_monomial_one_is_relu():
    rng = np.random.default_rng(3)
    x = awkward_points()
    x2 = rng.standard_normal((9, x.shape[1]))
    for x_b in (None, x2):
        relu = ntkcore.FullyConnected(4, "relu", W_std=1.4, b_std=0.2).kernels(x, x_b)
        mono = ntkcore.FullyConnected(4, act.RectifiedMonomial(1), W_std=1.4, b_std=0.2).kernels(x, x_b)
        for a, b in zip(relu, mono):
            np.testing.assert_allclose(a, b, rtol=1e-14, atol=1e-14 * np.abs(a).max())


def near_collinear_points(dim=6, seed=5):
    """Pairs whose correlation is within ~1e-8 (and ~1e-16) of +-1, rescaled and negated rows,
    a duplicate, and generic rows."""
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((3, dim))
    turn = rng.standard_normal(dim)
    turn -= turn @ base[0] / (base[0] @ base[0]) * base[0]
    turn *= 1.4e-4 * np.linalg.norm(base[0]) / np.linalg.norm(turn)  # 1 - rho ~ 1e-8
    return np.vstack(
        [
            base[0],
            base[0] + turn,
            -(base[0] + 0.5 * turn),
            3.0 * base[0],
            base[0] * (1 + 1e-15),
            base[1],
            base[1],
            -0.25 * base[1],
            base[2],
        ]
    )


def collinear_tolerance(activation):
    """Bound on the error relative to sqrt(K(x,x) K(x',x')) against 50 digits, every pair.

    relu^n maps a relative error to n times itself per layer (the problem's own condition
    number), so depth 3 allows n^3 ulps: measured 3e-15 (n = 2), 7e-15 (n = 3), 1.6e-14
    (n = 4); the other families measured <= 1.5e-15.
    """
    n = getattr(activation, "n", 0)
    return max(2e-14, 1e-15 * n**3)


@pytest.mark.parametrize(
    "activation, points",
    [
        (a, p)
        for a in SMOOTH + MONOMIALS
        for p in ("golden_A", "awkward", "near_collinear")
        if not (p == "awkward" and a in ACTIVATIONS)  # test_core_accuracy has those
    ],
    ids=repr,
)
def test_core_against_50_digits_on_awkward_sets(activation, points):
    """Every pair, symmetric and cross, duplicate, negated, rescaled, zero and nearly collinear
    rows included."""
    if points == "golden_A":
        from golden import inputs

        x = inputs()["A"]
    else:
        x = awkward_points() if points == "awkward" else near_collinear_points()
    W_std = 1.0 if activation in MONOMIALS[2:] else 1.5  # relu^n: q^n per layer stays moderate
    net = ntkcore.FullyConnected(3, activation, W_std=W_std, b_std=0.1)
    half = len(x) // 2
    for x1, x2 in ((x, None), (x[:half], x[half:])):
        for name, err in errors_against_50_digits(net, x1, x2):
            if activation == act.RectifiedMonomial(0) and points == "near_collinear":
                # The step's T = (pi - theta) / (2 pi) has infinite slope in the correlation at
                # theta = 0, as Sign's (see test_core_accuracy), and each layer takes a square
                # root of the angle: rows 0 and 4, at an angle ~1e-16, inherit the input
                # angle's rounding amplified to 3e-7 .. 1.1e-6 (measured; it depends on the
                # instruction set's FMAs).  Backward stable, not forward exact; all other
                # pairs are exact.
                for pair in ((0, 4), (4, 0)) if x2 is None else ((0, 4 - half),):
                    assert err[pair] <= 1e-5
                    err[pair] = 0
            assert err.max() <= collinear_tolerance(activation), (name, err.max())


@pytest.mark.parametrize("activation", MONOMIALS[2:], ids=repr)
def test_growing_monomials_against_reference_float32_and_threads(activation):
    """What the shared suites check for bounded families, at scales where q**n stays finite."""
    n = activation.n
    rng = np.random.default_rng(8)
    x1, x2 = rng.standard_normal((70, 6)), rng.standard_normal((33, 6))
    x1 *= math.sqrt(6) / np.linalg.norm(x1, axis=1, keepdims=True)  # q = 1: float32 keeps q**n finite
    x1[1] = x1[0]
    x1[2] = -x1[0]
    net = ntkcore.FullyConnected(3, activation, W_std=[0.8, 0.7, 0.75, 1.2], b_std=[0.0, 0.2, 0.1, 0.3])
    for x_b in (None, x2):
        got, ref = net.kernels(x1, x_b), reference.kernels(net, x1, x_b)
        d1 = net.diagonal(x1)
        d2 = d1 if x_b is None else net.diagonal(x_b)
        single = net.kernels(x1.astype(np.float32), None if x_b is None else x_b.astype(np.float32))
        threaded = net.kernels(x1, x_b, n_threads=3)
        for name in ("nngp", "ntk"):
            scale = natural_scale(getattr(d1, name), getattr(d2, name))
            generic = np.ones(scale.shape, dtype=bool)
            if x_b is None:
                generic[:3, :3] = False  # the plain reference loses digits on collinear pairs
            assert (np.abs(getattr(got, name) - getattr(ref, name)) / scale)[generic].max() <= 1e-12
            # float32 rounding grows n-fold per layer, as in float64: measured up to 1.0e-5 (n = 4)
            assert (np.abs(getattr(single, name) - getattr(got, name)) / scale).max() <= 5e-7 * n**3
            assert (np.abs(getattr(threaded, name) - getattr(got, name)) / scale).max() <= 1e-14
        if x_b is None:
            for g in got:
                np.testing.assert_array_equal(g, g.T)
                eig = np.linalg.eigvalsh(g)
                assert eig[0] >= -1e-12 * eig[-1]


@pytest.mark.parametrize("activation", MONOMIALS[2:], ids=repr)
def test_growing_monomials_against_monte_carlo_over_finite_networks(activation):
    """Depth 1: the hidden pre-activations are exactly Gaussian at any width, so the empirical
    NTK and the hidden-layer NNGP estimate are unbiased and the only error is statistical.
    relu^n's heavy tails make the 1/sqrt(width) rule of test_finite useless here; instead each
    entry must lie within 5 standard errors (estimated from 100 independent networks of width 1024; with
    only 10^4 hidden units in all, the skewed sample means still fell 5 to 6 of their
    estimated standard errors low) of the
    limit, which fails with probability ~1e-5 for Gaussian estimates."""
    rng = np.random.default_rng(21)
    x = rng.standard_normal((6, 5))
    arch = ntkcore.FullyConnected(1, activation, W_std=1.2, b_std=0.3)
    exact = arch.kernels(x)
    samples = [
        finite.monte_carlo_kernels(arch, x, width=1024, n_samples=1, seed=s, nngp_estimator="hidden")
        for s in range(100)
    ]
    for name in ("nngp", "ntk"):
        values = np.array([getattr(k, name) for k in samples])
        mean, se = values.mean(axis=0), values.std(axis=0, ddof=1) / math.sqrt(len(samples))
        assert np.all(np.abs(mean - getattr(exact, name)) <= 5 * se + 1e-12 * np.abs(mean).max()), name


@pytest.mark.parametrize("n", [-1, 5, 1.5, True, "2", None])
def test_rectified_monomial_order_is_checked(n):
    with pytest.raises((TypeError, ValueError), match="n must"):
        act.RectifiedMonomial(n)


@pytest.mark.parametrize("cls", [act.Sin, act.Cos])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), "1", None])
def test_sin_and_cos_parameters_are_checked(cls, bad):
    for name in ("a", "b", "c"):
        with pytest.raises((TypeError, ValueError), match=rf"{cls.__name__}: {name} must be"):
            cls(**{name: bad})


def test_core_refuses_a_bad_monomial_order():
    from ntkcore import _native

    x = np.ones((2, 3))
    for n in (1.5, 5.0, -1.0):
        with pytest.raises(ValueError, match="rectified monomial"):
            _native.core.gram(("rectified_monomial", (n, 0.0, 0.0), [1.0, 1.0], [0.0, 0.0]), x, None, 1)

"""Tests of the oracles themselves: ``ntkcore.reference`` (float64) and ``mp_reference`` (mpmath).

Independent truths used here, never values produced by the code under test:

* ``tests/data/golden``: neural-tangents 0.6.5 float64 Gram matrices and 50-digit exact values;
* Monte Carlo means of ``phi(u) phi(v)`` over Gaussian samples (every activation class);
* mpmath quadrature of the erf dual maps.

Relative error, unless said otherwise, is ``max|a - ref| / max|ref|`` over the compared entries:
the definition of ``relerr`` in ``tests/data/golden/index.json``, so the numbers printed here can be
compared with the golden metadata.  Per-entry relative errors would be dominated by the tiny
entries of set A's near-zero row, whose absolute scale is 1e-12.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import ntkcore  # noqa: F401  (the installed package)
import numpy as np
import pytest
from kernel_checks import awkward_points
from mp_reference import mp_kernels
from mpmath import mp, mpf
from ntkcore import reference
from ntkcore.activations import (
    ABRelu,
    Abs,
    Cos,
    Erf,
    Gelu,
    Identity,
    LeakyRelu,
    RectifiedMonomial,
    Relu,
    SigmoidLike,
    Sign,
    Sin,
)
from ntkcore.network import FullyConnected

GOLDEN = Path(__file__).resolve().parent / "data" / "golden"
CONFIGS = ["relu_L1", "relu_L3", "erf_L3"]
COLLINEAR = 1 - 1e-6  # |correlation| above this: (anti)collinear pair


# --------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def golden():
    index = json.loads((GOLDEN / "index.json").read_text())
    inputs = dict(np.load(GOLDEN / "inputs.npz"))
    arrays = {name: dict(np.load(GOLDEN / f"{name}.npz")) for name in CONFIGS}
    return index, inputs, arrays


def golden_net(index, name):
    cfg = index["configs"][name]
    assert cfg["parameterization"] == "ntk"
    return FullyConnected(cfg["depth"], cfg["act"], cfg["W_std"], cfg["b_std"] or 0.0)


def golden_points(inputs, set_name):
    """(x1, x2) of a golden set; x2 is None for the symmetric sets."""
    if set_name == "X":
        return inputs["Bx1"], inputs["Bx2"]
    return inputs[set_name], None


def correlation(x1, x2):
    """Cosine of the angle between rows; 0 where a row is zero (orthogonal convention)."""
    n1 = np.linalg.norm(x1, axis=1)
    n2 = np.linalg.norm(x2, axis=1)
    nn = np.outer(n1, n2)
    return np.divide(x1 @ x2.T, nn, out=np.zeros_like(nn), where=nn > 0)


def masks(x1, x2):
    """(generic, collinear off-diagonal, diagonal) boolean masks of the Gram entries."""
    symmetric = x2 is None
    corr = correlation(x1, x1 if symmetric else x2)
    diag = np.eye(*corr.shape, dtype=bool) if symmetric else np.zeros(corr.shape, dtype=bool)
    collinear = (np.abs(corr) > COLLINEAR) & ~diag
    generic = ~collinear & ~diag
    return generic, collinear, diag


def relerr(a, ref, mask=None):
    if mask is None:
        mask = np.ones(ref.shape, dtype=bool)
    return float(np.max(np.abs(a - ref)[mask]) / np.max(np.abs(ref)[mask]))


# --------------------------------------------------------------------------- golden values


@pytest.mark.parametrize("set_name", ["A", "C"])
@pytest.mark.parametrize("config", CONFIGS)
def test_reference_vs_exact(golden, config, set_name, record_property):
    """Float64 reference vs the 50-digit values: 1e-12 on generic pairs and on the diagonal."""
    index, inputs, arrays = golden
    net = golden_net(index, config)
    x1, x2 = golden_points(inputs, set_name)
    got = reference.kernels(net, x1, x2)
    generic, collinear, diag = masks(x1, x2)
    for kind in ("nngp", "ntk"):
        exact = arrays[config][f"{kind}_exact_{set_name}"]
        value = getattr(got, kind)
        err_generic = relerr(value, exact, generic)
        err_diag = relerr(value, exact, diag)
        assert err_generic <= 1e-12, (kind, err_generic)
        # the diagonal comes from the per-point variances: exact up to rounding
        assert err_diag <= 1e-12, (kind, err_diag)
        msg = f"{config} {set_name} {kind}: generic {err_generic:.1e}, diagonal {err_diag:.1e}"
        if collinear.any():
            # plain formulas lose ~half the digits here (docs/math/3a-collinearity.md); report, don't assert tight
            err_col = relerr(value, exact, collinear)
            record_property(f"{kind}_collinear_relerr", err_col)
            msg += f", collinear {err_col:.1e}"
            assert err_col <= 1e-6, (kind, err_col)
        print(msg)


@pytest.mark.parametrize("set_name", ["A", "C"])
@pytest.mark.parametrize("config", CONFIGS)
def test_mp_reference_vs_exact(golden, config, set_name):
    """The mpmath oracle reproduces the golden 50-digit values on every pair, collinear included."""
    index, inputs, arrays = golden
    net = golden_net(index, config)
    x1, x2 = golden_points(inputs, set_name)
    nngp, ntk = mp_kernels(net, x1, x2)
    for kind, value in (("nngp", nngp), ("ntk", ntk)):
        exact = arrays[config][f"{kind}_exact_{set_name}"]
        err = relerr(value, exact)
        print(f"{config} {set_name} {kind}: mp vs exact {err:.1e}")
        assert err <= 1e-14, (kind, err)


@pytest.mark.parametrize("set_name", ["A", "B", "C", "X"])
@pytest.mark.parametrize("config", CONFIGS)
def test_reference_vs_neural_tangents(golden, config, set_name):
    """Float64 reference vs neural-tangents float64 on generic off-diagonal pairs: 1e-10.

    neural-tangents itself is off by up to ~1e-8 on collinear pairs and diagonals (docs/math/3a-collinearity.md),
    so those are excluded.
    """
    index, inputs, arrays = golden
    net = golden_net(index, config)
    x1, x2 = golden_points(inputs, set_name)
    got = reference.kernels(net, x1, x2)
    generic, _, _ = masks(x1, x2)
    for kind in ("nngp", "ntk"):
        nt = arrays[config][f"{kind}_{set_name}"]
        assert nt.shape == generic.shape
        err = relerr(getattr(got, kind), nt, generic)
        print(f"{config} {set_name} {kind}: reference vs neural-tangents {err:.1e}")
        assert err <= 1e-10, (kind, err)


# --------------------------------------------------------------------------- mp oracle, all families

ALL_ACTIVATIONS = {
    "Relu": Relu(),
    "LeakyRelu": LeakyRelu(0.2),
    "ABRelu": ABRelu(-0.5, 2.0),
    "Abs": Abs(),
    "Identity": Identity(),
    "Sign": Sign(),
    "Erf": Erf(1.3, 0.7, 0.2),
    "SigmoidLike": SigmoidLike(),
    "Sin": Sin(1.3, 0.7, 0.4),
    "Cos": Cos(0.8, 1.2, 0.1),
    "Gelu": Gelu(),
    "Step": RectifiedMonomial(0),
    "Relu2": RectifiedMonomial(2),
    "Relu3": RectifiedMonomial(3),
    "Relu4": RectifiedMonomial(4),
}


@pytest.mark.parametrize("name", list(ALL_ACTIVATIONS))
def test_mp_reference_vs_reference_all_families(name):
    """The two oracles agree for every activation class, with per-layer W_std and b_std.

    Both implement docs/math/3-dual-maps.md, but separately (numpy arrays vs mpmath scalars, diagonal
    formulas vs the pair formula at c = q): this catches dispatch and per-layer indexing bugs
    in either; the closed forms themselves are checked against Monte Carlo and quadrature below.
    """
    net = FullyConnected(3, ALL_ACTIVATIONS[name], W_std=(1.2, 1.5, 0.9, 1.1), b_std=(0.0, 0.3, 0.1, 0.2))
    x = awkward_points(n=9, seed=7)
    got = reference.kernels(net, x)
    nngp, ntk = mp_kernels(net, x)
    generic, _, diag = masks(x, None)
    for kind, exact in (("nngp", nngp), ("ntk", ntk)):
        value = getattr(got, kind)
        assert relerr(value, exact, generic) <= 1e-12, kind
        assert relerr(value, exact, diag) <= 1e-13, kind
    x2 = x[::-1] * 0.5
    got = reference.kernels(net, x, x2)
    nngp, ntk = mp_kernels(net, x, x2)
    generic, _, _ = masks(x, x2)
    assert relerr(got.nngp, nngp, generic) <= 1e-12
    assert relerr(got.ntk, ntk, generic) <= 1e-12


def test_mp_reference_precision_is_sufficient():
    """50 digits and 80 digits give the same float64 results, awkward rows included."""
    x = awkward_points(n=9, seed=11)
    for act in (Relu(), Sign(), Erf(1.3, 0.7, 0.2)):
        net = FullyConnected(3, act, W_std=1.4, b_std=0.1)
        for a, b in zip(mp_kernels(net, x), mp_kernels(net, x, dps=80)):
            np.testing.assert_allclose(a, b, rtol=4e-16, atol=0)


# --------------------------------------------------------------------------- closed forms


def _erf(x):
    try:
        from scipy.special import erf
    except ImportError:  # pragma: no cover - slow fallback
        erf = np.vectorize(math.erf, otypes=[float])
    return erf(x)


def _ab(a, b):
    return (lambda x: np.where(x < 0, a * x, b * x)), (lambda x: np.where(x < 0, a, b).astype(float))


def _relu_power(n):
    return (
        lambda x: np.where(x > 0, np.maximum(x, 0.0) ** n, 0.0),
        lambda x: np.where(x > 0, n * np.maximum(x, 0.0) ** max(n - 1, 0), 0.0) if n else np.zeros_like(x),
    )


def _gelu():
    from scipy.special import ndtr

    return (lambda x: x * ndtr(x)), (lambda x: ndtr(x) + x * np.exp(-x * x / 2) / math.sqrt(2 * math.pi))


def _erf_act(a, b, c0):
    return (
        lambda x: a * _erf(b * x) + c0,
        lambda x: a * b * (2 / math.sqrt(math.pi)) * np.exp(-((b * x) ** 2)),
    )


# phi and its almost-everywhere derivative, written from the activations' definitions
PHI = {
    "Relu": (lambda x: np.maximum(x, 0.0), lambda x: (x > 0).astype(float)),
    "LeakyRelu": _ab(0.2, 1.0),
    "ABRelu": _ab(-0.5, 2.0),
    "Abs": (np.abs, np.sign),
    "Identity": (lambda x: x, np.ones_like),
    "Sign": (np.sign, np.zeros_like),
    "Erf": _erf_act(1.3, 0.7, 0.2),
    "SigmoidLike": _erf_act(0.5, 1 / 2.40206, 0.5),
    "Sin": (lambda x: 1.3 * np.sin(0.7 * x + 0.4), lambda x: 1.3 * 0.7 * np.cos(0.7 * x + 0.4)),
    "Cos": (lambda x: 0.8 * np.cos(1.2 * x + 0.1), lambda x: -0.8 * 1.2 * np.sin(1.2 * x + 0.1)),
    "Gelu": _gelu(),
    "Step": _relu_power(0),
    "Relu2": _relu_power(2),
    "Relu3": _relu_power(3),
    "Relu4": _relu_power(4),
}

# (q1, q2, c): generic, strongly (anti)correlated, exactly (anti)collinear (c^2 == q1 q2 exactly
# in floating point, so that the plain float64 formulas are exact there), orthogonal
SIGMAS = [
    (1.0, 1.0, 0.3),
    (0.7, 2.3, -0.9),
    (1.0, 4.0, 1.998),
    (2.0, 0.5, -0.995),
    (1.0, 4.0, 2.0),
    (2.25, 1.0, -1.5),
    (3.0, 0.2, 0.0),
]

N_SAMPLES = 2_000_000


@pytest.fixture(scope="module")
def normal_pairs():
    rng = np.random.default_rng(20240517)
    return rng.standard_normal(N_SAMPLES), rng.standard_normal(N_SAMPLES)


@pytest.mark.parametrize("sigma", SIGMAS, ids=lambda s: "q1={:g},q2={:g},c={:g}".format(*s))
@pytest.mark.parametrize("name", list(PHI))
def test_dual_vs_monte_carlo(normal_pairs, name, sigma):
    """T and Tdot vs sample means over 2e6 Gaussian pairs, within 6 standard errors."""
    q1, q2, c = sigma
    z1, z2 = normal_pairs
    rho = c / math.sqrt(q1 * q2)
    u = math.sqrt(q1) * z1
    v = math.sqrt(q2) * (rho * z1 + math.sqrt(max(1 - rho * rho, 0.0)) * z2)
    phi, dphi = PHI[name]
    T, Tdot = reference.dual(ALL_ACTIVATIONS[name], q1, q2, c)
    assert T.shape == () and Tdot.shape == ()
    for label, value, samples in (("T", T, phi(u) * phi(v)), ("Tdot", Tdot, dphi(u) * dphi(v))):
        mean = samples.mean()
        se = samples.std(ddof=1) / math.sqrt(samples.size)
        assert abs(value - mean) <= 6 * se + 1e-12, (label, float(value), mean, se)


def _erf_dual_quad(a, b, c0, q1, q2, c, derivative):
    """E[phi(u) phi(v)] (or phi') by 1-D mp.quad over u, the v-integral done analytically.

    v | u ~ N(k u, var) with k = c/q1, var = q2 - c^2/q1, and for Z ~ N(0, 1):
    E[erf(b (m + sd Z))] = erf(b m / sqrt(h)),  E[exp(-b^2 (m + sd Z)^2)] = exp(-b^2 m^2/h)/sqrt(h),
    h = 1 + 2 b^2 sd^2 (Gaussian convolutions, independent of the closed forms under test).
    """
    with mp.workdps(30):
        a, b, c0, q1, q2, c = (mpf(t) for t in (a, b, c0, q1, q2, c))
        k = c / q1
        h = 1 + 2 * b * b * (q2 - c * c / q1)
        g = a * b * 2 / mp.sqrt(mp.pi)
        if derivative:
            outer = lambda u: g * mp.exp(-((b * u) ** 2))  # noqa: E731
            inner = lambda u: g * mp.exp(-((b * k * u) ** 2) / h) / mp.sqrt(h)  # noqa: E731
        else:
            outer = lambda u: a * mp.erf(b * u) + c0  # noqa: E731
            inner = lambda u: a * mp.erf(b * k * u / mp.sqrt(h)) + c0  # noqa: E731
        sd1 = mp.sqrt(q1)
        integrand = lambda z: outer(sd1 * z) * inner(sd1 * z) * mp.npdf(z)  # noqa: E731
        return float(mp.quad(integrand, [-mp.inf, -3, 0, 3, mp.inf]))


@pytest.mark.parametrize(
    "sigma",
    [(1.0, 1.0, 0.3), (1.0, 4.0, 1.998), (1.0, 4.0, 2.0), (50.0, 0.5, -4.9), (0.01, 3.0, 0.1)],
    ids=lambda s: "q1={:g},q2={:g},c={:g}".format(*s),
)
@pytest.mark.parametrize("act", [Erf(), Erf(1.3, 0.7, 0.2), SigmoidLike()], ids=repr)
def test_erf_dual_vs_quadrature(act, sigma):
    a, b, c0 = act.core_params
    T, Tdot = reference.dual(act, *sigma)
    T_quad = _erf_dual_quad(a, b, c0, *sigma, derivative=False)
    Tdot_quad = _erf_dual_quad(a, b, c0, *sigma, derivative=True)
    assert abs(T - T_quad) <= 1e-12 * max(abs(T_quad), c0 * c0, a * a)
    assert abs(Tdot - Tdot_quad) <= 1e-12 * abs(Tdot_quad)


# --------------------------------------------------------------------------- diagonal


@pytest.mark.parametrize("name", list(ALL_ACTIVATIONS))
def test_dual_diagonal_equals_dual(name):
    act = ALL_ACTIVATIONS[name]
    q = np.array([0.0, 1e-3, 0.5, 1.0, 7.3])
    T_diag, Tdot_diag = reference.dual_diagonal(act, q)
    T, Tdot = reference.dual(act, q, q, q)
    assert T_diag.shape == q.shape and Tdot_diag.shape == q.shape
    np.testing.assert_allclose(T_diag, T, rtol=1e-14, atol=1e-300)
    np.testing.assert_allclose(Tdot_diag, Tdot, rtol=1e-14, atol=1e-300)


@pytest.mark.parametrize("name", list(ALL_ACTIVATIONS))
def test_zero_variance_is_orthogonal(name):
    """With u == 0, T = phi(0) E[phi(v)], v ~ N(0, 2): 0 for ABReLU, Sign, the rectified
    monomials (the step too: 1[0 > 0] = 0) and Gelu, phi(0) times a Gauss-Hermite mean else."""
    act = ALL_ACTIVATIONS[name]
    phi = PHI[name][0]
    nodes, weights = np.polynomial.hermite_e.hermegauss(100)
    mean = np.sum(weights * phi(math.sqrt(2.0) * nodes)) / math.sqrt(2 * math.pi)
    expected = float(phi(np.array(0.0))) * mean
    T, _ = reference.dual(act, 0.0, 2.0, 0.0)
    assert T == pytest.approx(expected, abs=1e-15)
    T0, _ = reference.dual_diagonal(act, 0.0)
    assert T0 == pytest.approx(float(phi(np.array(0.0))) ** 2, abs=1e-15)


@pytest.mark.parametrize("name", list(ALL_ACTIVATIONS))
def test_diagonal_equals_gram_diagonal(name):
    net = FullyConnected(3, ALL_ACTIVATIONS[name], W_std=(1.2, 1.5, 0.9, 1.1), b_std=(0.0, 0.3, 0.1, 0.2))
    x = awkward_points(n=9, seed=3)
    gram = reference.kernels(net, x)
    diag = reference.diagonal(net, x)
    for kind in ("nngp", "ntk"):
        g, d = getattr(gram, kind), getattr(diag, kind)
        assert g.shape == (len(x), len(x)) and d.shape == (len(x),)
        np.testing.assert_allclose(np.diag(g), d, rtol=1e-15, atol=0)
        np.testing.assert_array_equal(g, g.T)
    # the cross call on the same points agrees off the (collinear) diagonal
    cross = reference.kernels(net, x, x.copy())
    generic, _, _ = masks(x, None)
    for kind in ("nngp", "ntk"):
        assert relerr(getattr(cross, kind), getattr(gram, kind), generic) <= 1e-14


# --------------------------------------------------------------------------- bad input


def test_reference_is_reachable_from_the_package():
    import importlib

    package = importlib.import_module("ntkcore")
    assert package.reference is reference and "reference" in package.__all__


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: reference.kernels("relu", np.ones((3, 2))), TypeError, "net must be an ntkcore.FullyConnected"),
        (lambda: reference.kernels(FullyConnected(1), np.ones(3)), ValueError, "x1 must be 2-D"),
        (
            lambda: reference.kernels(FullyConnected(1), np.ones((3, 2)), np.ones((2, 3))),
            ValueError,
            "x2 has 3 features",
        ),
        (lambda: reference.kernels(FullyConnected(1), np.full((3, 2), np.nan)), ValueError, "x1 must be finite"),
        (lambda: reference.kernels(FullyConnected(1), np.ones((3, 2), dtype=complex)), TypeError, "complex"),
        (lambda: reference.diagonal(FullyConnected(1), np.ones((0, 2))), ValueError, "at least one row"),
        (lambda: reference.diagonal(None, np.ones((3, 2))), TypeError, "net must be"),
        (lambda: reference.dual("relu", -1.0, 1.0, 0.0), ValueError, "q1 is a variance"),
        (lambda: reference.dual("relu", 1.0, -1e-3, 0.0), ValueError, "q2 is a variance"),
        (lambda: reference.dual("relu", 1.0, 1.0, 1.5), ValueError, r"c\^2 <= q1 q2"),
        (lambda: reference.dual("relu", 1.0, np.inf, 0.0), ValueError, "q2 must be finite"),
        (lambda: reference.dual("relu", [1.0, 2.0], [1.0, 2.0, 3.0], 0.0), ValueError, "common shape"),
        (lambda: reference.dual("relu", "a", 1.0, 0.0), TypeError, "q1 must be real"),
        (lambda: reference.dual("banana", 1.0, 1.0, 0.0), ValueError, "unknown activation"),
        (lambda: reference.dual_diagonal("relu", -2.0), ValueError, "q is a variance"),
        (lambda: reference.dual_diagonal("erf", [1.0, np.nan]), ValueError, "q must be finite"),
    ],
)
def test_reference_validates_its_inputs(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_reference_accepts_collinear_covariances_at_rounding():
    """c^2 = q1 q2 (a duplicate point) is a valid covariance, as is its rounding."""
    q = 1.0 / 3.0
    T, _ = reference.dual("relu", q, q, q * (1 + 1e-15))
    assert T == pytest.approx(q / 2, rel=1e-12)

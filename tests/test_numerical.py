"""Gauss-Hermite family (docs/math/4-gauss-hermite.md): rules, accuracy against mpmath, closed forms,
custom callables."""

import json
import math
import warnings
from pathlib import Path

import golden
import ntkcore
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from kernel_checks import natural_error
from mpmath import mp
from ntkcore import reference
from ntkcore._native import core
from ntkcore.activations import AccuracyError, AccuracyWarning, Numerical
from test_properties import assert_gram_properties

DATA = Path(__file__).resolve().parent / "data" / "numerical_reference.json"


# --- the rule ------------------------------------------------------------------------------------


@pytest.mark.parametrize("degree", [1, 2, 3, 10, 25, 100, 301])
def test_hermite_rule_matches_numpy_and_integrates_polynomials(degree):
    nodes, weights = core.hermite_rule(degree)
    x, w = np.polynomial.hermite_e.hermegauss(degree)
    assert np.allclose(nodes, x, rtol=0, atol=1e-12 * max(1.0, np.abs(x).max()))
    assert np.allclose(weights, w / w.sum(), rtol=1e-10, atol=1e-300)
    assert weights.sum() == pytest.approx(1.0, abs=1e-14)
    # exact for polynomials of degree < 2 * degree: E[z^2m] = (2m - 1)!!
    for m in range(min(degree, 12)):
        assert np.sum(weights * nodes ** (2 * m)) == pytest.approx(math.prod(range(1, 2 * m, 2)), rel=1e-12)


# --- against closed forms and quadrature -----------------------------------------------------------


@pytest.mark.parametrize("w_std, tol", [(1.0, 1e-13), (1.5, 1e-13)])
def test_erf_by_quadrature_equals_its_closed_form(w_std, tol):
    for s in ("A", "C"):  # A: zero, duplicate, rescaled, negated rows
        x, _ = golden.points(s)
        exact = ntkcore.FullyConnected(3, "erf", W_std=w_std, b_std=0.1).kernels(x)
        num = ntkcore.FullyConnected(3, Numerical("erf"), W_std=w_std, b_std=0.1).kernels(x)
        assert natural_error(num.nngp, exact.nngp) < tol
        assert natural_error(num.ntk, exact.ntk) < tol


def test_erf_by_quadrature_refuses_what_it_cannot_certify():
    # At W_std = 3 set A's rescaled row reaches pre-activation variance 37, where 2048 nodes
    # leave a coefficient tail of 1e-5 (the error estimate; the error itself is ~1e-12).
    x, _ = golden.points("A")
    with pytest.raises(AccuracyError, match="layer 1 for pre-activation variance q = 37"):
        ntkcore.FullyConnected(3, Numerical("erf"), W_std=3.0, b_std=0.1).kernels(x)


@pytest.mark.parametrize(
    "name, closed",
    [
        ("erf", ntkcore.activations.Erf()),
        ("gelu", ntkcore.activations.Gelu()),
        ("sin", ntkcore.activations.Sin()),
        ("cos", ntkcore.activations.Cos()),
    ],
)
def test_fixed_degree_converges_to_the_closed_form(name, closed):
    x = np.random.default_rng(3).standard_normal((12, 16))
    exact = ntkcore.FullyConnected(2, closed, W_std=1.5, b_std=0.1).kernels(x)
    errors = []
    for deg in (4, 8, 16, 32, 64, 128, 256, 512):
        num = ntkcore.FullyConnected(2, Numerical(name, deg=deg), W_std=1.5, b_std=0.1).kernels(x)
        errors.append(max(natural_error(num.nngp, exact.nngp), natural_error(num.ntk, exact.ntk)))
    # decreasing until rounding level, which the largest degree reaches
    assert all(b < a for a, b in zip(errors, errors[1:]) if a > 1e-13), errors
    assert errors[0] > 1e-3 and errors[-1] < 1e-13, errors


def test_identity_and_polynomials_are_exact_at_low_degree():
    x = np.random.default_rng(4).standard_normal((8, 5))
    exact = ntkcore.FullyConnected(3, "identity", W_std=1.3, b_std=0.2).kernels(x)
    for deg in (2, 5):
        num = ntkcore.FullyConnected(3, Numerical(lambda z: z, deg=deg), W_std=1.3, b_std=0.2).kernels(x)
        assert natural_error(num.nngp, exact.nngp) < 1e-14
        assert natural_error(num.ntk, exact.ntk) < 1e-13


@pytest.mark.parametrize("name", ["softplus", "gelu", "sin", "cos", "silu"])
def test_core_matches_the_plain_two_dimensional_rule(name):
    x = np.random.default_rng(5).standard_normal((5, 6))
    net = ntkcore.FullyConnected(2, Numerical(name, deg=60), W_std=1.2, b_std=0.1)
    got = net.kernels(x)
    want = reference.kernels(net, x)
    assert np.allclose(got.nngp, want.nngp, rtol=1e-11, atol=1e-13)
    assert np.allclose(got.ntk, want.ntk, rtol=1e-11, atol=1e-13)


def test_per_point_maps_against_mpmath():
    # depth 1: K(x, x) = w^2 E[phi(u)^2] + b^2 and Theta(x, x) = K + w^2 E[phi'(u)^2] Theta_in
    x = np.array([[0.3, -1.2, 2.0], [1.0, 0.5, -1.5]])  # pre-activation variances 2.5 and 2.6
    funcs = {
        "tanh": (mp.tanh, lambda z: 1 / mp.cosh(z) ** 2),
        "softplus": (lambda z: mp.log1p(mp.exp(z)), lambda z: 1 / (1 + mp.exp(-z))),
        "sin": (mp.sin, mp.cos),
    }
    for name, (phi, dphi) in funcs.items():
        diag = ntkcore.FullyConnected(1, name if name != "sin" else Numerical("sin"), W_std=1.5, b_std=0.1).diagonal(x)
        for i, row in enumerate(x):
            with mp.workdps(30):
                q = mp.mpf(2.25) * mp.fsum(mp.mpf(float(v)) ** 2 for v in row) / 3 + mp.mpf("0.01")
                e = lambda f, q=q: mp.quad(lambda z: f(mp.sqrt(q) * z) ** 2 * mp.npdf(z), [-mp.inf, 0, mp.inf])  # noqa: E731
                k = 2.25 * e(phi) + mp.mpf("0.01")
                t = k + 2.25 * e(dphi) * q
            assert diag.nngp[i] == pytest.approx(float(k), rel=1e-14)
            assert diag.ntk[i] == pytest.approx(float(t), rel=1e-14)


# --- the accuracy requirement: 1e-10 against mpmath at depth 3 -----------------------------


def test_smooth_builtins_against_high_precision_quadrature():
    # tests/data/numerical_reference.json: 25-digit mpmath quadrature by
    # tools/gen_numerical_reference.py (independent of ntkcore); depth 3, W_std 1.5, b_std 0.1.
    ref = json.loads(DATA.read_text())
    x = np.array(ref["x"])
    cases = [(name, name) for name in ref["activations"]] + [("gelu", Numerical("gelu"))]
    for name, activation in cases:  # "gelu" is the closed form, Numerical("gelu") the series
        want = ref["activations"][name]
        net = ntkcore.FullyConnected(ref["depth"], activation, W_std=ref["W_std"], b_std=ref["b_std"])
        got = net.kernels(x)
        assert np.allclose(np.diag(got.nngp), want["diag_nngp"], rtol=1e-12, atol=0)
        assert np.allclose(np.diag(got.ntk), want["diag_ntk"], rtol=1e-12, atol=0)
        for pair in want["pairs"]:  # generic, within 1e-9 of collinear, within 1e-9 of anti-collinear
            i, j = pair["i"], pair["j"]
            assert got.nngp[i, j] == pytest.approx(pair["nngp"], rel=1e-10), (name, i, j)
            assert got.ntk[i, j] == pytest.approx(pair["ntk"], rel=1e-10), (name, i, j)


# --- properties on random inputs --------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 14),
    d=st.integers(1, 6),
    seed=st.integers(0, 2**32 - 1),
    scale=st.sampled_from([1e-3, 0.5, 1.5]),
    depth=st.integers(0, 4),
    w=st.floats(0.3, 1.8),
    b=st.sampled_from([0.0, 0.05, 0.5]),
    name=st.sampled_from(["tanh", "sigmoid", "softplus", "silu", "mish", "elu", "gelu"]),
    awkward=st.booleans(),
)
def test_symmetric_psd_and_consistent_diagonal(n, d, seed, scale, depth, w, b, name, awkward):
    # Mostly moderate variances, where the automatic degree is at rounding level; elu's kink
    # defeats it (AccuracyError), so elu takes a fixed degree and its warning.
    x = np.random.default_rng(seed).standard_normal((n, d)) * scale
    if awkward and n > 3:  # duplicate, rescaled, negated and zero rows
        x[1], x[2], x[3] = x[0], -1.5 * x[0], 0.0
    activation = Numerical(name, deg=256) if name == "elu" else Numerical(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AccuracyWarning)
        try:
            assert_gram_properties(ntkcore.FullyConnected(depth, activation, W_std=w, b_std=b), x)
        except AccuracyError:  # a variance beyond what the rule certifies: refused, not wrong
            assume(False)


# --- custom callables --------------------------------------------------------------------------------


def test_custom_tanh_equals_the_builtin():
    x = np.random.default_rng(6).standard_normal((30, 64))
    x[1] = x[0] * (1 + 1e-12)
    x[2] = -x[0]
    builtin = ntkcore.FullyConnected(3, "tanh", W_std=1.5, b_std=0.1).kernels(x)
    for act in (Numerical(np.tanh), Numerical(np.tanh, dfn=lambda z: 1 - np.tanh(z) ** 2)):
        custom = ntkcore.FullyConnected(3, act, W_std=1.5, b_std=0.1).kernels(x)
        assert natural_error(custom.nngp, builtin.nngp) < 1e-10
        assert natural_error(custom.ntk, builtin.ntk) < 1e-10


def test_custom_callable_is_called_a_bounded_number_of_times():
    calls = []

    def fn(z):
        calls.append(z.size)
        return np.tanh(z)

    x = np.random.default_rng(7).standard_normal((300, 8))
    ntkcore.FullyConnected(3, Numerical(fn, deg=128), W_std=1.5, b_std=0.1).kernels(x)
    # per layer: ~N deg evaluations (chunks of 2^18), never ~N^2 deg^2, and the two extreme
    # points at 3/4 of deg and at deg for the error estimate
    assert sum(calls) <= 3 * (300 * 128 + 2 * (96 + 128)) + 16
    assert len(calls) <= 3 * 3 + 2


def test_zero_variance_points_and_price_derivative():
    x = np.zeros((2, 4))
    x[1, 0] = 1.0
    want = ntkcore.FullyConnected(2, "softplus", W_std=1.0, b_std=0.0).kernels(x)
    got = ntkcore.FullyConnected(2, Numerical(lambda z: np.logaddexp(0, z)), W_std=1.0, b_std=0.0).kernels(x)
    assert np.allclose(got.nngp, want.nngp, rtol=1e-12)
    assert np.allclose(got.ntk, want.ntk, rtol=1e-9)  # phi'(0) by a central difference


def test_constant_norm_inputs_take_the_shared_path_with_the_same_values():
    # Sign flips of one vector: every |x|^2 is the same sum, bit for bit (the shared path).
    rng = np.random.default_rng(8)
    x = rng.choice([-1.0, 1.0], size=(40, 16)) * rng.standard_normal(16)
    shared = ntkcore.FullyConnected(2, "tanh", W_std=1.5, b_std=0.1).kernels(x)
    y = x.copy()
    y[-1] *= 1 + 1e-15  # one point off the sphere: per-point coefficients everywhere
    general = ntkcore.FullyConnected(2, "tanh", W_std=1.5, b_std=0.1).kernels(y)
    assert np.allclose(shared.nngp[:-1, :-1], general.nngp[:-1, :-1], rtol=1e-13, atol=1e-15)
    assert np.allclose(shared.ntk[:-1, :-1], general.ntk[:-1, :-1], rtol=1e-13, atol=1e-15)


def test_float32_and_threads():
    x = np.random.default_rng(9).standard_normal((70, 12))
    net = ntkcore.FullyConnected(3, "silu", W_std=1.5, b_std=0.1)
    k64 = net.kernels(x)
    k32 = net.kernels(x.astype(np.float32))
    assert k32.ntk.dtype == np.float32
    assert np.allclose(k32.ntk, k64.ntk, rtol=2e-5, atol=1e-6)
    assert np.array_equal(net.kernels(x, n_threads=1).ntk, net.kernels(x, n_threads=2).ntk)


def test_golden_tanh_against_neural_tangents():
    net = golden.network("tanh_num25_L3")
    vals = golden.values("tanh_num25_L3")
    for s in ("B", "C", "X"):
        x1, x2 = golden.points(s)
        got = net.kernels(x1, x2)
        for kind in ("nngp", "ntk"):
            want = vals[f"{kind}_deg300_{s}"]
            # NT's degree-300 2-D rule is converged far better than its default 25 here
            assert np.max(np.abs(getattr(got, kind) - want)) <= 1e-8 * np.abs(want).max()


def test_names_and_equality():
    assert ntkcore.activations.get("tanh") == Numerical("tanh")
    assert ntkcore.activations.get("Swish") == Numerical("silu")
    assert Numerical("tanh", deg=64) != Numerical("tanh")
    assert "Numerical(fn='tanh'" in repr(ntkcore.FullyConnected(1, "tanh"))


# --- bad input -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(fn="tanhh"), ValueError, "Did you mean 'tanh'"),
        (dict(fn=3.0), TypeError, "built-in name or a callable"),
        (dict(fn="tanh", dfn=np.cos), ValueError, "only for a callable"),
        (dict(fn=np.tanh, dfn="cos"), TypeError, "dfn must be a callable"),
        (dict(fn="tanh", deg=0), ValueError, r"deg must be in \[1, 4096\]"),
        (dict(fn="tanh", deg=5000), ValueError, r"deg must be in \[1, 4096\]"),
        (dict(fn="tanh", deg=2.5), TypeError, "deg must be an integer"),
        (dict(fn="tanh", deg=True), TypeError, "deg must be an integer"),
    ],
)
def test_bad_numerical_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        Numerical(**kwargs)


@pytest.mark.parametrize(
    "fn, error, match",
    [
        (lambda z: z[:-1], ValueError, "shape"),
        (lambda z: "abc", TypeError, "real numpy array"),
        (lambda z: z.astype(complex), TypeError, "real numpy array"),
        (lambda z: np.where(np.abs(z) > 1, np.nan, z), ValueError, "not finite"),
        (lambda z: 1 / 0, ZeroDivisionError, "division"),
    ],
)
def test_bad_custom_functions_raise_clearly(fn, error, match):
    x = np.random.default_rng(10).standard_normal((4, 3))
    with pytest.raises(error, match=match):
        ntkcore.FullyConnected(2, Numerical(fn), W_std=1.5, b_std=0.1).kernels(x)


def test_reference_rule_degree_is_bounded():
    with pytest.raises(ValueError, match="deg <= 350"):
        reference.dual(Numerical("tanh", deg=400), 1.0, 1.0, 0.5)


def test_finite_networks_need_a_builtin():
    with pytest.raises(ValueError, match="built-in"):
        ntkcore.finite.MLP([3, 8, 1], activation=Numerical(np.tanh), seed=0).ntk(np.ones((2, 3)))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize(
    "activation, w_std, vanishes",
    [
        ("erf", 0.5, True),
        ("gelu", 1.0, True),
        ("tanh", 0.5, True),
        ("sin", 0.5, True),
        ("softplus", 0.2, False),
        (ntkcore.activations.Cos(), 0.3, False),
    ],
)
def test_vanishing_variances_stay_finite(activation, w_std, vanishes, dtype):
    # Each layer shrinks the variance of the input's signal ~4x or more.  With phi(0) = 0
    # the true kernels after 1000 layers (~1e-500) are below every float range, and the
    # families that work in true units must give 0, not NaN; otherwise every entry has
    # reached the map's fixed point, the same for all pairs.
    x = np.random.default_rng(13).standard_normal((5, 4)).astype(dtype)
    k = ntkcore.FullyConnected(1000, activation, W_std=w_std, b_std=0.0).kernels(x)
    for g in (k.nngp, k.ntk):
        assert np.isfinite(g).all()
        if vanishes:
            assert np.abs(g).max() <= 1e6 * np.finfo(dtype).tiny
        else:
            assert np.allclose(g, g[0, 0], rtol=1e-5 if dtype == np.float32 else 1e-12)


@pytest.mark.parametrize(
    "activation, w_std, depth, dtype",
    [
        ("relu", 3.0, 1000, np.float64),
        ("erf", 3.0, 1000, np.float64),
        ("gelu", 3.0, 1000, np.float64),
        (Numerical("softplus", deg=64), 3.0, 1000, np.float64),
        (ntkcore.activations.RectifiedMonomial(2), 2.0, 40, np.float64),
        (Numerical("tanh", deg=64), 3.0, 1000, np.float32),
    ],
)
@pytest.mark.filterwarnings("ignore::ntkcore.activations.AccuracyWarning")
def test_kernels_beyond_the_float_range_raise(activation, w_std, depth, dtype):
    # The true kernels exceed the range of dtype (tanh: Theta ~ 1e270 fits float64 only).
    # The series take a fixed degree: the automatic one refuses these variances first.
    x = np.random.default_rng(14).standard_normal((4, 4)).astype(dtype)
    net = ntkcore.FullyConnected(depth, activation, W_std=w_std, b_std=0.1)
    with pytest.raises(OverflowError, match="kernels overflow"):
        net.kernels(x)
    with pytest.raises(OverflowError, match="kernels overflow"):
        net.diagonal(x)

"""Gauss-Hermite family at large variances (issue 9): accurate to 1e-10, or a clear error, never silent.

tests/data/numerical_limits_reference.json: 20-digit mpmath quadrature of the per-point
recursion by tools/gen_numerical_limits_reference.py (independent of ntkcore), x with
|x|^2 / d = 1, b_std = 0.1, W_std up to 100, depths 1..10.
"""

import _thread
import json
import threading
import time
import warnings
from pathlib import Path

import ntkcore
import numpy as np
import pytest
from mpmath import mp, mpf
from ntkcore.activations import AccuracyError, AccuracyWarning, Numerical

REF = json.loads((Path(__file__).resolve().parent / "data" / "numerical_limits_reference.json").read_text())
X = np.ones((1, 4))  # |x|^2 / d = 1: the first pre-activation variance is W_std^2 + b_std^2
DEPTHS = (1, 2, 3, 10)
ODD = {"tanh", "erf", "sin"}  # K(x, -x) follows from the per-point expectations

CASES = [  # (activation, the reference's name)
    ("tanh", "tanh"),
    ("sigmoid", "sigmoid"),
    ("softplus", "softplus"),
    ("silu", "silu"),
    (Numerical("gelu"), "gelu"),
    (Numerical("erf"), "erf"),
    (Numerical(np.tanh), "tanh"),  # a callable, Tdot by Price's theorem
    (Numerical("sin"), "sin"),  # oscillates faster than the nodes at large variances: aliasing
]


def reference_chain(name, w_std, b_std=REF["b_std"]):
    """Per-layer K(x, x), Theta(x, x) from the JSON, or for sin in closed form:
    E[sin(s z)^2] = (1 - e^(-2 q)) / 2 and E[cos(s z)^2] = (1 + e^(-2 q)) / 2."""
    if name != "sin":
        return REF["activations" if b_std else "odd_without_bias"][name][str(w_std)]
    with mp.workdps(30):
        w2, b2 = mpf(w_std) ** 2, mpf(b_std) ** 2
        q = theta = w2 + b2
        chain = []
        for _ in range(max(DEPTHS)):
            q_next = w2 * (1 - mp.exp(-2 * q)) / 2 + b2
            theta = q_next + w2 * (1 + mp.exp(-2 * q)) / 2 * theta
            q = q_next
            chain.append({"nngp": str(q), "ntk": str(theta)})
        return chain


def anti_collinear(chain, depth, w_std):
    """K(x, -x) and Theta(x, -x) without bias, for an odd phi, from the per-point chain: the
    pair stays anti-collinear, T(q, q, -q) = -E[phi^2] and Tdot(q, q, -q) = E[phi'^2]."""
    with mp.workdps(25):
        theta_prev = mpf(w_std) ** 2
        theta = -theta_prev
        for layer in chain[:depth]:
            q, t = mpf(layer["nngp"]), mpf(layer["ntk"])
            theta = -q + (t - q) / theta_prev * theta  # W^2 E[phi'^2] = (Theta - K) / Theta_prev
            theta_prev = t
        return -float(chain[depth - 1]["nngp"]), float(theta)


def accurate_or_refused(activation, w_std, depth, b_std, x, want):
    """ "accurate" if net.kernels(x)[0, 0] matches `want` (and row 1, if any, is -x), else "refused"."""
    net = ntkcore.FullyConnected(depth, activation, W_std=w_std, b_std=b_std)
    try:
        got = net.kernels(x)
    except AccuracyError as error:
        message = str(error)
        assert "not converged at layer" in message and "pre-activation variance q =" in message, message
        assert "estimated relative error" in message, message
        with pytest.raises(AccuracyError):  # the per-point path agrees
            net.diagonal(x)
        return "refused"
    where = (activation, w_std, depth, b_std)
    assert got.nngp[0, 0] == pytest.approx(float(want["nngp"]), rel=1e-10), where
    assert got.ntk[0, 0] == pytest.approx(float(want["ntk"]), rel=1e-10), where
    return "accurate"


@pytest.mark.parametrize("activation, name", CASES, ids=[str(a) for a, _ in CASES])
def test_accurate_or_refused(activation, name):
    outcomes = {"accurate": [], "refused": []}
    for w_std in REF["W_std"]:
        chain = reference_chain(name, w_std)
        for depth in DEPTHS:
            outcome = accurate_or_refused(activation, w_std, depth, REF["b_std"], X, chain[depth - 1])
            outcomes[outcome].append((w_std, depth))
    # both branches occur: moderate variances are accurate, large ones refused (sin, entire,
    # is resolved up to W_std = 100 once the degree reaches its frequency)
    assert (1.5, 3) in outcomes["accurate"] and (1.0, 10) in outcomes["accurate"], outcomes
    assert name == "sin" or (30.0, 1) in outcomes["refused"], outcomes


@pytest.mark.parametrize("activation, name", [(a, n) for a, n in CASES if n in ODD], ids=str)
def test_anti_collinear_pairs_accurate_or_refused(activation, name):
    # Depth <= 3: deeper chaotic networks (W^2 E[phi'^2] > 1, e.g. sin at W_std = 3) amplify
    # the rounding of the correlation by that factor per layer, beyond 1e-10 at depth 10.
    outcomes = {"accurate": [], "refused": []}
    for w_std in REF["W_std"]:
        chain = reference_chain(name, w_std, b_std=0.0)
        for depth in (1, 2, 3):
            x = np.vstack([X, -X])
            outcome = accurate_or_refused(activation, w_std, depth, 0.0, x, chain[depth - 1])
            outcomes[outcome].append((w_std, depth))
            if outcome == "accurate":
                got = ntkcore.FullyConnected(depth, activation, W_std=w_std).kernels(x)
                k, theta = anti_collinear(chain, depth, w_std)
                assert abs(got.nngp[0, 1] - k) <= 1e-10 * abs(k), (name, w_std, depth)
                assert abs(got.ntk[0, 1] - theta) <= 1e-10 * float(chain[depth - 1]["ntk"]), (name, w_std, depth)
    assert (1.5, 3) in outcomes["accurate"], outcomes
    assert name == "sin" or (100.0, 1) in outcomes["refused"], outcomes


def test_issue_examples_raise():
    with pytest.raises(AccuracyError, match=r"tanh: .*layer 1 .*q = 900"):
        ntkcore.FullyConnected(1, "tanh", W_std=30.0).diagonal(np.ones((1, 4)))
    with pytest.raises(AccuracyError, match=r"erf: .*layer 1 .*q = 1e\+04"):
        ntkcore.FullyConnected(1, Numerical("erf"), W_std=100.0).kernels(np.ones((3, 4)))
    assert issubclass(AccuracyError, ArithmeticError)


def test_fixed_degree_warns_when_inaccurate():
    net = lambda deg, w: ntkcore.FullyConnected(3, Numerical("tanh", deg=deg), W_std=w, b_std=0.1)  # noqa: E731
    with pytest.warns(AccuracyWarning, match=r"fixed degree 25 .*estimated relative error"):
        net(25, 1.5).kernels(X)
    with pytest.warns(AccuracyWarning, match="fixed degree 1024"):
        approx = net(1024, 30.0).diagonal(X)  # returned, with the warning, as asked
    assert np.isfinite(approx.ntk).all()
    with warnings.catch_warnings():
        warnings.simplefilter("error", AccuracyWarning)
        net(512, 1.5).kernels(X)  # converged: no warning
        with pytest.raises(AccuracyWarning):  # filters may turn it into an error
            net(25, 1.5).diagonal(X)


# --- interruption (Ctrl-C) --------------------------------------------------------------------------


def seconds_to_interrupt(compute, after=0.3):
    """Time from a simulated Ctrl-C, `after` seconds into compute(), to its KeyboardInterrupt."""
    timer = threading.Timer(after, _thread.interrupt_main)
    start = time.perf_counter()
    timer.start()
    try:
        compute()
    except KeyboardInterrupt:
        return time.perf_counter() - start - after
    finally:
        timer.cancel()
    try:  # finished first: absorb an interrupt already on its way
        time.sleep(after)
    except KeyboardInterrupt:
        pass
    pytest.fail("the computation finished before the interrupt; make it longer")


def test_ctrl_c_within_one_tile_of_a_deep_network():
    # One 64 x 64 tile, seconds of per-layer loop; the interrupt comes after the per-point
    # recursion (timed by diagonal(), the same recursion), inside the tile.
    x = np.random.default_rng(0).standard_normal((64, 3))
    net = ntkcore.FullyConnected(100_000, "relu")
    start = time.perf_counter()
    net.diagonal(x)
    recursion = time.perf_counter() - start
    assert seconds_to_interrupt(lambda: net.kernels(x), after=recursion + 0.2) < 1.0


def test_ctrl_c_during_the_per_point_chain_and_tabulation():
    assert seconds_to_interrupt(lambda: ntkcore.FullyConnected(200_000, "tanh").diagonal(X)) < 1.0
    assert seconds_to_interrupt(lambda: ntkcore.FullyConnected(3_000_000, "relu").diagonal(X)) < 1.0

"""Gauss-Hermite activations (``ntkcore.activations.Numerical``) in ``ntkcore.serial`` networks.

Independent truths: the closed forms of the same functions (Gelu, Erf, Sin), the
fully-connected core on one-position networks (its Numerical family is checked against
mpmath in test_numerical*.py), and ``reference.layer_kernels``, whose Numerical entries come
from its own 2-D Gauss-Hermite rule in numpy (``reference.dual``), one entry at a time.
"""

from __future__ import annotations

import threading
import warnings

import ntkcore
import numpy as np
import pytest
from ntkcore import layers as L
from ntkcore import reference
from ntkcore.activations import AccuracyError, AccuracyWarning, Erf, Gelu, Numerical, Sin
from test_layers import _natural_error
from test_numerical_limits import seconds_to_interrupt

RNG = np.random.default_rng(23)


def _close(got, want, tol):
    for name in ("nngp", "ntk"):
        err = _natural_error(getattr(got, name), getattr(want, name))
        assert err <= tol, (name, err)


def _conv_net(act, readout):
    return [
        L.Conv((3, 3), padding="SAME", W_std=1.3, b_std=0.2),
        act,
        L.Conv((2, 2), strides=(1, 2), W_std=1.2, b_std=0.1),
        act,
        readout,
        L.Dense(1.1, 0.1),
    ]


@pytest.mark.parametrize("readout", [L.GlobalAvgPool(), L.Flatten()], ids=["gap", "flatten"])
@pytest.mark.parametrize(
    "numerical, closed", [("gelu", Gelu()), ("erf", Erf()), ("sin", Sin())], ids=["gelu", "erf", "sin"]
)
def test_series_equals_the_closed_form(numerical, closed, readout):
    x = RNG.standard_normal((5, 6, 5, 2))
    series = ntkcore.serial(*_conv_net(Numerical(numerical), readout))
    exact = ntkcore.serial(*_conv_net(closed, readout))
    for a, b in ((x, None), (x[:2], x[2:])):
        _close(series.kernels(a, b), exact.kernels(a, b), 1e-13)
    np.testing.assert_allclose(series.diagonal(x).ntk, exact.diagonal(x).ntk, rtol=1e-13)
    if isinstance(readout, L.GlobalAvgPool):  # grids of two sizes: one table over both sets
        y = RNG.standard_normal((3, 4, 7, 2)) * 1.5
        _close(series.kernels(x, y), exact.kernels(x, y), 1e-13)


ONE_POSITION = ["tanh", "sigmoid", "softplus", "silu", "mish", Numerical(np.tanh), Numerical(np.sin, dfn=np.cos)]


@pytest.mark.parametrize("act", ONE_POSITION, ids=repr)
def test_one_position_network_equals_the_fully_connected_network(act):
    """The degree is chosen from the same extreme variances: the same series, the same numbers."""
    x = RNG.standard_normal((7, 5))
    fc = ntkcore.FullyConnected(2, act, W_std=[1.3, 1.2, 0.8], b_std=[0.2, 0.1, 0.1])
    convs = (L.Conv((3, 3), padding="CIRCULAR", W_std=1.3, b_std=0.2), L.Conv((1, 1), W_std=1.2, b_std=0.1))
    for readout in (L.GlobalAvgPool(), L.Flatten()):
        net = ntkcore.serial(convs[0], act, convs[1], act, readout, L.Dense(0.8, 0.1))
        _close(net.kernels(x[:, None, None, :]), fc.kernels(x), 1e-13)
        _close(net.kernels(x[:3, None, None, :], x[3:, None, None, :]), fc.kernels(x[:3], x[3:]), 1e-13)
    vectors = ntkcore.serial(L.Dense(1.3, 0.2), act, L.Dense(1.2, 0.1), act, L.Dense(0.8, 0.1))
    _close(vectors.kernels(x), fc.kernels(x), 1e-13)


def test_fixed_degree_one_position_equals_fully_connected_with_the_same_warning():
    x = RNG.standard_normal((6, 4))
    act = Numerical("elu", deg=300)  # elu's kinked derivative is always refused at the automatic degree
    fc = ntkcore.FullyConnected(1, act, W_std=1.2, b_std=0.1)
    net = ntkcore.serial(L.Dense(1.2, 0.1), act, L.Dense(1.2, 0.1))
    with pytest.warns(AccuracyWarning, match="fixed degree 300"):
        want = fc.kernels(x)
    with pytest.warns(AccuracyWarning, match=r"fixed degree 300 .*at layer 1"):
        got = net.kernels(x)
    _close(got, want, 1e-13)
    with pytest.raises(AccuracyError, match=r"elu: .*not converged at layer 1"):
        ntkcore.serial(L.Dense(1.2, 0.1), "elu", L.Dense()).kernels(x)


def _mixed(tanh, softplus):
    return [
        L.Conv((3,), padding="SAME", W_std=1.1, b_std=0.1),
        tanh,
        L.Conv((2,), padding="CIRCULAR", W_std=1.2),
        "relu",  # a closed form after a series: needs the gap d the series leaves
        L.Dense(1.3, 0.2),
        softplus,
    ]


@pytest.mark.parametrize("readout", [L.GlobalAvgPool(), L.Flatten()], ids=["gap", "flatten"])
def test_mixed_activations_against_the_reference(readout):
    """The reference's own 2-D rule at 200 nodes per axis (measured: ~1e-15 from the core at
    these variances; at 1.3x the input scale it is the reference that needs 300 nodes)."""
    x = RNG.standard_normal((3, 4, 2)) * 0.7
    tail = [readout, L.Dense(1.1, 0.1)]
    core = ntkcore.serial(*_mixed("tanh", "softplus"), *tail)
    ref_layers = [*_mixed(Numerical("tanh", deg=200), Numerical("softplus", deg=200)), *tail]
    for a, b in ((x, None), (x[:1], x[1:])):
        _close(core.kernels(a, b), reference.layer_kernels(ref_layers, a, b), 1e-12)


def test_the_degree_comes_from_every_image_and_position():
    """One large pixel of one image raises the variance at the positions that see it: that
    alone must decide the degree (here: beyond any degree, refused, naming the layer)."""
    net = ntkcore.serial(L.Conv((3, 3), padding="SAME"), L.Dense(), "tanh", L.Flatten(), L.Dense())
    x = RNG.standard_normal((4, 6, 6, 1))
    net.kernels(x)  # converged
    bright = x.copy()
    bright[3, 4, 1, 0] = 40.0  # q ~ 1600 / 9 at its 9 neighbours
    with pytest.raises(AccuracyError, match=r"tanh: .*not converged at layer 2 for pre-activation variance q = 17"):
        net.kernels(bright)
    with pytest.raises(AccuracyError, match="at layer 2"):
        net.kernels(x[:2], bright[2:])  # the other set's images count too
    with pytest.raises(AccuracyError, match="at layer 2"):
        net.diagonal(bright)


def test_fixed_degree_warns_naming_the_layer():
    low = Numerical("tanh", deg=25)
    net = ntkcore.serial(L.Conv((3, 3), W_std=1.5), low, L.Conv((1, 1), W_std=1.5), low, L.GlobalAvgPool(), L.Dense())
    x = RNG.standard_normal((3, 5, 5, 2))
    with pytest.warns(AccuracyWarning, match=r"fixed degree 25 .*at layer 1") as record:
        net.kernels(x)
    assert len(record) == 1  # the first such layer only, as for FullyConnected
    with warnings.catch_warnings():
        warnings.simplefilter("error", AccuracyWarning)
        with pytest.raises(AccuracyWarning):
            net.kernels(x)


def test_callables_run_on_the_calling_thread_a_bounded_number_of_times():
    threads, points = set(), []

    def fn(z):
        threads.add(threading.get_ident())
        points.append(z.size)
        return np.tanh(z)

    act = Numerical(fn, deg=64)
    net = ntkcore.serial(L.Conv((3, 3), padding="SAME", W_std=1.2), act, L.Conv((3, 3), W_std=1.2), act, L.Flatten())
    counts = []
    for n in (3, 6):
        points.clear()
        with pytest.warns(AccuracyWarning, match="fixed degree 64"):  # deg=64 is too low for tanh here
            net.kernels(RNG.standard_normal((n, 5, 5, 1)), n_threads=2)
        counts.append(sum(points))
    assert threads == {threading.get_ident()}
    # per layer: every (image, position) at 64 nodes, plus the extreme points at 48 and 64
    # nodes for the error estimate: linear in the images, never per pair
    per_image = 64 * (25 + 9)
    for n, count in zip((3, 6), counts):
        assert count <= n * per_image + 2 * 2 * (48 + 64), (n, count)


def test_float32_and_threads():
    layers = _conv_net(Numerical("softplus"), L.Flatten())
    net = ntkcore.serial(*layers)
    x = RNG.standard_normal((6, 5, 5, 2))
    k64 = net.kernels(x, n_threads=1)
    for name in ("nngp", "ntk"):
        np.testing.assert_array_equal(getattr(net.kernels(x, n_threads=2), name), getattr(k64, name))
    k32 = net.kernels(x.astype(np.float32))
    assert k32.ntk.dtype == np.float32
    _close(k32, k64, 1e-5)


def test_symmetric_psd_and_consistent_diagonal():
    net = ntkcore.serial(*_conv_net(Numerical("silu"), L.GlobalAvgPool()))
    x = RNG.standard_normal((7, 5, 4, 2))
    k, diag = net.kernels(x), net.diagonal(x)
    for name in ("nngp", "ntk"):
        m = getattr(k, name)
        np.testing.assert_array_equal(m, m.T)
        np.testing.assert_allclose(np.diag(m), getattr(diag, name), rtol=1e-15)
        assert np.linalg.eigvalsh(m).min() > -1e-13 * np.abs(m).max()


@pytest.mark.parametrize(
    "fn, error, match",
    [
        (lambda z: z[:-1], ValueError, r"fn must return an array of the argument's shape"),
        (lambda z: "tanh", TypeError, "fn must return a real numpy array"),
        (lambda z: np.where(z > 2, np.nan, z), ValueError, "phi is not finite at some Gauss-Hermite node"),
    ],
)
def test_bad_callables_raise_clearly(fn, error, match):
    net = ntkcore.serial(L.Conv((3, 3), padding="SAME"), Numerical(fn), L.Flatten(), L.Dense())
    with pytest.raises(error, match=match):
        net.kernels(RNG.standard_normal((3, 4, 4, 1)))


def test_ctrl_c_during_the_chains_and_the_pairs():
    """The per-image chains (staged around the series) and the pair loop poll for Ctrl-C."""
    x = RNG.standard_normal((400, 8, 8, 1))
    net = ntkcore.serial(*[L.Conv((3, 3), padding="SAME", W_std=1.2), "tanh"] * 3, L.GlobalAvgPool(), L.Dense())
    assert seconds_to_interrupt(lambda: net.kernels(x), after=0.3) < 1.0
    deep = ntkcore.serial(*[L.Conv((3, 3), padding="SAME", W_std=1.2), "tanh"] * 400, L.Flatten())
    assert seconds_to_interrupt(lambda: deep.diagonal(x[:50]), after=0.3) < 1.0

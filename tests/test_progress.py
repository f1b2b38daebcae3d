"""progress= of the Gram computations (issue 14, item 2): counts, the final call, errors, and
results unchanged by the reports."""

import sys

import ntkcore
import numpy as np
import pytest
from ntkcore import layers

FC = ntkcore.FullyConnected(3, "relu", W_std=2**0.5, b_std=0.1)
CNN = ntkcore.serial(
    layers.Conv((3, 3), padding="SAME", W_std=2**0.5, b_std=0.1), "relu", layers.GlobalAvgPool(), layers.Dense()
)


def points(n, d=8, seed=0):
    return np.random.default_rng(seed).standard_normal((n, d))


def images(n, seed=1):
    return np.random.default_rng(seed).standard_normal((n, 6, 6, 2))


@pytest.mark.parametrize("cross", [False, True])
def test_fully_connected_reports_its_tiles(cross):
    x = points(300)
    x2 = points(130, seed=2) if cross else None
    calls = []
    k = FC.kernels(x, x2, progress=lambda d, t: calls.append((d, t)))
    tiles = 5 * 3 if cross else 5 * 6 // 2  # 64 x 64 tiles; the upper triangle when symmetric
    assert calls[-1] == (tiles, tiles)
    assert all(t == tiles and 0 <= d <= t for d, t in calls)
    np.testing.assert_array_equal(k.ntk, FC.ntk(x, x2))


@pytest.mark.parametrize("cross", [False, True])
def test_serial_reports_its_pairs(cross):
    x = images(23)
    x2 = images(9, seed=3) if cross else None
    calls = []
    k = CNN.kernels(x, x2, progress=lambda d, t: calls.append((d, t)))
    pairs = 23 * 9 if cross else 23 * 24 // 2
    assert calls[-1] == (pairs, pairs)
    np.testing.assert_array_equal(k.nngp, CNN.nngp(x, x2))


def test_a_dense_chain_reports_tiles_of_the_fused_engine():
    calls = []
    FC.as_serial().kernels(points(100), progress=lambda d, t: calls.append((d, t)))
    assert calls[-1] == (3, 3)


@pytest.mark.parametrize("net, x", [(FC, points(400)), (CNN, images(30))])
def test_an_exception_in_the_callback_ends_the_run(net, x):
    def fail(done, total):
        raise RuntimeError("stop")

    with pytest.raises(RuntimeError, match="stop"):
        net.kernels(x, progress=fail)


def test_progress_true_writes_a_line_to_stderr(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tqdm", None)
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    CNN.kernels(images(5), progress=True)
    assert "serial kernels: 15/15 pairs" in capsys.readouterr().err
    FC.kernels(points(10), progress=True)
    assert "FullyConnected.kernels: 1/1 tiles" in capsys.readouterr().err


@pytest.mark.parametrize("net, x", [(FC, points(5)), (CNN, images(3))])
def test_bad_progress_is_a_type_error(net, x):
    with pytest.raises(TypeError, match="progress must be True, False or a callable"):
        net.kernels(x, progress="yes")

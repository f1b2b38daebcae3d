"""Layer lists (``ntkcore.layers``) and their plain-numpy kernels, ``reference.layer_kernels``.

Independent truths: the golden values of ``tests/data/golden_cnn`` (an independent numpy
evaluation of docs/math/7-convolutions.md, and neural-tangents), the fully-connected reference recursion,
explicit position-by-position matrices of each convolution and pooling written from the
the index formulas of docs/math/7-convolutions.md, and exact invariances (circular shifts, duplicated inputs).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from kernel_checks import natural_error
from ntkcore import FullyConnected, reference
from ntkcore import layers as L
from ntkcore.activations import Erf

DATA = Path(__file__).resolve().parent / "data" / "golden_cnn"
RNG = np.random.default_rng(7)


def _from_index(spec):
    """The layer list of a golden configuration (format in index.json's layer_format)."""
    out = []
    for entry in spec:
        kind = entry[0]
        if kind == "conv":
            f, w, b, padding, strides = entry[1:]
            out.append(L.Conv(tuple(f), strides=strides and tuple(strides), padding=padding, W_std=w, b_std=b or 0.0))
        elif kind == "act":
            out.append(entry[1])
        elif kind == "gap":
            out.append(L.GlobalAvgPool())
        elif kind == "flatten":
            out.append(L.Flatten())
        elif kind == "dense":
            out.append(L.Dense(entry[1], entry[2] or 0.0))
        else:
            raise AssertionError(f"unknown layer kind {kind!r} in index.json")
    return out


def _natural_error(got, want):
    """max |got - want| / sqrt(want(x, x) want(x', x')) for a square Gram, else / max |want|."""
    if want.shape[0] == want.shape[1]:
        return natural_error(got, want)
    return float(np.max(np.abs(got - want)) / np.max(np.abs(want)))


GOLDEN_INDEX = json.loads((DATA / "index.json").read_text())


@pytest.mark.parametrize("name", sorted(GOLDEN_INDEX["configs"]))
def test_golden_cnn(name):
    cfg = GOLDEN_INDEX["configs"][name]
    inputs = np.load(DATA / "inputs.npz")
    values = np.load(DATA / f"{name}.npz")
    net = _from_index(cfg["layers"])
    for s in cfg["sets"]:
        got = (
            reference.layer_kernels(net, inputs["R"][:6], inputs["R"][4:])
            if s == "X"
            else (reference.layer_kernels(net, inputs[s]))
        )
        for kind in ("nngp", "ntk"):
            assert _natural_error(getattr(got, kind), values[f"ref_{kind}_{s}"]) < 1e-13, (s, kind)
            # neural-tangents loses ~1e-9 on exactly collinear pixel pairs (index.json)
            assert _natural_error(getattr(got, kind), values[f"{kind}_{s}"]) < 1e-8, (s, kind)


@pytest.mark.parametrize("act", ["relu", Erf(a=1.5, b=0.7), "abs", "gelu"])
def test_dense_list_equals_the_fully_connected_recursion(act):
    x1, x2 = RNG.standard_normal((5, 7)), RNG.standard_normal((4, 7))
    fc = FullyConnected(2, act, W_std=[1.3, 0.9, 1.1], b_std=[0.2, 0.0, 0.4])
    layers = [L.Dense(1.3, 0.2), act, L.Dense(0.9, 0.0), act, L.Dense(1.1, 0.4)]
    for a, b in ((x1, None), (x1, x2)):
        want, got = reference.kernels(fc, a, b), reference.layer_kernels(layers, a, b)
        np.testing.assert_allclose(got.nngp, want.nngp, rtol=1e-14, atol=0)
        np.testing.assert_allclose(got.ntk, want.ntk, rtol=1e-14, atol=0)


@pytest.mark.parametrize(
    "conv", [L.Conv((1, 1), W_std=1.3, b_std=0.2), L.Conv((3, 3), padding="CIRCULAR", W_std=1.3, b_std=0.2)]
)
@pytest.mark.parametrize("readout", [L.GlobalAvgPool(), L.Flatten()])
def test_one_position_conv_network_equals_the_fully_connected_network(conv, readout):
    """P = 1: every tap of a 1 x 1 or circular filter reads the one position."""
    x = RNG.standard_normal((6, 5))
    fc = FullyConnected(2, "relu", W_std=[1.3, 1.3, 0.8], b_std=[0.2, 0.2, 0.1])
    layers = [conv, "relu", conv, "relu", readout, L.Dense(0.8, 0.1)]
    want, got = reference.kernels(fc, x), reference.layer_kernels(layers, x[:, None, None, :])
    np.testing.assert_allclose(got.nngp, want.nngp, rtol=1e-14, atol=0)
    np.testing.assert_allclose(got.ntk, want.ntk, rtol=1e-14, atol=0)


# --- convolution and pooling against explicit position matrices -------------------------


def _selection(size, window, stride, padding, tap):
    """E[o, i] = 1 where output o reads input i at this tap (the index formula of docs/math/7-convolutions.md)."""
    if padding == "VALID":
        out, before = (size - window) // stride + 1, 0
    else:
        out = -(-size // stride)
        before = max((out - 1) * stride + window - size, 0) // 2
    E = np.zeros((out, size))
    for o in range(out):
        i = o * stride - before + tap
        if padding == "CIRCULAR":
            E[o, i % size] = 1.0
        elif 0 <= i < size:
            E[o, i] = 1.0
    return E


def _kron_all(mats):
    out = np.ones((1, 1))
    for m in mats:
        out = np.kron(out, m)
    return out


def _conv_matrix_form(S, filt, strides, padding, shape1, shape2):
    """(1/|F|) sum_delta E_delta S E'_delta^T with the same tap delta on both inputs."""
    total = 0
    for taps in np.ndindex(*filt):
        E1 = _kron_all([_selection(n, f, s, padding, t) for n, f, s, t in zip(shape1, filt, strides, taps)])
        E2 = _kron_all([_selection(n, f, s, padding, t) for n, f, s, t in zip(shape2, filt, strides, taps)])
        total = total + E1 @ S @ E2.T
    return total / np.prod(filt)


def _pool_matrix_form(S, window, strides, padding, shape1, shape2):
    """M S M'^T: independent window offsets on the two inputs."""

    def M(shape):
        return _kron_all(
            [sum(_selection(n, w, s, padding, t) for t in range(w)) / w for n, w, s in zip(shape, window, strides)]
        )

    return M(shape1) @ S @ M(shape2).T


CASES = [
    ((3, 3), (1, 1), "SAME", (5, 4), (5, 4)),
    ((3, 3), (2, 2), "SAME", (5, 6), (5, 6)),
    ((2, 3), (2, 1), "SAME", (4, 5), (3, 5)),
    ((3, 3), (1, 1), "VALID", (5, 4), (4, 4)),
    ((2, 2), (2, 3), "VALID", (6, 7), (6, 7)),
    ((3, 3), (1, 1), "CIRCULAR", (4, 5), (4, 5)),
    ((3, 2), (2, 2), "CIRCULAR", (5, 5), (5, 4)),
    ((4,), (3,), "SAME", (9,), (7,)),
    ((3,), (1,), "VALID", (6,), (6,)),
]


@pytest.mark.parametrize("window, strides, padding, shape1, shape2", CASES)
def test_conv_and_pool_indexing_match_explicit_matrices(window, strides, padding, shape1, shape2):
    P1, P2 = int(np.prod(shape1)), int(np.prod(shape2))
    S = RNG.standard_normal((P1, P2))
    tensor = S.reshape((1, 1, *shape1, *shape2))
    k = len(shape1)
    conv = reference._conv_average(tensor, L.Conv(window, strides=strides, padding=padding), k)
    want = _conv_matrix_form(S, window, strides, padding, shape1, shape2)
    np.testing.assert_allclose(conv.reshape(want.shape), want, rtol=0, atol=1e-15)
    pool = reference._pool_average(tensor, L.AvgPool(window, strides=strides, padding=padding), k)
    want = _pool_matrix_form(S, window, strides, padding, shape1, shape2)
    np.testing.assert_allclose(pool.reshape(want.shape), want, rtol=0, atol=1e-15)


# --- exact invariances -------------------------------------------------------------------


MYRTLE = [
    L.Conv((3, 3), padding="CIRCULAR", W_std=2**0.5, b_std=0.1),
    "relu",
    L.Conv((3, 3), padding="CIRCULAR", W_std=2**0.5, b_std=0.1),
    "relu",
    L.AvgPool((2, 2), padding="CIRCULAR"),
    L.Conv((3, 3), padding="CIRCULAR", W_std=2**0.5),
    Erf(),
    L.GlobalAvgPool(),
    L.Dense(2**0.5, 0.1),
]


def test_global_pool_kernels_are_invariant_to_circular_shifts():
    x = RNG.standard_normal((4, 6, 5, 2))
    shifted = np.roll(x, (2, -1), axis=(1, 2))
    a, b = reference.layer_kernels(MYRTLE, x), reference.layer_kernels(MYRTLE, x, shifted)
    np.testing.assert_allclose(b.nngp, a.nngp, rtol=1e-13, atol=0)
    np.testing.assert_allclose(b.ntk, a.ntk, rtol=1e-13, atol=0)


def test_duplicated_image_gives_identical_rows_and_a_symmetric_psd_gram():
    x = RNG.standard_normal((4, 5, 5, 3))
    x = np.concatenate([x, x[1:2]])
    k = reference.layer_kernels(MYRTLE, x)
    for m in k:
        np.testing.assert_array_equal(m[1], m[4])
        np.testing.assert_allclose(m, m.T, rtol=1e-14, atol=0)
        assert np.linalg.eigvalsh(m).min() > -1e-12 * np.abs(m).max()


def test_cross_kernel_blocks_agree_with_the_symmetric_gram():
    x = RNG.standard_normal((5, 4, 4, 2))
    full = reference.layer_kernels(MYRTLE, x)
    cross = reference.layer_kernels(MYRTLE, x[:2], x[2:])
    np.testing.assert_allclose(cross.ntk, full.ntk[:2, 2:], rtol=1e-13, atol=0)
    np.testing.assert_allclose(cross.nngp, full.nngp[:2, 2:], rtol=1e-13, atol=0)


def test_integer_images_are_converted_exactly():
    x = RNG.integers(0, 256, size=(3, 5, 5, 1))
    layers = [L.Conv((3, 3), padding="SAME"), "relu", L.Flatten(), L.Dense()]
    a = reference.layer_kernels(layers, x.astype(np.uint8))
    b = reference.layer_kernels(layers, x.astype(np.float64))
    np.testing.assert_array_equal(a.ntk, b.ntk)


def test_sequences_and_different_grids_under_global_pooling():
    seq1, seq2 = RNG.standard_normal((3, 7, 2)), RNG.standard_normal((2, 5, 2))
    layers = [L.Conv((3,), padding="SAME", W_std=1.2), "relu", L.GlobalAvgPool(), L.Dense()]
    k = reference.layer_kernels(layers, seq1, seq2)
    assert k.ntk.shape == (2 + 1, 2) and np.all(np.isfinite(k.ntk))


# --- bad input ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda: L.Dense(W_std=-1.0), ValueError, "Dense: W_std"),
        (lambda: L.Dense(b_std=1e200), ValueError, "square overflows"),
        (lambda: L.Dense(W_std="1"), TypeError, "W_std"),
        (lambda: L.Conv(3), TypeError, "filter_shape must be a tuple"),
        (lambda: L.Conv((3, 0)), ValueError, r"filter_shape\[1\] must be >= 1"),
        (lambda: L.Conv((3, 2.5)), TypeError, r"filter_shape\[1\] must be an integer"),
        (lambda: L.Conv(()), ValueError, "filter_shape must have at least one entry"),
        (lambda: L.Conv((3, 3), strides=(1,)), ValueError, "strides must have 2 entries"),
        (lambda: L.Conv((3, 3), padding="same-ish"), ValueError, "padding must be one of"),
        (lambda: L.AvgPool((2, 2), padding=None), ValueError, "padding must be one of"),
        (lambda: L.AvgPool([2, True]), TypeError, r"window_shape\[1\] must be an integer"),
    ],
)
def test_bad_layers(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_layers_are_immutable_comparable_values():
    a = L.Conv([3, 3], padding="same", W_std=2)
    assert a == L.Conv((3, 3), strides=(1, 1), padding="SAME", W_std=2.0) and hash(a) == hash(
        L.Conv((3, 3), padding="SAME", W_std=2)
    )
    assert eval(repr(a), vars(L)) == a
    with pytest.raises(AttributeError):
        a.W_std = 1.0


IMAGES = RNG.standard_normal((3, 4, 4, 2))


@pytest.mark.parametrize(
    "layers, x1, x2, match",
    [
        ([L.Conv((3, 3)), L.GlobalAvgPool()], IMAGES[:, :2, :2], None, "smaller than the window 3"),
        ([L.Conv((3, 3)), L.Flatten()], RNG.standard_normal((3, 5)), None, "needs spatial positions"),
        ([L.Conv((3,)), L.Flatten()], IMAGES, None, "filter_shape has 1 axes, inputs have 2"),
        ([L.AvgPool((2,)), L.Flatten()], IMAGES, None, "AvgPool"),
        ([L.Flatten(), L.Flatten()], IMAGES, None, "readout came before"),
        ([L.Conv((1, 1)), "relu"], IMAGES, None, "end in a scalar state"),
        ([L.Flatten()], IMAGES, IMAGES[:, :3], "equal grids"),
        ([L.GlobalAvgPool()], IMAGES, IMAGES[..., :1], "channels"),
        ([L.GlobalAvgPool()], IMAGES, IMAGES[:, 0], "spatial rank"),
        ([L.GlobalAvgPool()], np.ones((0, 2, 2, 1)), None, "N, C >= 1"),
        (["banana"], RNG.standard_normal((3, 5)), None, "unknown activation"),
    ],
)
def test_bad_networks_and_inputs_name_the_layer(layers, x1, x2, match):
    with pytest.raises(ValueError, match=match):
        reference.layer_kernels(layers, x1, x2)


@pytest.mark.parametrize(
    "bad, error",
    [(IMAGES.astype(complex), TypeError), (np.full((2, 3, 3, 1), np.nan), ValueError), (IMAGES > 0, TypeError)],
)
def test_bad_input_arrays(bad, error):
    with pytest.raises(error, match="x1"):
        reference.layer_kernels([L.GlobalAvgPool()], bad)

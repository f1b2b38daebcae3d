"""``ntkcore.serial`` networks in the C++ core (docs/math/7-convolutions.md).

Independent truths: ``tests/data/golden_cnn`` (an independent numpy evaluation and
neural-tangents), the plain-numpy ``reference.layer_kernels`` (itself checked against explicit
position matrices in test_layers.py), the fully-connected core, and exact relations:
duplicated and rescaled images (ReLU without bias is positively homogeneous), circular shifts.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import ntkcore
import numpy as np
import pytest
from ntkcore import layers as L
from ntkcore import reference
from ntkcore.activations import Erf, Gelu, LeakyRelu, Sin
from test_layers import _from_index, _natural_error

DATA = Path(__file__).resolve().parent / "data" / "golden_cnn"
RNG = np.random.default_rng(11)


@pytest.mark.parametrize("name", sorted(json.loads((DATA / "index.json").read_text())["configs"]))
def test_golden_cnn(name):
    cfg = json.loads((DATA / "index.json").read_text())["configs"][name]
    inputs, values = np.load(DATA / "inputs.npz"), np.load(DATA / f"{name}.npz")
    net = ntkcore.serial(*_from_index(cfg["layers"]))
    for s in cfg["sets"]:
        got = net.kernels(inputs["R"][:6], inputs["R"][4:]) if s == "X" else net.kernels(inputs[s])
        for kind in ("nngp", "ntk"):
            assert _natural_error(getattr(got, kind), values[f"ref_{kind}_{s}"]) <= 1e-13, (s, kind)


ARCHITECTURES = {
    "strided-erf-pool": [
        L.Conv((3, 3), strides=(2, 1), padding="SAME", W_std=1.3, b_std=0.2),
        Erf(a=1.2, b=0.8),
        L.AvgPool((2, 2), padding="CIRCULAR"),
        L.Conv((2, 2), W_std=1.1, b_std=0.3),
        Gelu(),
        L.GlobalAvgPool(),
        L.Dense(1.2, 0.1),
        "relu",
        L.Dense(1.0, 0.2),
    ],
    "circular-flatten": [
        L.Conv((3, 3), padding="CIRCULAR", W_std=1.3, b_std=0.2),
        "abs",
        L.Dense(1.1, 0.3),
        L.Conv((3, 3), padding="SAME"),
        Sin(b=0.7, c=0.3),
        L.Flatten(),
        L.Dense(1.2, 0.1),
    ],
    "valid-pool-stride": [
        L.Conv((2, 3), W_std=1.5),
        LeakyRelu(0.1),
        L.AvgPool((2, 2), strides=(2, 2), padding="SAME"),
        L.Conv((1, 1), W_std=1.2, b_std=0.5),
        "relu",
        L.GlobalAvgPool(),
        L.Dense(),
    ],
}


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_against_the_reference(name):
    layers = ARCHITECTURES[name]
    net = ntkcore.serial(*layers)
    x = RNG.standard_normal((5, 7, 6, 2))
    for a, b in ((x, None), (x[:2], x[2:])):
        got, want = net.kernels(a, b), reference.layer_kernels(layers, a, b)
        assert _natural_error(got.nngp, want.nngp) <= 1e-12
        assert _natural_error(got.ntk, want.ntk) <= 1e-12
    diag = net.diagonal(x)
    want = reference.layer_kernels(layers, x)
    np.testing.assert_allclose(diag.ntk, np.diag(want.ntk), rtol=1e-13)
    np.testing.assert_allclose(diag.nngp, np.diag(want.nngp), rtol=1e-13)


def test_sequences_against_the_reference():
    layers = [
        L.Conv((3,), padding="SAME", W_std=1.4, b_std=0.1),
        "relu",
        L.AvgPool((2,), strides=(2,)),
        L.Conv((2,), padding="CIRCULAR", W_std=1.2),
        Erf(),
        L.GlobalAvgPool(),
        L.Dense(1.1, 0.2),
    ]
    x1, x2 = RNG.standard_normal((4, 9, 3)), RNG.standard_normal((3, 7, 3))
    got, want = ntkcore.serial(*layers).kernels(x1, x2), reference.layer_kernels(layers, x1, x2)
    assert _natural_error(got.ntk, want.ntk) <= 1e-12 and _natural_error(got.nngp, want.nngp) <= 1e-12


def test_dense_lists_equal_the_fully_connected_core():
    x = RNG.standard_normal((9, 6))
    fc = ntkcore.FullyConnected(2, "gelu", W_std=[1.3, 0.9, 1.1], b_std=[0.2, 0.0, 0.4])
    net = ntkcore.serial(L.Dense(1.3, 0.2), "gelu", L.Dense(0.9, 0.0), "gelu", L.Dense(1.1, 0.4))
    for a, b in ((x, None), (x[:4], x[4:])):
        want, got = fc.kernels(a, b), net.kernels(a, b)
        np.testing.assert_allclose(got.nngp, want.nngp, rtol=1e-14)
        np.testing.assert_allclose(got.ntk, want.ntk, rtol=1e-14)


@pytest.mark.parametrize("activation", ["relu", Erf(a=1.5, b=0.7, c=0.1), Sin(c=0.3), "sign"])
def test_fully_connected_is_its_layer_list_on_the_scalar_engine(activation):
    """FullyConnected.layers is Dense, phi, ..., Dense; serial of it runs on the fused scalar
    engine, so the numbers are the same bit for bit (the general engine differs by rounding)."""
    fc = ntkcore.FullyConnected(3, activation, W_std=[1.3, 0.9, 1.1, 1.2], b_std=[0.2, 0.0, 0.4, 0.1])
    layers = fc.layers
    assert layers[0] == L.Dense(1.3, 0.2) and layers[-1] == L.Dense(1.2, 0.1) and len(layers) == 7
    assert layers[1] == layers[3] == layers[5] == fc.activation
    assert fc.as_serial() == ntkcore.serial(*layers)
    x = RNG.standard_normal((70, 6))
    for a, b in ((x, None), (x[:30], x[30:])):
        for dtype in (np.float64, np.float32):
            want, got = fc.kernels(a, b, dtype=dtype), fc.as_serial().kernels(a, b, dtype=dtype)
            np.testing.assert_array_equal(got.nngp, want.nngp)
            np.testing.assert_array_equal(got.ntk, want.ntk)


def test_dense_chains_with_per_layer_activations_take_the_general_engine():
    x = RNG.standard_normal((8, 5))
    net = ntkcore.serial(L.Dense(1.2, 0.1), "relu", L.Dense(0.9, 0.3), Erf(), L.Dense(1.1, 0.2))
    got, want = net.kernels(x), reference.layer_kernels(net.layers, x)
    assert _natural_error(got.ntk, want.ntk) <= 1e-12 and _natural_error(got.nngp, want.nngp) <= 1e-12


def test_standard_parameterization_has_no_layer_list():
    fc = ntkcore.FullyConnected(2, "relu", parameterization="standard", widths=8)
    with pytest.raises(ValueError, match="NTK parameterization"):
        _ = fc.layers
    with pytest.raises(ValueError, match="NTK parameterization"):
        fc.as_serial()


def test_one_position_conv_network_equals_the_fully_connected_network():
    x = RNG.standard_normal((7, 5))
    fc = ntkcore.FullyConnected(2, "relu", W_std=[1.3, 1.3, 0.8], b_std=[0.2, 0.2, 0.1])
    conv = L.Conv((3, 3), padding="CIRCULAR", W_std=1.3, b_std=0.2)
    net = ntkcore.serial(conv, "relu", conv, "relu", L.GlobalAvgPool(), L.Dense(0.8, 0.1))
    want, got = fc.kernels(x), net.kernels(x[:, None, None, :])
    np.testing.assert_allclose(got.nngp, want.nngp, rtol=1e-14)
    np.testing.assert_allclose(got.ntk, want.ntk, rtol=1e-14)


GAP_RELU = ntkcore.serial(
    L.Conv((3, 3), padding="SAME", W_std=2**0.5),
    "relu",
    L.Conv((3, 3), padding="SAME", W_std=2**0.5),
    "relu",
    L.Conv((3, 3), padding="SAME", W_std=2**0.5),
    "relu",
    L.GlobalAvgPool(),
    L.Dense(W_std=2**0.5),
)


def test_duplicated_and_rescaled_images_are_exact():
    """ReLU without biases: K(a x, x) = a K(x, x); the plain evaluation loses ~7e-10 on the
    rescaled pairs (reference.layer_kernels, measured)."""
    x = RNG.standard_normal((3, 6, 6, 1))
    pairs = np.concatenate([x, x, 3.0 * x])
    k = GAP_RELU.kernels(pairs)
    diag = GAP_RELU.diagonal(x)
    for name in ("nngp", "ntk"):
        m = getattr(k, name)
        own = getattr(diag, name)
        np.testing.assert_allclose(np.diag(m[:3, 3:6]), own, rtol=1e-14)
        np.testing.assert_allclose(np.diag(m[:3, 6:]), 3.0 * own, rtol=1e-14)
        np.testing.assert_array_equal(m[:3, :3], m[3:6, 3:6])
    cross = GAP_RELU.kernels(x, 3.0 * x)
    np.testing.assert_allclose(np.diag(cross.ntk), 3.0 * diag.ntk, rtol=1e-14)


def test_symmetric_psd_thread_invariant_and_blocks():
    x = RNG.standard_normal((8, 5, 5, 2))
    net = ntkcore.serial(*ARCHITECTURES["circular-flatten"])
    one, two = net.kernels(x, n_threads=1), net.kernels(x, n_threads=2)
    cross = net.kernels(x[:3], x[3:])
    for name in ("nngp", "ntk"):
        m = getattr(one, name)
        np.testing.assert_array_equal(m, getattr(two, name))
        np.testing.assert_array_equal(m, m.T)
        assert np.linalg.eigvalsh(m).min() > -1e-13 * np.abs(m).max()
        np.testing.assert_allclose(getattr(cross, name), m[:3, 3:], rtol=1e-14, atol=0)


def test_global_pool_invariance_to_circular_shifts():
    net = ntkcore.serial(
        L.Conv((3, 3), padding="CIRCULAR", W_std=1.4, b_std=0.1),
        "relu",
        L.AvgPool((2, 2), padding="CIRCULAR"),
        L.Conv((3, 3), padding="CIRCULAR", W_std=1.4),
        Erf(),
        L.GlobalAvgPool(),
        L.Dense(),
    )
    x = RNG.standard_normal((4, 6, 5, 2))
    a, b = net.kernels(x), net.kernels(x, np.roll(x, (1, 3), axis=(1, 2)))
    np.testing.assert_allclose(b.ntk, a.ntk, rtol=1e-13)
    np.testing.assert_allclose(b.nngp, a.nngp, rtol=1e-13)


def test_float32_and_integer_inputs():
    x = RNG.integers(0, 17, size=(5, 8, 8, 1))
    k64 = GAP_RELU.kernels(x.astype(np.float64))
    np.testing.assert_array_equal(GAP_RELU.kernels(x.astype(np.uint8)).ntk, k64.ntk)
    k32 = GAP_RELU.kernels(x.astype(np.float32))
    assert k32.ntk.dtype == np.float32
    np.testing.assert_allclose(k32.ntk, k64.ntk, rtol=2e-5)


def test_value_semantics():
    net = ntkcore.serial(*ARCHITECTURES["strided-erf-pool"])
    again = ntkcore.serial(*ARCHITECTURES["strided-erf-pool"])
    assert net == again and hash(net) == hash(again)
    assert pickle.loads(pickle.dumps(net)) == net
    assert eval(repr(net), {"serial": ntkcore.serial, **vars(L), **vars(ntkcore.activations)}) == net
    assert ntkcore.serial(L.Dense(), "relu", L.Dense()).layers[1] == ntkcore.activations.Relu()


IMAGES = RNG.standard_normal((3, 4, 4, 2))


@pytest.mark.parametrize(
    "layers, x1, x2, error, match",
    [
        ([L.Conv((5, 5)), L.GlobalAvgPool()], IMAGES, None, ValueError, r"layer 0 \(Conv\).*smaller than the window"),
        ([L.Conv((3,)), L.Flatten()], IMAGES, None, ValueError, "layer 0 .* has 1 spatial axes, the inputs have 2"),
        ([L.Conv((3, 3)), L.Flatten()], RNG.standard_normal((3, 5)), None, ValueError, "the inputs have 0"),
        ([L.Dense(), L.Flatten()], RNG.standard_normal((3, 5)), None, ValueError, r"layer 1 \(Flatten\) needs spatial"),
        ([L.GlobalAvgPool(), L.Flatten()], IMAGES, None, ValueError, r"layer 1 \(Flatten\) needs spatial"),
        ([L.Conv((1, 1)), "relu"], IMAGES, None, ValueError, "must end in a readout"),
        ([L.Flatten()], IMAGES, IMAGES[:, :3], ValueError, r"layer 0 \(Flatten\) needs equal grids"),
        ([L.GlobalAvgPool()], IMAGES, IMAGES[..., :1], ValueError, "channels"),
        ([L.GlobalAvgPool()], IMAGES, IMAGES[:, 0], ValueError, "spatial rank"),
        ([L.GlobalAvgPool()], np.ones((2, 2, 2, 2, 1)), None, ValueError, r"\(N, H, W, C\)"),
        ([L.GlobalAvgPool()], IMAGES.astype(complex), None, TypeError, "complex"),
        ([L.GlobalAvgPool()], np.full((2, 3, 3, 1), np.inf), None, ValueError, "x1 must be finite"),
    ],
)
def test_bad_networks_and_inputs(layers, x1, x2, error, match):
    with pytest.raises(error, match=match):
        ntkcore.serial(*layers).kernels(x1, x2)


def test_bad_layer_entries():
    with pytest.raises(TypeError, match=r"layer 1: expected an ntkcore\.layers value"):
        ntkcore.serial(L.Dense(), 3.0)
    with pytest.raises(ValueError, match="unknown activation"):
        ntkcore.serial(L.Dense(), "banana")
    with pytest.raises(ValueError, match="at least one layer"):
        ntkcore.serial()
    with pytest.raises(TypeError, match="dtype"):
        GAP_RELU.kernels(IMAGES, dtype=np.int32)
    with pytest.raises(ValueError, match="n_threads"):
        GAP_RELU.kernels(IMAGES, n_threads=0)


def test_float32_range_is_explained_or_warned():
    """As for FullyConnected: the float64 diagonal tells an overflow's scale and an underflow."""
    net = ntkcore.serial(L.Conv((1, 1), W_std=4.0), "relu", L.GlobalAvgPool(), L.Dense(W_std=4.0))
    big = np.full((2, 3, 3, 1), 3e18, dtype=np.float32)
    with pytest.raises(OverflowError, match=r"float32's largest 3.4e\+38.*mean square is up to 9e\+36"):
        net.kernels(big)
    with pytest.raises(OverflowError, match="float32's largest"):
        net.diagonal(big)
    deep = ntkcore.serial(*[L.Dense(), "relu"] * 140, L.Dense())  # K(x, x) = 2^-140 q
    with pytest.warns(RuntimeWarning, match="float32 kernels underflow.*dtype=numpy.float64"):
        deep.kernels(np.ones((2, 3), dtype=np.float32))
    np.testing.assert_allclose(deep.diagonal(np.ones((2, 3))).nngp, [2.0**-140] * 2, rtol=1e-13)

"""Properties every kernel must have, on random inputs (hypothesis) and every activation."""

import ntkcore
import numpy as np
import pytest
from cases import ACTIVATIONS
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from kernel_checks import natural_scale
from ntkcore import _native


@st.composite
def problems(draw, max_points=30):
    n = draw(st.integers(1, max_points))
    d = draw(st.integers(1, 8))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)) * draw(st.sampled_from([1e-3, 1.0, 30.0]))
    if n > 3 and draw(st.booleans()):  # duplicate, rescaled, negated and zero rows
        x[1] = x[0]
        x[2] = -2.5 * x[0]
        x[3] = 0.0
    depth = draw(st.integers(0, 6))
    w = draw(st.floats(0.3, 2.5))
    b = draw(st.sampled_from([0.0, 0.05, 1.0]))
    activation = draw(st.sampled_from(ACTIVATIONS))
    return ntkcore.FullyConnected(depth, activation, W_std=w, b_std=b), x


@settings(max_examples=150, deadline=None)
@given(problems())
def test_symmetric_psd_and_consistent_diagonal(problem):
    net, x = problem
    assert_gram_properties(net, x)


def assert_gram_properties(net, x):
    """Finite, exactly symmetric, PSD and Cauchy-Schwarz to rounding, diagonal = net.diagonal."""
    k = net.kernels(x)
    diag = net.diagonal(x)
    for name in ("nngp", "ntk"):
        g = getattr(k, name)
        assert np.isfinite(g).all()
        np.testing.assert_array_equal(g, g.T)
        np.testing.assert_array_equal(np.diag(g), getattr(diag, name))
        eig = np.linalg.eigvalsh(g)
        assert eig[0] >= -1e-12 * max(abs(eig[-1]), np.finfo(float).tiny)
        # Cauchy-Schwarz, with rounding room.
        assert np.all(np.abs(g) <= natural_scale(np.diag(g)) * (1 + 1e-12) + 1e-300)


@settings(max_examples=60, deadline=None)
@given(problems(), st.integers(1, 29))
def test_cross_kernel_is_the_block_of_the_joint_kernel(problem, split):
    net, x = problem
    assume(len(x) >= 2)
    split = min(split, len(x) - 1)
    joint = net.kernels(x)
    cross = net.kernels(x[:split], x[split:])
    for name in ("nngp", "ntk"):
        g = getattr(joint, name)
        tol = 1e-13 * natural_scale(np.diag(g))[:split, split:] + 1e-300
        assert np.all(np.abs(getattr(cross, name) - g[:split, split:]) <= tol)


@pytest.mark.parametrize("activation", ACTIVATIONS, ids=repr)
def test_threads_and_tile_shapes_do_not_change_results(activation):
    rng = np.random.default_rng(7)
    x1, x2 = rng.standard_normal((150, 6)), rng.standard_normal((97, 6))
    net = ntkcore.FullyConnected(4, activation, W_std=1.4, b_std=0.1)
    core = _native.core
    for x_b in (None, x2):
        results = []
        for threads, tiles in [(1, (64, 64)), (2, (64, 64)), (2, (7, 13)), (3, (1, 200)), (1, (200, 1))]:
            results.append(core.gram(net._core_network(), x1, x_b, threads, *tiles))
        # Tile shapes change the GEMM's summation order, so rounding may differ: allow
        # 1e-14 of each entry's natural size sqrt(K(x,x) K(x',x')).
        d1 = net.diagonal(x1)
        d2 = d1 if x_b is None else net.diagonal(x_b)
        for k, t in results[1:]:
            for got, ref, dk, dk2 in ((k, results[0][0], d1.nngp, d2.nngp), (t, results[0][1], d1.ntk, d2.ntk)):
                assert np.all(np.abs(got - ref) <= 1e-14 * np.outer(np.sqrt(dk), np.sqrt(dk2)))


@pytest.mark.parametrize("activation", ACTIVATIONS, ids=repr)
def test_float32_agrees_with_float64(activation):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((80, 10))
    x[1] = x[0]
    x[2] = -x[0]
    net = ntkcore.FullyConnected(5, activation, W_std=1.5, b_std=0.1)
    k64 = net.kernels(x)
    k32 = net.kernels(x.astype(np.float32))
    for name in ("nngp", "ntk"):
        ref = getattr(k64, name)
        err = np.abs(getattr(k32, name) - ref) / natural_scale(np.diag(ref))
        assert err.max() <= 1e-5, err.max()


@pytest.mark.parametrize("isa", _native.available_isas())
def test_every_instruction_set_variant_agrees(isa):
    """The AVX2/AVX-512 builds differ from the baseline by rounding (FMA) only."""
    rng = np.random.default_rng(11)
    x = rng.standard_normal((70, 9))
    x[5] = 3 * x[4]
    for activation in ACTIVATIONS:
        spec = ntkcore.FullyConnected(6, activation, W_std=1.2, b_std=0.3)._core_network()
        out = {}
        for variant in ("baseline", isa):
            out[variant] = _native.load(variant).gram(spec, x, None, 1)
        for a, b in zip(out["baseline"], out[isa]):
            assert np.all(np.abs(a - b) <= 1e-13 * natural_scale(np.diag(a))), activation


def test_zero_rows_are_orthogonal_to_everything():
    """docs/math/3-dual-maps.md: a zero-variance input (zero row, no bias) is treated as orthogonal."""
    x = np.random.default_rng(0).standard_normal((4, 3))
    x[0] = 0.0
    k = ntkcore.FullyConnected(1, "relu", W_std=1.0, b_std=0.0).kernels(x)
    # One hidden ReLU layer: K(0, x') = T(0) = 0 and Theta = K + Tdot(theta = pi/2) * 0 = 0.
    assert np.all(k.nngp[0] == 0) and np.all(k.ntk[0] == 0)
    erf = ntkcore.FullyConnected(2, "erf", W_std=1.0, b_std=0.0).kernels(x)
    assert np.all(np.isfinite(erf.ntk)) and erf.nngp[0, 0] == 0


@pytest.mark.parametrize(
    "activation, W_std",
    [("relu", 1.0), ("relu", 1.9), ("relu", 0.5), ("leaky_relu", 1.3), ("abs", 0.8), ("erf", 1.5), ("sign", 1.2)],
)
def test_depth_1000_stays_finite(activation, W_std):
    """Without rescaling, q1 q2 - c^2 under- or overflows near depth 500 for ReLU."""
    x = np.random.default_rng(5).standard_normal((20, 4))
    k = ntkcore.FullyConnected(1000, activation, W_std=W_std, b_std=0.0).kernels(x)
    for g in k:
        assert np.isfinite(g).all()
    if activation == "relu" and W_std == 1.0:
        # K(x, x) = |x|^2 / d * 2^-1000 exactly for ReLU with W_std = 1 and no bias.
        expected = np.einsum("ij,ij->i", x, x) / 4 * 2.0**-1000
        np.testing.assert_allclose(np.diag(k.nngp), expected, rtol=1e-13)
        assert np.all(k.nngp > 0)

"""The spatial-diagonal path of ``ntkcore.serial`` (docs/math/7-convolutions.md): without pooling, a Flatten
readout needs only Sigma[p, p] at every layer, O(P) per pair and layer.

Independent truths: ``reference.layer_kernels`` (all P x P position pairs in numpy), the same
network with an identity AvgPool((1, 1)) before the readout (which forces the core's full
P x P path), and, for images too large for the full path, constant images, whose kernels
are the fully-connected kernels of their pixels.
"""

from __future__ import annotations

import ntkcore
import numpy as np
import pytest
from ntkcore import layers as L
from ntkcore import reference
from ntkcore.activations import Erf, Gelu, LeakyRelu, Numerical
from test_layers import _natural_error

RNG = np.random.default_rng(31)

FLATTEN_NETS = {
    "same-strided": [
        L.Conv((3, 3), padding="SAME", W_std=1.4, b_std=0.2),
        "relu",
        L.Conv((3, 2), strides=(2, 1), padding="SAME", W_std=1.2, b_std=0.1),
        Erf(a=1.1, b=0.9),
        L.Dense(1.3, 0.3),
        Gelu(),
    ],
    "valid-circular": [
        L.Conv((2, 3), W_std=1.5),
        LeakyRelu(0.2),
        L.Conv((3, 3), strides=(1, 2), padding="CIRCULAR", W_std=1.1, b_std=0.4),
        "abs",
    ],
    "series": [
        L.Conv((3, 3), padding="CIRCULAR", W_std=1.2, b_std=0.1),
        Numerical("softplus"),
        L.Conv((2, 2), padding="SAME", W_std=1.3),
        "relu",
    ],
}
TAIL = [L.Flatten(), L.Dense(1.1, 0.1), "relu", L.Dense(0.9, 0.2)]


def _close(got, want, tol):
    for name in ("nngp", "ntk"):
        err = _natural_error(getattr(got, name), getattr(want, name))
        assert err <= tol, (name, err)


@pytest.mark.parametrize("name", sorted(FLATTEN_NETS))
def test_the_diagonal_path_equals_the_full_path_and_the_reference(name):
    body = FLATTEN_NETS[name]
    diagonal = ntkcore.serial(*body, *TAIL)
    full = ntkcore.serial(*body, L.AvgPool((1, 1)), *TAIL)  # the identity, on all position pairs
    x = RNG.standard_normal((5, 6, 7, 2))
    for a, b in ((x, None), (x[:2], x[2:])):
        got = diagonal.kernels(a, b)
        _close(got, full.kernels(a, b), 1e-13)
        if name != "series":  # the reference's rule for series is slow; the full path covers it
            _close(got, reference.layer_kernels([*body, *TAIL], a, b), 1e-12)
    np.testing.assert_allclose(diagonal.diagonal(x).ntk, full.diagonal(x).ntk, rtol=1e-14)


def test_sequences_on_the_diagonal_path():
    layers = [L.Conv((3,), padding="SAME", W_std=1.3, b_std=0.1), "relu", L.Conv((2,), W_std=1.2), Erf(), *TAIL]
    x1, x2 = RNG.standard_normal((4, 9, 3)), RNG.standard_normal((3, 9, 3))
    _close(ntkcore.serial(*layers).kernels(x1, x2), reference.layer_kernels(layers, x1, x2), 1e-12)


def test_different_grids_that_meet_at_the_readout():
    """x1 5 x 5 and x2 6 x 6 images reach the same 3 x 3 grid by a stride: no common
    diagonal before that, so the full path (checked against the reference)."""
    layers = [L.Conv((1, 1), strides=(2, 2), W_std=1.3, b_std=0.1), "relu", L.Conv((3, 3), padding="SAME"), *TAIL]
    x1, x2 = RNG.standard_normal((3, 5, 5, 2)), RNG.standard_normal((2, 6, 6, 2))
    _close(ntkcore.serial(*layers).kernels(x1, x2), reference.layer_kernels(layers, x1, x2), 1e-12)


def test_large_images_cost_only_their_diagonal():
    """128 x 128 images: the full path would need 2^28 position pairs (gigabytes per thread).
    Constant images under circular padding have the same state at every position: the
    fully-connected kernels of their pixels."""
    pixels = RNG.standard_normal((4, 3))
    x = np.broadcast_to(pixels[:, None, None, :], (4, 128, 128, 3))
    net = ntkcore.serial(
        L.Conv((3, 3), padding="CIRCULAR", W_std=1.3, b_std=0.2),
        "relu",
        L.Conv((3, 3), padding="CIRCULAR", W_std=1.2, b_std=0.1),
        Erf(),
        L.Flatten(),
        L.Dense(0.8, 0.1),
    )
    dense = [L.Dense(1.3, 0.2), "relu", L.Dense(1.2, 0.1), Erf(), L.Dense(0.8, 0.1)]
    # Flatten's running sum of 16384 equal terms rounds by up to ~P eps / 2 (measured 3e-13)
    _close(net.kernels(x), reference.layer_kernels(dense, pixels), 1e-12)
    _close(net.kernels(x[:1], x[1:]), reference.layer_kernels(dense, pixels[:1], pixels[1:]), 1e-12)

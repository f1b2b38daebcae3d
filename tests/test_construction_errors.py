"""Out-of-range parameters are refused at construction, naming the parameter (issue 9, item 7)."""

import ntkcore
import numpy as np
import pytest
from ntkcore import activations
from ntkcore.activations import ABRelu, Activation, Cos, Erf, LeakyRelu, Sin


@pytest.mark.parametrize("name", ["W_std", "b_std"])
@pytest.mark.parametrize("value", [1e155, [1.0, 1e200]])
def test_scales_whose_square_overflows(name, value):
    with pytest.raises(ValueError, match=name):
        ntkcore.FullyConnected(1, "relu", **{name: value})


def test_largest_scales_still_accepted():
    net = ntkcore.FullyConnected(1, "relu", W_std=1e150, b_std=1e150)
    assert net.W_std == (1e150, 1e150)


@pytest.mark.parametrize(
    "make, field",
    [
        (lambda: Erf(b=1e200), "b"),
        (lambda: Erf(a=1e200), "a"),
        (lambda: Erf(c=1e200), "c"),
        (lambda: Erf(a=1e100, b=1e100), "a \\* b"),
        (lambda: Sin(b=1e160), "b"),
        (lambda: Sin(a=1e100, b=1e100), "a \\* b"),
        (lambda: Cos(c=1e155), "c"),
        (lambda: ABRelu(a=1e155), "a"),
        (lambda: LeakyRelu(alpha=-1e155), "alpha"),
    ],
)
def test_activation_parameters_whose_square_overflows(make, field):
    with pytest.raises(ValueError, match=field):
        make()


def test_large_erf_parameter_gives_numbers_not_nan():
    k = ntkcore.FullyConnected(2, Erf(b=1e100), W_std=1.0).kernels(np.eye(3))
    assert np.isfinite(k.nngp).all() and np.isfinite(k.ntk).all()


@pytest.mark.parametrize("abstract", [Activation(), Activation])
def test_the_abstract_base_class_is_refused(abstract):
    with pytest.raises(TypeError, match="not a concrete activation"):
        ntkcore.FullyConnected(3, abstract)
    with pytest.raises(TypeError, match="not a concrete activation"):
        activations.get(abstract)

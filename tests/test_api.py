"""The public API: values, conversions, and a clear exception for every kind of bad input."""

import ntkcore
import numpy as np
import pytest
from ntkcore import activations as act


@pytest.fixture
def x():
    return np.random.default_rng(1).standard_normal((12, 5))


NET = ntkcore.FullyConnected(2, "relu", W_std=1.3, b_std=0.2)


# --- FullyConnected as a value ---------------------------------------------------------


def test_architecture_is_an_immutable_comparable_value():
    a = ntkcore.FullyConnected(3, "relu", W_std=1.5, b_std=0.1)
    b = ntkcore.FullyConnected(3, act.Relu(), W_std=[1.5] * 4, b_std=(0.1, 0.1, 0.1, 0.1))
    assert a == b and hash(a) == hash(b)
    assert a != ntkcore.FullyConnected(3, "relu", W_std=1.5, b_std=0.2)
    assert a.W_std == (1.5,) * 4
    with pytest.raises(AttributeError):
        a.depth = 4
    assert eval(repr(a), {"FullyConnected": ntkcore.FullyConnected, **vars(act)}) == a
    per_layer = ntkcore.FullyConnected(1, "erf", W_std=[1.0, 2.0])
    assert eval(repr(per_layer), {"FullyConnected": ntkcore.FullyConnected, **vars(act)}) == per_layer


@pytest.mark.parametrize(
    "name, expected",
    [
        ("relu", act.Relu()),
        ("ReLU", act.Relu()),
        ("leaky_relu", act.LeakyRelu()),
        ("abs", act.Abs()),
        ("erf", act.Erf()),
        ("sigmoid_like", act.SigmoidLike()),
        ("sign", act.Sign()),
        ("identity", act.Identity()),
        ("ab_relu", act.ABRelu()),
        ("sin", act.Sin()),
        ("Cos", act.Cos()),
        ("gelu", act.Gelu()),
        ("rectified_monomial", act.RectifiedMonomial(1)),
    ],
)
def test_activation_names(name, expected):
    assert ntkcore.FullyConnected(1, name).activation == expected


def test_each_activation_class_carries_its_names_and_a_family_of_the_core():
    from ntkcore._native import core

    classes = [cls for cls in act._concrete(act.Activation)]
    names = [name for cls in classes for name in cls.names]
    assert len(names) == len(set(names)), "a name must map to one class"
    for cls in classes:
        for name in cls.names:
            assert type(act.get(name)) is cls
    families = core.activation_families()
    assert {cls.family for cls in classes} == set(families)
    # docs/math: exact hyperparameter gradients exist for these families only (hyper_gradients.hpp)
    exact = {name for name, info in families.items() if info["hyper_gradients"]}
    assert exact == {"ab_relu", "sign", "erf", "sin", "rectified_monomial"}


def test_unknown_activation_suggests_a_name():
    with pytest.raises(ValueError, match="Did you mean 'Relu'"):
        ntkcore.FullyConnected(2, "rellu")
    with pytest.raises(TypeError, match="activation"):
        ntkcore.FullyConnected(2, 3.0)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), "1", None])
def test_activation_parameters_are_checked(bad):
    with pytest.raises((TypeError, ValueError)):
        act.Erf(a=bad)
    with pytest.raises((TypeError, ValueError)):
        act.LeakyRelu(bad)


@pytest.mark.parametrize("depth, error", [(-1, ValueError), (2.5, TypeError), ("3", TypeError), (True, TypeError)])
def test_depth_must_be_a_nonnegative_integer(depth, error):
    with pytest.raises(error, match="depth"):
        ntkcore.FullyConnected(depth)


def test_numpy_integer_depth_is_accepted():
    assert ntkcore.FullyConnected(np.int64(2)).depth == 2


@pytest.mark.parametrize("arg", ["W_std", "b_std"])
@pytest.mark.parametrize(
    "value, error",
    [
        (-1.0, ValueError),
        (float("nan"), ValueError),
        (float("inf"), ValueError),
        ([1.0, 1.0], ValueError),  # depth 2 needs 3 entries
        ([[1.0, 1.0, 1.0]], ValueError),
        ("1", TypeError),
        ([1.0, "a", 1.0], TypeError),
        (None, TypeError),
    ],
)
def test_scales_are_checked(arg, value, error):
    with pytest.raises(error, match=arg):
        ntkcore.FullyConnected(2, **{arg: value})


def test_unknown_parameterization_is_refused():
    with pytest.raises(ValueError, match="parameterization"):
        ntkcore.FullyConnected(2, parameterization="mean_field")


# --- kernels: shapes, dtypes, conversions -----------------------------------------------


def test_kernels_shapes_and_accessors(x):
    k = NET.kernels(x)
    assert isinstance(k, ntkcore.Kernels)
    assert k.nngp.shape == k.ntk.shape == (12, 12)
    cross = NET.kernels(x[:4], x[4:])
    assert cross.ntk.shape == (4, 8)
    np.testing.assert_array_equal(NET.nngp(x[:4], x[4:]), cross.nngp)
    np.testing.assert_array_equal(NET.ntk(x[:4], x[4:]), cross.ntk)
    d = NET.diagonal(x)
    assert d.nngp.shape == d.ntk.shape == (12,)


def test_dtype_follows_the_inputs_unless_given(x):
    assert NET.kernels(x).ntk.dtype == np.float64
    assert NET.kernels(x.astype(np.float32)).ntk.dtype == np.float32
    assert NET.kernels(x.astype(np.float32), x).ntk.dtype == np.float64
    assert NET.kernels(x, dtype=np.float32).ntk.dtype == np.float32
    assert NET.kernels(x, dtype="float32").nngp.dtype == np.float32
    assert NET.diagonal(x.astype(np.float32)).ntk.dtype == np.float32
    assert NET.kernels(x.astype(np.float16)).ntk.dtype == np.float64


def test_array_likes_noncontiguous_and_fortran_inputs_give_the_same_result(x):
    expected = NET.kernels(x)
    for variant in (x.tolist(), np.asfortranarray(x), np.repeat(x, 2, axis=1)[:, ::2]):
        k = NET.kernels(variant)
        np.testing.assert_array_equal(k.ntk, expected.ntk)
        np.testing.assert_array_equal(k.nngp, expected.nngp)


def test_inputs_are_not_modified(x):
    before = x.copy()
    NET.kernels(x, x)
    np.testing.assert_array_equal(x, before)


# --- bad inputs -----------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["x1", "x2"])
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_inputs(x, where, value):
    bad = x.copy()
    bad[3, 2] = value
    args = (bad, x) if where == "x1" else (x, bad)
    with pytest.raises(ValueError, match=rf"{where} must be finite.*\[3, 2\]"):
        NET.kernels(*args)


@pytest.mark.parametrize(
    "bad, error, match",
    [
        (np.ones(5), ValueError, "2-D"),
        (np.ones((2, 3, 4)), ValueError, "2-D"),
        (np.ones((0, 5)), ValueError, "at least one row"),
        (np.ones((4, 0)), ValueError, "at least one row"),
        (np.ones((4, 5), dtype=bool), TypeError, "boolean"),
        (np.ones((4, 5), dtype=np.complex128), TypeError, "complex"),
        (np.ones((4, 5), dtype=object), TypeError, "object"),
        ([[1.0, 2.0], [3.0]], TypeError, "x1"),
        ("abc", TypeError, "x1"),
        (np.array([["a", "b"]]), TypeError, "string"),
    ],
)
def test_bad_x1(bad, error, match):
    with pytest.raises(error, match=match):
        NET.kernels(bad)
    with pytest.raises(error):
        NET.diagonal(bad)


def test_mismatched_feature_dimension(x):
    with pytest.raises(ValueError, match=r"x2 has 4 features.*\(N2, 5\)"):
        NET.kernels(x, x[:, :4])


@pytest.mark.parametrize("dtype", [np.int32, np.complex64, "float16", "banana", object])
def test_bad_dtype(x, dtype):
    with pytest.raises(TypeError, match="dtype"):
        NET.kernels(x, dtype=dtype)


@pytest.mark.parametrize("n_threads, error", [(0, ValueError), (-2, ValueError), (1.5, TypeError), ("2", TypeError)])
def test_bad_n_threads(x, n_threads, error):
    with pytest.raises(error, match="n_threads"):
        NET.kernels(x, n_threads=n_threads)


def test_core_refuses_arrays_it_would_have_to_copy(x):
    """The bindings never convert silently: the Python layer converts once, before."""
    core = ntkcore._native.core
    spec = NET._core_network()
    with pytest.raises(TypeError):
        core.gram(spec, x, x.astype(np.float32), 1)
    with pytest.raises(TypeError):
        core.gram(spec, np.asfortranarray(x), None, 1)
    k, t = core.gram(spec, x, None, 1)
    assert k.flags.c_contiguous and k.flags.writeable and k.flags.owndata is False
    assert k.dtype == t.dtype == np.float64 and k.shape == (12, 12)


@pytest.mark.parametrize("n_threads", [2**31, 2**64, 10**6])
def test_huge_n_threads_is_a_clear_value_error(x, n_threads):
    """Beyond what a C int holds, pybind would otherwise answer "incompatible arguments"."""
    with pytest.raises(ValueError, match=r"n_threads must be in \[1, 4096\]"):
        NET.kernels(x, n_threads=n_threads)


def test_out_of_memory_names_the_outputs_and_their_size():
    points = np.ones((300_000, 2))  # two 300000^2 float64 outputs: 1341 GiB, beyond any test machine
    with pytest.raises(MemoryError, match=r"two 300000 x 300000 float64 outputs need 1.34e\+03 GiB"):
        NET.kernels(points)


# --- float32 range: overflow explained, underflow warned ---------------------------------


def test_float32_overflow_cites_the_float32_limit_and_the_input_scale():
    points = np.full((3, 4), 3e18, dtype=np.float32)  # x.x/d = 9e36: finite in float32
    net = ntkcore.FullyConnected(1, "relu", W_std=4.0)  # Theta(x, x) = 16 q (1 + 8) / 2 ... > 3.4e38
    with pytest.raises(OverflowError, match=r"float32's largest 3.4e\+38.*mean square is up to 9e\+36.*float64"):
        net.kernels(points)
    with pytest.raises(OverflowError, match="float32's largest"):
        net.diagonal(points)
    with pytest.raises(OverflowError, match="float32's largest"):
        net.kernels(points[:1], points)
    k = net.kernels(points, dtype=np.float64)
    assert np.all(np.isfinite(k.ntk)) and k.ntk.max() > np.finfo(np.float32).max


def test_float32_overflow_of_float64_too_keeps_the_core_message():
    with pytest.raises(OverflowError, match="lower W_std or the depth"):
        ntkcore.FullyConnected(2, "relu", W_std=1e100).kernels(np.ones((2, 3), np.float32))


@pytest.mark.parametrize("call", ["kernels", "diagonal", "cross"])
def test_float32_underflow_warns_and_names_float64(call):
    """ReLU at W_std = 1 halves the variance per layer: 2^-200 is below float32's range."""
    net = ntkcore.FullyConnected(200, "relu")
    points = np.ones((3, 4), dtype=np.float32)
    run = {
        "kernels": lambda: net.kernels(points),
        "diagonal": lambda: net.diagonal(points),
        "cross": lambda: net.kernels(points[:1], points),
    }[call]
    with pytest.warns(RuntimeWarning, match=r"float32 kernels underflow: .* as small as 6.22e-61.*dtype=numpy.float64"):
        run()
    exact = 2.0**-200 * 1.0  # K(x, x) = q / 2^depth with q = 1
    assert net.diagonal(points, dtype=np.float64).nngp == pytest.approx([exact] * 3, rel=1e-14)


def test_float32_in_range_does_not_warn():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ntkcore.FullyConnected(20, "relu").kernels(np.ones((3, 4), dtype=np.float32))


@pytest.mark.parametrize("name", ["max_passes", "block_size", "max_basis"])
def test_counts_beyond_the_core_range_are_clear_value_errors(name):
    K = np.eye(4)
    with pytest.raises(ValueError, match=rf"{name} must be in \[1, "):
        ntkcore.eigsh(K, k=1, **{name: 2**64})


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.int64, np.uint64])
def test_integer_inputs_are_converted_exactly(x, dtype):
    counts = np.random.default_rng(3).integers(0, 200, size=(6, 5)).astype(dtype)
    want = NET.kernels(counts.astype(np.float64))
    got = NET.kernels(counts)
    assert got.ntk.dtype == np.float64
    np.testing.assert_array_equal(got.ntk, want.ntk)
    np.testing.assert_array_equal(NET.diagonal(counts).nngp, NET.diagonal(counts.astype(float)).nngp)
    np.testing.assert_array_equal(
        NET.kernels(counts, dtype=np.float32).nngp, NET.kernels(counts.astype(np.float32)).nngp
    )


def test_integers_beyond_the_significand_are_refused():
    big = np.array([[2**53 + 1, 1]], dtype=np.int64)
    with pytest.raises(ValueError, match=r"x1 holds integers beyond \+-2\^53"):
        NET.kernels(big)
    with pytest.raises(ValueError, match=r"beyond \+-2\^24"):
        NET.kernels(np.array([[2**24 + 1, 1]]), dtype=np.float32)

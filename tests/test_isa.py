"""The instruction-set variants of the compiled core (ntkcore._native): each installed one that
this CPU runs loads when NTKCORE_ISA names it and gives the baseline's numbers up to rounding.

Each variant runs in its own interpreter, as a user forcing it would: NTKCORE_ISA is read once,
when ntkcore is first imported.  A build with NTKCORE_NATIVE (one module) has the baseline
only, and then the checks cover that one module.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from ntkcore import _native

# Every binding area: the FC Gram and diagonal, a numerical activation, a CNN (layer
# networks), the eigen solvers on a kernel and on a dense matrix, and the finite network.
SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np
    import ntkcore
    from ntkcore import _native, layers

    rng = np.random.default_rng(3)
    x = rng.standard_normal((40, 7))
    x[4] = 2 * x[3]
    images = rng.standard_normal((6, 5, 5, 2))
    out = {"isa": np.array(_native.isa)}
    for dtype in (np.float64, np.float32):
        name = np.dtype(dtype).name
        xd = x.astype(dtype)
        fc = ntkcore.FullyConnected(4, "erf", W_std=1.3, b_std=0.2)
        out[f"fc_{name}"] = np.stack(fc.kernels(xd))
        out[f"diag_{name}"] = np.stack(fc.diagonal(xd))
        out[f"tanh_{name}"] = np.stack(ntkcore.FullyConnected(2, "tanh", W_std=1.1, b_std=0.1).kernels(xd))
        cnn = ntkcore.serial(layers.Conv((3, 3), padding="SAME", W_std=1.4, b_std=0.1), "relu",
                             layers.GlobalAvgPool(), layers.Dense(W_std=1.0))
        out[f"cnn_{name}"] = np.stack(cnn.kernels(images.astype(dtype)))
        out[f"cnn_diag_{name}"] = np.stack(cnn.diagonal(images.astype(dtype)))
        out[f"eig_{name}"] = ntkcore.eigsh(fc, xd, k=3, return_eigenvectors=False)
        out[f"dense_eig_{name}"] = ntkcore.eigsh(fc.ntk(xd), k=3, return_eigenvectors=False)
        mlp = ntkcore.finite.MLP([7, 16, 16, 2], "relu", W_std=1.4, b_std=0.1, seed=5)
        out[f"finite_{name}"] = mlp.ntk(xd)
        out[f"finite_out_{name}"] = mlp.apply(xd)
        loss, grads = mlp.loss_and_gradient(xd, np.ones((40, 2), dtype))
        flat = [np.ravel(g) for pair in grads for g in pair]
        out[f"finite_grad_{name}"] = np.concatenate([np.asarray([loss], dtype), *flat])
    np.savez(sys.argv[1], **out)
    """
)


def run_variant(isa, path):
    """Runs SCRIPT with NTKCORE_ISA=isa (None: unset) in a new interpreter, which saves its arrays to path."""
    env = {key: value for key, value in os.environ.items() if key != "NTKCORE_ISA"}
    if isa is not None:
        env["NTKCORE_ISA"] = isa
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(path)], env=env, capture_output=True, text=True)
    return proc


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    path = tmp_path_factory.mktemp("isa") / "baseline.npz"
    proc = run_variant("baseline", path)
    assert proc.returncode == 0, proc.stderr
    return dict(np.load(path))


def test_the_widest_variant_loads_by_default(tmp_path):
    assert _native.available_isas()[-1] == "baseline"
    proc = run_variant(None, tmp_path / "default.npz")
    assert proc.returncode == 0, proc.stderr
    assert str(np.load(tmp_path / "default.npz")["isa"]) == _native.available_isas()[0]


@pytest.mark.parametrize("isa", _native.available_isas())
def test_every_variant_loads_and_agrees_with_the_baseline(isa, baseline, tmp_path):
    """Same code, wider vectors: the variants differ by rounding (FMA, summation order) only."""
    proc = run_variant(isa, tmp_path / f"{isa}.npz")
    assert proc.returncode == 0, proc.stderr
    out = dict(np.load(tmp_path / f"{isa}.npz"))
    assert str(out.pop("isa")) == isa
    assert set(out) == set(baseline) - {"isa"}
    for name, values in out.items():
        ref = baseline[name]
        assert values.dtype == ref.dtype and values.shape == ref.shape, name
        # Relative to the largest entry: eigenvalues and kernels are well conditioned here.
        tol = 1e-13 if values.dtype == np.float64 else 1e-5
        scale = np.max(np.abs(ref))
        assert np.max(np.abs(values - ref)) <= tol * scale, (name, np.max(np.abs(values - ref)) / scale)


def test_an_unknown_variant_is_a_clear_error(tmp_path):
    proc = run_variant("sse9", tmp_path / "x.npz")
    assert proc.returncode != 0
    assert "ValueError: NTKCORE_ISA must be one of ['avx2', 'avx512', 'baseline'], got 'sse9'" in proc.stderr


def test_a_variant_the_cpu_cannot_run_is_refused(monkeypatch):
    """On a CPU without AVX2 (here: as best_isa() says), neither wider module is imported."""
    monkeypatch.setattr(_native._baseline, "best_isa", lambda: "baseline")
    assert _native.available_isas() == ["baseline"]
    for isa in ("avx2", "avx512"):
        with pytest.raises(ImportError, match=f"the {isa} variant is not installed or this CPU cannot run it"):
            _native.load(isa)
    assert _native.load("baseline") is _native._baseline


def test_a_missing_variant_is_refused_in_a_subprocess(tmp_path):
    """Forcing a variant that is not installed (NTKCORE_NATIVE builds) or that this CPU lacks fails at import."""
    missing = [isa for isa in ("avx2", "avx512") if isa not in _native.available_isas()]
    if not missing:
        pytest.skip("every variant is installed and runs on this CPU (covered by the monkeypatched test)")
    proc = run_variant(missing[0], tmp_path / "x.npz")
    assert proc.returncode != 0
    assert f"ImportError: ntkcore: the {missing[0]} variant is not installed" in proc.stderr

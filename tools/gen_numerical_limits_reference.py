"""High-precision per-point kernels for the Gauss-Hermite family at large variances (issue 9).

For x with |x|^2 / d = 1, K(x, x) and Theta(x, x) of FullyConnected(depth, phi, W_std, b_std=0.1)
follow the 1-D diagonal recursion of docs/math/2-recursion.md: q <- W^2 E[phi(sqrt(q) z)^2] + b^2 and
Theta <- q_new + W^2 E[phi'(sqrt(q) z)^2] Theta, z ~ N(0, 1).  Each expectation is an mpmath
tanh-sinh quadrature at 20 digits, split at 0 and at +-4^k / sqrt(q) so that the features of
width 1 / sqrt(q) (tanh and erf approach a step, softplus, silu and gelu a kink) fall on
segment ends; mpmath's error estimate must stay below 1e-15 relative.  Nothing here uses
ntkcore.  Writes tests/data/numerical_limits_reference.json (every depth 1..10 of each chain;
tanh and erf also with b_std = 0); takes ~8 minutes on two cores.

    python tools/gen_numerical_limits_reference.py
"""

import json
import multiprocessing
import pathlib

from mpmath import mp, mpf

mp.dps = 20
DEPTH, B_STD = 10, 0.1
W_STDS = [0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 100.0]
ODD = ("tanh", "erf")  # also with b_std = 0, where K(x, -x) follows from the same expectations


def sigmoid(x):
    return 1 / (1 + mp.exp(-x))


FUNCTIONS = {
    "tanh": (mp.tanh, lambda x: 1 / mp.cosh(x) ** 2),
    "sigmoid": (sigmoid, lambda x: sigmoid(x) * sigmoid(-x)),
    "softplus": (lambda x: mp.log1p(mp.exp(x)) if x < 0 else x + mp.log1p(mp.exp(-x)), sigmoid),
    "silu": (lambda x: x * sigmoid(x), lambda x: sigmoid(x) * (1 + x * sigmoid(-x))),
    "gelu": (lambda x: x * mp.ncdf(x), lambda x: mp.ncdf(x) + x * mp.npdf(x)),
    "erf": (mp.erf, lambda x: 2 / mp.sqrt(mp.pi) * mp.exp(-x * x)),
}


def expectation(f, s):
    """E[f(s z)^2], z ~ N(0, 1), split at 0 and +-4^k / s inside |z| < 12."""
    cuts = [mpf(0)]
    t = 1 / s
    while t < 12:
        cuts.append(t)
        t *= 4
    points = [-mp.inf] + [-c for c in reversed(cuts[1:])] + cuts + [mp.inf]
    value, error = mp.quad(lambda z: f(s * z) ** 2 * mp.npdf(z), points, error=True)
    assert error <= mpf("1e-15") * abs(value), (value, error)
    return value


def chain(name, w_std, b_std=B_STD):
    phi, dphi = FUNCTIONS[name]
    w2, b2 = mpf(w_std) ** 2, mpf(b_std) ** 2
    q = w2 + b2
    theta = q
    out = []
    for _ in range(DEPTH):
        s = mp.sqrt(q)
        k, kd = expectation(phi, s), expectation(dphi, s)
        q_next = w2 * k + b2
        theta = q_next + w2 * kd * theta
        q = q_next
        out.append({"nngp": mp.nstr(q, 20), "ntk": mp.nstr(theta, 20)})
    return out


def _job(args):
    return args, chain(*args)


def main():
    jobs = [(name, w) for name in FUNCTIONS for w in W_STDS]
    jobs += [(name, w, 0.0) for name in ODD for w in W_STDS]
    with multiprocessing.Pool(2) as pool:
        results = dict(pool.map(_job, jobs))
    ref = {
        "b_std": B_STD,
        "input_variance": 1.0,
        "W_std": W_STDS,
        "activations": {name: {str(w): results[name, w] for w in W_STDS} for name in FUNCTIONS},
        "odd_without_bias": {name: {str(w): results[name, w, 0.0] for w in W_STDS} for name in ODD},
    }
    path = pathlib.Path(__file__).resolve().parent.parent / "tests" / "data" / "numerical_limits_reference.json"
    path.write_text(json.dumps(ref, indent=1) + "\n")


if __name__ == "__main__":
    main()

"""High-precision reference kernels for the Gauss-Hermite family (issue: every activation).

Computes, with mpmath at 25 significant digits, the NNGP and NTK of a depth-3 network
(W_std = 1.5, b_std = 0.1) with the smooth activations tanh, gelu, softplus and silu on
Gaussian inputs in d = 64: a generic pair, a pair whose input correlation is within ~1e-9
of +1 and one within ~1e-9 of -1, and every point's diagonal.  Each expectation
E[f(u) g(v)] is a nested integral over independent standard normals,
u = sqrt(q1) z1, v = (c / sqrt(q1)) z1 + sqrt(q2 - c^2 / q1) z2, by a 24-node
Gauss-Legendre rule on each unit interval of [-11, 11] (the Gaussian tail beyond is
< 1e-26).  The integrands' nearest complex singularities (tanh, sigmoid: poles at
Im = pi / (2 sqrt(q)) >= 0.8 for the variances q <= 3.5 met here) bound the rule's
error on a unit interval by ~3.6^-48 < 1e-25.  Nothing here uses ntkcore.  Writes
tests/data/numerical_reference.json; takes a few minutes (faster with gmpy2 installed).

    python tools/gen_numerical_reference.py
"""

import json
import pathlib

import numpy as np
from mpmath import mp, mpf
from mpmath.calculus.quadrature import GaussLegendre

mp.dps = 25
DEPTH, W_STD, B_STD = 3, 1.5, 0.1


def gelu(x):
    return x * mp.ncdf(x)


def sigmoid(x):
    return 1 / (1 + mp.exp(-x))


FUNCTIONS = {
    "tanh": (mp.tanh, lambda x: 1 / mp.cosh(x) ** 2),
    "gelu": (gelu, lambda x: mp.ncdf(x) + x * mp.npdf(x)),
    "softplus": (lambda x: mp.log1p(mp.exp(x)), sigmoid),
    "silu": (lambda x: x * sigmoid(x), lambda x: sigmoid(x) * (1 + x * (1 - sigmoid(x)))),
}


def _rule():
    """Nodes and weights times the normal density: 24 Gauss-Legendre nodes per unit interval."""
    base = GaussLegendre(mp).calc_nodes(4, mp.prec)  # 3 * 2^3 = 24 nodes on [-1, 1]
    nodes, weights = [], []
    for left in range(-11, 11):
        for x, w in base:
            z = left + (x + 1) / 2
            nodes.append(z)
            weights.append(w / 2 * mp.npdf(z))
    return nodes, weights


def gauss(f):
    """E[f(z)], z ~ N(0, 1)."""
    return mp.fsum(w * f(z) for z, w in zip(*RULE))


def expect(f, g, q1, q2, c):
    """E[f(u) g(v)] for (u, v) ~ N(0, [[q1, c], [c, q2]])."""
    r = mp.sqrt(q1)
    a = c / r
    s = mp.sqrt(max(q1 * q2 - c * c, 0) / q1)
    return gauss(lambda z1: f(r * z1) * gauss(lambda z2: g(a * z1 + s * z2)))


RULE = _rule()


def kernels(name, x, pairs):
    phi, dphi = FUNCTIONS[name]
    w2, b2 = mpf(W_STD) ** 2, mpf(B_STD) ** 2
    pts = [[mpf(float(v)) for v in row] for row in x]
    d = mpf(x.shape[1])

    def diagonal(p):
        q = w2 * mp.fdot(p, p) / d + b2
        theta = q
        qs = [q]
        for _ in range(DEPTH):
            t = gauss(lambda z, q=q: phi(mp.sqrt(q) * z) ** 2)
            td = gauss(lambda z, q=q: dphi(mp.sqrt(q) * z) ** 2)
            q = w2 * t + b2
            theta = q + w2 * td * theta
            qs.append(q)
        return qs, q, theta

    diag = [diagonal(p) for p in pts]
    out = {"diag_nngp": [float(v[1]) for v in diag], "diag_ntk": [float(v[2]) for v in diag], "pairs": []}
    for i, j in pairs:
        c = w2 * mp.fdot(pts[i], pts[j]) / d + b2
        theta = c
        for layer in range(DEPTH):
            q1, q2 = diag[i][0][layer], diag[j][0][layer]
            t = expect(phi, phi, q1, q2, c)
            td = expect(dphi, dphi, q1, q2, c)
            c = w2 * t + b2
            theta = c + w2 * td * theta
        out["pairs"].append({"i": i, "j": j, "nngp": float(c), "ntk": float(theta)})
        print(name, i, j, float(c), float(theta), flush=True)
    return out


def inputs():
    rng = np.random.default_rng(2026)
    x = rng.standard_normal((4, 64))
    noise = rng.standard_normal(64)
    noise -= (noise @ x[0]) / (x[0] @ x[0]) * x[0]  # orthogonal: 1 - rho = |delta|^2 / 2
    delta = 4.5e-5 * np.linalg.norm(x[0]) / np.linalg.norm(noise)
    x[2] = x[0] + delta * noise
    x[3] = -x[0] + delta * noise
    return x


def main():
    x = inputs()
    pairs = [(0, 1), (0, 2), (0, 3)]
    result = {
        "description": __doc__.split("\n\n")[0],
        "depth": DEPTH,
        "W_std": W_STD,
        "b_std": B_STD,
        "dps": mp.dps,
        "x": x.tolist(),
        "activations": {name: kernels(name, x, pairs) for name in FUNCTIONS},
    }
    path = pathlib.Path(__file__).resolve().parents[1] / "tests" / "data" / "numerical_reference.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    print("wrote", path)


if __name__ == "__main__":
    main()

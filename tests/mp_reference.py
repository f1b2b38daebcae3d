"""High-precision oracle for the tests: the recursion of docs/math/2-recursion.md in mpmath.

Same closed forms as docs/math/3-dual-maps.md, plain formulas, evaluated pair by pair at
``dps`` significant digits (default 50).  The float64 inputs are converted
exactly, so this is the exact kernel of the given float64 points up to the
working precision:

* generic pairs: ~1e-48 relative;
* duplicate rows: exact (c == q1 == q2 bit for bit at every layer, because the
  per-point variances are propagated by the very same ``dual`` call as the
  pair's covariance, so q1 q2 - c^2 is exactly 0);
* negated rows: exact (c == -q, theta == pi);
* zero rows: exact (theta = pi/2 convention);
* rows equal up to a float64 rounding (``fl(2.5 x)``) are truly non-collinear
  by ~1e-16; with q1 q2 - c^2 ~ 1e-32 relative computed at 1e-50, theta keeps
  ~18 digits: NTK error ~1e-34 relative.  Pass ``dps=80`` for more.

Not a test file: imported by the tests (``from mp_reference import mp_kernels``).
"""

from __future__ import annotations

import numpy as np
from mpmath import mp, mpf

__all__ = ["mp_dual", "mp_kernels"]


def mp_dual(family, params, q1, q2, c):
    """(T, Tdot) of docs/math/3-dual-maps.md for mpf arguments, at the current mp precision."""
    a, b, c0 = (mpf(p) for p in params)
    pi = mp.pi
    if family in ("ab_relu", "sign"):
        s = mp.sqrt(max(q1 * q2 - c * c, 0))
        theta = pi / 2 if (s == 0 and c == 0) else mp.atan2(s, c)
        if family == "sign":
            return 1 - 2 * theta / pi, mpf(0)
        m = (a * a + b * b) / 2
        f = (a - b) ** 2 / (2 * pi)
        return f * s + (m - f * theta) * c, m - f * theta
    if family == "erf":
        q1, q2, c = b * b * q1, b * b * q2, b * b * c
        D = mp.sqrt((1 + 2 * q1) * (1 + 2 * q2) - 4 * c * c)
        return a * a * (2 / pi) * mp.atan2(2 * c, D) + c0 * c0, a * a * b * b * (4 / pi) / D
    if family == "sin":
        q1, q2, c = b * b * q1, b * b * q2, b * b * c
        k = mp.cos(2 * c0)
        up, down = mp.exp(c - (q1 + q2) / 2), mp.exp(-c - (q1 + q2) / 2)
        return a * a / 2 * (up - down * k), a * a * b * b / 2 * (up + down * k)
    if family == "gelu":
        P, P1 = q1 * q2, (q1 + 1) * (q2 + 1)
        D = mp.sqrt(P1 - c * c)
        g = mp.atan2(c, D)
        T = c / 4 + ((c * c + P * D * D) / (P1 * D) + c * g) / (2 * pi)
        return T, mpf(1) / 4 + g / (2 * pi) + c / (2 * pi * D) * (1 / D**2 + (1 - P) / P1 + 1)
    if family == "rectified_monomial":
        n = int(a)
        s = mp.sqrt(max(q1 * q2 - c * c, 0))
        theta = pi / 2 if (s == 0 and c == 0) else mp.atan2(s, c)
        J = [pi - theta, mp.sin(theta) + (pi - theta) * mp.cos(theta)]
        for k in range(2, n + 1):
            J.append((2 * k - 1) * mp.cos(theta) * J[k - 1] + (k - 1) ** 2 * mp.sin(theta) ** 2 * J[k - 2])
        R = mp.sqrt(q1 * q2)
        if n == 0:  # the step: T = 0 for a zero-variance input, Tdot = 0 a.e.
            return (J[0] / (2 * pi) if R > 0 else mpf(0)), mpf(0)
        return R**n * J[n] / (2 * pi), n * n * R ** (n - 1) * J[n - 1] / (2 * pi)
    raise NotImplementedError(f"no closed form for activation family {family!r}")


def mp_kernels(net, x1, x2=None, dps=50):
    """NNGP and NTK of ``net`` (an ``ntkcore.FullyConnected``) at ``dps`` digits.

    Parameters
    ----------
    x1 : array_like (N1, d); x2 : array_like (N2, d) or None (means x1).

    Returns
    -------
    (nngp, ntk) : float64 arrays of shape (N1, N2), each entry rounded once from
    the high-precision value.
    """
    symmetric = x2 is None
    x1 = np.asarray(x1, dtype=np.float64)
    x2 = x1 if symmetric else np.asarray(x2, dtype=np.float64)
    family = net.activation.family
    params = net.activation.core_params
    depth = net.depth
    n1, n2 = x1.shape[0], x2.shape[0]
    nngp = np.empty((n1, n2))
    ntk = np.empty((n1, n2))
    with mp.workdps(dps):
        d = mpf(x1.shape[1])
        w2 = [mpf(w) ** 2 for w in net.W_std]
        b2 = [mpf(b) ** 2 for b in net.b_std]
        # n_in of each dense layer in the standard parameterization, None in the NTK one
        fan_in = None if net.parameterization == "ntk" else [x1.shape[1], *list(net.widths)]
        p1 = [[mpf(float(v)) for v in row] for row in x1]
        p2 = p1 if symmetric else [[mpf(float(v)) for v in row] for row in x2]

        def variances(p):
            # q of one point after each Dense layer 0..depth
            q = mp.fdot(p, p) / d
            out = []
            for layer in range(depth + 1):
                q = w2[layer] * q + b2[layer]
                out.append(q)
                if layer < depth:
                    q = mp_dual(family, params, q, q, q)[0]
            return out

        v1 = [variances(p) for p in p1]
        v2 = v1 if symmetric else [variances(p) for p in p2]
        for i in range(n1):
            for j in range(i if symmetric else 0, n2):
                c = mp.fdot(p1[i], p2[j]) / d
                theta = mpf(0)
                for layer in range(depth + 1):
                    if fan_in is not None:  # Theta <- n_in Sigma_old + sigma_w^2 Theta + [b_std > 0]
                        theta = fan_in[layer] * c + w2[layer] * theta + (1 if b2[layer] > 0 else 0)
                    c = w2[layer] * c + b2[layer]
                    if fan_in is None:
                        theta = c + w2[layer] * theta
                    if layer < depth:
                        T, Tdot = mp_dual(family, params, v1[i][layer], v2[j][layer], c)
                        theta = Tdot * theta
                        c = T
                nngp[i, j] = float(c)
                ntk[i, j] = float(theta)
                if symmetric:
                    nngp[j, i] = nngp[i, j]
                    ntk[j, i] = ntk[i, j]
    return nngp, ntk

"""Yardsticks the accuracy tests share: the natural size of a kernel entry and awkward inputs."""

import numpy as np


def natural_scale(diag1, diag2=None):
    """sqrt(K(x, x) K(x', x')) for every pair: the Cauchy-Schwarz bound on |K(x, x')|, the size
    against which an entry's error is measured.  Formed as an outer product of square roots, so
    it does not overflow where the product of the diagonals would."""
    r1 = np.sqrt(np.abs(np.asarray(diag1, dtype=np.float64)))
    r2 = r1 if diag2 is None else np.sqrt(np.abs(np.asarray(diag2, dtype=np.float64)))
    return np.outer(r1, r2)


def natural_error(got, want):
    """max |got - want| / sqrt(want(x, x) want(x', x')) over a symmetric Gram ``want``."""
    return float(np.max(np.abs(got - want) / natural_scale(np.diag(want))))


def awkward_points(n=14, dim=6, seed=0):
    """Gaussian rows plus the inputs where kernels lose accuracy: a zero row, a duplicate, a
    rescaled and a negated copy and, for n >= 12, an anti-collinear pair, a tiny row, and a pair
    that differs in one coordinate by 1e-9."""
    x = np.random.default_rng(seed).standard_normal((n, dim))
    x[1] = 0.0
    x[3] = x[2]
    x[4] = 2.5 * x[2]
    x[5] = -x[2]
    if n >= 12:
        x[6] = -0.3 * x[7]
        x[8] = 1e-6 * x[9]
        x[10] = x[11]
        x[10, 0] += 1e-9
    return x

"""Generate the polynomial used by cpp/include/ntkcore/fast_math.hpp for atan on [0, tan(pi/8)].

atan(u) = u + u * z * g(z), z = u**2, where g(z) = (atan(sqrt z)/sqrt z - 1)/z is analytic
on [0, tan(pi/8)**2] (nearest singularity z = -1).  g is interpolated at Chebyshev points in
50-digit arithmetic, converted to monomials in z, and the relative error of the resulting atan
is measured on a dense grid, again in 50 digits.  Run: python tools/gen_atan_poly.py
"""

import mpmath as mp

mp.mp.dps = 50
ZMAX = mp.tan(mp.pi / 8) ** 2


def g(z):
    if z == 0:
        return mp.mpf(-1) / 3
    r = mp.sqrt(z)
    return (mp.atan(r) / r - 1) / z


def monomial_fit(degree):
    n = degree + 1
    nodes = [ZMAX / 2 * (1 + mp.cos(mp.pi * (k + mp.mpf(1) / 2) / n)) for k in range(n)]
    # Solve the interpolation conditions in the monomial basis at high precision.
    A = mp.matrix([[zk**j for j in range(n)] for zk in nodes])
    b = mp.matrix([g(zk) for zk in nodes])
    return list(mp.lu_solve(A, b))


def max_rel_error(coeffs, as_type):
    worst = mp.mpf(0)
    for i in range(1, 4001):
        u = mp.tan(mp.pi / 8) * i / 4000
        z = u * u
        p = mp.mpf(0)
        for c in reversed(coeffs):
            p = p * z + as_type(c)
        approx = u + u * z * p
        worst = max(worst, abs(approx / mp.atan(u) - 1))
    return worst


if __name__ == "__main__":
    for label, degree, digits in (("double", 10, 17), ("float", 4, 9)):
        coeffs = monomial_fit(degree)
        err = max_rel_error(coeffs, lambda c: mp.mpf(float(c)))
        print(f"{label}: degree {degree}, max relative error of the approximation {mp.nstr(err, 3)}")
        print(",\n".join(f"    {mp.nstr(c, digits, min_fixed=0, max_fixed=0)}" for c in coeffs))

// Branch-free elementary functions for the per-entry loops, written so that the
// compiler can vectorise them (no library calls, selects instead of branches).
#pragma once

#include <cmath>
#include <cstddef>

namespace ntkcore {

template <class T>
struct Constants {
    static constexpr T pi = T(3.141592653589793238462643383279502884L);
    static constexpr T half_pi = T(1.570796326794896619231321691639751442L);
    static constexpr T quarter_pi = T(0.785398163397448309615660845819875721L);
    static constexpr T tan_pi_8 = T(0.414213562373095048801688724209698079L);
};

// atan(u) = u + u z g(z), z = u^2, on 0 <= u <= tan(pi/8).  Coefficients of g from
// tools/gen_atan_poly.py: Chebyshev interpolation in 50 digits; measured relative error
// of atan below 1e-17 (double) and 3e-9 (float).
template <class T>
struct AtanPoly;

template <>
struct AtanPoly<double> {
    static constexpr std::size_t size = 11;
    static constexpr double c[size] = {-3.333333333333333e-1, 1.9999999999995521e-1,  -1.4285714284666543e-1,
                                       1.1111111015256362e-1, -9.0909045781239019e-2, 7.6921831908260866e-2,
                                       -6.664511447381948e-2, 5.8581489128022099e-2,  -5.0854497379402599e-2,
                                       3.9231658295587191e-2, -1.9176887119062259e-2};
};

template <>
struct AtanPoly<float> {
    static constexpr std::size_t size = 5;
    static constexpr float c[size] = {-3.33333318e-1f, 1.99995405e-1f, -1.42639556e-1f, 1.07437315e-1f,
                                      -6.45192821e-2f};
};

template <class T, std::size_t N>
inline T horner(const T (&c)[N], T z) {
    T p = c[N - 1];
    for (std::size_t k = N - 1; k-- > 0;) p = p * z + c[k];
    return p;
}

// atan(lo / hi) for 0 <= lo <= hi (0 when hi = 0), with a single division: arguments above
// tan(pi/8) are reduced through atan(t) = pi/4 + atan((t - 1) / (t + 1)).
template <class T>
inline T atan_ratio(T lo, T hi) {
    const bool reduce = lo > Constants<T>::tan_pi_8 * hi;
    const T num = reduce ? lo - hi : lo;
    const T den = reduce ? lo + hi : hi;
    const T u = num / (den > T(0) ? den : T(1));
    const T z = u * u;
    const T a = u + u * z * horner(AtanPoly<T>::c, z);
    return reduce ? Constants<T>::quarter_pi + a : a;
}

// atan2(y, x) for y, x >= 0, in [0, pi/2]; 0 when both are 0.
template <class T>
inline T atan2_nonneg(T y, T x) {
    const bool steep = y > x;
    const T a = atan_ratio(steep ? x : y, steep ? y : x);
    return steep ? Constants<T>::half_pi - a : a;
}

// Coefficients of sin(t) - t cos(t) = t^3 sum_k (-1)^(k+1) 2k t^(2k-2) / (2k+1)!, k >= 1.
// Nine terms reach double precision for t <= 1 (the tenth is 4e-19 relative).
template <class T>
struct SinMinusTCos {
    static constexpr std::size_t size = 9;
    static constexpr T c[size] = {T(2.0L / 6.0L),
                                  T(-4.0L / 120.0L),
                                  T(6.0L / 5040.0L),
                                  T(-8.0L / 362880.0L),
                                  T(10.0L / 39916800.0L),
                                  T(-12.0L / 6227020800.0L),
                                  T(14.0L / 1307674368000.0L),
                                  T(-16.0L / 355687428096000.0L),
                                  T(18.0L / 121645100408832000.0L)};
};

// sin(t) - t cos(t) for t in [0, pi/2], given sin(t) and cos(t): the series where the
// direct difference would cancel (t < 1), the direct form elsewhere.
template <class T>
inline T sin_minus_t_cos(T t, T sin_t, T cos_t) {
    const T series = t * t * t * horner(SinMinusTCos<T>::c, t * t);
    const T direct = sin_t - t * cos_t;
    return t < T(1) ? series : direct;
}

}  // namespace ntkcore

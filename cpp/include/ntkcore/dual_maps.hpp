// Closed-form dual maps of each activation family (docs/math/3-dual-maps.md), per pair and per point.
//
// A pair's state after a dense layer is (c, d): the covariance c and d = q1 q2 - c^2,
// carried separately so that nearly collinear pairs keep their accuracy (docs/math/3a-collinearity.md),
// plus the NTK value theta.  The per-point variances q1, q2 come from the per-point
// recursion (recursion.hpp).  Each pair map applies one activation and the dense layer
// after it, writing the new (c, d, theta) in place, in the scaled units of recursion.hpp.
//
// After the activation, a pair has covariance c_a, d_a = q1a q2a - c_a^2 and
// dist2_a = q1a + q2a - 2 c_a (the variance of phi(u) - phi(v)); the dense layer maps them by
//     c <- w c_a + b,   d <- w^2 d_a + w b dist2_a,   theta <- (s c_a + o) + w_ntk Tdot theta,
// every term nonnegative, with (s, o) = (w, b) in the NTK parameterization (the first term is
// c) and (n_in, [b_std > 0]) in the standard one (docs/math/2-recursion.md).  The activation writes c_a = Ra
// (1 - h), d_a = Ra^2 h (2 - h), dist2_a = (sqrt q1a - sqrt q2a)^2 + 2 Ra h with Ra = sqrt(q1a q2a), each
// factor evaluated without cancellation.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <vector>

#include "fast_math.hpp"
#include "network.hpp"

namespace ntkcore {

// Constants of the dense layer that follows an activation, in scaled units.
template <class T>
struct DenseStep {
    T w;          // weight variance applied to the activation's output
    T b;          // bias variance
    T w_ntk;      // weight variance applied to the NTK carried through the activation
    T sigma_ntk;  // factor of the activation's covariance in the NTK: w, or n_in (standard)
    T bias_ntk;   // constant of the NTK: b, or [b_std > 0] (standard)
};

// Angles of a pair from R = sqrt(q1 q2), its inverse (0 for R = 0), |c| and d:
// near = R + |c|, far = R - |c| = d / near (no cancellation), and
// phi = min(theta, pi - theta) = 2 atan(s / near) in [0, pi/2] with sin(phi) - phi cos(phi).
// R = 0 (a zero-variance point) yields phi = 0 and zero cosines.
template <class T>
struct PairAngle {
    T cos_phi, one_minus_cos_phi, one_plus_cos_phi, phi, s_term;

    PairAngle(T r, T inv_r, T abs_c, T d) {
        const T s = std::sqrt(d);
        const T near = r + abs_c;
        cos_phi = abs_c * inv_r;
        one_minus_cos_phi = (d / (near > T(0) ? near : T(1))) * inv_r;
        one_plus_cos_phi = near * inv_r;
        phi = T(2) * atan2_nonneg(s, near);
        s_term = sin_minus_t_cos(phi, s * inv_r, cos_phi);
    }
};

// Per-point inputs of one activation layer for the rows (1) and columns (2) of a tile.
template <class T>
struct LayerInputs {
    const T* r1;  // sqrt of the scaled per-point variance before the activation
    const T* r2;
    const T* ir1;  // 1 / r (0 where r = 0)
    const T* ir2;
    const T* q1;  // the scaled per-point variance itself
    const T* q2;
    const T* ra1;  // sqrt of the per-point variance after the activation (erf only)
    const T* ra2;
    T scale;  // true variance = scale * scaled variance
    // Hermite series (hermite_series.hpp) only: coefficient k of phi (coef) and phi' (dcoef)
    // of row i at coef1[k * stride1 + i], of column j at coef2[k * stride2 + j]; when every
    // point shares them, their products a_k^2, b_k^2 in shared_t, shared_tdot instead.
    const T* coef1 = nullptr;
    const T* coef2 = nullptr;
    const T* dcoef1 = nullptr;
    const T* dcoef2 = nullptr;
    std::size_t stride1 = 0, stride2 = 0, terms = 0;
    const T* shared_t = nullptr;
    const T* shared_tdot = nullptr;
};

// The dense layer's d = w^2 d_a + w b dist2_a: both terms are nonnegative, so it never cancels.
template <class T>
inline T dense_gap(T w, T b, T d_a, T dist2_a) {
    return w * w * d_a + w * b * dist2_a;
}

// The dense layer's NTK from the activation's covariance c_a (a pair's or a point's own variance).
template <class T>
inline T dense_ntk(const DenseStep<T>& dense, T c_a, T tdot, T theta) {
    return (dense.sigma_ntk * c_a + dense.bias_ntk) + dense.w_ntk * tdot * theta;
}

template <class T>
inline void dense_step(const DenseStep<T>& dense, T c_a, T d_a, T dist2_a, T tdot, T& c, T& d, T& theta) {
    c = dense.w * c_a + dense.b;
    d = dense_gap(dense.w, dense.b, d_a, dist2_a);
    theta = dense_ntk(dense, c_a, tdot, theta);
}

// What an angle-based activation (ABReLU family, sign) gives for one pair: Ra, the factors
// 1 - h, h and 2 - h of c_a = Ra (1 - h) and d_a = Ra^2 h (2 - h), the first term
// (sqrt q1a - sqrt q2a)^2 of dist2_a = (sqrt q1a - sqrt q2a)^2 + 2 Ra h, and Tdot.
template <class T>
struct AngleMap {
    T ra, one_minus_h, h, two_minus_h, spread2, tdot;
};

// The pair loop of the angle-based activations: computes each pair's angles, asks
// `map(angles, acute, r, r_i, r_j)` for its AngleMap and applies the dense layer.
template <class T, class Map>
void angle_pairs(std::size_t rows, std::size_t cols, const LayerInputs<T>& in, T* c, T* d, T* theta,
                 const DenseStep<T>& dense, Map map) {
    const T *r1 = in.r1, *r2 = in.r2, *ir1 = in.ir1, *ir2 = in.ir2;
    for (std::size_t i = 0; i < rows; ++i) {
        const T ri = r1[i], iri = ir1[i];
        T* ci = c + i * cols;
        T* di = d + i * cols;
        T* ti = theta + i * cols;
#pragma omp simd
        for (std::size_t j = 0; j < cols; ++j) {
            const T r = ri * r2[j];
            const T cij = ci[j];
            const T dij = di[j] > T(0) ? di[j] : T(0);
            const PairAngle<T> g(r, iri * ir2[j], std::abs(cij), dij);
            const AngleMap<T> a = map(g, cij >= T(0), r, ri, r2[j]);
            dense_step(dense, a.ra * a.one_minus_h, a.ra * a.ra * a.h * a.two_minus_h,
                       a.spread2 + T(2) * a.ra * a.h, a.tdot, ci[j], di[j], ti[j]);
        }
    }
}

// phi(x) = a x (x < 0), b x (x >= 0).  With m = (a^2 + b^2)/2, f = (a - b)^2/(2 pi),
// T = m R (1 - h), h = (1 - cos theta) - (f/m)(sin theta - theta cos theta) and
// Tdot = m - f theta.  For theta > pi/2 the same quantities are rewritten in psi = pi - theta
// with kappa = pi f / m: h = (2 - kappa) - (1 - kappa)(1 - cos psi) - (f/m) S(psi),
// 1 - h = (kappa - 1) cos psi + (f/m) S(psi), 2 - h = kappa + (1 - kappa)(1 - cos psi) + (f/m) S(psi),
// Tdot = a b + f psi, so that neither collinear nor anti-collinear pairs cancel.
template <class T>
struct ABRelu {
    T m, f, ratio, kappa, ab;

    explicit ABRelu(const Activation& act)
        : m(T(0.5 * (act.a * act.a + act.b * act.b))),
          f(T((act.a - act.b) * (act.a - act.b) / (2.0 * Constants<double>::pi))),
          ratio(m > T(0) ? f / m : T(0)), kappa(ratio * Constants<T>::pi), ab(T(act.a * act.b)) {}

    static constexpr bool homogeneous = true;  // T(k Sigma) = k T(Sigma)

    // Per point: T(q) = m q, Tdot = m; a zero-variance point counts as orthogonal to
    // itself (docs/math/3-dual-maps.md), Tdot = m - f pi/2 (it only ever multiplies a zero NTK).
    double variance(double q) const { return double(m) * q; }
    double derivative(double q) const {
        return q > 0.0 ? double(m) : double(m) - double(f) * Constants<double>::half_pi;
    }

    void pairs(std::size_t rows, std::size_t cols, const LayerInputs<T>& in, T* c, T* d, T* theta,
               const DenseStep<T>& dense) const {
        const T m = this->m, f = this->f, ratio = this->ratio, kappa = this->kappa, ab = this->ab;
        const T tdot_orthogonal = m - f * Constants<T>::half_pi;
        angle_pairs(
            rows, cols, in, c, d, theta, dense, [=](const PairAngle<T>& g, bool acute, T r, T ri, T rj) {
                const T fs = ratio * g.s_term;
                const T one_minus_cos = g.one_minus_cos_phi;
                AngleMap<T> a;
                a.ra = m * r;
                a.one_minus_h = acute ? g.cos_phi + fs : (kappa - T(1)) * g.cos_phi + fs;
                a.h = acute ? one_minus_cos - fs : (T(2) - kappa) - (T(1) - kappa) * one_minus_cos - fs;
                a.two_minus_h = acute ? g.one_plus_cos_phi + fs : kappa + (T(1) - kappa) * one_minus_cos + fs;
                a.spread2 = m * (ri - rj) * (ri - rj);
                const T tdot_angle = acute ? m - f * g.phi : ab + f * g.phi;
                a.tdot = r > T(0) ? tdot_angle : tdot_orthogonal;
                return a;
            });
    }
};

// phi = sign: T = 1 - 2 theta / pi between two points of nonzero variance (0 otherwise),
// Tdot = 0.  Here Ra is 1 or 0 and h = 2 theta / pi.
template <class T>
struct Sign {
    static constexpr bool homogeneous = false;

    explicit Sign(const Activation&) {}

    double variance(double q) const { return q > 0.0 ? 1.0 : 0.0; }
    double derivative(double) const { return 0.0; }

    void pairs(std::size_t rows, std::size_t cols, const LayerInputs<T>& in, T* c, T* d, T* theta,
               const DenseStep<T>& dense) const {
        const T two_over_pi = T(2) / Constants<T>::pi;
        angle_pairs(rows, cols, in, c, d, theta, dense,
                    [=](const PairAngle<T>& g, bool acute, T, T ri, T rj) {
                        const T small = two_over_pi * g.phi;  // 2 phi / pi in [0, 1]
                        const T in1 = ri > T(0) ? T(1) : T(0);
                        const T in2 = rj > T(0) ? T(1) : T(0);
                        AngleMap<T> a;
                        a.ra = in1 * in2;
                        a.h = acute ? small : T(2) - small;
                        a.two_minus_h = acute ? T(2) - small : small;
                        a.one_minus_h = acute ? T(1) - small : small - T(1);
                        a.spread2 = (in1 - in2) * (in1 - in2);
                        a.tdot = T(0);
                        return a;
                    });
    }
};

// phi(x) = a erf(b x) + c0.  With qi~ = b^2 qi, c~ = b^2 c, d~ = b^4 d and
// den = sqrt(1 + 2(q1~ + q2~) + 4 d~) (never cancels): T = alpha psi + c0^2 with
// alpha = 2 a^2 / pi, psi = atan2(2 c~, den), and Tdot = a^2 b^2 (4/pi) / den.
// On the diagonal psi_i = atan2(2 qi~, Di), Di = sqrt(1 + 4 qi~).
//
// The gap Ra - c_a (Ra = sqrt(q1a q2a)) is formed by subtraction unless it is small next to
// Ra: then a second pass writes it as -(sqrt q1a - sqrt q2a)^2 / 2 + (alpha/2) sum_i (psi_i - psi)
// with psi_i - psi = atan((t_i - t) / (1 + t_i t)), t_i = 2 qi~ / Di, t = 2 c~ / den and
//     qi~ den - c~ Di = (1 + 2 qi~) (qi~ (qi~ - qj~) + d~ (1 + 2 qi~)) / (qi~ den + c~ Di),
// which is exactly 0 for duplicate points, so deep (even chaotic) networks keep them exact.
template <class T>
struct Erf {
    static constexpr bool homogeneous = false;

    double a2, b2, c2;
    T alpha, gamma, tdot_scale;

    explicit Erf(const Activation& act)
        : a2(act.a * act.a), b2(act.b * act.b), c2(act.c * act.c), alpha(T(2.0 * a2 / Constants<double>::pi)),
          gamma(T(c2)), tdot_scale(T(4.0 * a2 * b2 / Constants<double>::pi)) {}

    double variance(double q) const {
        const double qt = b2 * q;
        return 2.0 * a2 / Constants<double>::pi * std::atan2(2.0 * qt, std::sqrt(1.0 + 4.0 * qt)) + c2;
    }
    double derivative(double q) const {
        return 4.0 * a2 * b2 / Constants<double>::pi / std::sqrt(1.0 + 4.0 * b2 * q);
    }

    // psi_i - psi for the point with scaled variance qi (the other one has qj).
    static T angle_gap(T qi, T qj, T ct, T dt, T den) {
        const T di = std::sqrt(T(1) + T(4) * qi);
        const T num = (T(1) + T(2) * qi) * (qi * (qi - qj) + dt * (T(1) + T(2) * qi)) / (qi * den + ct * di);
        return std::atan((T(2) * num / (di * den)) / (T(1) + T(4) * qi * ct / (di * den)));
    }

    void pairs(std::size_t rows, std::size_t cols, const LayerInputs<T>& in, T* c, T* d, T* theta,
               const DenseStep<T>& dense) const {
        const T beta = T(b2) * in.scale;  // b^2 in the scaled units of c, q and d
        const T* q1 = in.q1;
        const T* q2 = in.q2;
        const T* ra1 = in.ra1;
        const T* ra2 = in.ra2;
        const T alpha = this->alpha, gamma = this->gamma, tdot_scale = this->tdot_scale;
        const T close_gap = T(1.0 / 64.0);  // below this fraction of Ra, recompute the gap
        thread_local std::vector<T> c_in, d_in, close;
        c_in.resize(cols);
        d_in.resize(cols);
        close.resize(cols);
        for (std::size_t i = 0; i < rows; ++i) {
            const T qi = beta * q1[i];
            const T rai = ra1[i];
            T* ci = c + i * cols;
            T* di = d + i * cols;
            T* ti = theta + i * cols;
            std::copy(ci, ci + cols, c_in.data());
            std::copy(di, di + cols, d_in.data());
            T* near = close.data();
#pragma omp simd
            for (std::size_t j = 0; j < cols; ++j) {
                const T ct = beta * ci[j];
                const T dt = di[j] > T(0) ? beta * beta * di[j] : T(0);
                const T den = std::sqrt(T(1) + T(2) * (qi + beta * q2[j]) + T(4) * dt);
                const T angle = atan2_nonneg(T(2) * std::abs(ct), den);
                const T c_a = alpha * (ct < T(0) ? -angle : angle) + gamma;
                const T ra = rai * ra2[j];
                const T gap_raw = ra - c_a;
                const T gap = gap_raw > T(0) ? gap_raw : T(0);
                near[j] = (gap_raw < close_gap * ra && ct > T(0)) ? T(1) : T(0);
                const T spread = rai - ra2[j];
                const T sum = ra + c_a > T(0) ? ra + c_a : T(0);
                dense_step(dense, c_a, gap * sum, spread * spread + T(2) * gap, tdot_scale / den, ci[j],
                           di[j], ti[j]);
            }
            for (std::size_t j = 0; j < cols; ++j) {
                if (near[j] == T(0)) continue;
                const T qj = beta * q2[j];
                const T ct = beta * c_in[j];
                const T dt = d_in[j] > T(0) ? beta * beta * d_in[j] : T(0);
                const T den = std::sqrt(T(1) + T(2) * (qi + qj) + T(4) * dt);
                const T c_a = alpha * atan2_nonneg(T(2) * ct, den) + gamma;
                const T spread = rai - ra2[j];
                const T gap_exact =
                    -spread * spread / T(2) +
                    alpha / T(2) * (angle_gap(qi, qj, ct, dt, den) + angle_gap(qj, qi, ct, dt, den));
                const T gap = gap_exact > T(0) ? gap_exact : T(0);
                const T ra = rai * ra2[j];
                di[j] = dense_gap(dense.w, dense.b, gap * (ra + c_a), spread * spread + T(2) * gap);
            }
        }
    }
};

// The dense layer after an activation whose (c_a, Ra = sqrt(q1a q2a)) are known but whose gap
// Ra - c_a is formed by subtraction: d_a and dist2_a then carry an absolute error ~eps Ra^2
// (not cancellation-free, docs/math/3a-collinearity.md).  Only for families whose maps are smooth in d.
template <class T>
inline void subtracted_dense_step(const DenseStep<T>& dense, T c_a, T ra, T spread, T tdot, T& c, T& d,
                                  T& theta) {
    const T gap = ra > c_a ? ra - c_a : T(0);
    const T sum = ra + c_a > T(0) ? ra + c_a : T(0);
    dense_step(dense, c_a, gap * sum, spread * spread + T(2) * gap, tdot, c, d, theta);
}

// phi(x) = a sin(b x + c0).  With x_i = b^2 q_i, y = b^2 c, m = (x1 + x2)/2 and
// 1 -+ cos(2 c0) = 2 sin^2 c0, 2 cos^2 c0, the forms of docs/math/3-dual-maps.md read
//     T = a^2 (e^{-m} sinh y + sin^2 c0 e^{-y-m}),   Tdot = a^2 b^2 (e^{-m} sinh y + cos^2 c0 e^{-y-m}),
// whose two terms are each bounded by the natural scale sqrt(T(q1) T(q2)), and
// e^{-m} sinh y = e^{-m} (expm1(y) - expm1(-y)) / 2 for |y| < 1 keeps small variances
// relatively accurate.  Per point T(q) = a^2 (-expm1(-2x)/2 + sin^2 c0 e^{-2x}).
// T and Tdot depend on c alone, never on d, so the subtracted d (subtracted_dense_step)
// never reaches the kernels.  Cos is this family with c0 + pi/2.
template <class T>
struct Sin {
    static constexpr bool homogeneous = false;

    double a2, b2, sin2, cos2;

    explicit Sin(const Activation& act)
        : a2(act.a * act.a), b2(act.b * act.b), sin2(std::sin(act.c) * std::sin(act.c)),
          cos2(std::cos(act.c) * std::cos(act.c)) {}

    double variance(double q) const {
        const double x = b2 * q;
        return a2 * (-0.5 * std::expm1(-2.0 * x) + sin2 * std::exp(-2.0 * x));
    }
    double derivative(double q) const {
        const double x = b2 * q;
        return a2 * b2 * (-0.5 * std::expm1(-2.0 * x) + cos2 * std::exp(-2.0 * x));
    }

    void pairs(std::size_t rows, std::size_t cols, const LayerInputs<T>& in, T* c, T* d, T* theta,
               const DenseStep<T>& dense) const {
        const T beta = T(b2) * in.scale;  // b^2 in the scaled units of c and q
        const T a2 = T(this->a2), a2b2 = T(this->a2 * b2), sin2 = T(this->sin2), cos2 = T(this->cos2);
        for (std::size_t i = 0; i < rows; ++i) {
            const T xi = beta * in.q1[i];
            const T ri = in.r1[i];
            const T rai = in.ra1[i];
            T* ci = c + i * cols;
            T* di = d + i * cols;
            T* ti = theta + i * cols;
#pragma omp simd
            for (std::size_t j = 0; j < cols; ++j) {
                const T y = beta * ci[j];
                const T m = T(0.5) * (xi + beta * in.q2[j]);
                const T tail = std::exp(-y - m);
                // y - m = -(q1 + q2 - 2c) / 2 cancels for nearly collinear pairs of large
                // variance; with c > 0 it is -((r1 - r2)^2 + 2 d / (r1 r2 + c)) / 2 instead.
                const T dij = di[j] > T(0) ? di[j] : T(0);
                const T spread = ri - in.r2[j];
                const T near = ri * in.r2[j] + ci[j];
                const T gap =
                    ci[j] > T(0) ? spread * spread + T(2) * dij / near : in.q1[i] + in.q2[j] - T(2) * ci[j];
                const T sinh_small = T(0.5) * std::exp(-m) * (std::expm1(y) - std::expm1(-y));
                const T sinh_large = T(0.5) * (std::exp(T(-0.5) * beta * gap) - tail);
                const T sinh_term = std::abs(y) < T(1) ? sinh_small : sinh_large;
                subtracted_dense_step(dense, a2 * (sinh_term + sin2 * tail), rai * in.ra2[j], rai - in.ra2[j],
                                      a2b2 * (sinh_term + cos2 * tail), ci[j], di[j], ti[j]);
            }
        }
    }
};

// phi(x) = x Phi(x) (GELU).  With P = q1 q2, P1 = (q1 + 1)(q2 + 1), D^2 = P1 - c^2 =
// 1 + q1 + q2 + d (no cancellation) and g = atan2(c, D) (docs/math/3-dual-maps.md):
//     T = c/4 + ((c^2 + P D^2) / (P1 D) + c g) / (2 pi),
//     Tdot = 1/4 + g/(2 pi) + c/(2 pi D) (1/D^2 + (2 + q1 + q2)/P1),
// the table's 1 + (1 - P)/P1 rewritten as (2 + q1 + q2)/P1.  Per point (d = 0, c = q):
// T = q/4 + (2 q^2 / ((1 + q) D) + q g) / (2 pi), Tdot = 1/4 + g/(2 pi) + q/(2 pi D)(1/D^2 + 2/(1 + q)).
// The maps depend on d only through D^2 >= 1, so the subtracted d of the dense layer
// (error ~eps q1a q2a) moves the kernels by ~eps relative only.
template <class T>
struct Gelu {
    static constexpr bool homogeneous = false;

    explicit Gelu(const Activation&) {}

    double variance(double q) const {
        const double D = std::sqrt(1.0 + 2.0 * q);
        const double g = std::atan2(q, D);
        return q / 4.0 + (2.0 * q * q / ((1.0 + q) * D) + q * g) / (2.0 * Constants<double>::pi);
    }
    double derivative(double q) const {
        const double D = std::sqrt(1.0 + 2.0 * q);
        const double g = std::atan2(q, D);
        return 0.25 + (g + q / D * (1.0 / (D * D) + 2.0 / (1.0 + q))) / (2.0 * Constants<double>::pi);
    }

    void pairs(std::size_t rows, std::size_t cols, const LayerInputs<T>& in, T* c, T* d, T* theta,
               const DenseStep<T>& dense) const {
        const T scale = in.scale;
        const T inv_2pi = T(0.5) / Constants<T>::pi;
        for (std::size_t i = 0; i < rows; ++i) {
            const T qi = scale * in.q1[i];
            const T rai = in.ra1[i];
            T* ci = c + i * cols;
            T* di = d + i * cols;
            T* ti = theta + i * cols;
#pragma omp simd
            for (std::size_t j = 0; j < cols; ++j) {
                const T qj = scale * in.q2[j];
                const T cij = scale * ci[j];
                const T dij = di[j] > T(0) ? scale * scale * di[j] : T(0);
                const T D2 = T(1) + qi + qj + dij;
                const T D = std::sqrt(D2);
                const T P1 = (T(1) + qi) * (T(1) + qj);
                const T angle = atan2_nonneg(std::abs(cij), D);
                const T g = cij < T(0) ? -angle : angle;
                const T c_a = cij / T(4) + ((cij * cij + qi * qj * D2) / (P1 * D) + cij * g) * inv_2pi;
                const T tdot = T(0.25) + (g + cij / D * (T(1) / D2 + (T(2) + qi + qj) / P1)) * inv_2pi;
                subtracted_dense_step(dense, c_a, rai * in.ra2[j], rai - in.ra2[j], tdot, ci[j], di[j],
                                      ti[j]);
            }
        }
    }
};

// phi(x) = max(x, 0)^n, n = 0..4 (n = 0: the step 1[x > 0], phi' = 0 a.e.).  Cho & Saul's
// arc-cosine kernel T = R^n J_n(theta) / (2 pi), R = sqrt(q1 q2), with J_0 = pi - theta,
// J_1 = sin + (pi - theta) cos, J_k = (2k - 1) cos J_{k-1} + (k - 1)^2 sin^2 J_{k-2}, and
// Tdot = dT/dc = n^2 R^{n-1} J_{n-1}(theta) / (2 pi) (phi' = n max(x, 0)^{n-1}).
// T(q) = (2n - 1)!! q^n / 2 = Ra, so 1 - h = J_n / J_n(0), J_n(0) = (2n - 1)!! pi, and
// h = delta_n / J_n(0) with delta_k = J_k(0) - J_k from the recurrence
//     delta_k = (2k - 1) (J_{k-1}(0) (1 - cos) + cos delta_{k-1}) - (k - 1)^2 sin^2 J_{k-2},
// delta_0 = theta, delta_1 = pi (1 - cos) - (sin - theta cos) (acute) or pi - S(pi - theta):
// for small theta its terms are all O(theta^2) and cancel by less than a factor 2, so h
// keeps its relative accuracy (docs/math/3a-collinearity.md); 2 - h = 1 + J_n / J_n(0) >= 1.
// Not homogeneous of degree 1 (degree n), so the family works in true variances; its true
// values must stay in the range of T (deep networks with n >= 2 overflow quickly).
template <class T>
inline T int_power(T x, int n) {
    T p = T(1);
    for (int k = 0; k < n; ++k) p *= x;
    return p;
}

template <class T>
struct RectifiedMonomial {
    static constexpr bool homogeneous = false;

    int n;
    double ra_factor;  // (2n - 1)!! / 2

    explicit RectifiedMonomial(const Activation& act) : n(int(act.a)), ra_factor(0.5) {
        for (int k = 1; k <= n; ++k) ra_factor *= double(2 * k - 1);
    }

    double variance(double q) const {
        if (n == 0) return q > 0.0 ? 0.5 : 0.0;
        return ra_factor * int_power(q, n);
    }
    double derivative(double q) const {
        if (n == 0) return 0.0;
        if (n == 1) return q > 0.0 ? 0.5 : 0.25;  // zero variance: orthogonal, as ReLU
        return double(n * n) * ra_factor / double(2 * n - 1) * int_power(q, n - 1);
    }

    void pairs(std::size_t rows, std::size_t cols, const LayerInputs<T>& in, T* c, T* d, T* theta,
               const DenseStep<T>& dense) const {
        const int n = this->n;
        const T scale = in.scale;
        const T ra_factor = T(this->ra_factor);
        const T pi = Constants<T>::pi;
        const T j0n = ra_factor * T(2) * pi;  // J_n(0)
        const T tdot_factor = T(n * n) / (T(2) * pi);
        const T scale_n = int_power(scale, n);
        angle_pairs(rows, cols, in, c, d, theta, dense,
                    [=](const PairAngle<T>& g, bool acute, T r, T ri, T rj) {
                        const T cos_t = acute ? g.cos_phi : -g.cos_phi;
                        const T omc = acute ? g.one_minus_cos_phi : g.one_plus_cos_phi;
                        const T sin2 = g.one_minus_cos_phi * g.one_plus_cos_phi;
                        const T theta_angle = acute ? g.phi : pi - g.phi;
                        T j_lower = pi - theta_angle, d_lower = theta_angle;   // J_0, delta_0
                        T j_k = acute ? pi * g.cos_phi + g.s_term : g.s_term;  // J_1
                        T d_k = acute ? pi * g.one_minus_cos_phi - g.s_term : pi - g.s_term;
                        T j0_lower = pi;  // J_{k-1}(0)
                        for (int k = 2; k <= n; ++k) {
                            const T odd = T(2 * k - 1), sq = T((k - 1) * (k - 1));
                            const T j_next = odd * cos_t * j_k + sq * sin2 * j_lower;
                            const T d_next = odd * (j0_lower * omc + cos_t * d_k) - sq * sin2 * j_lower;
                            j0_lower *= odd;
                            j_lower = j_k;
                            j_k = j_next;
                            d_k = d_next;
                        }
                        // Now J_n = j_k and J_{n-1} = j_lower for n >= 1; the step uses J_0.
                        const T j_n = n == 0 ? j_lower : j_k, d_n = n == 0 ? d_lower : d_k;
                        // sqrt(q1a) - sqrt(q2a) = sqrt(ra_factor scale^n) (ri^n - rj^n) with
                        // ri^n - rj^n = (ri - rj) sum_k ri^k rj^(n-1-k), or the step's 1[ri > 0] - 1[rj > 0].
                        T sum = T(0), power = T(1);
                        for (int k = 0; k < n; ++k) {
                            sum = sum * rj + power;
                            power *= ri;
                        }
                        const T in1 = ri > T(0) ? T(1) : T(0), in2 = rj > T(0) ? T(1) : T(0);
                        const T spread = n == 0 ? in1 - in2 : (ri - rj) * sum;
                        AngleMap<T> a;
                        a.ra = ra_factor * (n == 0 ? in1 * in2 : int_power(r * scale, n));
                        a.one_minus_h = j_n / j0n;
                        a.h = d_n / j0n;
                        a.two_minus_h = T(1) + a.one_minus_h;
                        a.spread2 = ra_factor * (n == 0 ? T(1) : scale_n) * spread * spread;
                        const T tdot = tdot_factor * (n >= 1 ? int_power(r * scale, n - 1) : T(0)) * j_lower;
                        a.tdot = r > T(0) || n != 1 ? tdot : T(0.25);  // R = 0: orthogonal, as ReLU
                        return a;
                    });
    }
};

}  // namespace ntkcore

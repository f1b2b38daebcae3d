// Closed-form dual maps of each activation family (SPEC sec. 3), per pair and per point.
//
// A pair's state after a dense layer is (c, d): the covariance c and d = q1 q2 - c^2,
// carried separately so that nearly collinear pairs keep their accuracy (SPEC sec. 3a),
// plus the NTK value theta.  The per-point variances q1, q2 come from the per-point
// recursion (recursion.hpp).  Each pair map applies one activation and the dense layer
// after it, writing the new (c, d, theta) in place, in the scaled units of recursion.hpp.
//
// After the activation, a pair has covariance c_a, d_a = q1a q2a - c_a^2 and
// dist2_a = q1a + q2a - 2 c_a (the variance of phi(u) - phi(v)); the dense layer maps them by
//     c <- w c_a + b,   d <- w^2 d_a + w b dist2_a,   theta <- c + w_ntk Tdot theta,
// every term nonnegative.  The activation writes c_a = Ra (1 - h), d_a = Ra^2 h (2 - h),
// dist2_a = (sqrt q1a - sqrt q2a)^2 + 2 Ra h with Ra = sqrt(q1a q2a), each factor
// evaluated without cancellation.
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
    T w;      // weight variance applied to the activation's output
    T b;      // bias variance
    T w_ntk;  // weight variance applied to the NTK carried through the activation
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
    const T* r1;   // sqrt of the scaled per-point variance before the activation
    const T* r2;
    const T* ir1;  // 1 / r (0 where r = 0)
    const T* ir2;
    const T* q1;   // the scaled per-point variance itself
    const T* q2;
    const T* ra1;  // sqrt of the per-point variance after the activation (erf only)
    const T* ra2;
    T scale;       // true variance = scale * scaled variance
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

template <class T>
inline void dense_step(const DenseStep<T>& dense, T c_a, T d_a, T dist2_a, T tdot, T& c, T& d,
                       T& theta) {
    c = dense.w * c_a + dense.b;
    d = dense.w * dense.w * d_a + dense.w * dense.b * dist2_a;
    theta = c + dense.w_ntk * tdot * theta;
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
          ratio(m > T(0) ? f / m : T(0)),
          kappa(ratio * Constants<T>::pi),
          ab(T(act.a * act.b)) {}

    static constexpr bool homogeneous = true;  // T(k Sigma) = k T(Sigma)

    // Per point: T(q) = m q, Tdot = m; a zero-variance point counts as orthogonal to
    // itself (SPEC sec. 3), Tdot = m - f pi/2 (it only ever multiplies a zero NTK).
    double variance(double q) const { return double(m) * q; }
    double derivative(double q) const {
        return q > 0.0 ? double(m) : double(m) - double(f) * Constants<double>::half_pi;
    }

    void pairs(std::size_t rows, std::size_t cols, const LayerInputs<T>& in, T* c, T* d, T* theta,
               const DenseStep<T>& dense) const {
        const T m = this->m, f = this->f, ratio = this->ratio, kappa = this->kappa, ab = this->ab;
        const T tdot_orthogonal = m - f * Constants<T>::half_pi;
        angle_pairs(rows, cols, in, c, d, theta, dense,
                    [=](const PairAngle<T>& g, bool acute, T r, T ri, T rj) {
                        const T fs = ratio * g.s_term;
                        const T one_minus_cos = g.one_minus_cos_phi;
                        AngleMap<T> a;
                        a.ra = m * r;
                        a.one_minus_h = acute ? g.cos_phi + fs : (kappa - T(1)) * g.cos_phi + fs;
                        a.h = acute ? one_minus_cos - fs
                                    : (T(2) - kappa) - (T(1) - kappa) * one_minus_cos - fs;
                        a.two_minus_h = acute ? g.one_plus_cos_phi + fs
                                              : kappa + (T(1) - kappa) * one_minus_cos + fs;
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
        : a2(act.a * act.a),
          b2(act.b * act.b),
          c2(act.c * act.c),
          alpha(T(2.0 * a2 / Constants<double>::pi)),
          gamma(T(c2)),
          tdot_scale(T(4.0 * a2 * b2 / Constants<double>::pi)) {}

    double variance(double q) const {
        const double qt = b2 * q;
        return 2.0 * a2 / Constants<double>::pi * std::atan2(2.0 * qt, std::sqrt(1.0 + 4.0 * qt)) +
               c2;
    }
    double derivative(double q) const {
        return 4.0 * a2 * b2 / Constants<double>::pi / std::sqrt(1.0 + 4.0 * b2 * q);
    }

    // psi_i - psi for the point with scaled variance qi (the other one has qj).
    static T angle_gap(T qi, T qj, T ct, T dt, T den) {
        const T di = std::sqrt(T(1) + T(4) * qi);
        const T num = (T(1) + T(2) * qi) * (qi * (qi - qj) + dt * (T(1) + T(2) * qi)) /
                      (qi * den + ct * di);
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
                dense_step(dense, c_a, gap * sum, spread * spread + T(2) * gap,
                           tdot_scale / den, ci[j], di[j], ti[j]);
            }
            for (std::size_t j = 0; j < cols; ++j) {
                if (near[j] == T(0)) continue;
                const T qj = beta * q2[j];
                const T ct = beta * c_in[j];
                const T dt = d_in[j] > T(0) ? beta * beta * d_in[j] : T(0);
                const T den = std::sqrt(T(1) + T(2) * (qi + qj) + T(4) * dt);
                const T c_a = alpha * atan2_nonneg(T(2) * ct, den) + gamma;
                const T spread = rai - ra2[j];
                const T gap_exact = -spread * spread / T(2) +
                                    alpha / T(2) * (angle_gap(qi, qj, ct, dt, den) +
                                                    angle_gap(qj, qi, ct, dt, den));
                const T gap = gap_exact > T(0) ? gap_exact : T(0);
                const T ra = rai * ra2[j];
                di[j] = dense.w * dense.w * gap * (ra + c_a) +
                        dense.w * dense.b * (spread * spread + T(2) * gap);
            }
        }
    }
};

}  // namespace ntkcore

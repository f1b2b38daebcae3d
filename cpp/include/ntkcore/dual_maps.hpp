// The pair maps' common part (docs/math/3-dual-maps.md): the state each activation family's
// dual map (families/*.hpp, listed in activation_families.hpp) reads and writes, per pair and per point.
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

// x^n for a small integer n >= 0.
template <class T>
inline T int_power(T x, int n) {
    T p = T(1);
    for (int k = 0; k < n; ++k) p *= x;
    return p;
}

}  // namespace ntkcore

// The ab_relu activation family as one unit: phi(x) = a x (x < 0), b x (x >= 0): ReLU, leaky ReLU, abs,
// identity. Its name, its dual maps (docs/math/3-dual-maps.md), derivative maps for hyper_gradients.hpp, and
// phi, phi' for the finite-width networks; activation_families.hpp lists the families.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <vector>

#include "../dual_maps.hpp"
#include "../dual_tangents.hpp"
#include "../elementwise.hpp"
#include "../fast_math.hpp"
#include "../network.hpp"

namespace ntkcore {

struct ABReluTangent {
    double m, f;
    explicit ABReluTangent(const Activation& act)
        : m(0.5 * (act.a * act.a + act.b * act.b)),
          f((act.a - act.b) * (act.a - act.b) / (2.0 * Constants<double>::pi)) {}

    DualTangent operator()(const PointTangent& p1, const PointTangent& p2, double c, double d,
                           const Tangent& dc) const {
        const detail::AngleTangent g(p1, p2, c, d, dc);
        DualTangent out;
        out.t = m * c + f * (g.s - g.angle * c);
        out.tdot = m - f * g.angle;
        out.dt = detail::along(0.5 * f * g.s * p1.iq, 0.5 * f * g.s * p2.iq, out.tdot, p1, p2, dc);
        out.dtdot = {-f * g.dangle.w, -f * g.dangle.b};
        return out;
    }
};

// phi(x) = a x (x < 0), b x (x >= 0).  With m = (a^2 + b^2)/2, f = (a - b)^2/(2 pi),
// T = m R (1 - h), h = (1 - cos theta) - (f/m)(sin theta - theta cos theta) and
// Tdot = m - f theta.  For theta > pi/2 the same quantities are rewritten in psi = pi - theta
// with kappa = pi f / m: h = (2 - kappa) - (1 - kappa)(1 - cos psi) - (f/m) S(psi),
// 1 - h = (kappa - 1) cos psi + (f/m) S(psi), 2 - h = kappa + (1 - kappa)(1 - cos psi) + (f/m) S(psi),
// Tdot = a b + f psi, so that neither collinear nor anti-collinear pairs cancel.
template <class T>
struct ABRelu {
    static constexpr Family id = Family::ab_relu;
    static constexpr const char* name = "ab_relu";  // in network specs and messages
    using Tangent = ABReluTangent;                  // hyper_gradients.hpp

    // phi(x) = a x (x < 0), b x (x >= 0), in place for n values, and phi' into dphi unless it is null.
    static void pointwise(const Activation& act, std::size_t n, T* z, T* dphi) {
        const T a = T(act.a), b = T(act.b);
        if (dphi)
            for (std::size_t i = 0; i < n; ++i) dphi[i] = z[i] < T(0) ? a : b;
        for (std::size_t i = 0; i < n; ++i) z[i] = z[i] < T(0) ? a * z[i] : b * z[i];
    }

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

}  // namespace ntkcore

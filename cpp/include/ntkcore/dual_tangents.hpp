// The forward-mode derivative state of the dual maps for hyper_gradients.hpp: a pair's or a
// point's tangents along (log sigma_w, log sigma_b), and the helpers the families' tangent
// maps (families/*.hpp) share.
#pragma once

#include <cmath>

#include "fast_math.hpp"

namespace ntkcore {

// Derivatives of one pair's (or one point's) state with respect to (log sigma_w, log sigma_b).
struct Tangent {
    double w = 0.0, b = 0.0;
};

// T, Tdot of one pair and their derivatives along the tangents (dq1, dq2, dc) of its state.
struct DualTangent {
    double t, tdot;
    Tangent dt, dtdot;
};

// One point's true variance q after a dense layer, 1 / q (0 for q = 0) and its tangent.
struct PointTangent {
    double q = 0.0, iq = 0.0;
    Tangent dq;
};

namespace detail {

// The angle theta_a in [0, pi] of a pair and its derivative along a tangent; zero-variance
// points count as orthogonal (theta_a = pi/2), as in the value path.  Collinear pairs (s = 0)
// stay collinear: there the angle's derivative vanishes.  Branch-free, for the simd loops.
struct AngleTangent {
    double angle, s;
    Tangent dangle;

    AngleTangent(const PointTangent& p1, const PointTangent& p2, double c, double d, const Tangent& dc) {
        s = std::sqrt(d > 0.0 ? d : 0.0);
        const bool valid = p1.q > 0.0 && p2.q > 0.0;
        const double acute = atan2_nonneg(s, c >= 0.0 ? c : -c);
        angle = valid ? (c >= 0.0 ? acute : Constants<double>::pi - acute) : Constants<double>::half_pi;
        const double is = valid && s > 0.0 ? 1.0 / s : 0.0;
        dangle.w = -(dc.w - 0.5 * c * (p1.dq.w * p1.iq + p2.dq.w * p2.iq)) * is;
        dangle.b = -(dc.b - 0.5 * c * (p1.dq.b * p1.iq + p2.dq.b * p2.iq)) * is;
    }
};

// A function's derivative along the tangents from its partials (t_q1, t_q2, t_c).
inline Tangent along(double t_q1, double t_q2, double t_c, const PointTangent& p1, const PointTangent& p2,
                     const Tangent& dc) {
    return {t_q1 * p1.dq.w + t_q2 * p2.dq.w + t_c * dc.w, t_q1 * p1.dq.b + t_q2 * p2.dq.b + t_c * dc.b};
}

}  // namespace detail

}  // namespace ntkcore

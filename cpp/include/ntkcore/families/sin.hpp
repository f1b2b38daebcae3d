// The sin activation family as one unit: phi(x) = a sin(b x + c); cos is sin with c + pi/2.
// Its name, its dual maps (docs/math/3-dual-maps.md), derivative maps for hyper_gradients.hpp, and phi, phi'
// for the finite-width networks; activation_families.hpp lists the families.
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

struct SinTangent {
    double a2, b2, sin2, cos2;
    explicit SinTangent(const Activation& act)
        : a2(act.a * act.a), b2(act.b * act.b), sin2(std::sin(act.c) * std::sin(act.c)),
          cos2(std::cos(act.c) * std::cos(act.c)) {}

    DualTangent operator()(const PointTangent& p1, const PointTangent& p2, double c, double,
                           const Tangent& dc) const {
        const double y = b2 * c, m = 0.5 * b2 * (p1.q + p2.q);
        const double up = std::exp(y - m), down = std::exp(-y - m);
        DualTangent out;
        out.t = a2 * (0.5 * (up - down) + sin2 * down);
        out.tdot = a2 * b2 * (0.5 * (up - down) + cos2 * down);
        const double t_q = -0.5 * b2 * out.t, s_q = -0.5 * b2 * out.tdot;
        out.dt = detail::along(t_q, t_q, out.tdot, p1, p2, dc);
        out.dtdot = detail::along(s_q, s_q, a2 * b2 * b2 * (0.5 * (up + down) - cos2 * down), p1, p2, dc);
        return out;
    }
};

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
    static constexpr Family id = Family::sin;
    static constexpr const char* name = "sin";  // in network specs and messages
    using Tangent = SinTangent;                 // hyper_gradients.hpp

    // phi(x) = a sin(b x + c) in place for n values, and phi' into dphi unless it is null.
    static void pointwise(const Activation& act, std::size_t n, T* z, T* dphi) {
        scaled_builtin(Builtin::sin, T(act.a), T(act.b), T(act.c), T(0), n, z, dphi);
    }

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

}  // namespace ntkcore

// The erf activation family as one unit: phi(x) = a erf(b x) + c.
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

struct ErfTangent {
    double alpha, b2, gamma, tdot_scale;
    explicit ErfTangent(const Activation& act)
        : alpha(2.0 * act.a * act.a / Constants<double>::pi), b2(act.b * act.b), gamma(act.c * act.c),
          tdot_scale(4.0 * act.a * act.a * act.b * act.b / Constants<double>::pi) {}

    DualTangent operator()(const PointTangent& p1, const PointTangent& p2, double c, double d,
                           const Tangent& dc) const {
        const double x1 = b2 * p1.q, x2 = b2 * p2.q, y = b2 * c;
        const double den2 = 1.0 + 2.0 * (x1 + x2) + 4.0 * b2 * b2 * (d > 0.0 ? d : 0.0);
        const double den = std::sqrt(den2);
        const double angle = atan2_nonneg(2.0 * (y >= 0.0 ? y : -y), den);
        DualTangent out;
        out.t = alpha * (y >= 0.0 ? angle : -angle) + gamma;
        out.tdot = tdot_scale / den;
        const double u = out.tdot / den2;
        out.dt = detail::along(-out.tdot * y / (1.0 + 2.0 * x1), -out.tdot * y / (1.0 + 2.0 * x2), out.tdot,
                               p1, p2, dc);
        out.dtdot = detail::along(-b2 * (1.0 + 2.0 * x2) * u, -b2 * (1.0 + 2.0 * x1) * u, 4.0 * b2 * y * u,
                                  p1, p2, dc);
        return out;
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
    static constexpr Family id = Family::erf;
    static constexpr const char* name = "erf";  // in network specs and messages
    using Tangent = ErfTangent;                 // hyper_gradients.hpp

    // phi(x) = a erf(b x) + c, in place for n values, and phi' into dphi unless it is null.
    static void pointwise(const Activation& act, std::size_t n, T* z, T* dphi) {
        scaled_builtin(Builtin::erf, T(act.a), T(act.b), T(0), T(act.c), n, z, dphi);
    }

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

}  // namespace ntkcore

// The rectified_monomial activation family as one unit: phi(x) = max(x, 0)^n, n = a in 0..4 (n = 0: the step
// 1[x > 0]). Its name, its dual maps (docs/math/3-dual-maps.md), derivative maps for hyper_gradients.hpp, and
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

// max(x, 0)^n: T = R^n J_n(theta_a) / (2 pi), Tdot = n^2 R^(n-1) J_(n-1) / (2 pi) (dual_maps.hpp).
// Per side T is homogeneous of degree n in the input's scale and Tdot of degree n - 1, so
// 2 q1 T_q1 + c Tdot = n T and 2 q1 Tdot_q1 + c Tdot_c = (n - 1) Tdot, with Price's
// Tdot_c = n^2 (n - 1)^2 R^(n-2) J_(n-2) / (2 pi) for n >= 2.  n = 1 is ReLU, n = 0 the step
// T = (pi - theta_a) / (2 pi) (0 for a zero-variance point), both through the angle.
struct RectifiedMonomialTangent {
    int n;
    ABReluTangent relu;
    explicit RectifiedMonomialTangent(const Activation& act) : n(int(act.a)), relu(relu_activation()) {}

    static Activation relu_activation() {
        Activation a;
        a.a = 0.0;
        a.b = 1.0;
        return a;
    }

    DualTangent operator()(const PointTangent& p1, const PointTangent& p2, double c, double d,
                           const Tangent& dc) const {
        if (n == 1) return relu(p1, p2, c, d, dc);
        const detail::AngleTangent g(p1, p2, c, d, dc);
        const double two_pi = 2.0 * Constants<double>::pi;
        DualTangent out{};
        if (n == 0) {
            const double valid = (p1.q > 0.0) & (p2.q > 0.0) ? 1.0 : 0.0;
            out.t = valid * (Constants<double>::pi - g.angle) / two_pi;
            out.dt = {-g.dangle.w / two_pi, -g.dangle.b / two_pi};
            return out;
        }
        const double r = std::sqrt(p1.q * p2.q), cos_a = std::cos(g.angle), sin2 = 1.0 - cos_a * cos_a;
        double j_lower = Constants<double>::pi - g.angle, j = std::sin(g.angle) + j_lower * cos_a,
               j_lower2 = 0.0;
        for (int k = 2; k <= n; ++k) {
            const double next = double(2 * k - 1) * cos_a * j + double((k - 1) * (k - 1)) * sin2 * j_lower;
            j_lower2 = j_lower;
            j_lower = j;
            j = next;
        }
        const double nn = double(n * n);
        out.t = int_power(r, n) * j / two_pi;
        out.tdot = nn * int_power(r, n - 1) * j_lower / two_pi;
        const double s_c = nn * double((n - 1) * (n - 1)) * int_power(r, n - 2) * j_lower2 / two_pi;
        const double t_q = 0.5 * (n * out.t - c * out.tdot), s_q = 0.5 * ((n - 1) * out.tdot - c * s_c);
        out.dt = detail::along(t_q * p1.iq, t_q * p2.iq, out.tdot, p1, p2, dc);
        out.dtdot = detail::along(s_q * p1.iq, s_q * p2.iq, s_c, p1, p2, dc);
        return out;
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
struct RectifiedMonomial {
    static constexpr Family id = Family::rectified_monomial;
    static constexpr const char* name = "rectified_monomial";  // in network specs and messages
    using Tangent = RectifiedMonomialTangent;                  // hyper_gradients.hpp

    // phi(x) = max(x, 0)^n, n = a in 0..4 (n = 0, in place for n values, and phi' into dphi unless it is
    // null.
    static void pointwise(const Activation& act, std::size_t n, T* z, T* dphi) {
        const int order = int(act.a);
        for (std::size_t i = 0; i < n; ++i) {
            const T x = z[i] > T(0) ? z[i] : T(0);
            const T lower = order >= 1 ? int_power(x, order - 1) : T(0);
            if (dphi) dphi[i] = z[i] > T(0) ? T(order) * lower : T(0);
            z[i] = order == 0 ? (z[i] > T(0) ? T(1) : T(0)) : lower * x;
        }
    }

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

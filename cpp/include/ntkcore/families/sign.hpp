// The sign activation family as one unit: phi(x) = sign(x).
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

struct SignTangent {
    explicit SignTangent(const Activation&) {}

    DualTangent operator()(const PointTangent& p1, const PointTangent& p2, double c, double d,
                           const Tangent& dc) const {
        const detail::AngleTangent g(p1, p2, c, d, dc);
        const double k = 2.0 / Constants<double>::pi, valid = p1.q > 0.0 && p2.q > 0.0 ? 1.0 : 0.0;
        DualTangent out{};
        out.t = valid * (1.0 - k * g.angle);
        out.dt = {-k * g.dangle.w, -k * g.dangle.b};
        return out;
    }
};

// phi = sign: T = 1 - 2 theta / pi between two points of nonzero variance (0 otherwise),
// Tdot = 0.  Here Ra is 1 or 0 and h = 2 theta / pi.
template <class T>
struct Sign {
    static constexpr Family id = Family::sign;
    static constexpr const char* name = "sign";  // in network specs and messages
    using Tangent = SignTangent;                 // hyper_gradients.hpp

    // phi(x) = sign(x), in place for n values, and phi' into dphi unless it is null.
    static void pointwise(const Activation&, std::size_t n, T* z, T* dphi) {
        if (dphi) std::fill(dphi, dphi + n, T(0));
        for (std::size_t i = 0; i < n; ++i) z[i] = z[i] > T(0) ? T(1) : (z[i] < T(0) ? T(-1) : T(0));
    }

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

}  // namespace ntkcore

// The gelu activation family as one unit: phi(x) = x Phi(x), Phi the standard normal CDF.
// Its name, its dual maps (docs/math/3-dual-maps.md), no exact hyperparameter gradients, and phi, phi'
// for the finite-width networks; activation_families.hpp lists the families.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <vector>

#include "../dual_maps.hpp"
#include "../elementwise.hpp"
#include "../fast_math.hpp"
#include "../network.hpp"

namespace ntkcore {

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
    static constexpr Family id = Family::gelu;
    static constexpr const char* name = "gelu";  // in network specs and messages
    using Tangent = void;                        // no exact hyperparameter gradients

    // phi(x) = x Phi(x), Phi the standard normal CDF, in place for n values, and phi' into dphi unless it is
    // null.
    static void pointwise(const Activation&, std::size_t n, T* z, T* dphi) {
        scaled_builtin(Builtin::gelu, T(1), T(1), T(0), T(0), n, z, dphi);
    }

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

}  // namespace ntkcore

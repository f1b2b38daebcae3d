// Gauss-Hermite rules for the standard normal weight (docs/math/4-gauss-hermite.md), by Golub-Welsch, and
// the Hermite coefficients of a function sampled on them.
//
// With h_k = He_k / sqrt(k!) (orthonormal under N(0, 1)) and the rule's nodes x_i and
// weights w_i (sum 1), the D x D matrix basis(k, i) = sqrt(w_i) h_k(x_i) is orthogonal.  The
// coefficients of g, a_k = E[g(z) h_k(z)] for k < D, are then a = basis (sqrt(w_i) g(x_i))_i,
// and sum_k a_k b_k = sum_i w_i g(x_i) f(x_i) is the rule itself: the Hermite (Mehler) series
// of E[g(u) f(v)] truncated after D terms is exact at correlation 1 whenever the 1-D rule is.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <vector>

#include <Eigen/Core>
#include <Eigen/Eigenvalues>

namespace ntkcore {

struct HermiteRule {
    std::vector<double> nodes;    // ascending, symmetric about 0
    std::vector<double> weights;  // positive, sum 1
    Eigen::MatrixXd basis;        // basis(k, i) = sqrt(w_i) h_k(x_i)
    std::size_t degree() const { return nodes.size(); }
};

namespace detail {

// h_0 .. h_{D-1} at x by the three-term recurrence, rescaled whenever they grow large (the
// far nodes reach |x| ~ sqrt(4 D), where h_k(x) overflows), normalised to unit length; the
// first entry of the result is then sqrt(w) of the node (Christoffel: w = 1 / sum_k h_k^2).
// Also returns h_D / h_{D-1} in the same scaling, for Newton's step on the node.
inline double hermite_column(double x, std::size_t d, double* h) {
    h[0] = 1.0;
    if (d > 1) h[1] = x;
    double next = d > 1 ? 0.0 : x;
    for (std::size_t k = 1; k < d; ++k) {
        next = (x * h[k] - std::sqrt(double(k)) * h[k - 1]) / std::sqrt(double(k + 1));
        if (k + 1 < d) h[k + 1] = next;
        if (std::abs(next) > 1e150) {
            for (std::size_t j = 0; j <= std::min(k + 1, d - 1); ++j) h[j] *= 1e-150;
            next *= 1e-150;
        }
    }
    double norm2 = 0.0;
    for (std::size_t k = 0; k < d; ++k) norm2 += h[k] * h[k];
    const double inv = 1.0 / std::sqrt(norm2);
    for (std::size_t k = 0; k < d; ++k) h[k] *= inv;
    return next * inv;
}

inline std::unique_ptr<HermiteRule> make_hermite_rule(std::size_t d) {
    // Golub-Welsch: the nodes are the eigenvalues of the Jacobi matrix of the recurrence,
    // zero diagonal and off-diagonal sqrt(k); then a Newton step on h_D(x) = 0 each, and the
    // weights and basis columns from the normalised recurrence at the refined node.
    Eigen::VectorXd diag = Eigen::VectorXd::Zero(Eigen::Index(d));
    Eigen::VectorXd off(Eigen::Index(d > 0 ? d - 1 : 0));
    for (Eigen::Index k = 0; k < off.size(); ++k) off[k] = std::sqrt(double(k + 1));
    Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> jacobi;
    jacobi.computeFromTridiagonal(diag, off, Eigen::EigenvaluesOnly);
    auto rule = std::make_unique<HermiteRule>();
    rule->nodes.assign(jacobi.eigenvalues().data(), jacobi.eigenvalues().data() + d);
    rule->weights.resize(d);
    rule->basis.resize(Eigen::Index(d), Eigen::Index(d));
    std::vector<double> h(d);
    for (std::size_t i = 0; i < d; ++i) {
        double x = rule->nodes[i];
        for (int step = 0; step < 2; ++step) {
            // h_D / h_D' = h_D / (sqrt(D) h_{D-1}) in any common scaling of the column.
            const double ratio = hermite_column(x, d, h.data());
            x -= ratio / (std::sqrt(double(d)) * h[d - 1]);
        }
        rule->nodes[i] = x;
    }
    for (std::size_t i = 0; i < d / 2; ++i) {  // exact symmetry
        const double x = 0.5 * (rule->nodes[d - 1 - i] - rule->nodes[i]);
        rule->nodes[i] = -x;
        rule->nodes[d - 1 - i] = x;
    }
    if (d % 2 == 1) rule->nodes[d / 2] = 0.0;
    for (std::size_t i = 0; i < d; ++i) {
        hermite_column(rule->nodes[i], d, h.data());
        for (std::size_t k = 0; k < d; ++k) rule->basis(Eigen::Index(k), Eigen::Index(i)) = h[k];
        rule->weights[i] = h[0] * h[0];
    }
    return rule;
}

}  // namespace detail

// The rule of `degree` nodes, computed once per degree and kept for the process.
inline const HermiteRule& hermite_rule(std::size_t degree) {
    if (degree == 0) throw std::invalid_argument("hermite rule: degree must be >= 1");
    static std::mutex lock;
    static std::map<std::size_t, std::unique_ptr<HermiteRule>> cache;
    std::lock_guard<std::mutex> guard(lock);
    auto& slot = cache[degree];
    if (!slot) slot = detail::make_hermite_rule(degree);
    return *slot;
}

}  // namespace ntkcore

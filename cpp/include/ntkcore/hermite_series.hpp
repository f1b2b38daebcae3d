// The dual maps of an activation known only pointwise (docs/math/4-gauss-hermite.md), by the Hermite (Mehler)
// series.  With a_k(s) = E[phi(s z) h_k(z)] the normalised Hermite coefficients of phi(s .),
// and b_k(s) those of phi'(s .),
//     T    = sum_k a_k(sqrt q1) a_k(sqrt q2) rho^k,   rho = c / sqrt(q1 q2),
//     Tdot = sum_k b_k(sqrt q1) b_k(sqrt q2) rho^k.
// The coefficients come from a Gauss-Hermite rule (quadrature.hpp) once per point and layer,
// O(N D) evaluations of phi and O(N D^2) flops; each pair then costs O(D) (Horner in rho),
// not the O(D^2) of a 2-D rule.  Without phi', Price's theorem Tdot = dT/dc gives
// b_{k-1}(s) = sqrt(k) a_k(s) / s.
//
// The series needs no gap d = q1 q2 - c^2: T is smooth in rho up to rho = +-1 (phi is
// smooth, or the caller accepts the rule's error), so the rounding of rho costs only
// rounding in T.  d is set to 0.
//
// Degree: unless fixed, D grows (64, 96, 128, ... max_auto_degree) until, for every point,
// the coefficients beyond 3D/4 of both phi and phi' hold at most 1e-7 of the norm, and
// E[phi^2], E[phi'^2] of the extreme points changed by at most 1e-7 from the previous
// degree.  The rule's error then measured ~tail^2 (below 1e-14 of sqrt(T(x, x) T(x', x')))
// for tanh, erf and softplus at variances 2 to 9 against a 3000-node rule.  The series then
// keeps K terms, the fewest whose tails hold at most 1e-8 of the norm: by Cauchy-Schwarz the
// terms dropped change T by at most 1e-16 of sqrt(T(x, x) T(x', x')).
//
// The larger of the tail and the change is the error estimate, a pessimistic one (the
// rule's error is quadratic in the tail while the coefficients decay; the change exposes
// aliasing, which the tail cannot see).  Large variances defeat the rule: phi(s z) then has
// features of width ~1/s (tanh and erf approach a step, softplus and silu a kink), its
// coefficients decay slowly and the nodes, ~1/sqrt(D) apart, cannot resolve it.  An
// automatic degree that reaches its limit unconverged throws AccuracyError; a fixed degree
// above the target tells NumericalFunction::warn.  Neither returns silently.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdio>
#include <initializer_list>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include <Eigen/Core>

#include "dual_maps.hpp"
#include "network.hpp"
#include "parallel.hpp"
#include "quadrature.hpp"

namespace ntkcore {

// The series of a numerical activation cannot reach the target accuracy.
struct AccuracyError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// Row k holds coefficient k of every point.
using CoefficientTable = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// Everything one layer of the series needs for points of true variances q.
struct SeriesLayer {
    std::size_t terms = 0;           // K: series terms kept
    CoefficientTable coef, dcoef;    // K x n: a_k and b_k of each point
    std::vector<double> variance;    // E[phi(u)^2], u ~ N(0, q)
    std::vector<double> derivative;  // E[phi'(u)^2]
    bool shared = false;             // every point has the same variance (bit for bit)
};

namespace detail {

// Coefficients of g(sqrt(q_p) .) for every point p, D x n.  g is called on chunks of ~256K
// samples, from several threads when `threads` > 1 (thread-safe g only).
inline void hermite_coefficients(const HermiteRule& rule, const std::vector<double>& q,
                                 const NumericalFunction::Batch& g, const char* what, int threads,
                                 CoefficientTable& table, StopSignal& stop) {
    const std::size_t d = rule.degree(), n = q.size();
    const std::size_t chunk = std::max<std::size_t>(1, (std::size_t(1) << 18) / d);
    const std::size_t chunks = (n + chunk - 1) / chunk;
    table.resize(Eigen::Index(d), Eigen::Index(n));
    Eigen::VectorXd sqrt_w(static_cast<Eigen::Index>(d));
    for (std::size_t i = 0; i < d; ++i) sqrt_w[Eigen::Index(i)] = std::sqrt(rule.weights[i]);
    parallel_tiles(chunks, resolve_threads(threads, chunks), stop, [&](std::size_t c) {
        const std::size_t p0 = c * chunk, m = std::min(chunk, n - p0);
        const Eigen::Index rows = Eigen::Index(d), cols = Eigen::Index(m);
        Eigen::MatrixXd args(rows, cols), values(rows, cols);
        for (std::size_t p = 0; p < m; ++p) {
            const double s = std::sqrt(q[p0 + p]);
            for (std::size_t i = 0; i < d; ++i) args(Eigen::Index(i), Eigen::Index(p)) = s * rule.nodes[i];
        }
        g(args.data(), d * m, values.data());
        if (!values.allFinite())
            throw std::domain_error(std::string("numerical activation: ") + what +
                                    " is not finite at some Gauss-Hermite node (|x| up to " +
                                    std::to_string(args.cwiseAbs().maxCoeff()) + ")");
        table.middleCols(Eigen::Index(p0), Eigen::Index(m)).noalias() =
            rule.basis * (sqrt_w.asDiagonal() * values);
    });
}

// sqrt(sum_{k >= from} t_k^2 / sum_k t_k^2) of the worst point (column), and that column.
struct Tail {
    double value = 0.0;
    Eigen::Index column = 0;
};

inline Tail relative_tail(const CoefficientTable& t, Eigen::Index from) {
    const Eigen::ArrayXd total = t.colwise().squaredNorm().transpose().array();
    const Eigen::ArrayXd tail = t.bottomRows(t.rows() - from).colwise().squaredNorm().transpose().array();
    Tail worst;
    const double value = (tail / total.max(std::numeric_limits<double>::min())).maxCoeff(&worst.column);
    worst.value = std::sqrt(value);
    return worst;
}

// max |a_i - b_i| / max(|a_i|, |b_i|) over i, and the point (i modulo n, a and b holding
// two values per point) where it is reached.
inline Tail relative_change(const std::vector<double>& a, const std::vector<double>& b) {
    Tail worst;
    for (std::size_t i = 0; i < a.size(); ++i) {
        const double scale = std::max({std::abs(a[i]), std::abs(b[i]), std::numeric_limits<double>::min()});
        const double change = std::abs(a[i] - b[i]) / scale;
        if (change > worst.value) worst = {change, Eigen::Index(i % (a.size() / 2))};
    }
    return worst;
}

// The fewest leading rows whose dropped rows hold at most `tol` of every column's norm.
inline std::size_t rows_needed(const CoefficientTable& t, double tol) {
    const Eigen::ArrayXd total = t.colwise().squaredNorm().transpose().array();
    Eigen::ArrayXd tail = Eigen::ArrayXd::Zero(t.cols());
    for (Eigen::Index k = t.rows(); k-- > 0;) {
        tail += t.row(k).transpose().array().square();
        if ((tail > tol * tol * total).any()) return std::size_t(k + 1);
    }
    return 1;
}

}  // namespace detail

template <class T>
struct HermiteSeries {
    static constexpr bool homogeneous = false;
    static constexpr std::size_t max_auto_degree = 2048;
    static constexpr double tail_target = 1e-7;

    static constexpr Family id = Family::numerical;
    static constexpr const char* name = "numerical";  // in network specs and messages
    using Tangent = void;                             // no exact hyperparameter gradients

    const NumericalFunction* fn;
    mutable bool warned = false;  // a fixed degree's warning names the first layer only

    // phi in place for n values, and phi' into dphi unless it is null, through the function's
    // own batches in double (finite networks take only built-ins, whose phi' is in the core).
    static void pointwise(const Activation& act, std::size_t n, T* z, T* dphi) {
        thread_local std::vector<double> in, out;
        in.assign(z, z + n);
        out.resize(n);
        if (dphi) {
            act.numerical->dphi(in.data(), n, out.data());
            std::copy(out.begin(), out.end(), dphi);
        }
        act.numerical->phi(in.data(), n, out.data());
        std::copy(out.begin(), out.end(), z);
    }

    explicit HermiteSeries(const Activation& act) : fn(act.numerical.get()) {
        if (!fn || !fn->phi) throw std::invalid_argument("numerical activation: phi is missing");
    }

    static std::size_t next_degree(std::size_t d) { return (d & (d - 1)) == 0 ? d + d / 2 : d / 3 * 4; }

    // The series of activation `layer_index` (from 1) for points of true variances q.
    SeriesLayer tabulate(const std::vector<double>& q, std::size_t layer_index, StopSignal& stop) const {
        SeriesLayer layer;
        // The degree is searched on the points of extreme variance (the largest is the
        // hardest for the functions at hand), then confirmed on all points.
        std::vector<double> probe;
        if (!q.empty()) {
            const auto [lo, hi] = std::minmax_element(q.begin(), q.end());
            probe = {*hi, *lo};
        }
        // The change of the probe's moments with the degree: a phi(s z) that oscillates
        // faster than the nodes (sin at large s) aliases to a smooth-looking one, whose
        // tail is small.  A fixed degree compares with 3/4 of it.
        std::size_t d = fn->degree ? fn->degree : 64;
        detail::Tail change{std::numeric_limits<double>::infinity(), 0};
        if (fn->degree) {
            change = degree_change(probe, 3 * d / 4, d, stop);
        } else {
            std::vector<double> before;
            for (;;) {
                fill(hermite_rule(d), probe, layer, stop);
                const std::vector<double> now = moments(layer);
                if (!before.empty()) change = detail::relative_change(before, now);
                const detail::Tail tail = worst_tail(layer, d);
                const bool converged = tail.value <= tail_target && change.value <= tail_target;
                if (!converged && next_degree(d) > max_auto_degree) {  // throws
                    const bool by_tail = tail.value >= change.value;
                    report(std::max(tail.value, change.value),
                           probe[std::size_t(by_tail ? tail.column : change.column)], d, layer_index);
                }
                if (converged) break;
                before = now;
                d = next_degree(d);
            }
        }
        // All points, at a higher degree if one between the extremes needs it.
        for (;;) {
            fill(hermite_rule(d), q, layer, stop);
            const detail::Tail tail = worst_tail(layer, d);
            const bool at_limit = fn->degree || next_degree(d) > max_auto_degree;
            if (tail.value <= tail_target && change.value <= tail_target) break;
            if (at_limit) {
                const bool by_tail = tail.value >= change.value;
                report(std::max(tail.value, change.value),
                       by_tail ? q[std::size_t(tail.column)] : probe[std::size_t(change.column)], d,
                       layer_index);
                break;
            }
            d = next_degree(d);
        }
        const std::size_t terms = fn->degree ? d
                                             : std::max(detail::rows_needed(layer.coef, 1e-8),
                                                        detail::rows_needed(layer.dcoef, 1e-8));
        layer.terms = terms;
        layer.coef.conservativeResize(Eigen::Index(terms), Eigen::NoChange);
        layer.dcoef.conservativeResize(Eigen::Index(terms), Eigen::NoChange);
        const std::size_t n = q.size();
        layer.variance.resize(n);
        layer.derivative.resize(n);
        for (std::size_t p = 0; p < n; ++p) {
            layer.variance[p] = layer.coef.col(Eigen::Index(p)).squaredNorm();
            layer.derivative[p] = layer.dcoef.col(Eigen::Index(p)).squaredNorm();
        }
        layer.shared = n > 0 && std::all_of(q.begin(), q.end(), [&](double v) { return v == q[0]; });
        return layer;
    }

    // The larger relative tail beyond 3/4 of the degree, of phi's and of phi''s coefficients.
    static detail::Tail worst_tail(const SeriesLayer& layer, std::size_t d) {
        const Eigen::Index last = Eigen::Index(3 * d / 4);
        const detail::Tail a = detail::relative_tail(layer.coef, last),
                           b = detail::relative_tail(layer.dcoef, last);
        return a.value >= b.value ? a : b;
    }

    // E[phi^2] of each point, then E[phi'^2] of each point, by the series of `layer`.
    static std::vector<double> moments(const SeriesLayer& layer) {
        std::vector<double> m;
        for (const CoefficientTable* t : {&layer.coef, &layer.dcoef})
            for (Eigen::Index p = 0; p < t->cols(); ++p) m.push_back(t->col(p).squaredNorm());
        return m;
    }

    // How much the probe's moments change from degree `lower` to `degree` (0 when lower = 0).
    detail::Tail degree_change(const std::vector<double>& probe, std::size_t lower, std::size_t degree,
                               StopSignal& stop) const {
        if (lower == 0) return {};
        SeriesLayer a, b;
        fill(hermite_rule(lower), probe, a, stop);
        fill(hermite_rule(degree), probe, b, stop);
        return detail::relative_change(moments(a), moments(b));
    }

    // An unconverged series: refused at the automatic degree's limit, reported to fn->warn
    // at a fixed degree (the caller asked for that rule and its error).
    void report(double estimate, double variance, std::size_t degree, std::size_t layer_index) const {
        char text[512];
        if (!fn->degree) {
            std::snprintf(text, sizeof text,
                          "%s: Gauss-Hermite series not converged at layer %zu for pre-activation variance "
                          "q = %.4g (estimated relative error %.1e at degree %zu, the largest automatic "
                          "one; target %.0e); lower W_std, b_std or the input scale, use an activation "
                          "with a closed form (Erf, Gelu, ...) or pass a fixed deg to accept the error",
                          fn->name.c_str(), layer_index, variance, estimate, degree, tail_target);
            throw AccuracyError(text);
        }
        if (!fn->warn || warned) return;
        warned = true;
        std::snprintf(text, sizeof text,
                      "%s: Gauss-Hermite series at the fixed degree %zu leaves an estimated relative error "
                      "%.1e (target %.0e) at layer %zu, pre-activation variance q = %.4g (the first such "
                      "layer); leave deg unset for an automatic degree",
                      fn->name.c_str(), degree, estimate, tail_target, layer_index, variance);
        fn->warn(text);
    }

    void fill(const HermiteRule& rule, const std::vector<double>& q, SeriesLayer& layer,
              StopSignal& stop) const {
        const int threads = fn->thread_safe ? 0 : 1;
        detail::hermite_coefficients(rule, q, fn->phi, "phi", threads, layer.coef, stop);
        if (fn->dphi)
            detail::hermite_coefficients(rule, q, fn->dphi, "phi'", threads, layer.dcoef, stop);
        else
            price_derivative(q, layer);
    }

    // Price's theorem: b_{k-1}(s) = sqrt(k) a_k(s) / s.  A zero-variance point needs phi'(0)
    // alone, taken by a central difference (error ~1e-10 relative).
    void price_derivative(const std::vector<double>& q, SeriesLayer& layer) const {
        const Eigen::Index d = layer.coef.rows(), n = layer.coef.cols();
        layer.dcoef.setZero(d, n);
        bool need_slope = false;
        for (Eigen::Index p = 0; p < n; ++p) {
            const double s = std::sqrt(q[std::size_t(p)]);
            if (s > 0.0) {
                for (Eigen::Index k = 1; k < d; ++k)
                    layer.dcoef(k - 1, p) = std::sqrt(double(k)) * layer.coef(k, p) / s;
            } else {
                need_slope = true;
            }
        }
        if (!need_slope) return;
        const double h = std::ldexp(1.0, -17), x[2] = {h, -h};
        double y[2];
        fn->phi(x, 2, y);
        const double slope_at_zero = (y[0] - y[1]) / (2.0 * h);
        for (Eigen::Index p = 0; p < n; ++p)
            if (!(q[std::size_t(p)] > 0.0)) layer.dcoef(0, p) = slope_at_zero;
    }

    // T and Tdot of each pair by Horner in rho, then the dense layer.  Blocks of R rows x W
    // columns keep their 2 R W partial sums in registers through all K terms, each loaded
    // coefficient serving R (or W) pairs; edges run the same code with R = W = 1.
    void pairs(std::size_t rows, std::size_t cols, const LayerInputs<T>& in, T* c, T* d, T* theta,
               const DenseStep<T>& dense) const {
        constexpr std::size_t R = 4, W = 8;
        std::size_t i = 0;
        for (; i + R <= rows; i += R) {
            std::size_t j = 0;
            for (; j + W <= cols; j += W) block<R, W>(i, j, cols, in, c, d, theta, dense);
            for (; j < cols; ++j) block<R, 1>(i, j, cols, in, c, d, theta, dense);
        }
        for (; i < rows; ++i)
            for (std::size_t j = 0; j < cols; ++j) block<1, 1>(i, j, cols, in, c, d, theta, dense);
    }

    template <std::size_t R, std::size_t W>
    static void block(std::size_t i0, std::size_t j0, std::size_t cols, const LayerInputs<T>& in, T* c, T* d,
                      T* theta, const DenseStep<T>& dense) {
        T rho[R][W], sum_t[R][W] = {}, sum_d[R][W] = {};
        for (std::size_t r = 0; r < R; ++r)
            for (std::size_t w = 0; w < W; ++w) {
                const T x = c[(i0 + r) * cols + j0 + w] * in.ir1[i0 + r] * in.ir2[j0 + w];
                rho[r][w] = std::min(T(1), std::max(T(-1), x));
            }
        if (in.shared_t) {
            for (std::size_t k = in.terms; k-- > 0;) {
                const T gt = in.shared_t[k], gd = in.shared_tdot[k];
                for (std::size_t r = 0; r < R; ++r)
#pragma omp simd
                    for (std::size_t w = 0; w < W; ++w) {
                        sum_t[r][w] = sum_t[r][w] * rho[r][w] + gt;
                        sum_d[r][w] = sum_d[r][w] * rho[r][w] + gd;
                    }
            }
        } else {
            for (std::size_t k = in.terms; k-- > 0;) {
                const T* a1 = in.coef1 + k * in.stride1 + i0;
                const T* b1 = in.dcoef1 + k * in.stride1 + i0;
                const T* a2 = in.coef2 + k * in.stride2 + j0;
                const T* b2 = in.dcoef2 + k * in.stride2 + j0;
                for (std::size_t r = 0; r < R; ++r)
#pragma omp simd
                    for (std::size_t w = 0; w < W; ++w) {
                        sum_t[r][w] = sum_t[r][w] * rho[r][w] + a1[r] * a2[w];
                        sum_d[r][w] = sum_d[r][w] * rho[r][w] + b1[r] * b2[w];
                    }
            }
        }
        for (std::size_t r = 0; r < R; ++r)
            for (std::size_t w = 0; w < W; ++w) {
                const std::size_t e = (i0 + r) * cols + j0 + w;
                dense_step(dense, sum_t[r][w], T(0), T(0), sum_d[r][w], c[e], d[e], theta[e]);
            }
    }
};

}  // namespace ntkcore

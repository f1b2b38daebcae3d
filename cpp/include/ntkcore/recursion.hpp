// The per-point recursion (docs/math/2-recursion.md on the diagonal) and the layer constants it fixes.
//
// Deep networks leave the float range long before their kernels do (ReLU with W_std = 1
// halves the variance at every layer, so q1 q2 - c^2 underflows near depth 540).  All
// state after dense layer l is therefore kept in units of 2^e_l (c, q and theta) and
// 2^(2 e_l) (d), with e_l chosen from the largest per-point variance of that layer over
// every point of the computation.  Powers of two keep the scaling exact; the result is
// scaled back once at the end.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdio>
#include <limits>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "dual_maps.hpp"
#include "hermite_series.hpp"
#include "network.hpp"
#include "parallel.hpp"

namespace ntkcore {

// Per-point state of one set of points, layer-major: entry l * n + i is point i after
// dense layer l (q, r) or after activation l (ra).
template <class T>
struct PointStates {
    std::size_t n = 0;
    std::vector<T> q;               // scaled variance, (depth + 1) x n
    std::vector<T> r;               // its square root
    std::vector<T> ir;              // 1 / r, 0 where r = 0
    std::vector<T> ra;              // sqrt of the variance after each activation, depth x n (true units)
    std::vector<double> nngp, ntk;  // K(x, x) and Theta(x, x), true units
    // Hermite series only, per activation layer: coefficients of phi and phi', terms x n.
    std::vector<std::vector<T>> coef, dcoef;
};

template <class T>
struct Recursion {
    std::vector<int> exponent;                        // e_l, l = 0..depth
    T input_w = T(0), input_b = T(0);                 // first dense layer, scaled
    T input_sigma_ntk = T(0), input_bias_ntk = T(0);  // its NTK: (w, b) or (dim, [b_std > 0])
    std::vector<DenseStep<T>> dense;                  // the dense layer after activation l, l < depth
    std::vector<T> scale;                             // 2^e_l as T (erf needs true variances)
    // Hermite series only, per activation layer: the terms kept, and a_k^2, b_k^2 when every
    // point shares its coefficients (else empty).
    std::vector<std::size_t> terms;
    std::vector<std::vector<T>> shared_t, shared_tdot;
};

namespace detail {

// Smallest e with value < 2^(e+1), i.e. value / 2^e in [1, 2); 0 for value = 0.
inline int binary_exponent(double value) {
    if (!(value > 0.0)) return 0;
    int e = 0;
    std::frexp(value, &e);
    return e - 1;
}

// Exponent for the variances w * v * 2^e_in + b (v <= v_max, the largest scaled value):
// the largest term lands in [1, 2) after scaling.  Computed from exponents so that nothing
// overflows however deep the network.
inline int layer_exponent(double w, double v_max, int e_in, double b, int fallback) {
    const bool has_w = w > 0.0 && v_max > 0.0;
    const bool has_b = b > 0.0;
    if (!has_w && !has_b) return fallback;
    const int ew = has_w ? binary_exponent(w * v_max) + e_in : 0;
    const int eb = has_b ? binary_exponent(b) : 0;
    return has_w && has_b ? std::max(ew, eb) : (has_w ? ew : eb);
}

// Kernels whose true values leave the floating-point range cannot be returned: say so
// rather than hand back inf or NaN (|K(x, x')| <= sqrt(K(x, x) K(x', x')), so the
// per-point values decide).
inline void check_range(const std::vector<double>& values, const std::string& what,
                        double limit = std::numeric_limits<double>::max()) {
    for (double v : values) {
        if (std::isnan(v))  // no overflow of the kernels: an intermediate left the range
            throw std::domain_error("kernels undefined: " + what +
                                    " is NaN; an activation parameter or W_std is out of range");
        if (!(std::abs(v) <= limit)) {
            char text[64];
            std::snprintf(text, sizeof text, " (%.3g, the largest representable is %.3g)", v, limit);
            throw std::overflow_error("kernels overflow: " + what + " exceeds the floating-point range" +
                                      text + "; lower W_std or the depth");
        }
    }
}

// Families whose per-point maps come as tables of a whole layer (HermiteSeries).
template <class Fam, class = void>
struct is_tabulated : std::false_type {};
template <class Fam>
struct is_tabulated<Fam, std::void_t<decltype(&Fam::tabulate)>> : std::true_type {};

}  // namespace detail

// Hands one layer of series coefficients to the point sets (their columns, in order).
template <class T>
void store_series(const SeriesLayer& layer, const std::vector<PointStates<T>*>& states, Recursion<T>& rec) {
    const Eigen::Index terms = Eigen::Index(layer.terms);
    rec.terms.push_back(layer.terms);
    rec.shared_t.emplace_back();
    rec.shared_tdot.emplace_back();
    if (layer.shared) {
        for (Eigen::Index k = 0; k < terms; ++k) {
            rec.shared_t.back().push_back(T(layer.coef(k, 0) * layer.coef(k, 0)));
            rec.shared_tdot.back().push_back(T(layer.dcoef(k, 0) * layer.dcoef(k, 0)));
        }
    }
    using Rows = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    Eigen::Index offset = 0;
    for (PointStates<T>* st : states) {
        const Eigen::Index n = Eigen::Index(st->n);
        for (auto [table, out] :
             {std::make_pair(&layer.coef, &st->coef), std::make_pair(&layer.dcoef, &st->dcoef)}) {
            out->emplace_back(layer.shared ? 0 : std::size_t(terms * n));
            if (!layer.shared)
                Eigen::Map<Rows>(out->back().data(), terms, n) =
                    table->middleCols(offset, n).template cast<T>();
        }
        offset += n;
    }
}

// Runs the per-point recursion for every point set (their squared input norms divided by
// the input dimension `input_dim`), fixing the common scale exponents, the layer constants
// and each set's per-point state.  Fam is one of the dual-map families of dual_maps.hpp.
//
// The NTK's dense step adds s Sigma_in + o with (s, o) = (sigma_w^2, sigma_b^2) in the NTK
// parameterization and (n_in, [b_std > 0]) in the standard one (docs/math/2-recursion.md); Sigma_in is
// in the units of the layer's input (2^e_act after an activation, 1 at the input), the sum in
// the layer's own units 2^e_out, so s carries 2^(e_act - e_out) and o carries 2^-e_out.
//
// `stop` is polled every few layers and during series tabulation (Interrupted).
template <class T, class Fam>
Recursion<T> run_recursion(const Network& net, const Fam& act,
                           const std::vector<const std::vector<double>*>& input_variances,
                           std::vector<PointStates<T>*> states, double input_dim, StopSignal& stop) {
    const std::size_t depth = net.depth();
    Recursion<T> rec;
    rec.exponent.resize(depth + 1);

    double v_max = 0.0;
    for (const auto* v : input_variances)
        for (double x : *v) v_max = std::max(v_max, x);
    rec.exponent[0] = detail::layer_exponent(net.w_var[0], v_max, 0, net.b_var[0], 0);
    const double w0 = std::ldexp(net.w_var[0], -rec.exponent[0]);
    const double b0 = std::ldexp(net.b_var[0], -rec.exponent[0]);
    rec.input_w = T(w0);
    rec.input_b = T(b0);
    auto ntk_terms = [&](double w, double b, std::size_t layer, int e_in, int e_out) {
        if (!net.standard) return std::make_pair(w, b);
        const double n_in = layer == 0 ? input_dim : net.widths[layer - 1];
        return std::make_pair(std::ldexp(n_in, e_in - e_out),
                              net.b_var[layer] > 0.0 ? std::ldexp(1.0, -e_out) : 0.0);
    };
    const auto input_ntk = ntk_terms(w0, b0, 0, 0, rec.exponent[0]);
    rec.input_sigma_ntk = T(input_ntk.first);
    rec.input_bias_ntk = T(input_ntk.second);

    // Scaled per-point variances and NTK of the current layer, all sets concatenated.
    std::vector<double> q, theta, act_q;
    for (const auto* v : input_variances)
        for (double x : *v) {
            q.push_back(w0 * x + b0);
            theta.push_back(input_ntk.first * x + input_ntk.second);
        }

    for (std::size_t s = 0; s < states.size(); ++s) {
        PointStates<T>& st = *states[s];
        st.n = input_variances[s]->size();
        st.q.resize((depth + 1) * st.n);
        st.r.resize((depth + 1) * st.n);
        st.ir.resize((depth + 1) * st.n);
        st.ra.resize(depth * st.n);
    }
    auto store = [&](std::size_t layer, const std::vector<double>& values, bool post_activation) {
        std::size_t offset = 0;
        for (PointStates<T>* st : states) {
            for (std::size_t i = 0; i < st->n; ++i) {
                const double v = values[offset + i];
                if (post_activation) {
                    st->ra[layer * st->n + i] = T(std::sqrt(v));
                } else {
                    st->q[layer * st->n + i] = T(v);
                    st->r[layer * st->n + i] = T(std::sqrt(v));
                    st->ir[layer * st->n + i] = v > 0.0 ? T(1.0 / std::sqrt(v)) : T(0);
                }
            }
            offset += st->n;
        }
    };
    store(0, q, false);

    act_q.resize(q.size());
    for (std::size_t l = 0; l < depth; ++l) {
        if (l % 16 == 0) stop.check();
        const int e_in = rec.exponent[l];
        const int e_act = Fam::homogeneous ? e_in : 0;
        double act_max = 0.0;
        std::vector<double> tdot(q.size());
        if constexpr (detail::is_tabulated<Fam>::value) {
            std::vector<double> true_q(q.size());
            for (std::size_t i = 0; i < q.size(); ++i) true_q[i] = std::ldexp(q[i], e_in);
            detail::check_range(true_q, "the variance before activation " + std::to_string(l + 1));
            const SeriesLayer layer = act.tabulate(true_q, l + 1, stop);
            act_q = layer.variance;
            tdot = layer.derivative;
            store_series(layer, states, rec);
        } else {
            for (std::size_t i = 0; i < q.size(); ++i) {
                const double arg = Fam::homogeneous ? q[i] : std::ldexp(q[i], e_in);
                act_q[i] = act.variance(arg);
                tdot[i] = act.derivative(arg);
            }
        }
        detail::check_range(act_q, "the variance after activation " + std::to_string(l + 1));
        for (double v : act_q) act_max = std::max(act_max, v);
        store(l, act_q, true);
        const double w = net.w_var[l + 1];
        const double b = net.b_var[l + 1];
        // Families in true units (e_act = 0) whose variances fell below the range of T
        // keep no information: the unit must not go so far below e_act that the weight
        // factor 2^(e_act - e_out), or its square in the gap d, overflows T (inf * 0 would
        // give NaN where the true kernel has underflowed to 0).
        const int e_out = std::max(detail::layer_exponent(w, act_max, e_act, b, e_in),
                                   e_act - (std::numeric_limits<T>::max_exponent - 16) / 2);
        rec.exponent[l + 1] = e_out;
        const double w_scaled = std::ldexp(w, e_act - e_out), b_scaled = std::ldexp(b, -e_out);
        const auto ntk = ntk_terms(w_scaled, b_scaled, l + 1, e_act, e_out);
        DenseStep<double> step{w_scaled, b_scaled, std::ldexp(w, e_in - e_out), ntk.first, ntk.second};
        rec.dense.push_back(
            DenseStep<T>{T(step.w), T(step.b), T(step.w_ntk), T(step.sigma_ntk), T(step.bias_ntk)});
        for (std::size_t i = 0; i < q.size(); ++i) {
            q[i] = step.w * act_q[i] + step.b;
            theta[i] = dense_ntk(step, act_q[i], tdot[i], theta[i]);
        }
        store(l + 1, q, false);
    }

    for (int e : rec.exponent) rec.scale.push_back(T(std::ldexp(1.0, e)));
    std::size_t offset = 0;
    for (PointStates<T>* st : states) {
        st->nngp.resize(st->n);
        st->ntk.resize(st->n);
        for (std::size_t i = 0; i < st->n; ++i) {
            st->nngp[i] = std::ldexp(q[offset + i], rec.exponent[depth]);
            st->ntk[i] = std::ldexp(theta[offset + i], rec.exponent[depth]);
        }
        // One point set: a symmetric Gram or a diagonal, whose output holds these values in T.
        // Two sets: a cross kernel, whose entries may stay in range when these do not.
        const double limit =
            states.size() == 1 ? double(std::numeric_limits<T>::max()) : std::numeric_limits<double>::max();
        detail::check_range(st->nngp, "K(x, x)", limit);
        detail::check_range(st->ntk, "Theta(x, x)", limit);
        offset += st->n;
    }
    return rec;
}

}  // namespace ntkcore

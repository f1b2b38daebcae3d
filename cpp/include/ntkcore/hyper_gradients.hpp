// Exact derivatives of the NNGP and NTK Gram matrices with respect to log W_std and log b_std
// (every dense layer's sigma_w, sigma_b scaled by one common factor), by forward-mode
// differentiation of the recursion, fused with the value path in one tiled pass.
//
// With D_w = d / d log sigma_w = 2 w d/dw and D_b = 2 b d/db (w = sigma_w^2, b = sigma_b^2 of
// the layer), the NTK parameterization's recursion (docs/math/2-recursion.md)
//     c' = w T(q1, q2, c) + b,   theta' = c' + w Tdot(q1, q2, c) theta
// differentiates to
//     D_w c' = 2 w T + w dT_w,                 D_b c' = w dT_b + 2 b,
//     D theta' = D c' + w (dTdot theta + Tdot D theta) (+ 2 w Tdot theta for D_w),
// dT = T_q1 Dq1 + T_q2 Dq2 + Tdot Dc (Price's theorem: dT/dc = Tdot) and likewise dTdot, with
// the per-point derivatives Dq of the same chain at x = x'.  The input layer starts them at
// D_w c = 2 w x.x'/dim, D_b c = 2 b.  Every value of the value path (c, d, theta per pair,
// in the scaled units of recursion.hpp) is used as it is, so the angles of nearly collinear
// pairs keep the accuracy of its cancellation-free d; the derivative state is in true units.
//
// Families with exact partial derivatives here (true units, s = sqrt(d), theta_a the angle):
//   ab_relu  T = m c + f (s - theta_a c), Tdot = m - f theta_a, T_qi = f s / (2 qi),
//            dtheta_a = -(dc - c (dq1/q1 + dq2/q2) / 2) / s  (0 at s = 0, where it vanishes);
//   sign     T = 1 - 2 theta_a / pi, Tdot = 0;
//   erf      T_qi = -Tdot c~ / (1 + 2 qi~), Tdot_c = 4 b^2 c~ Tdot / den^2,
//            Tdot_qi = -b^2 (1 + 2 qj~) Tdot / den^2 (qi~ = b^2 qi, c~ = b^2 c, den of dual_maps.hpp);
//   sin/cos  T_qi = -b^2 T / 2, Tdot_qi = -b^2 Tdot / 2, Tdot_c = a^2 b^4 (e^-m cosh y - cos^2 c0 e^(-y-m)).
//   max(x, 0)^n  by the homogeneity of T and Tdot per side (RectifiedMonomialTangent).
// The others (gelu, Gauss-Hermite series) and the standard
// parameterization are refused (std::domain_error).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <functional>
#include <limits>
#include <stdexcept>
#include <type_traits>
#include <utility>
#include <vector>

#include <Eigen/Core>

#include "activation_families.hpp"
#include "dual_maps.hpp"
#include "dual_tangents.hpp"
#include "input_layer.hpp"
#include "gram.hpp"
#include "kernel_tiles.hpp"
#include "network.hpp"
#include "parallel.hpp"
#include "recursion.hpp"

namespace ntkcore {

namespace detail {

// body(Fam(act), Fam::Tangent(act)) for the family of `act`: its dual maps and their
// derivative maps; std::domain_error for a family without them.
template <class F>
void visit_tangent(const Activation& act, F&& body) {
    visit_family_type<double>(act.family, [&](auto tag) {
        using Fam = typename decltype(tag)::type;
        if constexpr (std::is_void_v<typename Fam::Tangent>)
            throw std::domain_error(
                "exact hyperparameter gradients exist for the ReLU family, sign, erf, sin/cos and rectified "
                "monomials only");
        else
            body(Fam(act), typename Fam::Tangent(act));
    });
}

// One dense layer after an activation, on a state (c, theta) with tangents (dc, dtheta).
inline void dense_tangent(double w, double b, const DualTangent& a, double theta, Tangent& dc,
                          Tangent& dtheta) {
    dc.w = 2.0 * w * a.t + w * a.dt.w;
    dc.b = w * a.dt.b + 2.0 * b;
    dtheta.w = dc.w + 2.0 * w * a.tdot * theta + w * (a.dtdot.w * theta + a.tdot * dtheta.w);
    dtheta.b = dc.b + w * (a.dtdot.b * theta + a.tdot * dtheta.b);
}

// Per point, layer-major (entry l * n + i): the state after dense layer l, and after the last
// layer K(x, x), Theta(x, x) and their tangents.
struct PointTangents {
    std::size_t n = 0;
    std::vector<double> q, iq, dqw, dqb;  // structure of arrays, for the simd pair loops

    PointTangent at(std::size_t k) const { return {q[k], iq[k], {dqw[k], dqb[k]}}; }
    std::vector<double> nngp, ntk;
    std::vector<Tangent> dnngp, dntk;
};

template <class Tan>
PointTangents point_tangents(const Network& net, const Tan& tan, const std::vector<double>& variance) {
    PointTangents p;
    const std::size_t n = variance.size(), depth = net.depth();
    p.n = n;
    for (auto* v : {&p.q, &p.iq, &p.dqw, &p.dqb}) v->resize((depth + 1) * n);
    p.nngp.resize(n);
    p.ntk.resize(n);
    p.dnngp.resize(n);
    p.dntk.resize(n);
    for (std::size_t i = 0; i < n; ++i) {
        PointTangent pt;
        pt.q = net.w_var[0] * variance[i] + net.b_var[0];
        pt.dq = {2.0 * net.w_var[0] * variance[i], 2.0 * net.b_var[0]};
        double theta = pt.q;
        Tangent dtheta = pt.dq;
        for (std::size_t l = 0;; ++l) {
            pt.iq = pt.q > 0.0 ? 1.0 / pt.q : 0.0;
            p.q[l * n + i] = pt.q;
            p.iq[l * n + i] = pt.iq;
            p.dqw[l * n + i] = pt.dq.w;
            p.dqb[l * n + i] = pt.dq.b;
            if (l == depth) break;
            const DualTangent a = tan(pt, pt, pt.q, 0.0, pt.dq);
            const double w = net.w_var[l + 1], b = net.b_var[l + 1];
            dense_tangent(w, b, a, theta, pt.dq, dtheta);
            theta = w * a.t + b + w * a.tdot * theta;
            pt.q = w * a.t + b;
        }
        p.nngp[i] = pt.q;
        p.ntk[i] = theta;
        p.dnngp[i] = pt.dq;
        p.dntk[i] = dtheta;
    }
    return p;
}

}  // namespace detail

// Scratch of one thread for tiles of at most `capacity` entries.
struct HyperWorkspace {
    TileWorkspace<double> values;
    std::vector<double> dcw, dcb, dtw, dtb;  // tangents of c and theta along (log sigma_w, log sigma_b)
    void reserve(std::size_t capacity) {
        values.reserve(capacity);
        for (auto* v : {&dcw, &dcb, &dtw, &dtb})
            if (v->size() < capacity) v->resize(capacity);
    }
};

// The kernels of one tile with their tangents; per-point recursion once, tiles on demand.
class HyperTiles {
public:
    HyperTiles(const Network& net, const Eigen::Ref<const RowMatrix<double>>& x1,
               const Eigen::Ref<const RowMatrix<double>>* x2, const std::function<bool()>& should_stop = {})
        : net_(net), p1_(x1), p2_(x2 ? new detail::InputPoints<double>(*x2) : nullptr) {
        net_.validate();
        if (net_.standard)
            throw std::domain_error("exact hyperparameter gradients are for the NTK parameterization only");
        if (x2 && x2->cols() != x1.cols())
            throw std::invalid_argument("hyper gradients: x1 and x2 need the same number of columns");
        if (x1.rows() == 0 || x1.cols() == 0 || (x2 && x2->rows() == 0))
            throw std::invalid_argument("hyper gradients: empty input");
        detail::visit_tangent(net_.activation, [&](const auto& act, const auto& tan) {
            const double dim = double(x1.cols());
            StopSignal stop(should_stop);
            rec_ = p2_ ? run_recursion<double>(net_, act, {&p1_.variance, &p2_->variance}, {&s1_, &s2_}, dim,
                                               stop)
                       : run_recursion<double>(net_, act, {&p1_.variance}, {&s1_}, dim, stop);
            t1_ = detail::point_tangents(net_, tan, p1_.variance);
            if (p2_) t2_ = detail::point_tangents(net_, tan, p2_->variance);
        });
    }

    std::size_t rows() const { return std::size_t(p1_.x.rows()); }
    std::size_t cols() const { return std::size_t(second().x.rows()); }
    bool symmetric() const { return !p2_; }

    // Rows i0 .. i0 + n_rows, columns j0 .. j0 + n_cols, row-major: K and Theta into
    // ws.values.c and ws.values.theta (true units), their tangents into ws.dcw, dcb (K) and ws.dtw, dtb
    // (Theta).
    void compute(std::size_t i0, std::size_t j0, std::size_t n_rows, std::size_t n_cols, HyperWorkspace& ws,
                 StopSignal* stop = nullptr) const {
        const std::size_t n = n_rows * n_cols, depth = net_.depth();
        ws.reserve(n);
        TileWorkspace<double>& v = ws.values;
        const detail::InputPoints<double>& p2 = second();
        const detail::PointTangents& t2 = tangents2();
        Eigen::Map<RowMatrix<double>> block(v.dots.data(), Eigen::Index(n_rows), Eigen::Index(n_cols));
        block.noalias() = p1_.x.middleRows(Eigen::Index(i0), Eigen::Index(n_rows)) *
                          p2.x.middleRows(Eigen::Index(j0), Eigen::Index(n_cols)).transpose();
        const double inv_dim = 1.0 / double(p1_.x.cols());
        for (std::size_t k = 0; k < n; ++k) {
            ws.dcw[k] = ws.dtw[k] = 2.0 * net_.w_var[0] * v.dots[k] * inv_dim;
            ws.dcb[k] = ws.dtb[k] = 2.0 * net_.b_var[0];
        }
        detail::input_layer(p1_, p2, Eigen::Index(i0), Eigen::Index(j0), n_rows, n_cols, v.dots.data(), rec_,
                            v.c.data(), v.d.data(), v.theta.data());
        detail::visit_tangent(net_.activation, [&](const auto& act, const auto& tan) {
            for (std::size_t l = 0; l < depth; ++l) {
                if (stop && l % 16 == 15) stop->check();
                const double sc = std::ldexp(1.0, rec_.exponent[l]), sd = sc * sc;
                const double w = net_.w_var[l + 1], b = net_.b_var[l + 1];
                for (std::size_t i = 0; i < n_rows; ++i) {
                    const PointTangent pi = t1_.at(l * t1_.n + i0 + i);
                    const std::size_t o = l * t2.n + j0, r = i * n_cols;
                    const double *q2 = t2.q.data() + o, *iq2 = t2.iq.data() + o;
                    const double *dqw2 = t2.dqw.data() + o, *dqb2 = t2.dqb.data() + o;
                    const double *ci = v.c.data() + r, *di = v.d.data() + r, *ti = v.theta.data() + r;
                    double *dcw = ws.dcw.data() + r, *dcb = ws.dcb.data() + r;
                    double *dtw = ws.dtw.data() + r, *dtb = ws.dtb.data() + r;
// ivdep rather than omp simd: GCC's simd lowering would turn the tangent structs into
// per-lane arrays (scatter stores) and give up; ivdep only drops the alias checks.
#pragma GCC ivdep
                    for (std::size_t j = 0; j < n_cols; ++j) {
                        const PointTangent pj{q2[j], iq2[j], {dqw2[j], dqb2[j]}};
                        Tangent dc{dcw[j], dcb[j]}, dtheta{dtw[j], dtb[j]};
                        const DualTangent g = tan(pi, pj, sc * ci[j], sd * di[j], dc);
                        detail::dense_tangent(w, b, g, sc * ti[j], dc, dtheta);
                        dcw[j] = dc.w;
                        dcb[j] = dc.b;
                        dtw[j] = dtheta.w;
                        dtb[j] = dtheta.b;
                    }
                }
                act.pairs(n_rows, n_cols, detail::layer_inputs(s1_, states(true), l, i0, j0, rec_),
                          v.c.data(), v.d.data(), v.theta.data(), rec_.dense[l]);
            }
        });
        const int e = rec_.exponent[depth];
        for (std::size_t k = 0; k < n; ++k) {
            v.c[k] = std::ldexp(v.c[k], e);
            v.theta[k] = std::ldexp(v.theta[k], e);
        }
        if (!symmetric()) return;
        for (std::size_t i = std::max(i0, j0); i < std::min(i0 + n_rows, j0 + n_cols); ++i) {
            const std::size_t k = (i - i0) * n_cols + (i - j0);
            v.c[k] = s1_.nngp[i];
            v.theta[k] = s1_.ntk[i];
            ws.dcw[k] = t1_.dnngp[i].w;
            ws.dcb[k] = t1_.dnngp[i].b;
            ws.dtw[k] = t1_.dntk[i].w;
            ws.dtb[k] = t1_.dntk[i].b;
        }
    }

private:
    const detail::InputPoints<double>& second() const { return p2_ ? *p2_ : p1_; }
    const PointStates<double>& states(bool second) const { return second && p2_ ? s2_ : s1_; }
    const detail::PointTangents& tangents2() const { return p2_ ? t2_ : t1_; }

    Network net_;
    detail::InputPoints<double> p1_;
    std::unique_ptr<detail::InputPoints<double>> p2_;
    Recursion<double> rec_;
    PointStates<double> s1_, s2_;
    detail::PointTangents t1_, t2_;
};

// K (nngp = true) or Theta between the rows of x1 and x2 (x2 = nullptr: x1 with itself)
// into `value` (N1 x N2), and its derivatives with respect to log sigma_w and log sigma_b
// into `gradient` (N1 x 2 N2: entry (i, 2 j + p)), i.e. an (N1, N2, 2) C array.
inline void hyper_gram(const Network& net, bool nngp, const Eigen::Ref<const RowMatrix<double>>& x1,
                       const Eigen::Ref<const RowMatrix<double>>* x2, Eigen::Ref<RowMatrix<double>> value,
                       Eigen::Ref<RowMatrix<double>> gradient, const GramOptions& opt = GramOptions()) {
    const HyperTiles tiles(net, x1, x2, opt.should_stop);
    const std::size_t n1 = tiles.rows(), n2 = tiles.cols();
    if (std::size_t(value.rows()) != n1 || std::size_t(value.cols()) != n2 ||
        std::size_t(gradient.rows()) != n1 || std::size_t(gradient.cols()) != 2 * n2)
        throw std::invalid_argument("hyper_gram: outputs must be N1 x N2 and N1 x 2 N2");
    const bool symmetric = tiles.symmetric();
    const std::size_t tr = std::max<std::size_t>(1, opt.tile_rows);
    const std::size_t tc = symmetric ? tr : std::max<std::size_t>(1, opt.tile_cols);
    const auto starts = detail::tile_starts(n1, n2, tr, tc, symmetric);
    const int threads = detail::resolve_threads(opt.n_threads, starts.size());
    std::vector<HyperWorkspace> workspaces{std::size_t(threads)};
    StopSignal stop(opt.should_stop);
    detail::parallel_tiles(starts.size(), threads, stop, [&](std::size_t t) {
        HyperWorkspace& ws = workspaces[std::size_t(detail::thread_index())];
        const std::size_t i0 = starts[t].first, j0 = starts[t].second;
        const std::size_t rows = std::min(tr, n1 - i0), cols = std::min(tc, n2 - j0);
        tiles.compute(i0, j0, rows, cols, ws, &stop);
        const std::vector<double>& values = nngp ? ws.values.c : ws.values.theta;
        const std::vector<double>& dw = nngp ? ws.dcw : ws.dtw;
        const std::vector<double>& db = nngp ? ws.dcb : ws.dtb;
        const bool mirror = symmetric && i0 != j0;
        for (std::size_t i = 0; i < rows; ++i) {
            for (std::size_t j = symmetric && i0 == j0 ? i : 0; j < cols; ++j) {
                const std::size_t k = i * cols + j;
                for (const auto& [r, c] : {std::make_pair(i0 + i, j0 + j), std::make_pair(j0 + j, i0 + i)}) {
                    value(Eigen::Index(r), Eigen::Index(c)) = values[k];
                    gradient(Eigen::Index(r), Eigen::Index(2 * c)) = dw[k];
                    gradient(Eigen::Index(r), Eigen::Index(2 * c + 1)) = db[k];
                    if (!(symmetric && (mirror || i0 + i != j0 + j))) break;
                }
            }
        }
    });
    for (Eigen::Index i = 0; i < gradient.rows(); ++i)
        for (Eigen::Index j = 0; j < gradient.cols(); ++j)
            if (!std::isfinite(gradient(i, j)))
                throw std::overflow_error(
                    "hyper gradients overflow: a derivative exceeds the floating-point range; lower W_std or "
                    "the depth");
}

}  // namespace ntkcore

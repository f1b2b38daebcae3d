// Kernel tiles on demand: the per-point recursion runs once, then any block of the NNGP
// and NTK Gram matrices can be computed, by any thread, without the rest.  The Gram driver
// (gram.hpp) and matrix-free operators build on it.
#pragma once

#include <cmath>
#include <cstddef>
#include <functional>
#include <limits>
#include <memory>
#include <stdexcept>
#include <vector>

#include <Eigen/Core>

#include "activation_families.hpp"
#include "dual_maps.hpp"
#include "input_layer.hpp"
#include "network.hpp"
#include "parallel.hpp"
#include "recursion.hpp"

namespace ntkcore {

namespace detail {

template <class T>
LayerInputs<T> layer_inputs(const PointStates<T>& s1, const PointStates<T>& s2, std::size_t l, std::size_t i0,
                            std::size_t j0, const Recursion<T>& rec) {
    const std::size_t o1 = l * s1.n + i0, o2 = l * s2.n + j0;
    LayerInputs<T> in{s1.r.data() + o1,  s2.r.data() + o2,  s1.ir.data() + o1,
                      s2.ir.data() + o2, s1.q.data() + o1,  s2.q.data() + o2,
                      s1.ra.data() + o1, s2.ra.data() + o2, rec.scale[l]};
    if (l < rec.terms.size()) {
        in.terms = rec.terms[l];
        if (!rec.shared_t[l].empty()) {
            in.shared_t = rec.shared_t[l].data();
            in.shared_tdot = rec.shared_tdot[l].data();
        } else {
            in.coef1 = s1.coef[l].data() + i0;
            in.dcoef1 = s1.dcoef[l].data() + i0;
            in.coef2 = s2.coef[l].data() + j0;
            in.dcoef2 = s2.dcoef[l].data() + j0;
            in.stride1 = s1.n;
            in.stride2 = s2.n;
        }
    }
    return in;
}

// 2^e as a factor of type T, or 0 when it is not a normal number of T.
template <class T>
T power_of_two(int e) {
    const bool normal =
        e >= std::numeric_limits<T>::min_exponent - 1 && e < std::numeric_limits<T>::max_exponent;
    return normal ? T(std::ldexp(1.0, e)) : T(0);
}

}  // namespace detail

// Scratch arrays of one thread, sized for tiles of at most `capacity` entries.
template <class T>
struct TileWorkspace {
    std::vector<T> dots, c, d, theta;
    explicit TileWorkspace(std::size_t capacity = 0) { reserve(capacity); }
    void reserve(std::size_t capacity) {
        if (c.size() >= capacity) return;
        dots.resize(capacity);
        c.resize(capacity);
        d.resize(capacity);
        theta.resize(capacity);
    }
};

// The kernels between the rows of x1 (N1 x dim) and of x2 (N2 x dim), or of x1 with itself
// (x2 = nullptr).  Keeps references to x1 and x2: they must outlive this object.  The
// per-point recursion polls should_stop (parallel.hpp's StopSignal) and may throw Interrupted.
template <class T>
class KernelTiles {
public:
    KernelTiles(const Network& net, const Eigen::Ref<const RowMatrix<T>>& x1,
                const Eigen::Ref<const RowMatrix<T>>* x2, const std::function<bool()>& should_stop = {})
        : net_(net), p1_(x1), p2_(x2 ? new detail::InputPoints<T>(*x2) : nullptr) {
        net_.validate();
        if (x2 && x2->cols() != x1.cols())
            throw std::invalid_argument("kernel tiles: x1 and x2 need the same number of columns");
        if (x1.rows() == 0 || x1.cols() == 0 || (x2 && x2->rows() == 0))
            throw std::invalid_argument("kernel tiles: empty input");
        visit_family<T>(net_.activation, [&](const auto& act) {
            const double dim = double(x1.cols());
            StopSignal stop(should_stop);
            rec_ = p2_ ? run_recursion<T>(net_, act, {&p1_.variance, &p2_->variance}, {&s1_, &s2_}, dim, stop)
                       : run_recursion<T>(net_, act, {&p1_.variance}, {&s1_}, dim, stop);
        });
        const int e = rec_.exponent[net_.depth()];
        out_factor_ = detail::power_of_two<T>(e);
        out_exponent_ = e;
    }

    std::size_t rows() const { return std::size_t(p1_.x.rows()); }
    std::size_t cols() const { return std::size_t(second().x.rows()); }
    bool symmetric() const { return !p2_; }
    const Network& network() const { return net_; }

    // K(x, x) and Theta(x, x) of row i of x1 (second = false) or of x2 (second = true).

    // Rows i0 .. i0 + n_rows and columns j0 .. j0 + n_cols: K into ws.c, Theta into ws.theta,
    // row-major n_rows x n_cols, in true units.  In the symmetric case, entries on the main
    // diagonal come from the per-point recursion.  Deep networks poll `stop` every few
    // layers (Interrupted), so that one tile does not delay an interruption.
    void compute(std::size_t i0, std::size_t j0, std::size_t n_rows, std::size_t n_cols, TileWorkspace<T>& ws,
                 StopSignal* stop = nullptr) const {
        if (i0 + n_rows > rows() || j0 + n_cols > cols())
            throw std::out_of_range("kernel tiles: block outside the Gram matrix");
        const std::size_t n = n_rows * n_cols;
        ws.reserve(n);
        const detail::InputPoints<T>& p2 = second();
        Eigen::Map<RowMatrix<T>> block(ws.dots.data(), Eigen::Index(n_rows), Eigen::Index(n_cols));
        block.noalias() = p1_.x.middleRows(Eigen::Index(i0), Eigen::Index(n_rows)) *
                          p2.x.middleRows(Eigen::Index(j0), Eigen::Index(n_cols)).transpose();
        detail::input_layer(p1_, p2, Eigen::Index(i0), Eigen::Index(j0), n_rows, n_cols, ws.dots.data(), rec_,
                            ws.c.data(), ws.d.data(), ws.theta.data());
        visit_family<T>(net_.activation, [&](const auto& act) {
            for (std::size_t l = 0; l < net_.depth(); ++l) {
                if (stop && l % 16 == 15) stop->check();
                act.pairs(n_rows, n_cols, detail::layer_inputs(s1_, states(true), l, i0, j0, rec_),
                          ws.c.data(), ws.d.data(), ws.theta.data(), rec_.dense[l]);
            }
        });
        for (std::size_t k = 0; k < n; ++k) {
            ws.c[k] = scale_back(ws.c[k]);
            ws.theta[k] = scale_back(ws.theta[k]);
        }
        if (symmetric()) {
            for (std::size_t i = i0; i < i0 + n_rows; ++i) {
                if (i < j0 || i >= j0 + n_cols) continue;
                const std::size_t k = (i - i0) * n_cols + (i - j0);
                ws.c[k] = T(s1_.nngp[i]);
                ws.theta[k] = T(s1_.ntk[i]);
            }
        }
    }

private:
    const detail::InputPoints<T>& second() const { return p2_ ? *p2_ : p1_; }
    const PointStates<T>& states(bool second) const { return second && p2_ ? s2_ : s1_; }

    // Multiplying by a power of two rounds exactly like ldexp, which serves the rest.
    T scale_back(T v) const {
        return out_factor_ != T(0) ? v * out_factor_ : T(std::ldexp(v, out_exponent_));
    }

    Network net_;
    detail::InputPoints<T> p1_;
    std::unique_ptr<detail::InputPoints<T>> p2_;
    Recursion<T> rec_;
    PointStates<T> s1_, s2_;
    T out_factor_ = T(1);
    int out_exponent_ = 0;
};

}  // namespace ntkcore

// The tiled, threaded Gram-matrix driver (DESIGN.md, "The hot path").
//
// Per tile: the input Gram block by GEMM, the first dense layer, then every activation and
// dense layer fused on the tile's (c, d, theta) arrays, and only the final K and Theta
// written out.  A symmetric problem computes the upper triangle of tiles and mirrors it;
// its diagonal comes from the per-point recursion (SPEC sec. 3a).
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <exception>
#include <functional>
#include <limits>
#include <stdexcept>
#include <utility>
#include <vector>

#include <Eigen/Core>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "dual_maps.hpp"
#include "network.hpp"
#include "recursion.hpp"

namespace ntkcore {

template <class T>
using RowMatrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class T>
using Vector = Eigen::Matrix<T, Eigen::Dynamic, 1>;

// Thrown when GramOptions::should_stop asked the computation to end early.
struct Interrupted : std::runtime_error {
    Interrupted() : std::runtime_error("computation interrupted") {}
};

struct GramOptions {
    int n_threads = 0;            // 0: as many as OpenMP offers
    std::size_t tile_rows = 64;
    std::size_t tile_cols = 64;
    // Polled by the calling thread between tiles (at most every 50 ms); true ends the run.
    std::function<bool()> should_stop;
};

namespace detail {

// Input points with what the first layer needs: squared norms, norms and unit vectors.
template <class T>
struct InputPoints {
    Eigen::Ref<const RowMatrix<T>> x;
    Vector<T> norm2, norm;
    RowMatrix<T> unit;
    std::vector<double> variance;  // |x|^2 / dim, the input-layer Sigma(x, x)

    explicit InputPoints(const Eigen::Ref<const RowMatrix<T>>& points)
        : x(points), norm2(points.rows()), norm(points.rows()), unit(points.rows(), points.cols()) {
        const double dim = double(points.cols());
        variance.resize(points.rows());
        for (Eigen::Index i = 0; i < points.rows(); ++i) {
            norm2[i] = points.row(i).squaredNorm();
            norm[i] = std::sqrt(norm2[i]);
            if (norm[i] > T(0))
                unit.row(i) = points.row(i) / norm[i];
            else
                unit.row(i).setZero();
            variance[i] = double(norm2[i]) / dim;
        }
    }
};

// 1 - rho^2 below this recomputes |x|^2 |x'|^2 - (x.x')^2 from unit vectors: above it the
// subtraction loses at most log2(16) = 4 bits.
constexpr double collinear_threshold = 1.0 / 16.0;

// The input layer Sigma = x.x'/dim of one tile (from its GEMM block `dots`) followed by the
// first dense layer, written to (c, d, theta).  The GEMM values serve all but the nearly
// (anti)collinear pairs, which a second, rarely taken pass recomputes from unit vectors.
template <class T>
void input_layer(const InputPoints<T>& p1, const InputPoints<T>& p2, Eigen::Index i0,
                 Eigen::Index j0, std::size_t rows, std::size_t cols, const T* dots,
                 const Recursion<T>& rec, T* c, T* d, T* theta) {
    const T inv_dim = T(1) / T(p1.x.cols());
    const T w = rec.input_w, b = rec.input_b;
    const T keep = T(1.0 - collinear_threshold);
    const T* sq2 = p2.norm2.data() + j0;
    for (std::size_t i = 0; i < rows; ++i) {
        const Eigen::Index a = i0 + Eigen::Index(i);
        const T sq1 = p1.norm2[a];
        const T* dot = dots + i * cols;
        T* ci = c + i * cols;
        T* di = d + i * cols;
        T* ti = theta + i * cols;
        // det = |x|^2 |x'|^2 - (x.x')^2 and dist2 = |x - x'|^2 by subtraction.
#pragma omp simd
        for (std::size_t j = 0; j < cols; ++j) {
            const T det = sq1 * sq2[j] - dot[j] * dot[j];
            const T dist2 = sq1 + sq2[j] - T(2) * dot[j];
            ci[j] = w * (dot[j] * inv_dim) + b;
            di[j] = w * w * (det * inv_dim * inv_dim) + w * b * (dist2 * inv_dim);
            ti[j] = ci[j];
        }
        for (std::size_t j = 0; j < cols; ++j) {
            const T prod = sq1 * sq2[j];
            if (!(prod > T(0) && dot[j] * dot[j] > keep * prod)) continue;
            const Eigen::Index bj = j0 + Eigen::Index(j);
            const T minus = (p1.unit.row(a) - p2.unit.row(bj)).squaredNorm();
            const T plus = (p1.unit.row(a) + p2.unit.row(bj)).squaredNorm();
            const T n1 = p1.norm[a], n2 = p2.norm[bj];
            const T det = prod * (minus * plus / T(4));
            const T dist2 = (n1 - n2) * (n1 - n2) + n1 * n2 * minus;
            di[j] = w * w * (det * inv_dim * inv_dim) + w * b * (dist2 * inv_dim);
        }
    }
}

// 2^e as a factor of type T, or 0 when it is not a normal number of T (then ldexp is used).
template <class T>
T power_of_two(int e) {
    const bool normal = e >= std::numeric_limits<T>::min_exponent - 1 &&
                        e < std::numeric_limits<T>::max_exponent;
    return normal ? T(std::ldexp(1.0, e)) : T(0);
}

// Writes a finished tile, scaled back by 2^e (exact: multiplying by a power of two rounds
// like ldexp).  In a symmetric Gram an off-diagonal tile is also written mirrored, and a
// diagonal tile only from its upper triangle, so that the result is exactly symmetric.
enum class Mirror { none, off_diagonal, diagonal };

template <class T>
void write_tile(const T* values, std::size_t rows, std::size_t cols, std::size_t i0, std::size_t j0,
                int e, Mirror mirror, Eigen::Ref<RowMatrix<T>>& out) {
    const T factor = power_of_two<T>(e);
    auto scaled = [&](T v) { return factor != T(0) ? v * factor : T(std::ldexp(v, e)); };
    if (mirror == Mirror::diagonal) {
        for (std::size_t i = 0; i < rows; ++i) {
            for (std::size_t j = i; j < cols; ++j) {
                const T v = scaled(values[i * cols + j]);
                out(Eigen::Index(i0 + i), Eigen::Index(j0 + j)) = v;
                out(Eigen::Index(i0 + j), Eigen::Index(j0 + i)) = v;
            }
        }
        return;
    }
    for (std::size_t i = 0; i < rows; ++i) {
        T* row = &out(Eigen::Index(i0 + i), Eigen::Index(j0));
        for (std::size_t j = 0; j < cols; ++j) row[j] = scaled(values[i * cols + j]);
    }
    if (mirror == Mirror::none) return;
    for (std::size_t j = 0; j < cols; ++j) {
        T* row = &out(Eigen::Index(j0 + j), Eigen::Index(i0));
        for (std::size_t i = 0; i < rows; ++i) row[i] = scaled(values[i * cols + j]);
    }
}

template <class T>
LayerInputs<T> layer_inputs(const PointStates<T>& s1, const PointStates<T>& s2, std::size_t l,
                            Eigen::Index i0, Eigen::Index j0, const Recursion<T>& rec) {
    const std::size_t o1 = l * s1.n + std::size_t(i0), o2 = l * s2.n + std::size_t(j0);
    return LayerInputs<T>{s1.r.data() + o1,  s2.r.data() + o2,  s1.ir.data() + o1,
                          s2.ir.data() + o2, s1.q.data() + o1,  s2.q.data() + o2,
                          s1.ra.data() + o1, s2.ra.data() + o2, rec.scale[l]};
}

template <class T, class F>
void visit_family(const Activation& act, F&& body) {
    switch (act.family) {
        case Family::ab_relu: body(ABRelu<T>(act)); break;
        case Family::sign: body(Sign<T>(act)); break;
        case Family::erf: body(Erf<T>(act)); break;
    }
}

inline int resolve_threads(int requested, std::size_t work_items) {
#ifdef _OPENMP
    const int available = requested > 0 ? requested : omp_get_max_threads();
#else
    const int available = 1;
    (void)requested;
#endif
    return int(std::max<std::size_t>(1, std::min<std::size_t>(std::size_t(available), work_items)));
}

template <class T, class Fam>
void gram_tiles(const Network& net, const Fam& act, const InputPoints<T>& p1,
                const InputPoints<T>* p2_or_null, Eigen::Ref<RowMatrix<T>> nngp,
                Eigen::Ref<RowMatrix<T>> ntk, const GramOptions& opt) {
    const bool symmetric = p2_or_null == nullptr;
    const InputPoints<T>& p2 = symmetric ? p1 : *p2_or_null;
    PointStates<T> s1, s2;
    const Recursion<T> rec =
        symmetric ? run_recursion<T>(net, act, {&p1.variance}, {&s1})
                  : run_recursion<T>(net, act, {&p1.variance, &p2.variance}, {&s1, &s2});
    const PointStates<T>& t2 = symmetric ? s1 : s2;

    const std::size_t n1 = std::size_t(p1.x.rows()), n2 = std::size_t(p2.x.rows());
    const std::size_t tr = std::max<std::size_t>(1, opt.tile_rows);
    const std::size_t tc = symmetric ? tr : std::max<std::size_t>(1, opt.tile_cols);
    std::vector<std::pair<std::size_t, std::size_t>> tiles;
    for (std::size_t i = 0; i < n1; i += tr)
        for (std::size_t j = symmetric ? i : 0; j < n2; j += tc) tiles.emplace_back(i, j);

    const std::size_t depth = net.depth();
    const int e_out = rec.exponent[depth];
    const int threads =
        resolve_threads(opt.n_threads, n1 * n2 * (depth + 1) < 200000 ? 1 : tiles.size());
    std::atomic<bool> stop{false};
    std::exception_ptr failure;
    auto last_poll = std::chrono::steady_clock::now();

#pragma omp parallel num_threads(threads)
    {
        std::vector<T> dots(tr * tc), c(tr * tc), d(tr * tc), theta(tr * tc);
#pragma omp for schedule(dynamic)
        for (std::ptrdiff_t t = 0; t < std::ptrdiff_t(tiles.size()); ++t) {
            if (stop.load(std::memory_order_relaxed)) continue;
            try {
                const std::size_t i0 = tiles[std::size_t(t)].first, j0 = tiles[std::size_t(t)].second;
                const std::size_t rows = std::min(tr, n1 - i0), cols = std::min(tc, n2 - j0);
                Eigen::Map<RowMatrix<T>> block(dots.data(), Eigen::Index(rows), Eigen::Index(cols));
                block.noalias() = p1.x.middleRows(Eigen::Index(i0), Eigen::Index(rows)) *
                                  p2.x.middleRows(Eigen::Index(j0), Eigen::Index(cols)).transpose();
                input_layer(p1, p2, Eigen::Index(i0), Eigen::Index(j0), rows, cols, dots.data(), rec,
                            c.data(), d.data(), theta.data());
                for (std::size_t l = 0; l < depth; ++l)
                    act.pairs(rows, cols,
                              layer_inputs(s1, t2, l, Eigen::Index(i0), Eigen::Index(j0), rec),
                              c.data(), d.data(), theta.data(), rec.dense[l]);
                const Mirror mirror =
                    !symmetric ? Mirror::none : (i0 == j0 ? Mirror::diagonal : Mirror::off_diagonal);
                write_tile(c.data(), rows, cols, i0, j0, e_out, mirror, nngp);
                write_tile(theta.data(), rows, cols, i0, j0, e_out, mirror, ntk);
                if (symmetric && i0 == j0) {
                    for (std::size_t i = 0; i < rows; ++i) {
                        nngp(Eigen::Index(i0 + i), Eigen::Index(i0 + i)) = T(s1.nngp[i0 + i]);
                        ntk(Eigen::Index(i0 + i), Eigen::Index(i0 + i)) = T(s1.ntk[i0 + i]);
                    }
                }
            } catch (...) {
#pragma omp critical(ntkcore_failure)
                if (!failure) failure = std::current_exception();
                stop.store(true);
            }
#ifdef _OPENMP
            const bool caller = omp_get_thread_num() == 0;
#else
            const bool caller = true;
#endif
            if (caller && opt.should_stop) {
                const auto now = std::chrono::steady_clock::now();
                if (now - last_poll > std::chrono::milliseconds(50)) {
                    last_poll = now;
                    if (opt.should_stop()) stop.store(true);
                }
            }
        }
    }
    if (failure) std::rethrow_exception(failure);
    if (stop.load()) throw Interrupted();
}

}  // namespace detail

// K and Theta between the rows of x1 (N1 x dim) and x2 (N2 x dim) into nngp and ntk
// (N1 x N2).  Pass x2 = nullptr for the symmetric Gram of x1 (then N2 = N1).
template <class T>
void gram(const Network& net, const Eigen::Ref<const RowMatrix<T>>& x1,
          const Eigen::Ref<const RowMatrix<T>>* x2, Eigen::Ref<RowMatrix<T>> nngp,
          Eigen::Ref<RowMatrix<T>> ntk, const GramOptions& opt = GramOptions()) {
    net.validate();
    const Eigen::Index n2 = x2 ? x2->rows() : x1.rows();
    if (x2 && x2->cols() != x1.cols())
        throw std::invalid_argument("gram: x1 and x2 need the same number of columns");
    if (x1.rows() == 0 || x1.cols() == 0 || n2 == 0)
        throw std::invalid_argument("gram: empty input");
    if (nngp.rows() != x1.rows() || nngp.cols() != n2 || ntk.rows() != x1.rows() || ntk.cols() != n2)
        throw std::invalid_argument("gram: output arrays must be N1 x N2");
    const detail::InputPoints<T> p1(x1);
    if (x2) {
        const detail::InputPoints<T> p2(*x2);
        detail::visit_family<T>(net.activation, [&](const auto& act) {
            detail::gram_tiles<T>(net, act, p1, &p2, nngp, ntk, opt);
        });
    } else {
        detail::visit_family<T>(net.activation, [&](const auto& act) {
            detail::gram_tiles<T>(net, act, p1, nullptr, nngp, ntk, opt);
        });
    }
}

// K(x, x) and Theta(x, x) for each row of x, from the per-point recursion alone.
template <class T>
void diagonal(const Network& net, const Eigen::Ref<const RowMatrix<T>>& x, Eigen::Ref<Vector<T>> nngp,
              Eigen::Ref<Vector<T>> ntk) {
    net.validate();
    if (nngp.size() != x.rows() || ntk.size() != x.rows())
        throw std::invalid_argument("diagonal: output arrays must have one entry per row of x");
    std::vector<double> variance(std::size_t(x.rows()));
    const double dim = double(x.cols());
    for (Eigen::Index i = 0; i < x.rows(); ++i)
        variance[std::size_t(i)] = double(x.row(i).squaredNorm()) / dim;
    PointStates<T> states;
    detail::visit_family<T>(net.activation, [&](const auto& act) {
        run_recursion<T>(net, act, {&variance}, {&states});
    });
    for (Eigen::Index i = 0; i < x.rows(); ++i) {
        nngp[i] = T(states.nngp[std::size_t(i)]);
        ntk[i] = T(states.ntk[std::size_t(i)]);
    }
}

}  // namespace ntkcore

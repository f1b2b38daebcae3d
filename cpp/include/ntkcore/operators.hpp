// Symmetric linear operators for the eigen solvers (spectral.hpp): y = A x for a block of
// vectors at once, so that one pass over A serves the whole block.
//
//   DenseOperator      A given as a dense symmetric matrix (its upper triangle, tiles on threads)
//   KernelOperator     A = K or Theta of a network on points x, evaluated tile by tile and
//                      never stored: memory O(N * block), any N
//   CholeskyInverse    A^-1 through the Cholesky factor of A (+ shift): the lambda_min path
//
// Every operator has size(), apply(X, Y) (Y = A X, both N x b, column-major) and counts
// its passes.  Each applies A times a power of two, exactly, chosen by the solver so that
// nothing over- or underflows (spectral.hpp).  Threads come from detail::parallel_tiles
// (parallel.hpp), which also polls the interruption callback; no sum depends on the number
// of threads or on their timing, so every apply is bitwise reproducible.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <functional>
#include <limits>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <Eigen/Cholesky>
#include <Eigen/Core>

#include "gram.hpp"
#include "kernel_tiles.hpp"

namespace ntkcore {

template <class T>
using ColMatrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic>;

struct OperatorOptions {
    int n_threads = 0;                  // 0: as many as OpenMP offers
    std::size_t tile = 0;               // rows per panel or tile edge; 0: a default per operator
    std::function<bool()> should_stop;  // polled between tiles; true ends with Interrupted
};

namespace detail {

// Block products below this many flops (a few milliseconds) run on the calling thread: waking
// a team for less costs more than it saves, above all on a loaded machine.
constexpr std::size_t serial_flops = 50000000;

// y = scale A x, with the power of two `scale` applied where it can neither overflow nor
// underflow: to x when it enlarges (A is tiny), to y when it shrinks (A is huge; for
// orthonormal x every partial sum of a row is at most ||A||, so A x is finite whenever the
// eigenvalues are).  Powers of two scale exactly, so results scale exactly with A.
template <class T, class Product>
void scaled_product(const Eigen::Ref<const ColMatrix<T>>& x, Eigen::Ref<ColMatrix<T>> y, double scale,
                    Product&& product) {
    if (scale > 1.0) {
        const ColMatrix<T> enlarged = x * T(scale);
        product(enlarged, y);
    } else {
        product(x, y);
        if (scale != 1.0) y *= T(scale);
    }
}

// Y = scale A X for a symmetric N x N matrix A given tile by tile on its upper triangle: tile
// (I, J), I <= J, adds A_IJ X_J to Y_I and A_IJ^T X_I to Y_J.  The tiles are dealt to a fixed
// number of slots (contiguous runs in tile order); each slot sums its tiles in order into its
// own buffer (the rows its tiles touch; the first slot's is Y), and the buffers are added in
// slot order.  The sums then do not depend on the number of threads or on which thread ran
// what, so a pass gives bitwise the same Y for any n_threads; the price is up to slots x N x b
// memory and traffic, and at most `slots` threads per pass.
template <class T>
class UpperTilePass {
public:
    UpperTilePass(std::size_t n, std::size_t edge, std::size_t slots) : n_(n), edge_(edge) {
        for (std::size_t i = 0; i < n; i += edge)
            for (std::size_t j = i; j < n; j += edge) starts_.emplace_back(i, j);
        slots_ = std::min(slots, starts_.size());
        for (std::size_t s = 0; s < slots_; ++s) {
            std::size_t lo = n, hi = 0;
            for (std::size_t t = first(s); t < first(s + 1); ++t) {
                lo = std::min(lo, starts_[t].first);
                hi = std::max(hi, std::min(n, starts_[t].second + edge));
            }
            rows_.emplace_back(lo, hi - lo);
        }
    }

    std::size_t slots() const { return slots_; }

    // tile(i0, j0, rows, cols, thread) returns the Eigen block A[i0 : i0 + rows, j0 : j0 + cols].
    template <class Tile>
    void apply(const Eigen::Ref<const ColMatrix<T>>& x, Eigen::Ref<ColMatrix<T>> y, double scale, int threads,
               const std::function<bool()>& should_stop, Tile&& tile) const {
        scaled_product<T>(x, y, scale,
                          [&](const Eigen::Ref<const ColMatrix<T>>& xs, Eigen::Ref<ColMatrix<T>> ys) {
                              sum_tiles(xs, ys, threads, should_stop, tile);
                          });
    }

private:
    template <class Tile>
    void sum_tiles(const Eigen::Ref<const ColMatrix<T>>& x, Eigen::Ref<ColMatrix<T>> y, int threads,
                   const std::function<bool()>& should_stop, Tile& tile) const {
        const Eigen::Index b = x.cols();
        accumulators_.resize(slots_ ? slots_ - 1 : 0);
        y.setZero();
        detail::parallel_tiles(slots_, threads, should_stop, [&](std::size_t s) {
            const int id = thread_index();
            // out holds the rows from `offset` on.
            auto add = [&](auto&& out, std::size_t offset) {
                for (std::size_t t = first(s); t < first(s + 1); ++t) {
                    const std::size_t i0 = starts_[t].first, j0 = starts_[t].second;
                    const Eigen::Index rows = Eigen::Index(std::min(edge_, n_ - i0));
                    const Eigen::Index cols = Eigen::Index(std::min(edge_, n_ - j0));
                    const auto block = tile(i0, j0, std::size_t(rows), std::size_t(cols), id);
                    out.middleRows(Eigen::Index(i0 - offset), rows).noalias() +=
                        block * x.middleRows(Eigen::Index(j0), cols);
                    if (i0 != j0)
                        out.middleRows(Eigen::Index(j0 - offset), cols).noalias() +=
                            block.transpose() * x.middleRows(Eigen::Index(i0), rows);
                }
            };
            if (s == 0) {
                add(y, 0);
            } else {
                ColMatrix<T>& acc = accumulators_[s - 1];
                acc.setZero(Eigen::Index(rows_[s].second), b);
                add(acc, rows_[s].first);
            }
        });
        for (std::size_t s = 1; s < slots_; ++s)
            y.middleRows(Eigen::Index(rows_[s].first), Eigen::Index(rows_[s].second)) += accumulators_[s - 1];
    }

    std::size_t first(std::size_t slot) const { return starts_.size() * slot / slots_; }  // its first tile

    std::size_t n_, edge_, slots_ = 0;
    std::vector<std::pair<std::size_t, std::size_t>> starts_;
    std::vector<std::pair<std::size_t, std::size_t>> rows_;  // per slot: first row touched, count
    mutable std::vector<ColMatrix<T>> accumulators_;
};

}  // namespace detail

// scale A for a dense symmetric N x N matrix A (only referenced: it must outlive the
// operator) and a power of two `scale`, of which only the upper triangle is read: tile (I, J),
// I <= J, adds A_IJ X_J to Y_I and A_IJ^T X_I to Y_J, so that a pass streams half the matrix
// (block products are memory-bound).  Tiles are summed in 8 slots (UpperTilePass): more
// threads than that gain little on a memory-bound product.
template <class T>
class DenseOperator {
public:
    DenseOperator(const Eigen::Ref<const RowMatrix<T>>& a, double scale = 1.0,
                  const OperatorOptions& opt = OperatorOptions())
        : a_(a), scale_(scale), opt_(opt), pass_(std::size_t(a.rows()), opt.tile ? opt.tile : 256, 8) {
        if (a_.rows() != a_.cols()) throw std::invalid_argument("dense operator: matrix must be square");
    }

    std::size_t size() const { return std::size_t(a_.rows()); }
    std::size_t passes() const { return passes_; }

    void apply(const Eigen::Ref<const ColMatrix<T>>& x, Eigen::Ref<ColMatrix<T>> y) const {
        const Eigen::Index b = x.cols();
        if (x.rows() != a_.rows() || y.rows() != a_.rows() || y.cols() != b)
            throw std::invalid_argument("dense operator: blocks must be N x b");
        const std::size_t n = size();
        const bool small = n * n * std::size_t(b) < detail::serial_flops;
        const int threads = detail::resolve_threads(opt_.n_threads, small ? 1 : pass_.slots());
        pass_.apply(x, y, scale_, threads, opt_.should_stop,
                    [&](std::size_t i0, std::size_t j0, std::size_t rows, std::size_t cols, int) {
                        return a_.block(Eigen::Index(i0), Eigen::Index(j0), Eigen::Index(rows),
                                        Eigen::Index(cols));
                    });
        ++passes_;
    }

private:
    Eigen::Ref<const RowMatrix<T>> a_;
    double scale_;
    OperatorOptions opt_;
    detail::UpperTilePass<T> pass_;
    mutable std::size_t passes_ = 0;
};

enum class KernelKind { nngp, ntk };

// scale K or scale Theta (scale a power of two) of the points behind `tiles` (a symmetric
// KernelTiles: x2 = nullptr), applied without storing it.  The upper triangle of tiles is
// computed on every pass; tile (I, J) adds B X_J to Y_I and B^T X_I to Y_J, summed in 16
// slots (UpperTilePass: up to 16 threads, and up to 16 x N x b memory).  Work per pass:
// N^2 / 2 kernel entries plus 2 N^2 b flops.
template <class T>
class KernelOperator {
public:
    KernelOperator(const KernelTiles<T>& tiles, KernelKind kind, double scale = 1.0,
                   const OperatorOptions& opt = OperatorOptions())
        : tiles_(tiles), kind_(kind), scale_(scale), opt_(opt), edge_(opt.tile ? opt.tile : 128),
          pass_(tiles.rows(), edge_, 16) {
        if (!tiles_.symmetric())
            throw std::invalid_argument("kernel operator: needs the symmetric tiles of one point set");
        const std::size_t n = tiles_.rows();
        const bool small = n * n * (tiles_.network().depth() + 1) < 200000;
        threads_ = detail::resolve_threads(opt_.n_threads, small ? 1 : pass_.slots());
        workspaces_.assign(std::size_t(threads_), TileWorkspace<T>(edge_ * edge_));
    }

    std::size_t size() const { return tiles_.rows(); }
    std::size_t passes() const { return passes_; }

    void apply(const Eigen::Ref<const ColMatrix<T>>& x, Eigen::Ref<ColMatrix<T>> y) const {
        const Eigen::Index n = Eigen::Index(size()), b = x.cols();
        if (x.rows() != n || y.rows() != n || y.cols() != b)
            throw std::invalid_argument("kernel operator: blocks must be N x b");
        pass_.apply(x, y, scale_, threads_, opt_.should_stop,
                    [&](std::size_t i0, std::size_t j0, std::size_t rows, std::size_t cols, int id) {
                        TileWorkspace<T>& ws = workspaces_[std::size_t(id)];
                        tiles_.compute(i0, j0, rows, cols, ws);
                        return Eigen::Map<const RowMatrix<T>>(
                            kind_ == KernelKind::ntk ? ws.theta.data() : ws.c.data(), Eigen::Index(rows),
                            Eigen::Index(cols));
                    });
        ++passes_;
    }

private:
    const KernelTiles<T>& tiles_;
    KernelKind kind_;
    double scale_;
    OperatorOptions opt_;
    std::size_t edge_;
    detail::UpperTilePass<T> pass_;
    int threads_ = 1;
    mutable std::vector<TileWorkspace<T>> workspaces_;
    mutable std::size_t passes_ = 0;
};

namespace detail {

// In-place Cholesky factorization a = L L^T of a symmetric matrix (lower triangle read and
// overwritten; the strict upper triangle is left as scratch), blocked and right-looking: each
// step factors a diagonal block, solves the panel below it (row chunks on threads) and
// updates the trailing lower triangle by GEMMs (column blocks on threads).  False when a
// pivot is not positive (a is not numerically positive definite).
template <class T>
bool cholesky_in_place(ColMatrix<T>& a, int n_threads, const std::function<bool()>& should_stop) {
    const Eigen::Index n = a.rows();
    const Eigen::Index nb = 256;
    for (Eigen::Index j = 0; j < n; j += nb) {
        const Eigen::Index jb = std::min(nb, n - j), rest = n - j - jb;
        Eigen::LLT<ColMatrix<T>, Eigen::Lower> diag(a.block(j, j, jb, jb));
        if (diag.info() != Eigen::Success) return false;
        a.block(j, j, jb, jb).template triangularView<Eigen::Lower>() = diag.matrixL();
        if (rest == 0) break;
        const auto ljj = a.block(j, j, jb, jb).template triangularView<Eigen::Lower>();
        const std::size_t chunks = std::size_t((rest + nb - 1) / nb);
        const bool small = std::size_t(rest) * std::size_t(rest) * std::size_t(jb) < serial_flops;
        const int threads = resolve_threads(n_threads, small ? 1 : chunks);
        parallel_tiles(chunks, threads, should_stop, [&](std::size_t c) {
            const Eigen::Index r0 = j + jb + Eigen::Index(c) * nb, rows = std::min(nb, n - r0);
            auto panel = a.block(r0, j, rows, jb);
            ljj.transpose().template solveInPlace<Eigen::OnTheRight>(panel);
        });
        parallel_tiles(chunks, threads, should_stop, [&](std::size_t c) {
            const Eigen::Index c0 = j + jb + Eigen::Index(c) * nb, cols = std::min(nb, n - c0);
            a.block(c0, c0, n - c0, cols).noalias() -=
                a.block(c0, j, n - c0, jb) * a.block(c0, j, cols, jb).transpose();
        });
    }
    return true;
}

}  // namespace detail

// (scale A + shift I)^-1 for a symmetric positive (semi)definite A and a power of two
// `scale` (which brings A to a range where the factor of precision F neither overflows nor
// underflows), by the Cholesky factor of scale A + shift I.  The shift starts at `shift` and
// grows tenfold (from N eps max(diag scale A) when it is 0) while the factorization fails,
// at most `max_tries` times; shift() reports the one used.  Holds the factor, N^2 entries,
// its only copy of A.  The factor may be held in a lower precision F than the blocks
// (T = double, F = float: half the flops and memory traffic, for a rough first look at the
// bottom of the spectrum).
template <class T, class F = T>
class CholeskyInverse {
public:
    CholeskyInverse(const Eigen::Ref<const RowMatrix<T>>& a, double scale = 1.0, double shift = 0.0,
                    int max_tries = 8, const OperatorOptions& opt = OperatorOptions())
        : opt_(opt), shift_(shift) {
        if (a.rows() != a.cols()) throw std::invalid_argument("cholesky inverse: matrix must be square");
        const Eigen::Index n = a.rows();
        const double diag = n ? scale * double(a.diagonal().cwiseAbs().maxCoeff()) : 0.0;
        for (int attempt = 0;; ++attempt) {
            // The factor is the only copy.  A is symmetric, so its row-major storage read as
            // column-major is A itself: a straight copy, no transposition.
            factor_ = (Eigen::Map<const ColMatrix<T>, 0, Eigen::OuterStride<>>(
                           a.data(), n, n, Eigen::OuterStride<>(a.outerStride())) *
                       T(scale))
                          .template cast<F>();
            factor_.diagonal().array() += F(shift_);
            if (detail::cholesky_in_place(factor_, opt_.n_threads, opt_.should_stop)) break;
            if (attempt + 1 >= max_tries)
                throw std::domain_error(
                    "cholesky inverse: the matrix is not positive definite even after "
                    "shifting by " +
                    std::to_string(shift_ / scale));
            const double first = double(n) * double(std::numeric_limits<F>::epsilon()) *
                                 std::max(diag, double(std::numeric_limits<F>::min()));
            shift_ = shift_ > 0 ? 10.0 * shift_ : first;
        }
    }

    std::size_t size() const { return std::size_t(factor_.rows()); }
    std::size_t passes() const { return passes_; }
    double shift() const { return shift_; }

    // Y = (scale A + shift I)^-1 X = L^-T L^-1 X by blocked substitution: each block row is
    // solved by its small diagonal triangle, and the products with the panel below it (the
    // bulk, memory-bound for few columns) are split into chunks of nb_ rows on threads, so
    // that the factor is streamed once per triangle whatever the block width.  The chunks,
    // and the order in which their partial sums are added, do not depend on the number of
    // threads: Y is bitwise the same for any n_threads.
    void apply(const Eigen::Ref<const ColMatrix<T>>& x, Eigen::Ref<ColMatrix<T>> y) const {
        const Eigen::Index n = factor_.rows(), b = x.cols();
        if (x.rows() != n || y.rows() != n || y.cols() != b)
            throw std::invalid_argument("cholesky inverse: blocks must be N x b");
        const bool small = 2 * size() * size() * std::size_t(b) < detail::serial_flops;
        const std::size_t most = std::size_t((n + nb_ - 1) / nb_);
        const int threads = detail::resolve_threads(opt_.n_threads, small ? 1 : most);
        partial_.resize(most);
        for (auto& p : partial_) p.resize(nb_, b);
        work_ = x.template cast<F>();
        auto& z = work_;
        auto chunks = [&](Eigen::Index below) { return std::size_t((n - below + nb_ - 1) / nb_); };
        for (Eigen::Index j = 0; j < n; j += nb_) {  // L z = x, top down
            const Eigen::Index jb = std::min(nb_, n - j);
            auto zj = z.middleRows(j, jb);
            factor_.block(j, j, jb, jb).template triangularView<Eigen::Lower>().solveInPlace(zj);
            detail::parallel_tiles(chunks(j + jb), threads, opt_.should_stop, [&](std::size_t c) {
                const Eigen::Index r0 = j + jb + Eigen::Index(c) * nb_, rows = std::min(nb_, n - r0);
                z.middleRows(r0, rows).noalias() -= factor_.block(r0, j, rows, jb) * zj;
            });
        }
        for (Eigen::Index j = ((n - 1) / nb_) * nb_; j >= 0; j -= nb_) {  // L^T z' = z, bottom up
            const Eigen::Index jb = std::min(nb_, n - j);
            const std::size_t count = chunks(j + jb);
            detail::parallel_tiles(count, threads, opt_.should_stop, [&](std::size_t c) {
                const Eigen::Index r0 = j + jb + Eigen::Index(c) * nb_, rows = std::min(nb_, n - r0);
                partial_[c].topRows(jb).noalias() =
                    factor_.block(r0, j, rows, jb).transpose() * z.middleRows(r0, rows);
            });
            auto zj = z.middleRows(j, jb);
            for (std::size_t c = 0; c < count; ++c) zj -= partial_[c].topRows(jb);
            factor_.block(j, j, jb, jb).template triangularView<Eigen::Lower>().transpose().solveInPlace(zj);
        }
        y = z.template cast<T>();
        ++passes_;
    }

private:
    OperatorOptions opt_;
    double shift_;
    static constexpr Eigen::Index nb_ = 256;     // block rows of the substitutions
    ColMatrix<F> factor_;                        // L in the lower triangle
    mutable ColMatrix<F> work_;                  // the block being solved
    mutable std::vector<ColMatrix<F>> partial_;  // per-chunk products of the backward sweep, in chunk order
    mutable std::size_t passes_ = 0;
};

}  // namespace ntkcore

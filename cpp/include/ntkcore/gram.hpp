// The tiled, threaded Gram-matrix driver (docs/design.md, "The hot path").
//
// The Gram matrix is cut into tiles that threads compute independently (kernel_tiles.hpp:
// input Gram block by GEMM, all layers fused, only the final tiles written).  A symmetric
// problem computes the upper triangle of tiles and mirrors it.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <functional>
#include <stdexcept>
#include <utility>
#include <vector>

#include <Eigen/Core>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "kernel_tiles.hpp"
#include "network.hpp"
#include "parallel.hpp"
#include "recursion.hpp"

namespace ntkcore {

struct GramOptions {
    int n_threads = 0;  // 0: as many as OpenMP offers
    std::size_t tile_rows = 64;
    std::size_t tile_cols = 64;
    // Polled by the calling thread (at most every 50 ms: between tiles, every few layers
    // within one, and in the per-point recursion); true ends the run by Interrupted.
    std::function<bool()> should_stop;
    // When set, the run stores its number of work units (tiles, or pairs of a layer network)
    // in `total` before it starts and counts the finished ones in `done`, for progress reports
    // from should_stop.
    struct Progress {
        std::atomic<std::size_t> done{0}, total{0};
    }* progress = nullptr;
};

namespace detail {

// The upper-left corners of the tr x tc tiles of an n1 x n2 Gram (the upper triangle of
// tiles, tc = tr, when it is symmetric).
inline std::vector<std::pair<std::size_t, std::size_t>> tile_starts(std::size_t n1, std::size_t n2,
                                                                    std::size_t tr, std::size_t tc,
                                                                    bool symmetric) {
    std::vector<std::pair<std::size_t, std::size_t>> starts;
    for (std::size_t i = 0; i < n1; i += tr)
        for (std::size_t j = symmetric ? i : 0; j < n2; j += tc) starts.emplace_back(i, j);
    return starts;
}

// Sets the unit count of a run and returns the counter to advance (nullptr: not reported).
inline std::atomic<std::size_t>* start_progress(const GramOptions& opt, std::size_t units) {
    if (!opt.progress) return nullptr;
    opt.progress->total.store(units, std::memory_order_relaxed);
    return &opt.progress->done;
}

// In a symmetric Gram an off-diagonal tile is also written mirrored, and a diagonal tile
// only from its upper triangle, so that the result is exactly symmetric.
enum class Mirror { none, off_diagonal, diagonal };

template <class T>
void write_tile(const T* values, std::size_t rows, std::size_t cols, std::size_t i0, std::size_t j0,
                Mirror mirror, Eigen::Ref<RowMatrix<T>>& out) {
    if (mirror == Mirror::diagonal) {
        for (std::size_t i = 0; i < rows; ++i) {
            for (std::size_t j = i; j < cols; ++j) {
                const T v = values[i * cols + j];
                out(Eigen::Index(i0 + i), Eigen::Index(j0 + j)) = v;
                out(Eigen::Index(i0 + j), Eigen::Index(j0 + i)) = v;
            }
        }
        return;
    }
    for (std::size_t i = 0; i < rows; ++i)
        std::copy(values + i * cols, values + (i + 1) * cols, &out(Eigen::Index(i0 + i), Eigen::Index(j0)));
    if (mirror == Mirror::none) return;
    for (std::size_t j = 0; j < cols; ++j) {
        T* row = &out(Eigen::Index(j0 + j), Eigen::Index(i0));
        for (std::size_t i = 0; i < rows; ++i) row[i] = values[i * cols + j];
    }
}

}  // namespace detail

// K and Theta between the rows of x1 (N1 x dim) and x2 (N2 x dim) into nngp and ntk
// (N1 x N2).  Pass x2 = nullptr for the symmetric Gram of x1 (then N2 = N1).
template <class T>
void gram(const Network& net, const Eigen::Ref<const RowMatrix<T>>& x1,
          const Eigen::Ref<const RowMatrix<T>>* x2, Eigen::Ref<RowMatrix<T>> nngp,
          Eigen::Ref<RowMatrix<T>> ntk, const GramOptions& opt = GramOptions()) {
    const KernelTiles<T> tiles(net, x1, x2, opt.should_stop);
    const std::size_t n1 = tiles.rows(), n2 = tiles.cols();
    if (std::size_t(nngp.rows()) != n1 || std::size_t(nngp.cols()) != n2 || std::size_t(ntk.rows()) != n1 ||
        std::size_t(ntk.cols()) != n2)
        throw std::invalid_argument("gram: output arrays must be N1 x N2");
    const bool symmetric = tiles.symmetric();
    const std::size_t tr = std::max<std::size_t>(1, opt.tile_rows);
    const std::size_t tc = symmetric ? tr : std::max<std::size_t>(1, opt.tile_cols);
    const auto starts = detail::tile_starts(n1, n2, tr, tc, symmetric);
    std::atomic<std::size_t>* done = detail::start_progress(opt, starts.size());

    const bool small = n1 * n2 * (net.depth() + 1) < 200000;
    const int threads = detail::resolve_threads(opt.n_threads, small ? 1 : starts.size());
    std::vector<TileWorkspace<T>> workspaces(std::size_t(threads), TileWorkspace<T>(tr * tc));
    StopSignal stop(opt.should_stop);
    detail::parallel_tiles(starts.size(), threads, stop, [&](std::size_t t) {
#ifdef _OPENMP
        TileWorkspace<T>& ws = workspaces[std::size_t(omp_get_thread_num())];
#else
        TileWorkspace<T>& ws = workspaces[0];
#endif
        const std::size_t i0 = starts[t].first, j0 = starts[t].second;
        const std::size_t rows = std::min(tr, n1 - i0), cols = std::min(tc, n2 - j0);
        tiles.compute(i0, j0, rows, cols, ws, &stop);
        const detail::Mirror mirror = !symmetric ? detail::Mirror::none
                                      : i0 == j0 ? detail::Mirror::diagonal
                                                 : detail::Mirror::off_diagonal;
        detail::write_tile(ws.c.data(), rows, cols, i0, j0, mirror, nngp);
        detail::write_tile(ws.theta.data(), rows, cols, i0, j0, mirror, ntk);
        if (done) done->fetch_add(1, std::memory_order_relaxed);
    });
}

// K(x, x) and Theta(x, x) for each row of x, from the per-point recursion alone;
// should_stop as in GramOptions.
template <class T>
void diagonal(const Network& net, const Eigen::Ref<const RowMatrix<T>>& x, Eigen::Ref<Vector<T>> nngp,
              Eigen::Ref<Vector<T>> ntk, const std::function<bool()>& should_stop = {}) {
    net.validate();
    if (nngp.size() != x.rows() || ntk.size() != x.rows())
        throw std::invalid_argument("diagonal: output arrays must have one entry per row of x");
    const detail::InputPoints<T> points(x);
    PointStates<T> states;
    StopSignal stop(should_stop);
    visit_family<T>(net.activation, [&](const auto& act) {
        run_recursion<T>(net, act, {&points.variance}, {&states}, double(x.cols()), stop);
    });
    for (Eigen::Index i = 0; i < x.rows(); ++i) {
        nngp[i] = T(states.nngp[std::size_t(i)]);
        ntk[i] = T(states.ntk[std::size_t(i)]);
    }
}

}  // namespace ntkcore

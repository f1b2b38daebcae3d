// Matrix-free kernel products for the iterative solvers of kernel regression: Y = K V for a
// block of right-hand sides V (N2 x b), with K = K or Theta between two point sets, computed
// tile by tile and never stored.  One pass over the tiles serves all b columns.
//
//   symmetric_kernel_product   K(x, x) V: the upper triangle of tiles (UpperTilePass), half
//                              the kernel entries of the full matrix
//   cross_kernel_product       K(x1, x2) V: panels of rows of x1 on threads, each summing its
//                              tiles in column order (prediction, and row blocks on a cluster)
//
// Both poll OperatorOptions::should_stop between tiles, on the calling thread only (it may
// report progress there: `done` counts the tiles finished so far), end by Interrupted when it
// says so, and are bitwise reproducible for any number of threads.  Memory: O((N1 + N2) b) plus one tile per
// thread.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <stdexcept>
#include <vector>

#include <Eigen/Core>

#include "kernel_tiles.hpp"
#include "operators.hpp"

namespace ntkcore {

namespace detail {

constexpr std::size_t default_product_tile = 128;

inline std::size_t product_tile(const OperatorOptions& opt) {
    return opt.tile ? opt.tile : default_product_tile;
}

inline std::size_t tile_count(std::size_t n, std::size_t edge) {
    return (n + edge - 1) / edge;
}

// Whether a product is small enough for the calling thread alone (as KernelOperator decides).
inline bool small_product(std::size_t n1, std::size_t n2, std::size_t depth) {
    return n1 * n2 * (depth + 1) < 200000;
}

template <class T>
Eigen::Map<const RowMatrix<T>> tile_block(const TileWorkspace<T>& ws, KernelKind kind, std::size_t rows,
                                          std::size_t cols) {
    return {kind == KernelKind::ntk ? ws.theta.data() : ws.c.data(), Eigen::Index(rows), Eigen::Index(cols)};
}

}  // namespace detail

// Tiles one product visits: (N/t)(N/t + 1)/2 for the symmetric product, (N1/t)(N2/t) for the
// cross product, t the tile edge (OperatorOptions::tile, default 128).
inline std::size_t symmetric_product_tiles(std::size_t n, const OperatorOptions& opt) {
    const std::size_t t = detail::tile_count(n, detail::product_tile(opt));
    return t * (t + 1) / 2;
}

inline std::size_t cross_product_tiles(std::size_t n1, std::size_t n2, const OperatorOptions& opt) {
    const std::size_t e = detail::product_tile(opt);
    return detail::tile_count(n1, e) * detail::tile_count(n2, e);
}

// y = K(x, x) v for the symmetric tiles of one point set (x2 = nullptr); y is N x b.
template <class T>
void symmetric_kernel_product(const KernelTiles<T>& tiles, KernelKind kind,
                              const Eigen::Ref<const ColMatrix<T>>& v, Eigen::Ref<ColMatrix<T>> y,
                              const OperatorOptions& opt, std::atomic<std::size_t>& done) {
    if (!tiles.symmetric())
        throw std::invalid_argument("kernel product: needs the symmetric tiles of one point set");
    const std::size_t n = tiles.rows(), edge = detail::product_tile(opt);
    if (std::size_t(v.rows()) != n || std::size_t(y.rows()) != n || y.cols() != v.cols())
        throw std::invalid_argument("kernel product: v and y must be N x b");
    const detail::UpperTilePass<T> pass(n, edge, 16);
    const bool small = detail::small_product(n, n, tiles.network().depth());
    const int threads = detail::resolve_threads(opt.n_threads, small ? 1 : pass.slots());
    std::vector<TileWorkspace<T>> workspaces(std::size_t(threads), TileWorkspace<T>(edge * edge));
    // A slot of the pass holds many tiles: the stop signal is polled per tile, not per slot.
    StopSignal stop(opt.should_stop);
    pass.apply(v, y, 1.0, threads, {},
               [&](std::size_t i0, std::size_t j0, std::size_t rows, std::size_t cols, int id) {
                   stop.check();
                   TileWorkspace<T>& ws = workspaces[std::size_t(id)];
                   tiles.compute(i0, j0, rows, cols, ws, &stop);
                   done.fetch_add(1, std::memory_order_relaxed);
                   return detail::tile_block(ws, kind, rows, cols);
               });
}

// y = K(x1, x2) v for the tiles of two point sets; v is N2 x b, y is N1 x b.  Row panels of
// x1 go to threads; each adds its tiles into its own rows of y in column order.
template <class T>
void cross_kernel_product(const KernelTiles<T>& tiles, KernelKind kind,
                          const Eigen::Ref<const ColMatrix<T>>& v, Eigen::Ref<ColMatrix<T>> y,
                          const OperatorOptions& opt, std::atomic<std::size_t>& done) {
    const std::size_t n1 = tiles.rows(), n2 = tiles.cols(), edge = detail::product_tile(opt);
    if (std::size_t(v.rows()) != n2 || std::size_t(y.rows()) != n1 || y.cols() != v.cols())
        throw std::invalid_argument("kernel product: v must be N2 x b and y N1 x b");
    const std::size_t panels = detail::tile_count(n1, edge);
    const bool small = detail::small_product(n1, n2, tiles.network().depth());
    const int threads = detail::resolve_threads(opt.n_threads, small ? 1 : panels);
    std::vector<TileWorkspace<T>> workspaces(std::size_t(threads), TileWorkspace<T>(edge * edge));
    y.setZero();
    StopSignal stop(opt.should_stop);
    detail::parallel_tiles(panels, threads, stop, [&](std::size_t p) {
        TileWorkspace<T>& ws = workspaces[std::size_t(detail::thread_index())];
        const std::size_t i0 = p * edge, rows = std::min(edge, n1 - i0);
        for (std::size_t j0 = 0; j0 < n2; j0 += edge) {
            const std::size_t cols = std::min(edge, n2 - j0);
            stop.check();
            tiles.compute(i0, j0, rows, cols, ws, &stop);
            y.middleRows(Eigen::Index(i0), Eigen::Index(rows)).noalias() +=
                detail::tile_block(ws, kind, rows, cols) * v.middleRows(Eigen::Index(j0), Eigen::Index(cols));
            done.fetch_add(1, std::memory_order_relaxed);
        }
    });
}

}  // namespace ntkcore

// One pass over a square matrix that says whether it can be treated as symmetric: the
// largest |a_ij|, the largest |a_ij - a_ji|, and the first entry (in row-major order, so
// that the report does not depend on the threads) that is not finite.  Tiles
// of the upper triangle are compared with their mirror images (both stay in cache), on
// threads, so that checking costs about one read of the matrix.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <functional>
#include <vector>

#include <Eigen/Core>

#include "gram.hpp"

namespace ntkcore {

struct SymmetryReport {
    double max_abs = 0.0;                              // max |a_ij| over the finite entries
    double max_asymmetry = 0.0;                        // max |a_ij - a_ji|
    long long nonfinite_row = -1, nonfinite_col = -1;  // the first non-finite entry, if any

    void add_nonfinite(long long row, long long col) {
        if (nonfinite_row < 0 || row < nonfinite_row || (row == nonfinite_row && col < nonfinite_col)) {
            nonfinite_row = row;
            nonfinite_col = col;
        }
    }
};

template <class T>
SymmetryReport symmetry_report(const Eigen::Ref<const RowMatrix<T>>& a, int n_threads = 0,
                               const std::function<bool()>& should_stop = {}) {
    const std::size_t n = std::size_t(a.rows()), edge = 64;
    std::vector<std::pair<std::size_t, std::size_t>> starts;
    for (std::size_t i = 0; i < n; i += edge)
        for (std::size_t j = i; j < n; j += edge) starts.emplace_back(i, j);
    const int threads = detail::resolve_threads(n_threads, n < 512 ? 1 : starts.size());
    std::vector<SymmetryReport> parts(static_cast<std::size_t>(threads));
    detail::parallel_tiles(starts.size(), threads, should_stop, [&](std::size_t t) {
        SymmetryReport& part = parts[std::size_t(detail::thread_index())];
        const std::size_t i0 = starts[t].first, j0 = starts[t].second;
        const std::size_t i1 = std::min(n, i0 + edge), j1 = std::min(n, j0 + edge);
        for (std::size_t i = i0; i < i1; ++i)
            for (std::size_t j = std::max(j0, i); j < j1; ++j) {
                const double upper = double(a(Eigen::Index(i), Eigen::Index(j)));
                const double lower = double(a(Eigen::Index(j), Eigen::Index(i)));
                if (!std::isfinite(upper) || !std::isfinite(lower)) {
                    if (!std::isfinite(upper)) part.add_nonfinite((long long)i, (long long)j);
                    if (!std::isfinite(lower)) part.add_nonfinite((long long)j, (long long)i);
                    continue;
                }
                part.max_abs = std::max(part.max_abs, std::max(std::abs(upper), std::abs(lower)));
                part.max_asymmetry = std::max(part.max_asymmetry, std::abs(upper - lower));
            }
    });
    SymmetryReport total;
    for (const SymmetryReport& part : parts) {
        total.max_abs = std::max(total.max_abs, part.max_abs);
        total.max_asymmetry = std::max(total.max_asymmetry, part.max_asymmetry);
        if (part.nonfinite_row >= 0) total.add_nonfinite(part.nonfinite_row, part.nonfinite_col);
    }
    return total;
}

}  // namespace ntkcore

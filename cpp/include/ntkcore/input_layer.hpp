// The input layer: Sigma = x.x'/dim of a tile from its GEMM block, then the first dense
// layer, with nearly (anti)collinear pairs recomputed from unit vectors (docs/math/3a-collinearity.md).
#pragma once

#include <cmath>
#include <cstddef>
#include <vector>

#include <Eigen/Core>

#include "recursion.hpp"

namespace ntkcore {

template <class T>
using RowMatrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class T>
using Vector = Eigen::Matrix<T, Eigen::Dynamic, 1>;

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

// The first dense layer of one tile from its GEMM block `dots`, written to (c, d, theta).
// The GEMM values serve all but the nearly (anti)collinear pairs, which a second, rarely
// taken pass recomputes from unit vectors.
template <class T>
void input_layer(const InputPoints<T>& p1, const InputPoints<T>& p2, Eigen::Index i0, Eigen::Index j0,
                 std::size_t rows, std::size_t cols, const T* dots, const Recursion<T>& rec, T* c, T* d,
                 T* theta) {
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
            di[j] = dense_gap(w, b, det * inv_dim * inv_dim, dist2 * inv_dim);
            ti[j] = rec.input_sigma_ntk * (dot[j] * inv_dim) + rec.input_bias_ntk;
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
            di[j] = dense_gap(w, b, det * inv_dim * inv_dim, dist2 * inv_dim);
        }
    }
}

}  // namespace detail
}  // namespace ntkcore

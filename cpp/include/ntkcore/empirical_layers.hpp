// The empirical NTK of finite layer networks (convolutions included, docs/math/6-finite-width.md),
// from small per-pair Gram matrices of the layers' inputs and backpropagated vectors: no
// Jacobian is formed.
//
// A Dense or Conv layer maps its input h (P_in positions x C_in channels) to
//     z[p] = sqrt(weight_var) sum_t W[t]^T h[taps(p, t)] + sqrt(bias_var) b,
// taps(p, t) the input position that tap t reads for output p (P_in: a zero pad), so that
// weight_var = sigma_w^2 / fan_in.  With g^a[p] = d f_a / d z[p] the backpropagated vectors
// of output a, its parameters contribute to Theta_ab(x, x')
//     weight_var sum_{p, q} A[p, q] <g^a[p], g'^b[q]> + bias_var <sum_p g^a[p], sum_q g'^b[q]>,
//     A[p, q] = sum_t <h[taps(p, t)], h'[taps'(q, t)]>
// (A: the Gram matrix of the im2col patches).  Per pair of points: S = H H'^T (P_in x P_in'),
// A from S by the tap tables, M = A G' (G' the P' x (k C_out) matrix of all outputs'
// vectors), then <G, M> (`trace`) or, for `full`, sum_p G[p] M[p]^T (k x C_out each); work
// O(P_in P_in' C_in + P P' (F + k C_out) + P k^2 C_out [full]) per pair and layer, memory
// O(N k P C) for the factors it is given.  A dense layer on P = 1 position is the same
// formula with A = <h, h'>.
//
// Every entry is computed by one thread in an order fixed by the shapes, so results are
// bitwise the same for every n_threads.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include <Eigen/Core>

#include "empirical.hpp"

namespace ntkcore {

using TapTable = Eigen::Matrix<std::int64_t, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// One Dense or Conv layer as one set of points sees it.
template <class T>
struct LayerFactors {
    Eigen::Map<const RowMatrix<T>> h;  // N x (P_in C_in): the layer's inputs, position-major
    Eigen::Map<const RowMatrix<T>>
        g;  // N x (P_out k C_out): backpropagated vectors, column (p k + a) C_out + c
    Eigen::Map<const TapTable> taps;  // P_out x F
    Eigen::Index in_positions;        // P_in
};

// The parameters of one such layer, shared by both sets of points.
struct LayerScales {
    double weight_var;  // sigma_w^2 / fan_in
    double bias_var;    // sigma_b^2
};

namespace detail {

template <class T>
void check_factors(const LayerFactors<T>& f, Eigen::Index n, Eigen::Index k, const std::string& where) {
    const Eigen::Index p_in = f.in_positions, p_out = f.taps.rows();
    if (p_in < 1 || p_out < 1 || f.taps.cols() < 1) throw std::invalid_argument(where + ": empty layer");
    if (f.h.rows() != n || f.h.cols() % p_in != 0)
        throw std::invalid_argument(where + ": h must be N x (P_in C_in)");
    if (f.g.rows() != n || f.g.cols() % (p_out * k) != 0)
        throw std::invalid_argument(where + ": g must be N x (P_out k C_out)");
    if (f.taps.minCoeff() < 0 || f.taps.maxCoeff() > p_in)
        throw std::invalid_argument(where + ": taps must lie in [0, P_in]");
}

}  // namespace detail

// theta = the empirical NTK, sum over layers; layers2 == nullptr: the second set is the
// first, and theta is exactly symmetric.  theta is N1 x N2 for `trace` (the mean over the k
// outputs of Theta_aa), (N1 k) x (N2 k) for `full` (row i k + a).
template <class T>
void layer_empirical_ntk(const std::vector<LayerScales>& scales, const std::vector<LayerFactors<T>>& layers1,
                         const std::vector<LayerFactors<T>>* layers2, Eigen::Index k, NtkOutput output,
                         Eigen::Ref<RowMatrix<T>> theta, const GramOptions& opt = GramOptions()) {
    const bool symmetric = layers2 == nullptr;
    const std::vector<LayerFactors<T>>& second = symmetric ? layers1 : *layers2;
    const std::size_t n_layers = scales.size();
    if (n_layers == 0 || layers1.size() != n_layers || second.size() != n_layers)
        throw std::invalid_argument("layer_empirical_ntk: one set of factors per layer and side");
    if (k < 1) throw std::invalid_argument("layer_empirical_ntk: k must be >= 1");
    const Eigen::Index n1 = layers1[0].h.rows(), n2 = second[0].h.rows();
    if (n1 == 0 || n2 == 0) throw std::invalid_argument("layer_empirical_ntk: empty input");
    const Eigen::Index kk = output == NtkOutput::full ? k : 1;
    if (theta.rows() != n1 * kk || theta.cols() != n2 * kk)
        throw std::invalid_argument("layer_empirical_ntk: theta has the wrong shape");
    double work = 0;  // per pair of points
    for (std::size_t l = 0; l < n_layers; ++l) {
        const std::string where = "layer_empirical_ntk: layer " + std::to_string(l);
        detail::check_factors(layers1[l], n1, k, where);
        detail::check_factors(second[l], n2, k, where);
        const auto &a = layers1[l], &b = second[l];
        if (a.h.cols() / a.in_positions != b.h.cols() / b.in_positions ||
            a.g.cols() / a.taps.rows() != b.g.cols() / b.taps.rows() || a.taps.cols() != b.taps.cols())
            throw std::invalid_argument(where + ": the two sets differ in channels or filter size");
        const double c_in = double(a.h.cols() / a.in_positions),
                     c_out = double(a.g.cols() / (a.taps.rows() * k));
        const double pp = double(a.taps.rows()) * double(b.taps.rows());
        work += double(a.in_positions) * double(b.in_positions) * c_in +
                pp * (double(a.taps.cols()) + double(k) * c_out);
    }
    // Per point, the backpropagated vectors summed over positions (bias terms): N x (k C_out).
    auto position_sums = [&](const std::vector<LayerFactors<T>>& side) {
        std::vector<RowMatrix<T>> sums(n_layers);
        for (std::size_t l = 0; l < n_layers; ++l) {
            const auto& f = side[l];
            const Eigen::Index p = f.taps.rows(), width = f.g.cols() / p;
            sums[l].setZero(f.g.rows(), width);
            for (Eigen::Index q = 0; q < p; ++q) sums[l] += f.g.middleCols(q * width, width);
        }
        return sums;
    };
    const std::vector<RowMatrix<T>> sums1 = position_sums(layers1);
    const std::vector<RowMatrix<T>> sums2 = symmetric ? std::vector<RowMatrix<T>>() : position_sums(second);
    const std::vector<RowMatrix<T>>& gsum2 = symmetric ? sums1 : sums2;

    const std::size_t block = 1;  // rows of theta's point pairs per task: triangles are uneven
    const int threads = detail::threads_for(opt, double(n1) * double(n2) * work, std::size_t(n1));
    std::vector<char> overflow(std::size_t(n1), 0);
    using Positions = Eigen::Map<const RowMatrix<T>>;
    detail::for_blocks(std::size_t(n1), block, threads, opt, [&](std::size_t i0, std::size_t i1) {
        // Per layer: S with a zero row and column for the pads (only its top-left corner is
        // rewritten), A and M, sized once per task.
        std::vector<RowMatrix<T>> s(n_layers), area(n_layers), m(n_layers);
        for (std::size_t l = 0; l < n_layers; ++l) {
            s[l].setZero(layers1[l].in_positions + 1, second[l].in_positions + 1);
            area[l].resize(layers1[l].taps.rows(), second[l].taps.rows());
            m[l].resize(layers1[l].taps.rows(), layers1[l].g.cols() / layers1[l].taps.rows());
        }
        RowMatrix<T> pair(k, k);
        for (std::size_t iu = i0; iu < i1; ++iu) {
            const Eigen::Index i = Eigen::Index(iu);
            const Eigen::Index cols = symmetric ? i + 1 : n2;  // lower triangle only
            for (Eigen::Index j = 0; j < cols; ++j) {
                pair.setZero();
                T trace = 0;
                for (std::size_t l = 0; l < n_layers; ++l) {
                    const auto &f1 = layers1[l], &f2 = second[l];
                    const Eigen::Index c_in = f1.h.cols() / f1.in_positions;
                    const Eigen::Index p1 = f1.taps.rows(), p2 = f2.taps.rows(), width = f1.g.cols() / p1;
                    s[l].topLeftCorner(f1.in_positions, f2.in_positions).noalias() =
                        Positions(f1.h.row(i).data(), f1.in_positions, c_in) *
                        Positions(f2.h.row(j).data(), f2.in_positions, c_in).transpose();
                    area[l].setZero();
                    for (Eigen::Index t = 0; t < f1.taps.cols(); ++t)
                        for (Eigen::Index p = 0; p < p1; ++p) {
                            const T* row = s[l].data() + f1.taps(p, t) * s[l].cols();
                            for (Eigen::Index q = 0; q < p2; ++q) area[l](p, q) += row[f2.taps(q, t)];
                        }
                    m[l].noalias() = area[l] * Positions(f2.g.row(j).data(), p2, width);
                    const T wv = T(scales[l].weight_var), bv = T(scales[l].bias_var);
                    const Positions g1(f1.g.row(i).data(), p1, width);
                    if (output == NtkOutput::trace) {
                        trace += wv * (g1.array() * m[l].array()).sum() +
                                 bv * sums1[l].row(i).dot(gsum2[l].row(j));
                        continue;
                    }
                    const Eigen::Index c_out = width / k;
                    for (Eigen::Index p = 0; p < p1; ++p)
                        pair.noalias() += wv * Positions(g1.row(p).data(), k, c_out) *
                                          Positions(m[l].row(p).data(), k, c_out).transpose();
                    pair.noalias() += bv * Positions(sums1[l].row(i).data(), k, c_out) *
                                      Positions(gsum2[l].row(j).data(), k, c_out).transpose();
                }
                if (output == NtkOutput::trace)
                    theta(i, j) = trace / T(k);
                else
                    theta.block(i * k, j * k, k, k) = pair;
            }
            overflow[iu] = !theta.block(i * kk, 0, kk, cols * kk).allFinite();
        }
    });
    if (std::find(overflow.begin(), overflow.end(), 1) != overflow.end()) {
        const char* type = sizeof(T) == 4 ? "float32" : "float64";
        throw std::overflow_error(std::string("the empirical NTK of the finite network overflows ") + type +
                                  ": lower W_std, b_std or the input scale");
    }
    if (symmetric) {
        const Eigen::Index n = theta.rows();
        for (Eigen::Index i = 0; i < n; ++i)
            for (Eigen::Index j = i + 1; j < n; ++j) theta(i, j) = theta(j, i);
    }
}

// h <- phi(h) and, when dphi is not null, dphi <- phi'(h) for the n values of h, threaded;
// activations with phi and phi' in the core only (closed forms and numerical built-ins).
template <class T>
void pointwise_activation(const Activation& act, std::size_t n, T* h, T* dphi, const GramOptions& opt) {
    if (act.family == Family::numerical && !(act.numerical->thread_safe && act.numerical->dphi))
        throw std::invalid_argument("finite networks need an activation with phi and phi' in the core");
    const Pointwise<T> phi(act);
    const std::size_t block = std::size_t(1) << 16;
    const int threads = detail::threads_for(opt, 20.0 * double(n), (n + block - 1) / block);
    detail::for_blocks(n, block, threads, opt, [&](std::size_t i0, std::size_t i1) {
        phi.apply(i1 - i0, h + i0, dphi ? dphi + i0 : nullptr);
    });
}

}  // namespace ntkcore

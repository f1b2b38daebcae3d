// Extreme eigenpairs of symmetric positive semidefinite operators (SPEC sec. 5): the top-k or
// bottom-k eigenpairs by a thick-restart block Lanczos method with full reorthogonalization.
//
// The basis V (N x m) and W = A V are both kept, and the projected matrix H = V^T A V is formed
// explicitly from them (not from the three-term recurrence), so that Rayleigh-Ritz stays valid
// whatever rounding, deflation or random replacement did to the Krylov structure.  One step
// appends the block Q = orth(A Q_last - V H[:, last]) (two Gram-Schmidt passes against V, then
// against the block itself, a random direction replacing any column that vanishes); when the
// basis is full, the best `keep` Ritz vectors are kept (thick restart) and the next block is the
// residual block computed before the restart.  Every step costs one pass of the operator over
// the whole block.  Stopping: every wanted Ritz pair has ||A x - theta x|| <= tol * ||A||, with
// ||A|| estimated by the largest |Ritz value| seen.
//
// lambda_min of a dense matrix: the largest eigenvalues of (A - sigma I)^-1 through its
// Cholesky factor (operators.hpp), first a single-precision factor with sigma = 0, then a
// double one with sigma just below lambda_min (see dense_eigenpairs), refined by the
// Rayleigh quotient of A.  Matrix-free
// operators run plain Lanczos towards the small end, which converges slowly when the bottom of
// the spectrum is clustered (see the Python documentation).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <random>
#include <stdexcept>
#include <type_traits>
#include <vector>

#include <Eigen/Core>
#include <Eigen/Eigenvalues>

#include "gram.hpp"
#include "kernel_tiles.hpp"
#include "operators.hpp"

namespace ntkcore {

enum class Which { largest, smallest };

struct EigenOptions {
    std::size_t block_size = 0;  // vectors per block; 0: max(4, k + k / 2), at most 64
    std::size_t max_basis = 0;   // basis columns before a restart; 0: max(120, 10 b, 2 k + 2 b)
    std::size_t max_passes = 0;  // operator applications; 0: 1000
    double tol = 0.0;            // relative residual; 0: 1e-10 (double), 1e-4 (float)
    std::uint64_t seed = 0;      // of the random start block
    // For an inverse A = (B - inverse_shift I)^-1: measure each residual against the
    // eigenvalue lambda = inverse_shift + 1 / mu of B that the Ritz value mu stands for,
    // ||A x - mu x|| <= tol mu (lambda mu), so that (Weyl on A) lambda is within about
    // tol lambda of an eigenvalue of B, instead of against ||A||.
    bool relative_to_value = false;
    double inverse_shift = 0.0;
    // Only the eigenvalues are wanted (lambda_min): dense_eigenpairs may then stop its
    // shifted phase by the eigenvalue criterion above, which leaves residuals up to
    // lambda / (lambda - sigma) times larger than tol ||A||.
    bool values_only = false;
    std::function<bool()> should_stop;  // polled between passes; true ends with Interrupted
};

// k eigenpairs in ascending order of the eigenvalue.
template <class T>
struct EigenResult {
    Eigen::VectorXd values;
    ColMatrix<T> vectors;        // N x k, orthonormal columns
    Eigen::VectorXd residuals;   // ||A v - lambda v|| of each pair
    double norm_estimate = 0.0;  // ||A|| as estimated by the solver (largest |Ritz value|)
    std::size_t passes = 0;      // operator applications (each to a whole block)
    bool converged = false;
    double shift = 0.0;          // of the Cholesky factor (smallest eigenpairs of dense matrices)
};

namespace detail {

template <class T>
double default_tolerance() {
    return sizeof(T) >= sizeof(double) ? 1e-10 : 1e-4;
}

template <class T>
void fill_normal(Eigen::Ref<ColMatrix<T>> r, std::mt19937_64& rng) {
    std::normal_distribution<double> normal;
    for (Eigen::Index j = 0; j < r.cols(); ++j)
        for (Eigen::Index i = 0; i < r.rows(); ++i) r(i, j) = T(normal(rng));
}

// Makes the columns of r orthonormal and orthogonal to the (orthonormal) columns of v: block
// Gram-Schmidt twice against v, then column by column against v and the finished columns,
// repeating while a pass removes most of the column.  A column that vanishes (it lay in the
// span already, to rounding) is replaced by a random direction.
template <class T>
void orthonormalize(const Eigen::Ref<const ColMatrix<T>>& v, Eigen::Ref<ColMatrix<T>> r, std::mt19937_64& rng) {
    const double eps = double(std::numeric_limits<T>::epsilon());
    Eigen::Matrix<T, Eigen::Dynamic, 1> original = r.colwise().norm().transpose();
    if (v.cols() > 0)
        for (int pass = 0; pass < 2; ++pass) r.noalias() -= v * (v.transpose() * r);
    for (Eigen::Index j = 0; j < r.cols(); ++j) {
        auto col = r.col(j);
        double reference = double(original[j]);
        for (int attempt = 0;; ++attempt) {
            double before = double(col.norm());
            for (int pass = 0; pass < 4; ++pass) {
                if (v.cols() > 0) col.noalias() -= v * (v.transpose() * col);
                if (j > 0) col.noalias() -= r.leftCols(j) * (r.leftCols(j).transpose() * col);
                const double after = double(col.norm());
                const bool kept_most = after > 0.5 * before;
                before = after;
                if (kept_most) break;
            }
            if (before > 16.0 * eps * reference && before > 0.0) {
                col /= T(before);
                break;
            }
            if (attempt >= 3) throw std::runtime_error("eigen solver: cannot extend an orthonormal basis");
            std::normal_distribution<double> normal;
            for (Eigen::Index i = 0; i < col.size(); ++i) col[i] = T(normal(rng));
            reference = double(col.norm());
        }
    }
}

}  // namespace detail

// The k eigenpairs of the symmetric operator `op` at the `which` end of its spectrum.
// `start` (optional, N x s): directions for the first block (the rest of it is random).
template <class T, class Op>
EigenResult<T> block_lanczos(const Op& op, std::size_t k, Which which, const EigenOptions& opt = EigenOptions(),
                             const ColMatrix<T>* start = nullptr) {
    const std::size_t n = op.size();
    if (n == 0) throw std::invalid_argument("eigen solver: empty operator");
    if (k < 1 || k > n) throw std::invalid_argument("eigen solver: k must be in [1, N]");
    std::size_t b = opt.block_size ? opt.block_size : std::min<std::size_t>(64, std::max<std::size_t>(4, k + k / 2));
    b = std::min(b, n);
    std::size_t m = opt.max_basis ? opt.max_basis : std::max<std::size_t>({120, 10 * b, 2 * k + 2 * b});
    m = std::min(m, n);
    if (m < n && m < k + b) {
        if (opt.max_basis) throw std::invalid_argument("eigen solver: max_basis must be >= k + block_size");
        m = std::min(n, k + b);
    }
    const std::size_t max_passes = opt.max_passes ? opt.max_passes : 1000;
    const double tol = opt.tol > 0 ? opt.tol : detail::default_tolerance<T>();
    const Eigen::Index N = Eigen::Index(n);

    std::mt19937_64 rng(opt.seed);
    ColMatrix<T> v(N, Eigen::Index(m)), w(N, Eigen::Index(m));
    Eigen::MatrixXd h = Eigen::MatrixXd::Zero(Eigen::Index(m), Eigen::Index(m));
    std::size_t cols = 0, last = 0, last_b = 0, passes = 0;
    double anorm = 0.0;

    // Appends the orthonormal block q (orthogonal to the basis) and its image.
    auto append = [&](const ColMatrix<T>& q) {
        const Eigen::Index c = Eigen::Index(cols), bq = q.cols();
        v.middleCols(c, bq) = q;
        op.apply(v.middleCols(c, bq), w.middleCols(c, bq));
        ++passes;
        const ColMatrix<T> g = v.leftCols(c + bq).transpose() * w.middleCols(c, bq);
        h.block(0, c, c + bq, bq) = g.template cast<double>();
        h.block(c, 0, bq, c) = h.block(0, c, c, bq).transpose();
        const Eigen::MatrixXd diag = h.block(c, c, bq, bq);
        h.block(c, c, bq, bq) = 0.5 * (diag + diag.transpose());
        last = cols;
        last_b = std::size_t(bq);
        cols += std::size_t(bq);
    };
    // A Q_last - V H[:, last]: the next Krylov direction, not yet orthogonalized.
    auto residual_block = [&]() {
        const Eigen::Index c = Eigen::Index(cols), l = Eigen::Index(last), lb = Eigen::Index(last_b);
        ColMatrix<T> r = w.middleCols(l, lb);
        r.noalias() -= v.leftCols(c) * h.block(0, l, c, lb).template cast<T>();
        return r;
    };

    {
        ColMatrix<T> q(N, Eigen::Index(b));
        detail::fill_normal<T>(q, rng);
        if (start && start->rows() == N) {
            const Eigen::Index s = std::min<Eigen::Index>(start->cols(), Eigen::Index(b));
            q.leftCols(s) = start->leftCols(s);
        }
        detail::orthonormalize<T>(v.leftCols(0), q, rng);
        append(q);
    }

    EigenResult<T> result;
    Eigen::MatrixXd s;
    Eigen::VectorXd theta;
    for (;;) {
        if (opt.should_stop && opt.should_stop()) throw Interrupted();
        const Eigen::Index c = Eigen::Index(cols);
        Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> es(h.topLeftCorner(c, c));
        if (es.info() != Eigen::Success) throw std::runtime_error("eigen solver: projected problem failed");
        // Ritz pairs in the order wanted first.
        s.resize(c, c);
        theta.resize(c);
        for (Eigen::Index i = 0; i < c; ++i) {
            const Eigen::Index src = which == Which::largest ? c - 1 - i : i;
            s.col(i) = es.eigenvectors().col(src);
            theta[i] = es.eigenvalues()[src];
        }
        anorm = std::max(anorm, es.eigenvalues().cwiseAbs().maxCoeff());
        const std::size_t kk = std::min(k, cols);
        const Eigen::MatrixXd sk = s.leftCols(Eigen::Index(kk));
        ColMatrix<T> x = v.leftCols(c) * sk.cast<T>();
        ColMatrix<T> ax = w.leftCols(c) * sk.cast<T>();
        Eigen::VectorXd res = Eigen::VectorXd::Zero(Eigen::Index(kk));
        bool small = true;
        for (Eigen::Index i = 0; i < Eigen::Index(kk); ++i) {
            res[i] = double((ax.col(i) - T(theta[i]) * x.col(i)).norm());
            const double scale = opt.relative_to_value
                                     ? std::abs(theta[i]) * (1.0 + opt.inverse_shift * std::abs(theta[i]))
                                     : anorm;
            small = small && res[i] <= tol * scale;
        }
        const bool full = cols == n;
        const bool converged = kk == k && (full || small);
        if (converged || passes >= max_passes) {
            // Ascending order of the eigenvalue.
            const bool flip = which == Which::largest;
            result.values.resize(Eigen::Index(kk));
            result.residuals.resize(Eigen::Index(kk));
            result.vectors.resize(N, Eigen::Index(kk));
            for (Eigen::Index i = 0; i < Eigen::Index(kk); ++i) {
                const Eigen::Index src = flip ? Eigen::Index(kk) - 1 - i : i;
                result.values[i] = theta[src];
                result.residuals[i] = res[src];
                result.vectors.col(i) = x.col(src);
            }
            result.converged = converged;
            result.passes = passes;
            result.norm_estimate = anorm;
            return result;
        }

        ColMatrix<T> r = residual_block();
        const std::size_t block = std::min(std::size_t(r.cols()), n - cols);
        if (cols + block > m) {
            // Thick restart: keep the best Ritz vectors, then continue from the residual block.
            const std::size_t keep = std::min(m - b, k + (m - b - k) / 2);
            const Eigen::MatrixXd sk2 = s.leftCols(Eigen::Index(keep));
            ColMatrix<T> tmp = v.leftCols(c) * sk2.cast<T>();
            v.leftCols(Eigen::Index(keep)) = tmp;
            tmp = w.leftCols(c) * sk2.cast<T>();
            w.leftCols(Eigen::Index(keep)) = tmp;
            h.setZero();
            h.diagonal().head(Eigen::Index(keep)) = theta.head(Eigen::Index(keep));
            cols = keep;
        }
        ColMatrix<T> q = r.leftCols(Eigen::Index(std::min(std::size_t(r.cols()), n - cols)));
        detail::orthonormalize<T>(v.leftCols(Eigen::Index(cols)), q, rng);
        append(q);
    }
}

// Rayleigh quotients and residuals of the columns of `vectors` for the operator `op`, in place;
// re-sorts the pairs into ascending order.
template <class T, class Op>
void refine_with(const Op& op, EigenResult<T>& r) {
    ColMatrix<T> av(r.vectors.rows(), r.vectors.cols());
    op.apply(r.vectors, av);
    const Eigen::Index k = r.vectors.cols();
    for (Eigen::Index i = 0; i < k; ++i) {
        r.values[i] = double(r.vectors.col(i).dot(av.col(i)));
        r.residuals[i] = double((av.col(i) - T(r.values[i]) * r.vectors.col(i)).norm());
    }
    std::vector<Eigen::Index> order(static_cast<std::size_t>(k));
    for (Eigen::Index i = 0; i < k; ++i) order[std::size_t(i)] = i;
    std::sort(order.begin(), order.end(), [&](Eigen::Index a, Eigen::Index b) { return r.values[a] < r.values[b]; });
    EigenResult<T> sorted = r;
    for (Eigen::Index i = 0; i < k; ++i) {
        sorted.values[i] = r.values[order[std::size_t(i)]];
        sorted.residuals[i] = r.residuals[order[std::size_t(i)]];
        sorted.vectors.col(i) = r.vectors.col(order[std::size_t(i)]);
    }
    r = std::move(sorted);
}

// The k largest or smallest eigenpairs of the dense symmetric PSD matrix a.
//
// The smallest come from the largest of (a - sigma I)^-1 (Cholesky).  The bottom of a kernel
// spectrum is often a dense cluster, where 1 / lambda separates the wanted eigenvalues
// poorly, so double precision takes two phases.  Phase 1 locates the bottom roughly, from a
// single-precision factor of a (half the cost of a double one), to a relative residual of
// 1e-2; the Rayleigh quotients of its Ritz vectors on a itself bound lambda_min from above,
// and their distance to the single-precision values adds to the uncertainty rho.  Phase 2
// factors a - sigma I in double with sigma = (1 - rho) lambda_rq just below lambda_min (a
// successful factorization proves sigma < lambda_min), which maps the wanted eigenvalues to
// 1 / (lambda - sigma), far apart, and restarts from the phase-1 vectors.  When a does not
// factorize in single precision, or no sigma factorizes, or the precision is single, the
// factor of a itself (with the smallest diagonal shift that factorizes) runs to the full
// tolerance.  Eigenvalues are always the Rayleigh quotients of a; norm_estimate is
// max(diag a) (>= ||a|| / N for PSD a).
template <class T>
EigenResult<T> dense_eigenpairs(const Eigen::Ref<const RowMatrix<T>>& a, std::size_t k, Which which,
                                const EigenOptions& opt = EigenOptions(),
                                const OperatorOptions& op_opt = OperatorOptions()) {
    const DenseOperator<T> op(a, op_opt);
    if (which == Which::largest) return block_lanczos<T>(op, k, which, opt);
    const double tol = opt.tol > 0 ? opt.tol : detail::default_tolerance<T>();
    const double rough = 1e-2;
    EigenOptions full = opt;
    full.relative_to_value = true;
    std::size_t earlier = 0;
    auto finish = [&](EigenResult<T>& r, double shift) {
        r.shift = shift;
        r.passes += earlier + 1;
        refine_with<T>(op, r);
        r.norm_estimate = double(a.diagonal().cwiseAbs().maxCoeff());
        return r;
    };
    ColMatrix<T> start;
    if (std::is_same<T, double>::value && tol < rough) {
        EigenResult<T> r;
        try {
            const CholeskyInverse<T, float> located(a, 0.0, 1, op_opt);
            EigenOptions first = full;
            first.tol = rough;
            r = block_lanczos<T>(located, k, Which::largest, first);
        } catch (const std::domain_error&) {
            r.converged = false;  // not positive definite in single precision
        }
        if (r.converged) {
            const double theta = r.values.maxCoeff();  // the largest 1 / lambda
            const double spread = r.residuals.maxCoeff() / theta;
            refine_with<T>(op, r);
            const double lambda_rq = r.values[0];
            const double rho = spread + std::abs(lambda_rq * theta - 1.0);
            earlier = r.passes + 1;
            start = std::move(r.vectors);
            // If sigma = (1 - rho) lambda_rq fails to factorize (lambda_rq had found another
            // eigenvalue than the smallest), one more try ten times lower.
            for (const double factor : {1.0, 10.0}) {
                const double sigma = (1.0 - factor * rho) * lambda_rq;
                if (!(sigma > 0.0)) break;
                std::unique_ptr<CholeskyInverse<T>> shifted;
                try {
                    shifted.reset(new CholeskyInverse<T>(a, -sigma, 1, op_opt));
                } catch (const std::domain_error&) {
                    continue;  // sigma >= lambda_min: lower it
                }
                EigenOptions second = full;
                if (opt.values_only) second.inverse_shift = sigma;
                EigenResult<T> r2 = block_lanczos<T>(*shifted, k, Which::largest, second, &start);
                return finish(r2, -sigma);
            }
        }
    }
    const CholeskyInverse<T> inverse(a, 0.0, 8, op_opt);
    EigenResult<T> r = block_lanczos<T>(inverse, k, Which::largest, full, start.size() ? &start : nullptr);
    return finish(r, inverse.shift());
}

// The k largest or smallest eigenpairs of K (kind = nngp) or Theta (kind = ntk) of the network
// on the rows of x, without storing the Gram matrix.
template <class T>
EigenResult<T> kernel_eigenpairs(const Network& net, const Eigen::Ref<const RowMatrix<T>>& x, KernelKind kind,
                                 std::size_t k, Which which, const EigenOptions& opt = EigenOptions(),
                                 const OperatorOptions& op_opt = OperatorOptions()) {
    const KernelTiles<T> tiles(net, x, nullptr);
    const KernelOperator<T> op(tiles, kind, op_opt);
    return block_lanczos<T>(op, k, which, opt);
}

}  // namespace ntkcore

// Extreme eigenpairs of symmetric positive semidefinite operators (docs/math/5-gram-dynamics.md): the top-k
// or bottom-k eigenpairs by a thick-restart block Lanczos method with full reorthogonalization.
//
// The basis V (N x m) and W = A V are both kept, and the projected matrix H = V^T A V is formed
// explicitly from them (not from the three-term recurrence), so that Rayleigh-Ritz stays valid
// whatever rounding, deflation or random replacement did to the Krylov structure.  One step
// appends the block Q = orth(A Q_last - V H[:, last]) (two Gram-Schmidt passes against V, then
// against the block itself, a random direction replacing any column that vanishes); when the
// basis is full, the best `keep` Ritz vectors are kept (thick restart) and the next block is the
// residual block computed before the restart.  Every step costs one pass of the operator over
// the whole block.  Stopping: every wanted Ritz pair has ||A x - theta x|| <= tol * ||A||, with
// ||A|| estimated by the largest |Ritz value| seen, or is at the rounding floor (below).
//
// Scale: the solvers run on 2^-e A, with e chosen from max |a_ij| (dense) or max K_ii (a
// kernel, PSD), so that the operator's entries are about 1; the results are multiplied back
// by 2^e.  Scaling by a power of two is exact, so the results for 2^j A are exactly 2^j
// times those for A, and nothing in the solver (squared norms, the single-precision factor,
// its inverse) over- or underflows however large or small A is.  An eigenvalue outside the
// range of T is a std::overflow_error, never an inf.
//
// Reproducibility: the random start comes from the seed, and every operator sums in an
// order that does not depend on the threads (operators.hpp), so a solve gives bitwise the
// same result for the same input, options and seed, whatever n_threads.
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
#include <iomanip>
#include <limits>
#include <memory>
#include <random>
#include <sstream>
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
    // max |a_ij| of a dense matrix when the caller knows it (it sets the scale, see above);
    // 0: dense_eigenpairs finds it, one pass over the matrix.
    double magnitude = 0.0;
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
    // Some wanted pair stopped at the rounding floor (rounding_floor, times ||A||) above its
    // own tolerance (tol, or the floor, times its scale): rounding hides it.
    bool rounding_limited = false;
    double shift = 0.0;  // of the Cholesky factor (smallest eigenpairs of dense matrices)
};

namespace detail {

template <class T>
double default_tolerance() {
    return sizeof(T) >= sizeof(double) ? 1e-10 : 1e-4;
}

// The smallest residual, relative to ||A||, that rounding lets a Ritz pair reach: a pair
// there is accepted whatever tol asks (a tolerance below it would never be met).
template <class T>
double rounding_floor(std::size_t n) {
    return 8.0 * std::sqrt(double(n)) * double(std::numeric_limits<T>::epsilon());
}

// The exponent e with 2^-e magnitude in [1, 2), within the range where 2^e and 2^-e are
// normal numbers of T; 0 for a zero (or non-finite) magnitude.
template <class T>
int scale_exponent(double magnitude) {
    if (!(magnitude > 0.0) || !std::isfinite(magnitude)) return 0;
    const int limit = std::numeric_limits<T>::max_exponent - 3;
    return std::clamp(std::ilogb(magnitude), -limit, limit);
}

// The result for A from that for 2^-e A: eigenvalues, residuals, norm and shift times 2^e
// (exact).  An eigenvalue beyond the range of T is an error, not an inf.
template <class T>
void unscale(EigenResult<T>& r, int e) {
    for (Eigen::Index i = 0; i < r.values.size(); ++i) {
        r.values[i] = std::ldexp(r.values[i], e);
        r.residuals[i] = std::ldexp(r.residuals[i], e);
    }
    r.norm_estimate = std::ldexp(r.norm_estimate, e);
    r.shift = std::ldexp(r.shift, e);
    const double top = double(std::numeric_limits<T>::max());
    for (Eigen::Index i = 0; i < r.values.size(); ++i)
        if (!(std::abs(r.values[i]) <= top)) {
            std::ostringstream message;
            message << std::setprecision(3) << "eigen solver: the eigenvalue " << r.values[i]
                    << " exceeds the largest finite number of the working precision (" << top << ")";
            throw std::overflow_error(message.str());
        }
}

template <class T>
void fill_normal(Eigen::Ref<ColMatrix<T>> r, std::mt19937_64& rng) {
    std::normal_distribution<double> normal;
    for (Eigen::Index j = 0; j < r.cols(); ++j)
        for (Eigen::Index i = 0; i < r.rows(); ++i) r(i, j) = T(normal(rng));
}

// Scales each column of r by the power of two that brings its largest entry to [1, 2)
// (exact), so that its squared norm neither over- nor underflows: the image of an inverse has
// the scale of 1 / lambda_min, which no scaling of A fixes.
template <class T>
void normalize_columns(Eigen::Ref<ColMatrix<T>> r) {
    for (Eigen::Index j = 0; j < r.cols(); ++j) {
        const int e = scale_exponent<T>(double(r.col(j).cwiseAbs().maxCoeff()));
        if (e != 0) r.col(j) *= T(std::ldexp(1.0, -e));
    }
}

// Makes the columns of r orthonormal and orthogonal to the (orthonormal) columns of v: block
// Gram-Schmidt twice against v, then column by column against v and the finished columns,
// repeating while a pass removes most of the column.  A column that vanishes (it lay in the
// span already, to rounding) is replaced by a random direction.
template <class T>
void orthonormalize(const Eigen::Ref<const ColMatrix<T>>& v, Eigen::Ref<ColMatrix<T>> r,
                    std::mt19937_64& rng) {
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
EigenResult<T> block_lanczos(const Op& op, std::size_t k, Which which,
                             const EigenOptions& opt = EigenOptions(), const ColMatrix<T>* start = nullptr) {
    const std::size_t n = op.size();
    if (n == 0) throw std::invalid_argument("eigen solver: empty operator");
    if (k < 1 || k > n) throw std::invalid_argument("eigen solver: k must be in [1, N]");
    std::size_t b =
        opt.block_size ? opt.block_size : std::min<std::size_t>(64, std::max<std::size_t>(4, k + k / 2));
    b = std::min(b, n);
    std::size_t m = opt.max_basis ? opt.max_basis : std::max<std::size_t>({120, 10 * b, 2 * k + 2 * b});
    m = std::min(m, n);
    if (m < n && m < k + b) {
        if (opt.max_basis) throw std::invalid_argument("eigen solver: max_basis must be >= k + block_size");
        m = std::min(n, k + b);
    }
    const std::size_t max_passes = opt.max_passes ? opt.max_passes : 1000;
    const double tol = opt.tol > 0 ? opt.tol : detail::default_tolerance<T>();
    const double floor = detail::rounding_floor<T>(n);
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
        if (!g.allFinite())
            throw std::overflow_error(
                "eigen solver: applying the operator overflows (an eigenvalue exceeds the "
                "largest finite number of the working precision)");
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
        bool small = true, limited = false;
        for (Eigen::Index i = 0; i < Eigen::Index(kk); ++i) {
            res[i] = double((ax.col(i) - T(theta[i]) * x.col(i)).stableNorm());  // of any scale
            const double scale = opt.relative_to_value
                                     ? std::abs(theta[i]) * (1.0 + opt.inverse_shift * std::abs(theta[i]))
                                     : anorm;
            small = small && res[i] <= std::max(tol * scale, floor * anorm);
            limited = limited || res[i] > std::max(tol, floor) * scale;  // lost below the floor
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
            result.rounding_limited = converged && limited;
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
        detail::normalize_columns<T>(q);
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
        r.residuals[i] = double((av.col(i) - T(r.values[i]) * r.vectors.col(i)).stableNorm());
    }
    std::vector<Eigen::Index> order(static_cast<std::size_t>(k));
    for (Eigen::Index i = 0; i < k; ++i) order[std::size_t(i)] = i;
    std::sort(order.begin(), order.end(),
              [&](Eigen::Index a, Eigen::Index b) { return r.values[a] < r.values[b]; });
    EigenResult<T> sorted = r;
    for (Eigen::Index i = 0; i < k; ++i) {
        sorted.values[i] = r.values[order[std::size_t(i)]];
        sorted.residuals[i] = r.residuals[order[std::size_t(i)]];
        sorted.vectors.col(i) = r.vectors.col(order[std::size_t(i)]);
    }
    r = std::move(sorted);
}

namespace detail {

// The k smallest eigenpairs of the PSD matrix scale a (scale a power of two, op = scale a),
// from the largest of (scale a - sigma I)^-1 (Cholesky): see dense_eigenpairs.
template <class T>
EigenResult<T> smallest_dense(const Eigen::Ref<const RowMatrix<T>>& a, double scale,
                              const DenseOperator<T>& op, std::size_t k, const EigenOptions& opt,
                              const OperatorOptions& op_opt) {
    const double tol = opt.tol > 0 ? opt.tol : default_tolerance<T>();
    const double rough = 1e-2;
    // The inverse is applied with errors of about eps ||inverse||, so a wanted pair whose
    // 1 / (lambda - sigma) is below rounding_floor / tol of the largest can never meet tol:
    // the shift keeps every wanted ratio (lambda_1 - sigma) / (lambda_k - sigma) above `ratio`.
    const double ratio = std::min(0.5, 16.0 * rounding_floor<T>(op.size()) / tol);
    EigenOptions full = opt;
    full.relative_to_value = true;
    std::size_t earlier = 0;
    ColMatrix<T> start;
    EigenResult<T> r;
    // Runs the inverse from `start` and refines the pairs on scale a; `by_value`: its shift
    // lies just below lambda_min (phase 2), where values_only may stop by the eigenvalue.
    auto solve = [&](const CholeskyInverse<T>& inverse, bool by_value) {
        EigenOptions run = full;
        if (opt.values_only && by_value) run.inverse_shift = -inverse.shift();
        r = block_lanczos<T>(inverse, k, Which::largest, run, start.size() ? &start : nullptr);
        r.shift = inverse.shift();
        r.passes += earlier + 1;
        refine_with<T>(op, r);
        earlier = r.passes;
        start = r.vectors;
    };
    bool solved = false;
    if (std::is_same<T, double>::value && tol < rough) {
        EigenResult<T> located;
        try {
            const CholeskyInverse<T, float> inverse(a, scale, 0.0, 1, op_opt);
            EigenOptions first = full;
            first.tol = rough;
            located = block_lanczos<T>(inverse, k, Which::largest, first);
        } catch (const std::domain_error&) {
            located.converged = false;  // not positive definite in single precision
        } catch (const std::overflow_error&) {
            located.converged = false;  // its inverse overflows single precision
        }
        if (located.converged) {
            const double theta = located.values.maxCoeff();  // the largest 1 / lambda
            const double spread = located.residuals.maxCoeff() / theta;
            refine_with<T>(op, located);
            const double lambda_1 = located.values[0], lambda_k = located.values[Eigen::Index(k) - 1];
            const double rho = spread + std::abs(lambda_1 * theta - 1.0);
            earlier = located.passes + 1;
            start = std::move(located.vectors);
            // If sigma = (1 - rho) lambda_1 fails to factorize (lambda_1 had found another
            // eigenvalue than the smallest), one more try ten times lower.
            for (const double factor : {1.0, 10.0}) {
                const double below = (1.0 - factor * rho) * lambda_1;
                if (!(below > 0.0)) break;
                const double sigma = std::min(below, (lambda_1 - ratio * lambda_k) / (1.0 - ratio));
                std::unique_ptr<CholeskyInverse<T>> shifted;
                try {
                    shifted.reset(new CholeskyInverse<T>(a, scale, -sigma, 1, op_opt));
                } catch (const std::domain_error&) {
                    continue;  // sigma >= lambda_min: lower it
                }
                solve(*shifted, true);
                solved = true;
                break;
            }
        }
    }
    if (!solved) solve(CholeskyInverse<T>(a, scale, 0.0, 8, op_opt), false);
    // Pairs lost in the rounding of the inverse (a graded spectrum, lambda_k / lambda_1
    // beyond 1 / ratio): shift up until lambda_k, estimated from above by its Rayleigh
    // quotient, is resolved.  Each try costs a factorization; rounding_limited stays set
    // if the last one still loses a pair.
    for (int retry = 0; r.rounding_limited && retry < 3; ++retry) {
        const double lambda_k = r.values[Eigen::Index(k) - 1];
        const double up = std::max(ratio / (1.0 - ratio) * lambda_k, 10.0 * r.shift);
        solve(CholeskyInverse<T>(a, scale, up, 8, op_opt), false);
    }
    r.norm_estimate = double(a.diagonal().cwiseAbs().maxCoeff()) * scale;
    return r;
}

}  // namespace detail

// The k largest or smallest eigenpairs of the dense symmetric PSD matrix a.
//
// a is scaled by the power of two that brings max |a_ij| (opt.magnitude, or one pass) to
// [1, 2); the zero matrix has the eigenvalues 0 (any orthonormal vectors).  The largest come
// from block Lanczos on a.  The smallest come from the largest of (a - sigma I)^-1
// (Cholesky).  The bottom of a kernel spectrum is often a dense cluster, where 1 / lambda
// separates the wanted eigenvalues poorly, so double precision takes two phases.  Phase 1
// locates the bottom roughly, from a single-precision factor of a (half the cost of a double
// one), to a relative residual of 1e-2; the Rayleigh quotients of its Ritz vectors on a
// itself bound lambda_min from above, and their distance to the single-precision values adds
// to the uncertainty rho.  Phase 2 factors a - sigma I in double with sigma = (1 - rho)
// lambda_rq just below lambda_min (a successful factorization proves sigma < lambda_min),
// which maps the wanted eigenvalues to 1 / (lambda - sigma), far apart, and restarts from
// the phase-1 vectors.  When a does not factorize in single precision, or no sigma
// factorizes, or the precision is single, the factor of a itself (with the smallest diagonal
// shift that factorizes) runs to the full tolerance.  With k >= 2, sigma is also kept low
// enough (negative if need be) that the k-th pair is not lost in the rounding of the
// inverse, and lowered further while one is (graded spectra).  Eigenvalues are always the
// Rayleigh quotients of a; norm_estimate is max(diag a) (>= ||a|| / N for PSD a).
template <class T>
EigenResult<T> dense_eigenpairs(const Eigen::Ref<const RowMatrix<T>>& a, std::size_t k, Which which,
                                const EigenOptions& opt = EigenOptions(),
                                const OperatorOptions& op_opt = OperatorOptions()) {
    const double magnitude =
        opt.magnitude > 0 || a.size() == 0 ? opt.magnitude : double(a.cwiseAbs().maxCoeff());
    const int e = detail::scale_exponent<T>(magnitude);
    const double scale = std::ldexp(1.0, -e);
    const DenseOperator<T> op(a, scale, op_opt);
    EigenResult<T> r = which == Which::largest || magnitude == 0.0
                           ? block_lanczos<T>(op, k, which, opt)
                           : detail::smallest_dense<T>(a, scale, op, k, opt, op_opt);
    detail::unscale(r, e);
    return r;
}

// The k largest or smallest eigenpairs of K (kind = nngp) or Theta (kind = ntk) of the network
// on the rows of x, without storing the Gram matrix.  The scale comes from the diagonal
// (O(N); max |K_ij| <= max K_ii for these PSD kernels).
template <class T>
EigenResult<T> kernel_eigenpairs(const Network& net, const Eigen::Ref<const RowMatrix<T>>& x, KernelKind kind,
                                 std::size_t k, Which which, const EigenOptions& opt = EigenOptions(),
                                 const OperatorOptions& op_opt = OperatorOptions()) {
    const KernelTiles<T> tiles(net, x, nullptr);
    Vector<T> nngp(x.rows()), ntk(x.rows());
    diagonal<T>(net, x, nngp, ntk);
    const Vector<T>& d = kind == KernelKind::ntk ? ntk : nngp;
    const int e = detail::scale_exponent<T>(d.size() ? double(d.cwiseAbs().maxCoeff()) : 0.0);
    const KernelOperator<T> op(tiles, kind, std::ldexp(1.0, -e), op_opt);
    EigenResult<T> r = block_lanczos<T>(op, k, which, opt);
    detail::unscale(r, e);
    return r;
}

// The k largest or smallest eigenpairs of a symmetric PSD operator known only through its
// block products: apply(x, y) sets y = A x for N x b blocks.  The products may come from
// anywhere (another process, a cluster); `magnitude` (max |A_ij|, the largest diagonal entry
// of a PSD kernel) sets the power-of-two scale, as in kernel_eigenpairs.
template <class T, class Apply>
EigenResult<T> operator_eigenpairs(std::size_t n, double magnitude, const Apply& apply, std::size_t k,
                                   Which which, const EigenOptions& opt = EigenOptions()) {
    const int e = detail::scale_exponent<T>(magnitude);
    struct ScaledOperator {
        std::size_t n;
        const Apply& product;
        T scale;
        std::size_t size() const { return n; }
        void apply(const Eigen::Ref<const ColMatrix<T>>& x, Eigen::Ref<ColMatrix<T>> y) const {
            product(x, y);
            y *= scale;
        }
    };
    const ScaledOperator op{n, apply, T(std::ldexp(1.0, -e))};
    EigenResult<T> r = block_lanczos<T>(op, k, which, opt);
    detail::unscale(r, e);
    return r;
}

}  // namespace ntkcore

// Finite-width MLPs of the NTK parameterization (docs/math/1-parameterization.md) and their empirical NTK
// (docs/math/6-finite-width.md), computed without ever forming a Jacobian.
//
// Dense layer m = 1..L+1 maps the post-activations h^{m-1} (h^0 = x, width n_{m-1}) to
//     z^m = (sigma_w / sqrt(n_{m-1})) h^{m-1} W^m^T + sigma_b b^m,   h^m = phi(z^m) (m <= L),
// and f = z^{L+1}.  With B^m the matrix of backpropagated vectors b^m(x) = d f_j / d z^m
// (one row per point and output j), the parameters of layer m contribute
//     Theta_m = (B^m B^m'^T) o (sigma_w^2 / n_{m-1} H^{m-1} H^{m-1}'^T + sigma_b^2)
// (o: Hadamard product) to the empirical NTK; for the output layer B^{L+1} is the identity
// over outputs.  Work O(N1 N2 k sum n_m), memory O(N1 N2 k^2 + N k sum n_m).
//
// Outputs: `trace` gives the mean over the k outputs of the per-output kernels,
// (1/k) sum_j Theta_jj (neural-tangents' trace_axes=(-1,), which divides the trace by the
// size of the traced axis); `full` gives the (N1 k) x (N2 k) matrix with row i k + j for
// point i and output j (it reshapes to (N1, k, N2, k)).
//
// Every entry is computed by the same operations whatever the thread count (the row blocks
// are fixed by the options, not by the threads, and no sum is split between threads), so
// results are bitwise the same for every n_threads and from call to call.  Values beyond
// T's range raise std::overflow_error naming the cause, never return inf or NaN.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdio>
#include <limits>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <Eigen/Core>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "activation_families.hpp"
#include "elementwise.hpp"
#include "gram.hpp"
#include "network.hpp"

namespace ntkcore {

// phi and phi' of an activation, pointwise (each family's `pointwise`, activation_families.hpp).
// phi' at the kink of the piecewise-linear family is the right derivative b; sign and the
// step (rectified monomial of order 0) have phi' = 0.
template <class T>
struct Pointwise {
    Activation activation;

    explicit Pointwise(const Activation& act) : activation(act) {}

    // h <- phi(z) and, when dphi is not null, dphi <- phi'(z), for n values.
    void apply(std::size_t n, T* z, T* dphi) const {
        visit_family_type<T>(activation.family,
                             [&](auto tag) { decltype(tag)::type::pointwise(activation, n, z, dphi); });
    }
};

// Views on the parameters of a finite MLP: weights[m] is W^{m+1} (n_{m+1} x n_m, the
// N(0, 1) draws), biases[m] is b^{m+1}; w_std and b_std hold sigma_w and sigma_b per layer.
template <class T>
struct MLP {
    Activation activation;
    std::vector<double> w_std, b_std;
    std::vector<Eigen::Map<const RowMatrix<T>>> weights;
    std::vector<Eigen::Map<const Vector<T>>> biases;

    std::size_t n_layers() const { return weights.size(); }  // dense layers, L + 1
    Eigen::Index input_dim() const { return weights.front().cols(); }
    Eigen::Index n_outputs() const { return weights.back().rows(); }
    T weight_scale(std::size_t m) const { return T(w_std[m] / std::sqrt(double(weights[m].cols()))); }
    T bias_scale(std::size_t m) const { return T(b_std[m]); }

    void validate() const {
        const std::size_t n = weights.size();
        if (n == 0) throw std::invalid_argument("mlp: needs at least one dense layer");
        if (biases.size() != n || w_std.size() != n || b_std.size() != n)
            throw std::invalid_argument(
                "mlp: weights, biases, w_std and b_std need one entry per dense layer");
        for (std::size_t m = 0; m < n; ++m) {
            const std::string layer = "mlp: layer " + std::to_string(m);
            if (weights[m].rows() == 0 || weights[m].cols() == 0)
                throw std::invalid_argument(layer + " has an empty weight matrix");
            if (m > 0 && weights[m].cols() != weights[m - 1].rows())
                throw std::invalid_argument(layer + ": weight columns must equal the previous width");
            if (biases[m].size() != weights[m].rows())
                throw std::invalid_argument(layer + ": bias length must equal the weight rows");
            if (!(std::isfinite(w_std[m]) && w_std[m] >= 0.0 && std::isfinite(b_std[m]) && b_std[m] >= 0.0))
                throw std::invalid_argument(layer + ": W_std and b_std must be finite and >= 0");
        }
        Network net;  // a one-layer network with this activation, to check its parameters
        net.activation = activation;
        net.w_var = {1.0};
        net.b_var = {0.0};
        net.validate();
        const NumericalFunction* fn = activation.numerical.get();
        if (activation.family == Family::numerical && !(fn->thread_safe && fn->dphi))
            throw std::invalid_argument(
                "mlp: finite networks need an activation with phi and phi' in the core (a built-in)");
    }
};

// The forward pass of a set of points: h[m] (N x n_m) for m = 0..L (h[0] = x), phi'(z^m) in
// dphi[m - 1] for m = 1..L when requested, and the outputs (N x k).
template <class T>
struct Forward {
    std::vector<RowMatrix<T>> h;
    std::vector<RowMatrix<T>> dphi;
    RowMatrix<T> output;
};

namespace detail {

// A value of the network left T's range (`what`: where): say so, with the sizes that set it,
// rather than return inf or NaN.  input_max is max |x| over the inputs of the computation.
template <class T>
[[noreturn]] void throw_overflow(const std::string& what, const MLP<T>& mlp, double input_max) {
    double param = 0;
    for (const auto& w : mlp.weights) param = std::max(param, double(w.cwiseAbs().maxCoeff()));
    for (const auto& b : mlp.biases) param = std::max(param, double(b.cwiseAbs().maxCoeff()));
    const char* type = sizeof(T) == 4 ? "float32" : "float64";
    char text[256];
    std::snprintf(text, sizeof text,
                  " (max |x| = %.3g, max W_std = %.3g, max b_std = %.3g, max |parameter| = %.3g; "
                  "%s holds magnitudes up to %.3g)",
                  input_max, *std::max_element(mlp.w_std.begin(), mlp.w_std.end()),
                  *std::max_element(mlp.b_std.begin(), mlp.b_std.end()), param, type,
                  double(std::numeric_limits<T>::max()));
    throw std::overflow_error("finite network overflows " + std::string(type) + " in " + what + text);
}

template <class T>
double max_abs(const Eigen::Ref<const RowMatrix<T>>& x) {
    return double(x.cwiseAbs().maxCoeff());
}

// Runs body(begin, end) over the blocks [begin, end) of `block` consecutive items, on
// `threads` OpenMP threads, with the Gram driver's error transport and interruption.
template <class Body>
void for_blocks(std::size_t n_items, std::size_t block, int threads, const GramOptions& opt,
                const Body& body) {
    block = std::max<std::size_t>(1, block);
    const std::size_t n_blocks = (n_items + block - 1) / block;
    parallel_tiles(n_blocks, threads, opt.should_stop, [&](std::size_t t) {
        const std::size_t begin = t * block;
        body(begin, std::min(n_items, begin + block));
    });
}

inline int threads_for(const GramOptions& opt, double flops, std::size_t n_blocks) {
    return resolve_threads(opt.n_threads, flops < 2e6 ? 1 : n_blocks);
}

}  // namespace detail

// Forward pass of the rows of x (N x d); keeps phi'(z) when `derivatives`.
template <class T>
Forward<T> forward(const MLP<T>& mlp, const Eigen::Ref<const RowMatrix<T>>& x, bool derivatives,
                   const GramOptions& opt = GramOptions()) {
    mlp.validate();
    if (x.cols() != mlp.input_dim())
        throw std::invalid_argument("forward: x must have one column per network input");
    const std::size_t layers = mlp.n_layers();
    const Eigen::Index n = x.rows();
    Forward<T> out;
    out.h.resize(layers);
    out.h[0] = x;
    double width_sum = 0;
    for (std::size_t m = 1; m < layers; ++m) {
        out.h[m].resize(n, mlp.weights[m - 1].rows());
        if (derivatives) out.dphi.emplace_back(n, mlp.weights[m - 1].rows());
        width_sum += double(mlp.weights[m - 1].size());
    }
    out.output.resize(n, mlp.n_outputs());
    width_sum += double(mlp.weights.back().size());
    const Pointwise<T> phi(mlp.activation);
    const std::size_t block = std::max<std::size_t>(1, opt.tile_rows);
    const std::size_t n_blocks = (std::size_t(n) + block - 1) / block;
    const int threads = detail::threads_for(opt, double(n) * width_sum, n_blocks);
    // Per row block, the first dense layer whose pre-activations are not finite (layers + 1:
    // none); the lowest is reported, whatever the order in which the blocks ran.  An
    // activation that overflows shows in the next layer's pre-activations.
    std::vector<std::size_t> overflow(n_blocks, layers + 1);
    detail::for_blocks(std::size_t(n), block, threads, opt, [&](std::size_t i0, std::size_t i1) {
        const Eigen::Index r0 = Eigen::Index(i0), rows = Eigen::Index(i1 - i0);
        for (std::size_t m = 1; m <= layers; ++m) {
            auto z = m < layers ? out.h[m].middleRows(r0, rows) : out.output.middleRows(r0, rows);
            z.noalias() = out.h[m - 1].middleRows(r0, rows) * mlp.weights[m - 1].transpose();
            z *= mlp.weight_scale(m - 1);
            if (mlp.b_std[m - 1] != 0.0) z.rowwise() += mlp.bias_scale(m - 1) * mlp.biases[m - 1].transpose();
            if (!z.allFinite()) {
                overflow[i0 / block] = m;
                return;
            }
            if (m < layers)
                phi.apply(std::size_t(z.size()), z.data(),
                          derivatives ? out.dphi[m - 1].middleRows(r0, rows).data() : nullptr);
        }
    });
    const std::size_t first = *std::min_element(overflow.begin(), overflow.end());
    if (first <= layers)
        detail::throw_overflow(
            "the pre-activations of dense layer " + std::to_string(first) + " of " + std::to_string(layers),
            mlp, detail::max_abs<T>(x));
    return out;
}

namespace detail {

// Backpropagated vectors B^m (m = 1..L) of every output, stacked: (N k) x n_m with row
// i k + j holding d f_j(x_i) / d z^m.  Needs the forward pass with derivatives.
template <class T>
std::vector<RowMatrix<T>> backward_vectors(const MLP<T>& mlp, const Forward<T>& fw, const GramOptions& opt) {
    const std::size_t hidden = mlp.n_layers() - 1;
    const Eigen::Index n = fw.output.rows(), k = mlp.n_outputs();
    std::vector<RowMatrix<T>> b(hidden);
    double work = 0;
    for (std::size_t m = 0; m < hidden; ++m) {
        b[m].resize(n * k, fw.dphi[m].cols());
        work += double(mlp.weights[m + 1].size());
    }
    if (hidden == 0) return b;
    const std::size_t block = std::max<std::size_t>(1, opt.tile_rows);
    const int threads = threads_for(opt, double(n * k) * work, (std::size_t(n) + block - 1) / block);
    for_blocks(std::size_t(n), block, threads, opt, [&](std::size_t i0, std::size_t i1) {
        for (std::size_t i = i0; i < i1; ++i) {
            // Top hidden layer: sigma_w / sqrt(n_L) W^{L+1}[j, :] o phi'(z^L(x_i)).
            const auto d = fw.dphi[hidden - 1].row(Eigen::Index(i));
            const T scale = mlp.weight_scale(hidden);
            for (Eigen::Index j = 0; j < k; ++j)
                b[hidden - 1].row(Eigen::Index(i) * k + j) =
                    scale * mlp.weights[hidden].row(j).cwiseProduct(d);
        }
        const Eigen::Index r0 = Eigen::Index(i0) * k, rows = Eigen::Index(i1 - i0) * k;
        for (std::size_t m = hidden - 1; m > 0; --m) {
            // B^m = sigma_w / sqrt(n_m) (B^{m+1} W^{m+1}) o phi'(z^m), layer m + 1 = weights[m].
            auto lower = b[m - 1].middleRows(r0, rows);
            lower.noalias() = b[m].middleRows(r0, rows) * mlp.weights[m];
            lower *= mlp.weight_scale(m);
            for (std::size_t i = i0; i < i1; ++i)
                for (Eigen::Index j = 0; j < k; ++j)
                    lower.row((Eigen::Index(i - i0)) * k + j).array() *=
                        fw.dphi[m - 1].row(Eigen::Index(i)).array();
        }
    });
    return b;
}

}  // namespace detail

enum class NtkOutput { trace, full };

// The empirical NTK between the rows of x1 (N1 x d) and x2 (N2 x d; nullptr: x2 = x1, and the
// result is exactly symmetric) into theta: N1 x N2 for `trace`, (N1 k) x (N2 k) for `full`.
template <class T>
void empirical_ntk(const MLP<T>& mlp, const Eigen::Ref<const RowMatrix<T>>& x1,
                   const Eigen::Ref<const RowMatrix<T>>* x2, NtkOutput output, Eigen::Ref<RowMatrix<T>> theta,
                   const GramOptions& opt = GramOptions()) {
    mlp.validate();
    const bool symmetric = x2 == nullptr;
    const Eigen::Index k = mlp.n_outputs();
    const Eigen::Index n1 = x1.rows(), n2 = symmetric ? n1 : x2->rows();
    if (n1 == 0 || n2 == 0) throw std::invalid_argument("empirical_ntk: empty input");
    const Eigen::Index kk = output == NtkOutput::full ? k : 1;
    if (theta.rows() != n1 * kk || theta.cols() != n2 * kk)
        throw std::invalid_argument("empirical_ntk: theta has the wrong shape");

    const Forward<T> f1 = forward(mlp, x1, true, opt);
    Forward<T> f2_storage;
    if (!symmetric) f2_storage = forward(mlp, *x2, true, opt);
    const Forward<T>& f2 = symmetric ? f1 : f2_storage;
    const std::vector<RowMatrix<T>> b1 = detail::backward_vectors(mlp, f1, opt);
    std::vector<RowMatrix<T>> b2_storage;
    if (!symmetric) b2_storage = detail::backward_vectors(mlp, f2, opt);
    const std::vector<RowMatrix<T>>& b2 = symmetric ? b1 : b2_storage;

    const std::size_t layers = mlp.n_layers();
    double width_sum = 0;
    for (std::size_t m = 0; m < layers; ++m)
        width_sum += double(mlp.weights[m].cols()) + (m > 0 ? double(k * kk * mlp.weights[m].cols()) : 0.0);
    const std::size_t block = std::max<std::size_t>(1, opt.tile_rows);
    const std::size_t n_blocks = (std::size_t(n1) + block - 1) / block;
    const int threads = detail::threads_for(opt, double(n1) * double(n2) * width_sum, n_blocks);
    const T inv_k = T(1) / T(k);
    std::vector<char> overflow(n_blocks, 0);  // per row block: an entry is not finite

    detail::for_blocks(std::size_t(n1), block, threads, opt, [&](std::size_t i0, std::size_t i1) {
        const Eigen::Index r0 = Eigen::Index(i0), rows = Eigen::Index(i1 - i0);
        const Eigen::Index cols = symmetric ? Eigen::Index(i1) : n2;  // lower triangle only
        RowMatrix<T> g(rows, cols), p;
        auto out = theta.block(r0 * kk, 0, rows * kk, cols * kk);
        out.setZero();
        for (std::size_t m = layers; m-- > 0;) {
            // Input Gram of dense layer m + 1: sigma_w^2 / n_m h h'^T + sigma_b^2.
            g.noalias() = f1.h[m].middleRows(r0, rows) * f2.h[m].topRows(cols).transpose();
            const T ws = mlp.weight_scale(m), bs = mlp.bias_scale(m);
            g.array() = ws * ws * g.array() + bs * bs;
            if (m + 1 == layers) {  // the output layer: B is the identity over outputs
                if (output == NtkOutput::trace) {
                    out += g;
                } else {
                    for (Eigen::Index j = 0; j < k; ++j)
                        Eigen::Map<RowMatrix<T>, 0, Eigen::Stride<Eigen::Dynamic, Eigen::Dynamic>>(
                            out.data() + j * out.outerStride() + j, rows, cols,
                            Eigen::Stride<Eigen::Dynamic, Eigen::Dynamic>(k * out.outerStride(), k)) += g;
                }
                continue;
            }
            const RowMatrix<T>& u = b1[m];  // B^{m+1}
            const RowMatrix<T>& v = b2[m];
            if (output == NtkOutput::trace) {
                using Strided = Eigen::Map<const RowMatrix<T>, 0, Eigen::OuterStride<>>;
                for (Eigen::Index j = 0; j < k; ++j) {
                    const Strided uj(u.data() + (r0 * k + j) * u.cols(), rows, u.cols(),
                                     Eigen::OuterStride<>(k * u.cols()));
                    const Strided vj(v.data() + j * v.cols(), cols, v.cols(),
                                     Eigen::OuterStride<>(k * v.cols()));
                    p.noalias() = uj * vj.transpose();
                    if (k == 1)
                        out.array() += p.array() * g.array();
                    else
                        out.array() += inv_k * p.array() * g.array();
                }
            } else {
                p.noalias() = u.middleRows(r0 * k, rows * k) * v.topRows(cols * k).transpose();
                for (Eigen::Index i = 0; i < rows * k; ++i)
                    for (Eigen::Index c = 0; c < cols * k; ++c) out(i, c) += p(i, c) * g(i / k, c / k);
            }
        }
        overflow[i0 / block] = !out.allFinite();
    });
    if (std::find(overflow.begin(), overflow.end(), 1) != overflow.end()) {
        const double input_max = std::max(detail::max_abs<T>(x1), symmetric ? 0.0 : detail::max_abs<T>(*x2));
        detail::throw_overflow("the empirical NTK", mlp, input_max);
    }
    if (symmetric) {
        const Eigen::Index n = theta.rows();
        for (Eigen::Index i = 0; i < n; ++i)
            for (Eigen::Index j = i + 1; j < n; ++j) theta(i, j) = theta(j, i);
    }
}

namespace detail {

template <class T>
void check_gradient_shapes(const MLP<T>& mlp, const std::vector<Eigen::Map<RowMatrix<T>>>& grad_w,
                           const std::vector<Eigen::Map<Vector<T>>>& grad_b, const char* who) {
    const std::size_t layers = mlp.n_layers();
    if (grad_w.size() != layers || grad_b.size() != layers)
        throw std::invalid_argument(std::string(who) + ": one gradient per dense layer");
    for (std::size_t m = 0; m < layers; ++m)
        if (grad_w[m].rows() != mlp.weights[m].rows() || grad_w[m].cols() != mlp.weights[m].cols() ||
            grad_b[m].size() != mlp.biases[m].size())
            throw std::invalid_argument(std::string(who) + ": gradients must have the parameters' shapes");
}

// The backward pass: from delta = d(.)/d z^{L+1} (N x k), the gradient with respect to the
// N(0, 1) parameters, sum_i delta_i . d f(x_i) / d theta; `what` names it in overflow errors.
template <class T>
void backward(const MLP<T>& mlp, const Eigen::Ref<const RowMatrix<T>>& x, const Forward<T>& fw,
              RowMatrix<T> delta, std::vector<Eigen::Map<RowMatrix<T>>>& grad_w,
              std::vector<Eigen::Map<Vector<T>>>& grad_b, const GramOptions& opt, const char* what) {
    const std::size_t layers = mlp.n_layers();
    const Eigen::Index n = x.rows();
    const std::size_t block = std::max<std::size_t>(1, opt.tile_rows);
    const std::size_t point_blocks = (std::size_t(n) + block - 1) / block;
    for (std::size_t m = layers; m-- > 0;) {
        const Eigen::Index n_out = mlp.weights[m].rows();
        const double flops = double(n) * double(mlp.weights[m].size());
        const T ws = mlp.weight_scale(m), bs = mlp.bias_scale(m);
        // Each block of rows of the gradient is one product over all N points, made by one
        // thread: every entry is summed in the same order whatever the thread count.  It goes
        // to Eigen's aligned buffers first, since where a vectorised sum starts (and so its
        // rounding) depends on the destination's address, which numpy varies between calls.
        RowMatrix<T> gw(n_out, mlp.weights[m].cols());
        Vector<T> gb(n_out);
        const std::size_t out_blocks = (std::size_t(n_out) + block - 1) / block;
        detail::for_blocks(std::size_t(n_out), block, detail::threads_for(opt, flops, out_blocks), opt,
                           [&](std::size_t j0, std::size_t j1) {
                               const Eigen::Index c0 = Eigen::Index(j0), cols = Eigen::Index(j1 - j0);
                               const auto d = delta.middleCols(c0, cols);
                               gw.middleRows(c0, cols).noalias() = ws * (d.transpose() * fw.h[m]);
                               gb.segment(c0, cols) = bs * d.colwise().sum().transpose();
                           });
        if (!(gw.allFinite() && gb.allFinite()))
            throw_overflow(std::string(what) + " of dense layer " + std::to_string(m + 1) + " of " +
                               std::to_string(layers),
                           mlp, max_abs<T>(x));
        grad_w[m] = gw;
        grad_b[m] = gb;
        if (m == 0) break;
        // d L / d z^m = sigma_w / sqrt(n_m) (delta W^{m+1}) o phi'(z^m), by row blocks.
        RowMatrix<T> below(n, mlp.weights[m].cols());
        detail::for_blocks(std::size_t(n), block, detail::threads_for(opt, flops, point_blocks), opt,
                           [&](std::size_t i0, std::size_t i1) {
                               const Eigen::Index r0 = Eigen::Index(i0), rows = Eigen::Index(i1 - i0);
                               auto lower = below.middleRows(r0, rows);
                               lower.noalias() = ws * (delta.middleRows(r0, rows) * mlp.weights[m]);
                               lower.array() *= fw.dphi[m - 1].middleRows(r0, rows).array();
                           });
        delta.swap(below);
    }
}

}  // namespace detail

// Loss 1/2 ||f(x) - y||^2 (docs/math/5-gram-dynamics.md, no 1/N) and its gradient with respect to the N(0, 1)
// parameters, by the same backward pass: grad_w[m] and grad_b[m] have the shapes of the
// weights and biases of dense layer m + 1.
template <class T>
double loss_gradient(const MLP<T>& mlp, const Eigen::Ref<const RowMatrix<T>>& x,
                     const Eigen::Ref<const RowMatrix<T>>& y, std::vector<Eigen::Map<RowMatrix<T>>>& grad_w,
                     std::vector<Eigen::Map<Vector<T>>>& grad_b, const GramOptions& opt = GramOptions()) {
    mlp.validate();
    if (y.rows() != x.rows() || y.cols() != mlp.n_outputs())
        throw std::invalid_argument("loss_gradient: y must be N x k");
    detail::check_gradient_shapes(mlp, grad_w, grad_b, "loss_gradient");
    const Forward<T> fw = forward(mlp, x, true, opt);
    RowMatrix<T> delta = fw.output - y;  // d L / d z^{L+1}
    const double loss = 0.5 * double(delta.template cast<double>().squaredNorm());
    if (!std::isfinite(loss)) {
        char text[48];
        std::snprintf(text, sizeof text, " with max |y| = %.3g", detail::max_abs<T>(y));
        detail::throw_overflow(std::string("the loss 1/2 ||f(x) - y||^2") + text, mlp, detail::max_abs<T>(x));
    }
    detail::backward(mlp, x, fw, std::move(delta), grad_w, grad_b, opt, "the loss gradient");
    return loss;
}

// Vector-Jacobian product J^T r = sum_{i,a} r_ia d f_a(x_i) / d theta, the gradient of any
// loss whose derivative with respect to the outputs is the N x k cotangent r; shapes as for
// loss_gradient.
template <class T>
void vjp(const MLP<T>& mlp, const Eigen::Ref<const RowMatrix<T>>& x,
         const Eigen::Ref<const RowMatrix<T>>& cotangent, std::vector<Eigen::Map<RowMatrix<T>>>& grad_w,
         std::vector<Eigen::Map<Vector<T>>>& grad_b, const GramOptions& opt = GramOptions()) {
    mlp.validate();
    if (cotangent.rows() != x.rows() || cotangent.cols() != mlp.n_outputs())
        throw std::invalid_argument("vjp: the cotangent must be N x k");
    detail::check_gradient_shapes(mlp, grad_w, grad_b, "vjp");
    const Forward<T> fw = forward(mlp, x, true, opt);
    detail::backward(mlp, x, fw, RowMatrix<T>(cotangent), grad_w, grad_b, opt, "the vector-Jacobian product");
}

}  // namespace ntkcore

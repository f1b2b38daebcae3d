// Kernels of a layer network (layer_network.hpp; docs/math/7-convolutions.md): for a pair of inputs the state
// is Sigma[p, p'] and Theta[p, p'] over every pair of positions, carried as (c, d, theta) with
// d = q_p q'_p' - c^2 the gap that keeps nearly collinear pixel pairs exact (docs/math/3a-collinearity.md).
//
// The gap through a convolution.  A filter tap contributes the 2 x 2 PSD matrix
// M_t = [[a_t, c_t], [c_t, b_t]] (a_t = q(p + delta_t), b_t = q'(p' + delta_t)), and the layer
// sums them.  With A = sum a_t, C = sum c_t, u_t = c_t / a_t and u = C / A,
//     det(sum_t M_t) = A (sum_t g_t + sum_t a_t (u_t - u)^2),   g_t = d_t / a_t (b_t when a_t = 0),
// every term nonnegative: no cancellation however collinear the taps.  The filter's axes are
// summed one after the other (k taps along each), each sum by this identity.  A bias b adds
// b (A + B - 2 C), written (sqrt A - sqrt B)^2 + 2 D / (sqrt(A B) + C) when C >= 0; Flatten
// sums the diagonal positions by the same identity.  Average pooling and global average
// pooling mix positions with independent offsets; after them d is formed by subtraction
// (an absolute error ~eps q q', as neural-tangents everywhere).
//
// Each input's own chain (its per-position variances before every layer, and its K(x, x),
// Theta(x, x)) runs once per input with the same code; the activation's per-point maps then
// give the diagonal exactly.  All values are in true units (no rescaling): variances that
// leave the floating-point range raise std::overflow_error.
//
// Gauss-Hermite activations (hermite_series.hpp) need, before their layer, the variances of
// every input at every position: the degree is chosen from the extremes over all of them.
// The chains therefore run in stages, each ending before such a layer; the series of that
// layer is tabulated for all (input, position) points at once (its coefficients are kept
// per input) and the next stage runs each chain again from its input (no P x P state is
// kept per input: with S such layers an input costs up to S + 1 chain runs, against N / 2
// pair runs in a symmetric Gram); on the spatial diagonal the P-entry state is kept and the
// chain resumes.  A pair sums the series per position pair; its gap d after
// the activation is formed by subtraction.
//
// Networks without pooling (AvgPool, GlobalAvgPool) whose inputs share one grid need only
// the spatial diagonal Sigma[p, p] (docs/math/7-convolutions.md: a convolution reads Sigma[p + delta,
// p + delta] for the diagonal entry p, activations and dense layers act entrywise, Flatten
// averages the diagonal): the state is then P entries per pair, not P x P.
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdio>
#include <functional>
#include <limits>
#include <stdexcept>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include <Eigen/Core>

#include "gram.hpp"
#include "hermite_series.hpp"
#include "kernel_tiles.hpp"
#include "layer_network.hpp"
#include "parallel.hpp"
#include "recursion.hpp"

namespace ntkcore {

namespace detail {

// One grid's positions split into the axis a stage sums over and the other axis.
struct AxisMap {
    bool along_h;
    std::size_t h_in, w_in, out;  // input grid and the output count along the axis
    std::size_t along_in() const { return along_h ? h_in : w_in; }
    std::size_t other() const { return along_h ? w_in : h_in; }
    std::size_t in_pos(std::size_t a, std::size_t o) const { return along_h ? a * w_in + o : o * w_in + a; }
    std::size_t out_pos(std::size_t a, std::size_t o) const { return along_h ? a * w_in + o : o * out + a; }
    std::size_t out_size() const { return out * other(); }
    Grid out_grid() const { return along_h ? Grid{out, w_in, true} : Grid{h_in, out, true}; }
};

// Scratch of one thread: the pair state and its next version, variance vectors (tap sums
// and their transposes) and per-column accumulators, reused from pair to pair.
template <class T>
struct LayerWorkspace {
    std::vector<T> c, d, theta, c2, d2, theta2, q1, q2, s1, s2, spare, q1b, q2b, keep;
    void reserve(std::size_t n) {
        for (auto* v : {&c, &d, &theta, &c2, &d2, &theta2})
            if (v->size() < n) v->resize(n);
    }
};

// What an input's own chain leaves for its pairs: the variance at every position before
// each layer (and after the last), and, before each activation, sqrt of it, its inverse and
// sqrt of the variance after the activation.
// Gauss-Hermite activations also keep, per layer, the series coefficients of phi and phi'
// (coef[l][k * P + p]: term k of position p) and the variance and E[phi'^2] after the
// activation at each position (act_q, act_dq); on the spatial diagonal, the state where the
// last stage stopped (before layer `stopped`, 0: none).
template <class T>
struct InputChain {
    std::vector<std::vector<T>> q, r, ir, ra, coef, dcoef, act_q, act_dq;
    std::vector<T> state_c, state_d, state_theta;
    std::size_t stopped = 0;
    double nngp = 0.0, ntk = 0.0;
    void resize(std::size_t layers) {
        q.assign(layers + 1, {});
        for (auto* v : {&r, &ir, &ra, &coef, &dcoef, &act_q, &act_dq}) v->assign(layers, {});
    }
};

// The taps of one conv or pooling layer along each axis of an input grid (window_index).
struct LayerTaps {
    std::vector<long> h, w;
};

template <class T>
T gap_of_bias(T A, T B, T C, T D) {  // A + B - 2 C without cancellation (D = A B - C^2)
    if (C < T(0)) return A + B - T(2) * C;
    const T root = std::sqrt(A * B) + C;
    const T spread = std::sqrt(A) - std::sqrt(B);
    return spread * spread + (root > T(0) ? T(2) * D / root : T(0));
}

}  // namespace detail

// The kernels of a layer network between the rows of x1 (N1 inputs, each P1 x channels,
// channels last) and of x2 (or of x1 with itself).  Keeps references to x1 and x2.
template <class T>
class LayerKernels {
public:
    LayerKernels(const std::vector<Layer>& layers, const Eigen::Ref<const RowMatrix<T>>& x1, Grid g1,
                 const Eigen::Ref<const RowMatrix<T>>* x2, Grid g2, std::size_t channels)
        : layers_(layers), x1_(x1), x2_(x2 ? *x2 : x1), symmetric_(!x2), channels_(channels) {
        validate_layers(layers_);
        if (channels == 0 || std::size_t(x1.cols()) != g1.size() * channels ||
            std::size_t(x2_.cols()) != (x2 ? g2 : g1).size() * channels)
            throw std::invalid_argument("layer kernels: inputs must have grid size x channels columns");
        grids1_ = layer_grids(layers_, g1);
        grids2_ = x2 ? layer_grids(layers_, g2) : grids1_;
        diagonal_ = grids1_ == grids2_;
        for (std::size_t l = 0; l < layers_.size(); ++l) {
            const Layer& layer = layers_[l];
            if (layer.kind == LayerKind::flatten && !(grids1_[l] == grids2_[l]))
                throw std::invalid_argument(detail::layer_name(layers_, l) +
                                            " needs equal grids for x1 and x2");
            if (layer.kind == LayerKind::avg_pool || layer.kind == LayerKind::global_avg_pool)
                diagonal_ = false;
            if (layer.kind == LayerKind::conv && (layer.window[0] > 8 || layer.window[1] > 8))
                throw std::invalid_argument("layer kernels: filters up to 8 taps per axis");
        }
        for (auto& taps : taps_) taps.resize(layers_.size());
        terms_.assign(layers_.size(), 0);
        std::size_t largest = 1;
        for (std::size_t l = 0; l <= layers_.size(); ++l) {
            // Pairs and each input's own chain; stages never grow a grid.
            const std::size_t p1 = grids1_[l].size(), p2 = grids2_[l].size();
            largest = std::max({largest, diagonal_ ? p1 : std::max({p1 * p2, p1 * p1, p2 * p2})});
            if (l == layers_.size()) break;
            const Layer& layer = layers_[l];
            if (layer.kind == LayerKind::conv || layer.kind == LayerKind::avg_pool)
                for (int set = 0; set < 2; ++set) {
                    const Grid g = (set == 0 ? grids1_ : grids2_)[l];
                    const auto index = [&](std::size_t size, int axis) {
                        return detail::window_index(size, layer.window[axis], layer.strides[axis],
                                                    layer.padding);
                    };
                    taps_[set][l] = {index(g.h, 0), index(g.w, 1)};
                }
        }
        largest_ = largest;
    }

    std::size_t rows() const { return std::size_t(x1_.rows()); }
    std::size_t cols() const { return std::size_t(x2_.rows()); }
    bool symmetric() const { return symmetric_; }

    // Each input's own chain, for every input of both sets, on `threads` threads; in stages
    // ending before each Gauss-Hermite activation, whose series is tabulated in between.
    void prepare(int threads, const std::function<bool()>& should_stop) {
        StopSignal stop(should_stop);
        const std::size_t L = layers_.size();
        series_warned_ = false;
        chains1_.assign(rows(), {});
        chains2_.assign(symmetric_ ? 0 : cols(), {});
        for (auto* chains : {&chains1_, &chains2_})
            for (auto& chain : *chains) chain.resize(L);
        const std::size_t n = rows() + chains2_.size();
        const int used = detail::resolve_threads(threads, n);
        std::vector<detail::LayerWorkspace<T>> ws(static_cast<std::size_t>(used));
        for (std::size_t end = next_series(0);; end = next_series(end + 1)) {
            detail::parallel_tiles(n, used, stop, [&](std::size_t k) {
                const bool second = k >= rows();
                const std::size_t i = second ? k - rows() : k;
                auto& chain = second ? chains2_[i] : chains1_[i];
                run(second, i, second, i, nullptr, nullptr, &chain, ws[std::size_t(detail::thread_index())],
                    end);
            });
            if (end == L) break;
            tabulate(end, stop);
        }
        for (const auto* chains : {&chains1_, &chains2_})
            for (const auto& chain : *chains)
                for (double v : {chain.nngp, chain.ntk})
                    if (!(std::abs(v) <= double(std::numeric_limits<T>::max()))) {
                        char text[96];
                        std::snprintf(text, sizeof text, " (%.3g, the largest representable is %.3g)", v,
                                      double(std::numeric_limits<T>::max()));
                        throw std::overflow_error(
                            std::string("kernels overflow: K(x, x) or Theta(x, x) exceeds the "
                                        "floating-point range") +
                            text + "; lower W_std or the depth");
                    }
    }

    // K(x1_i, x2_j) and Theta(x1_i, x2_j).
    std::pair<T, T> pair(std::size_t i, std::size_t j, detail::LayerWorkspace<T>& ws) const {
        if (symmetric_ && i == j) return {T(chains1_[i].nngp), T(chains1_[i].ntk)};
        run(false, i, !symmetric_, j, &chains1_[i], symmetric_ ? &chains1_[j] : &chains2_[j], nullptr, ws,
            layers_.size());
        return {ws.c[0], ws.theta[0]};
    }

    const detail::InputChain<T>& chain(std::size_t i, bool second = false) const {
        return second && !symmetric_ ? chains2_[i] : chains1_[i];
    }
    std::size_t workspace_size() const { return largest_; }

private:
    const T* input(bool second, std::size_t i) const {
        return (second ? x2_ : x1_).data() + i * std::size_t((second ? x2_ : x1_).cols());
    }

    // Sigma = x . x' / C per position pair (only p = p' when `diag`), and its gap from the
    // normalised pixels (|x|^2 |x'|^2 |x^ - x'^|^2 |x^ + x'^|^2 / 4, exact for duplicates and
    // for one channel).
    void input_layer(const T* a, const T* b, std::size_t p1, std::size_t p2, bool diag,
                     detail::LayerWorkspace<T>& ws) const {
        const std::size_t C = channels_;
        const T inv = T(1) / T(C);
        for (std::size_t i = 0; i < p1; ++i) {
            const T* u = a + i * C;
            T nu = 0;
            for (std::size_t k = 0; k < C; ++k) nu += u[k] * u[k];
            const T su = nu > T(0) ? T(1) / std::sqrt(nu) : T(0);
            for (std::size_t j = diag ? i : 0; j < (diag ? i + 1 : p2); ++j) {
                const T* v = b + j * C;
                T nv = 0, dot = 0, minus = 0, plus = 0;
                for (std::size_t k = 0; k < C; ++k) {
                    nv += v[k] * v[k];
                    dot += u[k] * v[k];
                }
                const T sv = nv > T(0) ? T(1) / std::sqrt(nv) : T(0);
                for (std::size_t k = 0; k < C; ++k) {
                    const T m = u[k] * su - v[k] * sv, p = u[k] * su + v[k] * sv;
                    minus += m * m;
                    plus += p * p;
                }
                const std::size_t e = diag ? i : i * p2 + j;
                ws.c[e] = dot * inv;
                ws.d[e] = (su > T(0) && sv > T(0)) ? nu * nv * inv * inv * minus * plus / T(4) : T(0);
                ws.theta[e] = T(0);
            }
        }
    }

    // The first Gauss-Hermite activation at or after layer `from`, or the layer count.
    std::size_t next_series(std::size_t from) const {
        for (std::size_t l = from; l < layers_.size(); ++l)
            if (layers_[l].kind == LayerKind::activation && layers_[l].activation.family == Family::numerical)
                return l;
        return layers_.size();
    }

    // The series of Gauss-Hermite activation l for every (input, position) of both sets, its
    // degree chosen from the extreme variances of all of them; each chain keeps its columns.
    void tabulate(std::size_t l, StopSignal& stop) {
        HermiteSeries<T> series(layers_[l].activation);
        series.warned = series_warned_;  // a fixed degree's warning names the first layer only
        std::vector<double> q;
        for (const auto* chains : {&chains1_, &chains2_})
            for (const auto& chain : *chains) q.insert(q.end(), chain.q[l].begin(), chain.q[l].end());
        detail::check_range(q, "the variance before " + detail::layer_name(layers_, l));
        const SeriesLayer table = series.tabulate(q, l, stop);
        series_warned_ = series.warned;
        terms_[l] = table.terms;
        using Rows = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
        const Eigen::Index terms = Eigen::Index(table.terms);
        Eigen::Index offset = 0;
        for (auto* chains : {&chains1_, &chains2_})
            for (auto& chain : *chains) {
                const std::size_t P = chain.q[l].size();
                for (auto [from, to] : {std::make_pair(&table.coef, &chain.coef[l]),
                                        std::make_pair(&table.dcoef, &chain.dcoef[l])}) {
                    to->resize(std::size_t(terms) * P);
                    Eigen::Map<Rows>(to->data(), terms, Eigen::Index(P)) =
                        from->middleCols(offset, Eigen::Index(P)).template cast<T>();
                }
                chain.r[l].resize(P);
                chain.ir[l].resize(P);
                chain.ra[l].resize(P);
                chain.act_q[l].resize(P);
                chain.act_dq[l].resize(P);
                for (std::size_t p = 0; p < P; ++p) {
                    const T r = std::sqrt(chain.q[l][p]);
                    const std::size_t k = std::size_t(offset) + p;
                    chain.r[l][p] = r;
                    chain.ir[l][p] = r > T(0) ? T(1) / r : T(0);
                    chain.ra[l][p] = T(std::sqrt(table.variance[k]));
                    chain.act_q[l][p] = T(table.variance[k]);
                    chain.act_dq[l][p] = T(table.derivative[k]);
                }
                offset += Eigen::Index(P);
            }
    }

    // Runs layers 0 .. end - 1 on the pair of input i of set1 and input j of set2 (true: x2).
    // `self` (the same input twice, chain1 = chain2) records the chain: the variances are read
    // off the diagonal (those before layer `end` last), activations set it from the per-point
    // maps, and a run to the end records K(x, x) and Theta(x, x).
    void run(bool set1, std::size_t i, bool set2, std::size_t j, const detail::InputChain<T>* other1,
             const detail::InputChain<T>* other2, detail::InputChain<T>* record,
             detail::LayerWorkspace<T>& ws, std::size_t end) const {
        ws.reserve(largest_);
        const T *a = input(set1, i), *b = input(set2, j);
        const std::vector<Grid>& grids1 = set1 ? grids2_ : grids1_;
        const std::vector<Grid>& grids2 = set2 ? grids2_ : grids1_;
        const auto& taps1 = taps_[set1 ? 1 : 0];
        const auto& taps2 = taps_[set2 ? 1 : 0];
        const bool self = record != nullptr, diag = diagonal_;
        const detail::InputChain<T>& chain1 = self ? *record : *other1;
        const detail::InputChain<T>& chain2 = self ? *record : *other2;
        // On the diagonal a chain resumes where its previous stage stopped.
        std::size_t begin = 0;
        if (self && diag && record->stopped > 0) {
            begin = record->stopped;
            for (auto [from, to] :
                 {std::make_pair(&record->state_c, &ws.c), std::make_pair(&record->state_d, &ws.d),
                  std::make_pair(&record->state_theta, &ws.theta)})
                std::copy(from->begin(), from->end(), to->begin());
        } else {
            input_layer(a, b, grids1[0].size(), grids2[0].size(), diag, ws);
        }
        for (std::size_t l = begin; l < end; ++l) {
            const Layer& layer = layers_[l];
            const Grid g1 = grids1[l], g2 = grids2[l];
            const std::size_t P1 = g1.size(), P2 = g2.size();
            if (self) record_variances(*record, l, P1, diag, ws);
            const std::vector<T>& q1 = chain1.q[l];
            const std::vector<T>& q2 = chain2.q[l];
            switch (layer.kind) {
                case LayerKind::dense:
                    if (diag)
                        for (std::size_t p = 0; p < P1; ++p)
                            affine(1, 1, &q1[p], &q2[p], T(layer.w_var), T(layer.b_var), &ws.c[p], &ws.d[p],
                                   &ws.theta[p]);
                    else
                        affine(P1, P2, q1.data(), q2.data(), T(layer.w_var), T(layer.b_var), ws.c.data(),
                               ws.d.data(), ws.theta.data());
                    break;
                case LayerKind::conv:
                    if (diag)
                        conv_diagonal(layer, taps1[l], g1, q1, q2, ws);
                    else
                        conv(layer, taps1[l], taps2[l], g1, g2, q1, q2, ws);
                    break;
                case LayerKind::avg_pool:
                    pool(layer, taps1[l], taps2[l], g1, g2, ws);
                    break;
                case LayerKind::global_avg_pool: {
                    T c = 0, theta = 0;
                    for (std::size_t e = 0; e < P1 * P2; ++e) {
                        c += ws.c[e];
                        theta += ws.theta[e];
                    }
                    ws.c[0] = c / T(P1 * P2);
                    ws.theta[0] = theta / T(P1 * P2);
                    break;
                }
                case LayerKind::flatten:
                    flatten(P1, diag ? 1 : P1 + 1, q1.data(), q2.data(), ws);
                    break;
                case LayerKind::activation:
                    activate(layer.activation, P1, P2, chain1, chain2, l, record, diag, ws);
                    break;
            }
            if (layer.kind == LayerKind::avg_pool || layer.kind == LayerKind::global_avg_pool) {
                // Positions mixed with independent offsets: the gap by subtraction.
                const std::size_t n1 = grids1[l + 1].size(), n2 = grids2[l + 1].size();
                if (self) record_variances(*record, l + 1, n1, false, ws);
                const std::vector<T>& v1 = chain1.q[l + 1];
                const std::vector<T>& v2 = chain2.q[l + 1];
                for (std::size_t i = 0; i < n1; ++i)
                    for (std::size_t j = 0; j < n2; ++j) {
                        const T c = ws.c[i * n2 + j];
                        ws.d[i * n2 + j] = std::max(T(0), v1[i] * v2[j] - c * c);
                    }
            }
        }
        if (!self) return;
        if (end < layers_.size()) {
            const std::size_t P = grids1[end].size();
            record_variances(*record, end, P, diag, ws);
            if (diag) {
                record->stopped = end;
                record->state_c.assign(ws.c.begin(), ws.c.begin() + long(P));
                record->state_d.assign(ws.d.begin(), ws.d.begin() + long(P));
                record->state_theta.assign(ws.theta.begin(), ws.theta.begin() + long(P));
            }
            return;
        }
        record->q[end] = {ws.c[0]};
        record->nngp = double(ws.c[0]);
        record->ntk = double(ws.theta[0]);
    }

    // The variances before layer l from the diagonal of a self pair (all of it when `diag`).
    static void record_variances(detail::InputChain<T>& chain, std::size_t l, std::size_t P, bool diag,
                                 const detail::LayerWorkspace<T>& ws) {
        chain.q[l].resize(P);
        for (std::size_t p = 0; p < P; ++p) chain.q[l][p] = ws.c[diag ? p : p * P + p];
    }

    // The dense step of dual_maps.hpp on a linear stage, whose "activation" is the identity
    // (Tdot = 1; dist2 = q1 + q2 - 2 c from the variances q before, needed only when b > 0):
    // c <- w c + b, d <- w^2 d + w b dist2, theta <- c_new + w theta.
    static void affine(std::size_t P1, std::size_t P2, const T* q1, const T* q2, T w, T b, T* c, T* d,
                       T* theta) {
        const DenseStep<T> dense{w, b, w, w, b};
        for (std::size_t i = 0; i < P1; ++i)
            for (std::size_t j = 0; j < P2; ++j) {
                const std::size_t e = i * P2 + j;
                const T d_in = d[e] > T(0) ? d[e] : T(0);
                const T dist2 = b > T(0) ? detail::gap_of_bias(q1[i], q2[j], c[e], d_in) : T(0);
                dense_step(dense, c[e], d_in, dist2, T(1), c[e], d[e], theta[e]);
            }
    }

    // Sums the taps along the rows of both grids (the same tap t on both; grid 1 is H1 x W1
    // read through index1, grid 2 H2 x W2 through index2), each column untouched: pair state
    // ws.{c,d,theta} -> ws.{c2,d2,theta2}, variances v1, v2 -> their tap sums s1, s2.  The
    // innermost loops run along grid 2's rows, contiguous in memory.
    void tap_rows(std::size_t k, const std::vector<long>& index1, const std::vector<long>& index2,
                  std::size_t W1, std::size_t H2, std::size_t W2, const std::vector<T>& v1,
                  const std::vector<T>& v2, std::vector<T>& s1, std::vector<T>& s2,
                  detail::LayerWorkspace<T>& ws) const {
        const std::size_t O1 = index1.size() / k, O2 = index2.size() / k;
        const std::size_t P2_in = H2 * W2, P2_out = O2 * W2;
        s1.assign(O1 * W1, T(0));
        s2.assign(O2 * W2, T(0));
        for (std::size_t o = 0; o < O1; ++o)
            for (std::size_t t = 0; t < k; ++t)
                if (index1[o * k + t] >= 0)
                    for (std::size_t w = 0; w < W1; ++w)
                        s1[o * W1 + w] += v1[std::size_t(index1[o * k + t]) * W1 + w];
        for (std::size_t o = 0; o < O2; ++o)
            for (std::size_t t = 0; t < k; ++t)
                if (index2[o * k + t] >= 0)
                    for (std::size_t w = 0; w < W2; ++w)
                        s2[o * W2 + w] += v2[std::size_t(index2[o * k + t]) * W2 + w];
        std::vector<T>& acc_g = ws.q1b;  // per column of grid 2: sum of g_t, then of a_t (u_t - u)^2
        std::vector<T>& acc_v = ws.q2b;
        acc_g.resize(W2);
        acc_v.resize(W2);
        for (std::size_t o1 = 0; o1 < O1; ++o1)
            for (std::size_t w1 = 0; w1 < W1; ++w1) {
                const std::size_t out1 = o1 * W1 + w1;
                const T A = s1[out1];
                const T inv_A = A > T(0) ? T(1) / A : T(0);
                T a[8], inv_a[8];
                std::size_t row[8];
                for (std::size_t t = 0; t < k; ++t) {
                    const long i = index1[o1 * k + t];
                    a[t] = i < 0 ? T(0) : v1[std::size_t(i) * W1 + w1];
                    inv_a[t] = a[t] > T(0) ? T(1) / a[t] : T(0);
                    row[t] = i < 0 ? 0 : (std::size_t(i) * W1 + w1) * P2_in;
                }
                for (std::size_t o2 = 0; o2 < O2; ++o2) {
                    T* out_c = ws.c2.data() + out1 * P2_out + o2 * W2;
                    T* out_d = ws.d2.data() + out1 * P2_out + o2 * W2;
                    T* out_t = ws.theta2.data() + out1 * P2_out + o2 * W2;
                    std::fill(out_c, out_c + W2, T(0));
                    std::fill(out_t, out_t + W2, T(0));
                    std::fill(acc_g.begin(), acc_g.end(), T(0));
                    std::fill(acc_v.begin(), acc_v.end(), T(0));
                    // Pass 1: C, theta and g_t = d_t / a_t (b_t where a_t = 0) of each tap.
                    for (std::size_t t = 0; t < k; ++t) {
                        const long i2 = index2[o2 * k + t];
                        if (i2 < 0) continue;  // b_t = c_t = d_t = 0
                        const T* b = v2.data() + std::size_t(i2) * W2;
                        T* g = acc_g.data();
                        if (a[t] > T(0)) {
                            const T* c = ws.c.data() + row[t] + std::size_t(i2) * W2;
                            const T* d = ws.d.data() + row[t] + std::size_t(i2) * W2;
                            const T* th = ws.theta.data() + row[t] + std::size_t(i2) * W2;
                            const T ia = inv_a[t];
#pragma omp simd
                            for (std::size_t w = 0; w < W2; ++w) {
                                out_c[w] += c[w];
                                out_t[w] += th[w];
                                g[w] += (d[w] > T(0) ? d[w] : T(0)) * ia;
                            }
                        } else {
#pragma omp simd
                            for (std::size_t w = 0; w < W2; ++w) g[w] += b[w];
                        }
                    }
                    if (!(A > T(0))) {
                        std::fill(out_d, out_d + W2, T(0));
                        continue;
                    }
                    // Pass 2: sum_t a_t (u_t - u)^2 with u_t = c_t / a_t (0 where b_t = 0) and u = C / A.
                    T* v = acc_v.data();
                    for (std::size_t t = 0; t < k; ++t) {
                        if (!(a[t] > T(0))) continue;
                        const long i2 = index2[o2 * k + t];
                        const T at = a[t], ia = inv_a[t];
                        if (i2 < 0) {
#pragma omp simd
                            for (std::size_t w = 0; w < W2; ++w) {
                                const T u = out_c[w] * inv_A;
                                v[w] += at * u * u;
                            }
                            continue;
                        }
                        const T* c = ws.c.data() + row[t] + std::size_t(i2) * W2;
#pragma omp simd
                        for (std::size_t w = 0; w < W2; ++w) {
                            const T dev = c[w] * ia - out_c[w] * inv_A;
                            v[w] += at * dev * dev;
                        }
                    }
                    const T* g = acc_g.data();
#pragma omp simd
                    for (std::size_t w = 0; w < W2; ++w) out_d[w] = A * (g[w] + v[w]);
                }
            }
        std::swap(ws.c, ws.c2);
        std::swap(ws.d, ws.d2);
        std::swap(ws.theta, ws.theta2);
    }

    // (H1, W1, H2, W2) -> (W1, H1, W2, H2): the pair state and both variance grids.
    static void transpose(std::size_t H1, std::size_t W1, std::size_t H2, std::size_t W2, std::vector<T>& v1,
                          std::vector<T>& v2, detail::LayerWorkspace<T>& ws) {
        const std::size_t P2 = H2 * W2;
        for (auto [from, to] : {std::make_pair(&ws.c, &ws.c2), std::make_pair(&ws.d, &ws.d2),
                                std::make_pair(&ws.theta, &ws.theta2)}) {
            for (std::size_t h1 = 0; h1 < H1; ++h1)
                for (std::size_t w1 = 0; w1 < W1; ++w1)
                    for (std::size_t h2 = 0; h2 < H2; ++h2)
                        for (std::size_t w2 = 0; w2 < W2; ++w2)
                            (*to)[(w1 * H1 + h1) * P2 + w2 * H2 + h2] =
                                (*from)[(h1 * W1 + w1) * P2 + h2 * W2 + w2];
            std::swap(*from, *to);
        }
        for (auto [v, h, w] : {std::make_tuple(&v1, H1, W1), std::make_tuple(&v2, H2, W2)}) {
            ws.spare.resize(v->size());
            for (std::size_t i = 0; i < h; ++i)
                for (std::size_t j = 0; j < w; ++j) ws.spare[j * h + i] = (*v)[i * w + j];
            std::swap(*v, ws.spare);
        }
    }

    // Sigma <- w avg(Sigma) + b, Theta <- Sigma_new + w avg(Theta): taps along H, then along W
    // (as rows of the transposed state, transposed back after).
    void conv(const Layer& layer, const detail::LayerTaps& taps1, const detail::LayerTaps& taps2, Grid g1,
              Grid g2, const std::vector<T>& q1, const std::vector<T>& q2,
              detail::LayerWorkspace<T>& ws) const {
        const std::size_t kh = layer.window[0], kw = layer.window[1];
        tap_rows(kh, taps1.h, taps2.h, g1.w, g2.h, g2.w, q1, q2, ws.q1, ws.q2, ws);
        const std::size_t h1 = taps1.h.size() / kh, h2 = taps2.h.size() / kh;
        const std::size_t w1 = taps1.w.size() / kw, w2 = taps2.w.size() / kw;
        if (kw > 1 || layer.strides[1] > 1) {
            transpose(h1, g1.w, h2, g2.w, ws.q1, ws.q2, ws);
            tap_rows(kw, taps1.w, taps2.w, h1, g2.w, h2, ws.q1, ws.q2, ws.s1, ws.s2, ws);
            transpose(w1, h1, w2, h2, ws.s1, ws.s2, ws);
        } else {
            ws.s1 = ws.q1;
            ws.s2 = ws.q2;
        }
        const T scale = T(layer.w_var) / T(kh * kw);
        // theta becomes c_new + (w / |F|) sum(theta) = Sigma_new + w avg(Theta).
        affine(h1 * w1, h2 * w2, ws.s1.data(), ws.s2.data(), scale, T(layer.b_var), ws.c.data(), ws.d.data(),
               ws.theta.data());
    }

    // The convolution on the spatial diagonal (one grid g): entry p of the output sums the
    // entries p + delta over the whole filter, its gap by the tap identity.
    void conv_diagonal(const Layer& layer, const detail::LayerTaps& taps, Grid g, const std::vector<T>& q1,
                       const std::vector<T>& q2, detail::LayerWorkspace<T>& ws) const {
        const std::size_t kh = layer.window[0], kw = layer.window[1];
        const std::size_t oh = taps.h.size() / kh, ow = taps.w.size() / kw;
        const T scale = T(layer.w_var) / T(kh * kw), bias = T(layer.b_var);
        for (std::size_t i = 0; i < oh; ++i)
            for (std::size_t j = 0; j < ow; ++j) {
                T A = 0, B = 0, C = 0, theta = 0, G = 0;
                const auto each_tap = [&](auto&& body) {
                    for (std::size_t th = 0; th < kh; ++th) {
                        const long ih = taps.h[i * kh + th];
                        if (ih < 0) continue;
                        for (std::size_t tw = 0; tw < kw; ++tw) {
                            const long iw = taps.w[j * kw + tw];
                            if (iw >= 0) body(std::size_t(ih) * g.w + std::size_t(iw));
                        }
                    }
                };
                each_tap([&](std::size_t e) {
                    A += q1[e];
                    B += q2[e];
                    C += ws.c[e];
                    theta += ws.theta[e];
                    const T dt = ws.d[e] > T(0) ? ws.d[e] : T(0);
                    G += q1[e] > T(0) ? dt / q1[e] : q2[e];
                });
                T V = 0;
                if (A > T(0)) {
                    const T u = C / A;
                    each_tap([&](std::size_t e) {
                        if (!(q1[e] > T(0))) return;
                        const T dev = ws.c[e] / q1[e] - u;
                        V += q1[e] * dev * dev;
                    });
                }
                const std::size_t out = i * ow + j;
                ws.c2[out] = C;
                ws.d2[out] = A > T(0) ? A * (G + V) : T(0);
                ws.theta2[out] = theta;
                affine(1, 1, &A, &B, scale, bias, &ws.c2[out], &ws.d2[out], &ws.theta2[out]);
            }
        std::swap(ws.c, ws.c2);
        std::swap(ws.d, ws.d2);
        std::swap(ws.theta, ws.theta2);
    }

    // Average pooling: independent offsets on the two grids, c and theta alike.
    void pool(const Layer& layer, const detail::LayerTaps& taps1, const detail::LayerTaps& taps2, Grid g1,
              Grid g2, detail::LayerWorkspace<T>& ws) const {
        for (int axis = 0; axis < 2; ++axis) {
            const std::size_t k = layer.window[axis];
            for (int side = 0; side < 2; ++side) {
                const Grid g = side == 0 ? g1 : g2;
                const detail::LayerTaps& taps = side == 0 ? taps1 : taps2;
                const std::vector<long>& index = axis == 0 ? taps.h : taps.w;
                const detail::AxisMap m{axis == 0, g.h, g.w, index.size() / k};
                const std::size_t other_in = side == 0 ? g2.size() : g1.size();  // the other grid's positions
                const std::size_t P_in = g.size(), P_out = m.out_size();
                for (std::size_t o = 0; o < m.out; ++o)
                    for (std::size_t x = 0; x < m.other(); ++x) {
                        const std::size_t out = m.out_pos(o, x);
                        for (std::size_t y = 0; y < other_in; ++y) {
                            T c = 0, theta = 0;
                            for (std::size_t t = 0; t < k; ++t) {
                                const long i = index[o * k + t];
                                if (i < 0) continue;
                                const std::size_t in = m.in_pos(std::size_t(i), x);
                                const std::size_t e = side == 0 ? in * other_in + y : y * P_in + in;
                                c += ws.c[e];
                                theta += ws.theta[e];
                            }
                            const std::size_t e = side == 0 ? out * other_in + y : y * P_out + out;
                            ws.c2[e] = c / T(k);
                            ws.theta2[e] = theta / T(k);
                        }
                    }
                std::swap(ws.c, ws.c2);
                std::swap(ws.theta, ws.theta2);
                (side == 0 ? g1 : g2) = m.out_grid();
            }
        }
    }

    // K = mean_p Sigma[p, p] (entry p * step of the state), the gap by the tap identity over
    // the positions.
    static void flatten(std::size_t P, std::size_t step, const T* q1, const T* q2,
                        detail::LayerWorkspace<T>& ws) {
        T A = 0, C = 0, theta = 0, G = 0, V = 0;
        for (std::size_t p = 0; p < P; ++p) {
            const std::size_t e = p * step;
            A += q1[p];
            C += ws.c[e];
            theta += ws.theta[e];
            const T dt = ws.d[e] > T(0) ? ws.d[e] : T(0);
            G += q1[p] > T(0) ? dt / q1[p] : q2[p];
        }
        if (A > T(0)) {
            const T u = C / A;
            for (std::size_t p = 0; p < P; ++p)
                if (q1[p] > T(0)) {
                    const T dev = ws.c[p * step] / q1[p] - u;
                    V += q1[p] * dev * dev;
                }
        }
        const T n = T(P);
        ws.c[0] = C / n;
        ws.d[0] = A > T(0) ? A * (G + V) / (n * n) : T(0);
        ws.theta[0] = theta / n;
    }

    // Sigma <- T, Theta <- Tdot Theta entrywise (the diagonal entries p only when `diag`).
    void activate(const Activation& act, std::size_t P1, std::size_t P2, const detail::InputChain<T>& chain1,
                  const detail::InputChain<T>& chain2, std::size_t l, detail::InputChain<T>* record,
                  bool diag, detail::LayerWorkspace<T>& ws) const {
        visit_family<T>(act, [&](const auto& fam) {
            using Fam = std::decay_t<decltype(fam)>;
            constexpr bool series = detail::is_tabulated<Fam>::value;
            const std::size_t step = diag ? 1 : P1 + 1;  // between diagonal entries of the state
            if (record) {
                if constexpr (!series) {  // a series' per-point values come with its table
                    const std::vector<T>& q = record->q[l];
                    record->r[l].resize(P1);
                    record->ir[l].resize(P1);
                    record->ra[l].resize(P1);
                    for (std::size_t p = 0; p < P1; ++p) {
                        const T r = std::sqrt(q[p]);
                        record->r[l][p] = r;
                        record->ir[l][p] = r > T(0) ? T(1) / r : T(0);
                        record->ra[l][p] = T(std::sqrt(fam.variance(double(q[p]))));
                    }
                }
                ws.keep.resize(P1);
                for (std::size_t p = 0; p < P1; ++p) ws.keep[p] = ws.theta[p * step];
            }
            LayerInputs<T> in{chain1.r[l].data(),  chain2.r[l].data(),  chain1.ir[l].data(),
                              chain2.ir[l].data(), chain1.q[l].data(),  chain2.q[l].data(),
                              chain1.ra[l].data(), chain2.ra[l].data(), T(1)};
            if constexpr (series) {
                in.coef1 = chain1.coef[l].data();
                in.coef2 = chain2.coef[l].data();
                in.dcoef1 = chain1.dcoef[l].data();
                in.dcoef2 = chain2.dcoef[l].data();
                in.stride1 = P1;
                in.stride2 = P2;
                in.terms = terms_[l];
            }
            const DenseStep<T> identity{T(1), T(0), T(1), T(0), T(0)};
            if (diag) {
                for (std::size_t p = 0; p < P1; ++p)
                    fam.pairs(1, 1, shifted(in, p), &ws.c[p], &ws.d[p], &ws.theta[p], identity);
            } else {
                fam.pairs(P1, P2, in, ws.c.data(), ws.d.data(), ws.theta.data(), identity);
            }
            if constexpr (series) {  // the series leaves d = 0: by subtraction, for what follows
                const auto gap = [&](std::size_t e, std::size_t i, std::size_t j) {
                    const T R = chain1.ra[l][i] * chain2.ra[l][j], c = ws.c[e];
                    ws.d[e] = std::max(T(0), (R - c) * (R + c));
                };
                if (diag)
                    for (std::size_t p = 0; p < P1; ++p) gap(p, p, p);
                else
                    for (std::size_t i = 0; i < P1; ++i)
                        for (std::size_t j = 0; j < P2; ++j) gap(i * P2 + j, i, j);
            }
            if (record) {  // the diagonal from the per-point maps, exactly
                for (std::size_t p = 0; p < P1; ++p) {
                    const std::size_t e = p * step;
                    if constexpr (series) {
                        ws.c[e] = chain1.act_q[l][p];
                        ws.theta[e] = chain1.act_dq[l][p] * ws.keep[p];
                    } else {
                        const double q = double(chain1.q[l][p]);
                        ws.c[e] = T(fam.variance(q));
                        ws.theta[e] = T(fam.derivative(q)) * ws.keep[p];
                    }
                    ws.d[e] = T(0);
                }
            }
        });
    }

    // The per-point inputs of position p on both sides, as those of a 1 x 1 block.
    static LayerInputs<T> shifted(LayerInputs<T> in, std::size_t p) {
        for (const T** v : {&in.r1, &in.r2, &in.ir1, &in.ir2, &in.q1, &in.q2, &in.ra1, &in.ra2, &in.coef1,
                            &in.coef2, &in.dcoef1, &in.dcoef2})
            if (*v) *v += p;
        return in;
    }

    std::vector<Layer> layers_;
    Eigen::Ref<const RowMatrix<T>> x1_, x2_;
    bool symmetric_;
    std::size_t channels_;
    std::vector<Grid> grids1_, grids2_;
    bool diagonal_ = false;  // pairs carry only the spatial diagonal (no pooling, one grid)
    std::array<std::vector<detail::LayerTaps>, 2> taps_;  // per layer, for the grids of x1 and of x2
    bool series_warned_ = false;
    std::vector<std::size_t> terms_;  // series terms of each Gauss-Hermite activation
    std::size_t largest_ = 1;
    std::vector<detail::InputChain<T>> chains1_, chains2_;
};

// K and Theta of a layer network into nngp and ntk (N1 x N2): each input's chain once, then
// every pair (one triangle when x2 is null), threaded over pairs, interruptible between them.
// A dense chain on vectors (fully_connected_chain) runs on the fused scalar engine of gram.hpp.
template <class T>
void layer_gram(const std::vector<Layer>& layers, const Eigen::Ref<const RowMatrix<T>>& x1, Grid g1,
                const Eigen::Ref<const RowMatrix<T>>* x2, Grid g2, std::size_t channels,
                Eigen::Ref<RowMatrix<T>> nngp, Eigen::Ref<RowMatrix<T>> ntk, const GramOptions& opt) {
    const auto chain = fully_connected_chain(layers, g1);
    const bool vectors =
        !g2.spatial && std::size_t(x1.cols()) == channels && (!x2 || std::size_t(x2->cols()) == channels);
    if (chain && vectors) {
        validate_layers(layers);
        gram<T>(*chain, x1, x2, nngp, ntk, opt);
        return;
    }
    LayerKernels<T> kernels(layers, x1, g1, x2, g2, channels);
    kernels.prepare(opt.n_threads, opt.should_stop);
    const std::size_t n1 = kernels.rows(), n2 = kernels.cols();
    if (std::size_t(nngp.rows()) != n1 || std::size_t(nngp.cols()) != n2 || std::size_t(ntk.rows()) != n1 ||
        std::size_t(ntk.cols()) != n2)
        throw std::invalid_argument("layer gram: outputs must be N1 x N2");
    // Rows of pairs as tasks: row i holds (i, j) for j >= i when symmetric.
    const int threads = detail::resolve_threads(opt.n_threads, n1);
    std::vector<detail::LayerWorkspace<T>> ws(static_cast<std::size_t>(threads));
    std::atomic<std::size_t>* done =
        detail::start_progress(opt, kernels.symmetric() ? n1 * (n1 + 1) / 2 : n1 * n2);  // pairs
    detail::parallel_tiles(n1, threads, opt.should_stop, [&](std::size_t i) {
        auto& w = ws[std::size_t(detail::thread_index())];
        const std::size_t first = kernels.symmetric() ? i : 0;
        for (std::size_t j = first; j < n2; ++j) {
            const auto [k, t] = kernels.pair(i, j, w);
            nngp(Eigen::Index(i), Eigen::Index(j)) = k;
            ntk(Eigen::Index(i), Eigen::Index(j)) = t;
            if (kernels.symmetric()) {
                nngp(Eigen::Index(j), Eigen::Index(i)) = k;
                ntk(Eigen::Index(j), Eigen::Index(i)) = t;
            }
        }
        if (done) done->fetch_add(n2 - first, std::memory_order_relaxed);
    });
}

}  // namespace ntkcore

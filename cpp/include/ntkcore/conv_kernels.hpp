// Kernels of a layer network (layer_network.hpp; SPEC sec. 7): for a pair of inputs the state
// is Sigma[p, p'] and Theta[p, p'] over every pair of positions, carried as (c, d, theta) with
// d = q_p q'_p' - c^2 the gap that keeps nearly collinear pixel pairs exact (SPEC sec. 3a).
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
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdio>
#include <limits>
#include <stdexcept>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include <Eigen/Core>

#include "gram.hpp"
#include "kernel_tiles.hpp"
#include "layer_network.hpp"
#include "parallel.hpp"

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

// Scratch of one thread: the pair state and its next version, and variance vectors.
template <class T>
struct LayerWorkspace {
    std::vector<T> c, d, theta, c2, d2, theta2, q1, q2, q1b, q2b, keep;
    void reserve(std::size_t n) {
        for (auto* v : {&c, &d, &theta, &c2, &d2, &theta2})
            if (v->size() < n) v->resize(n);
    }
};

// What an input's own chain leaves for its pairs: the variance at every position before
// each layer (and after the last), and, before each activation, sqrt of it, its inverse and
// sqrt of the variance after the activation.
template <class T>
struct InputChain {
    std::vector<std::vector<T>> q, r, ir, ra;
    double nngp = 0.0, ntk = 0.0;
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
        std::size_t largest = 1;
        for (std::size_t l = 0; l <= layers_.size(); ++l) {
            if (l < layers_.size() && layers_[l].kind == LayerKind::flatten && !(grids1_[l] == grids2_[l]))
                throw std::invalid_argument(detail::layer_name(layers_, l) +
                                            " needs equal grids for x1 and x2");
            // Pairs and each input's own chain; stages never grow a grid.
            const std::size_t p1 = grids1_[l].size(), p2 = grids2_[l].size();
            largest = std::max({largest, p1 * p2, p1 * p1, p2 * p2});
        }
        largest_ = largest;
    }

    std::size_t rows() const { return std::size_t(x1_.rows()); }
    std::size_t cols() const { return std::size_t(x2_.rows()); }
    bool symmetric() const { return symmetric_; }

    // Each input's own chain, for every input of both sets, on `threads` threads.
    void prepare(int threads, const std::function<bool()>& should_stop) {
        chains1_.assign(rows(), {});
        chains2_.assign(symmetric_ ? 0 : cols(), {});
        const std::size_t n = rows() + chains2_.size();
        const int used = detail::resolve_threads(threads, n);
        std::vector<detail::LayerWorkspace<T>> ws(static_cast<std::size_t>(used));
        detail::parallel_tiles(n, used, should_stop, [&](std::size_t k) {
            const bool second = k >= rows();
            const std::size_t i = second ? k - rows() : k;
            auto& chain = second ? chains2_[i] : chains1_[i];
            run(input(second, i), input(second, i), second ? grids2_ : grids1_, second ? grids2_ : grids1_,
                nullptr, nullptr, &chain, ws[std::size_t(detail::thread_index())]);
        });
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
        run(input(false, i), input(!symmetric_, j), grids1_, grids2_, &chains1_[i],
            symmetric_ ? &chains1_[j] : &chains2_[j], nullptr, ws);
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

    // Sigma = x . x' / C per position pair, and its gap from the normalised pixels
    // (|x|^2 |x'|^2 |x^ - x'^|^2 |x^ + x'^|^2 / 4, exact for duplicates and for one channel).
    void input_layer(const T* a, const T* b, std::size_t p1, std::size_t p2,
                     detail::LayerWorkspace<T>& ws) const {
        const std::size_t C = channels_;
        const T inv = T(1) / T(C);
        for (std::size_t i = 0; i < p1; ++i) {
            const T* u = a + i * C;
            T nu = 0;
            for (std::size_t k = 0; k < C; ++k) nu += u[k] * u[k];
            const T su = nu > T(0) ? T(1) / std::sqrt(nu) : T(0);
            for (std::size_t j = 0; j < p2; ++j) {
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
                const std::size_t e = i * p2 + j;
                ws.c[e] = dot * inv;
                ws.d[e] = (su > T(0) && sv > T(0)) ? nu * nv * inv * inv * minus * plus / T(4) : T(0);
                ws.theta[e] = T(0);
            }
        }
    }

    // Runs the layers on one pair.  `self` (a = b, chain1 = chain2) records the chain: the
    // variances are read off the diagonal, and activations set it from the per-point maps.
    void run(const T* a, const T* b, const std::vector<Grid>& grids1, const std::vector<Grid>& grids2,
             const detail::InputChain<T>* other1, const detail::InputChain<T>* other2,
             detail::InputChain<T>* record, detail::LayerWorkspace<T>& ws) const {
        ws.reserve(largest_);
        const std::size_t L = layers_.size();
        const bool self = record != nullptr;
        if (self) {
            record->q.assign(L + 1, {});
            record->r.assign(L, {});
            record->ir.assign(L, {});
            record->ra.assign(L, {});
        }
        const detail::InputChain<T>& chain1 = self ? *record : *other1;
        const detail::InputChain<T>& chain2 = self ? *record : *other2;
        input_layer(a, b, grids1[0].size(), grids2[0].size(), ws);
        for (std::size_t l = 0; l < L; ++l) {
            const Layer& layer = layers_[l];
            const Grid g1 = grids1[l], g2 = grids2[l];
            const std::size_t P1 = g1.size(), P2 = g2.size();
            if (self) record_variances(*record, l, P1, ws);
            const std::vector<T>& q1 = chain1.q[l];
            const std::vector<T>& q2 = chain2.q[l];
            switch (layer.kind) {
                case LayerKind::dense:
                    affine(P1, P2, q1.data(), q2.data(), T(layer.w_var), T(layer.b_var), ws.c.data(),
                           ws.d.data(), ws.theta.data());
                    break;
                case LayerKind::conv:
                    conv(layer, g1, g2, q1, q2, ws);
                    break;
                case LayerKind::avg_pool:
                    pool(layer, g1, g2, ws);
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
                    flatten(P1, q1.data(), q2.data(), ws);
                    break;
                case LayerKind::activation:
                    activate(layer.activation, P1, P2, chain1, chain2, l, record, ws);
                    break;
            }
            if (layer.kind == LayerKind::avg_pool || layer.kind == LayerKind::global_avg_pool) {
                // Positions mixed with independent offsets: the gap by subtraction.
                const std::size_t n1 = grids1[l + 1].size(), n2 = grids2[l + 1].size();
                if (self) record_variances(*record, l + 1, n1, ws);
                const std::vector<T>& v1 = chain1.q[l + 1];
                const std::vector<T>& v2 = chain2.q[l + 1];
                for (std::size_t i = 0; i < n1; ++i)
                    for (std::size_t j = 0; j < n2; ++j) {
                        const T c = ws.c[i * n2 + j];
                        ws.d[i * n2 + j] = std::max(T(0), v1[i] * v2[j] - c * c);
                    }
            }
        }
        if (self) {
            record->q[L] = {ws.c[0]};
            record->nngp = double(ws.c[0]);
            record->ntk = double(ws.theta[0]);
        }
    }

    // The variances before layer l from the diagonal of a self pair.
    static void record_variances(detail::InputChain<T>& chain, std::size_t l, std::size_t P,
                                 const detail::LayerWorkspace<T>& ws) {
        chain.q[l].resize(P);
        for (std::size_t p = 0; p < P; ++p) chain.q[l][p] = ws.c[p * P + p];
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
            std::vector<T> t(v->size());
            for (std::size_t i = 0; i < h; ++i)
                for (std::size_t j = 0; j < w; ++j) t[j * h + i] = (*v)[i * w + j];
            *v = std::move(t);
        }
    }

    // Sigma <- w avg(Sigma) + b, Theta <- Sigma_new + w avg(Theta): taps along H, then along W
    // (as rows of the transposed state, transposed back after).
    void conv(const Layer& layer, Grid g1, Grid g2, const std::vector<T>& q1, const std::vector<T>& q2,
              detail::LayerWorkspace<T>& ws) const {
        if (layer.window[0] > 8 || layer.window[1] > 8)
            throw std::invalid_argument("layer kernels: filters up to 8 taps per axis");
        const std::size_t kh = layer.window[0], kw = layer.window[1], sh = layer.strides[0],
                          sw = layer.strides[1];
        std::vector<T> s1, s2;
        tap_rows(kh, detail::window_index(g1.h, kh, sh, layer.padding),
                 detail::window_index(g2.h, kh, sh, layer.padding), g1.w, g2.h, g2.w, q1, q2, ws.q1, ws.q2,
                 ws);
        const std::size_t h1 = detail::window_count(g1.h, kh, sh, layer.padding);
        const std::size_t h2 = detail::window_count(g2.h, kh, sh, layer.padding);
        const std::size_t w1 = detail::window_count(g1.w, kw, sw, layer.padding);
        const std::size_t w2 = detail::window_count(g2.w, kw, sw, layer.padding);
        if (kw > 1 || sw > 1) {
            transpose(h1, g1.w, h2, g2.w, ws.q1, ws.q2, ws);
            tap_rows(kw, detail::window_index(g1.w, kw, sw, layer.padding),
                     detail::window_index(g2.w, kw, sw, layer.padding), h1, g2.w, h2, ws.q1, ws.q2, s1, s2,
                     ws);
            transpose(w1, h1, w2, h2, s1, s2, ws);
        } else {
            s1 = ws.q1;
            s2 = ws.q2;
        }
        const T scale = T(layer.w_var) / T(kh * kw);
        // theta becomes c_new + (w / |F|) sum(theta) = Sigma_new + w avg(Theta).
        affine(h1 * w1, h2 * w2, s1.data(), s2.data(), scale, T(layer.b_var), ws.c.data(), ws.d.data(),
               ws.theta.data());
    }

    // Average pooling: independent offsets on the two grids, c and theta alike.
    void pool(const Layer& layer, Grid g1, Grid g2, detail::LayerWorkspace<T>& ws) const {
        for (int axis = 0; axis < 2; ++axis) {
            const std::size_t k = layer.window[axis], s = layer.strides[axis];
            for (int side = 0; side < 2; ++side) {
                const Grid g = side == 0 ? g1 : g2;
                const std::size_t n = axis == 0 ? g.h : g.w;
                const detail::AxisMap m{axis == 0, g.h, g.w, detail::window_count(n, k, s, layer.padding)};
                const std::vector<long> index = detail::window_index(n, k, s, layer.padding);
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

    // K = mean_p Sigma[p, p], the gap by the tap identity over the positions.
    static void flatten(std::size_t P, const T* q1, const T* q2, detail::LayerWorkspace<T>& ws) {
        T A = 0, C = 0, theta = 0, G = 0, V = 0;
        for (std::size_t p = 0; p < P; ++p) {
            const std::size_t e = p * P + p;
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
                    const T dev = ws.c[p * P + p] / q1[p] - u;
                    V += q1[p] * dev * dev;
                }
        }
        const T n = T(P);
        ws.c[0] = C / n;
        ws.d[0] = A > T(0) ? A * (G + V) / (n * n) : T(0);
        ws.theta[0] = theta / n;
    }

    void activate(const Activation& act, std::size_t P1, std::size_t P2, const detail::InputChain<T>& chain1,
                  const detail::InputChain<T>& chain2, std::size_t l, detail::InputChain<T>* record,
                  detail::LayerWorkspace<T>& ws) const {
        detail::visit_family<T>(act, [&](const auto& fam) {
            using Fam = std::decay_t<decltype(fam)>;
            if constexpr (detail::is_tabulated<Fam>::value) {
                throw std::invalid_argument("layer kernels: Gauss-Hermite activations are not available yet");
            } else {
                if (record) {
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
                    ws.keep.resize(P1);
                    for (std::size_t p = 0; p < P1; ++p) ws.keep[p] = ws.theta[p * P1 + p];
                }
                const auto& c1 = chain1;
                const auto& c2 = chain2;
                const LayerInputs<T> in{c1.r[l].data(),  c2.r[l].data(),  c1.ir[l].data(),
                                        c2.ir[l].data(), c1.q[l].data(),  c2.q[l].data(),
                                        c1.ra[l].data(), c2.ra[l].data(), T(1)};
                const DenseStep<T> identity{T(1), T(0), T(1), T(0), T(0)};
                fam.pairs(P1, P2, in, ws.c.data(), ws.d.data(), ws.theta.data(), identity);
                if (record) {  // the diagonal from the per-point maps, exactly
                    for (std::size_t p = 0; p < P1; ++p) {
                        const double q = double(chain1.q[l][p]);
                        ws.c[p * P1 + p] = T(fam.variance(q));
                        ws.d[p * P1 + p] = T(0);
                        ws.theta[p * P1 + p] = T(fam.derivative(q)) * ws.keep[p];
                    }
                }
            }
        });
    }

    std::vector<Layer> layers_;
    Eigen::Ref<const RowMatrix<T>> x1_, x2_;
    bool symmetric_;
    std::size_t channels_;
    std::vector<Grid> grids1_, grids2_;
    std::size_t largest_ = 1;
    std::vector<detail::InputChain<T>> chains1_, chains2_;
};

// K and Theta of a layer network into nngp and ntk (N1 x N2): each input's chain once, then
// every pair (one triangle when x2 is null), threaded over pairs, interruptible between them.
template <class T>
void layer_gram(const std::vector<Layer>& layers, const Eigen::Ref<const RowMatrix<T>>& x1, Grid g1,
                const Eigen::Ref<const RowMatrix<T>>* x2, Grid g2, std::size_t channels,
                Eigen::Ref<RowMatrix<T>> nngp, Eigen::Ref<RowMatrix<T>> ntk, const GramOptions& opt) {
    LayerKernels<T> kernels(layers, x1, g1, x2, g2, channels);
    kernels.prepare(opt.n_threads, opt.should_stop);
    const std::size_t n1 = kernels.rows(), n2 = kernels.cols();
    if (std::size_t(nngp.rows()) != n1 || std::size_t(nngp.cols()) != n2 || std::size_t(ntk.rows()) != n1 ||
        std::size_t(ntk.cols()) != n2)
        throw std::invalid_argument("layer gram: outputs must be N1 x N2");
    // Rows of pairs as tasks: row i holds (i, j) for j >= i when symmetric.
    const int threads = detail::resolve_threads(opt.n_threads, n1);
    std::vector<detail::LayerWorkspace<T>> ws(static_cast<std::size_t>(threads));
    detail::parallel_tiles(n1, threads, opt.should_stop, [&](std::size_t i) {
        auto& w = ws[std::size_t(detail::thread_index())];
        for (std::size_t j = kernels.symmetric() ? i : 0; j < n2; ++j) {
            const auto [k, t] = kernels.pair(i, j, w);
            nngp(Eigen::Index(i), Eigen::Index(j)) = k;
            ntk(Eigen::Index(i), Eigen::Index(j)) = t;
            if (kernels.symmetric()) {
                nngp(Eigen::Index(j), Eigen::Index(i)) = k;
                ntk(Eigen::Index(j), Eigen::Index(i)) = t;
            }
        }
    });
}

}  // namespace ntkcore

// A network as a list of layers (docs/math/7-convolutions.md): dense and convolutional layers, average
// pooling, the two readouts and activations, on channels-last inputs whose positions form an
// H x W grid (a sequence is H x 1, a vector 1 x 1).  This header describes the list and the
// grids it produces; conv_kernels.hpp computes its kernels.
#pragma once

#include <array>
#include <cstddef>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "network.hpp"

namespace ntkcore {

enum class LayerKind { dense, conv, avg_pool, global_avg_pool, flatten, activation };
enum class Padding { valid, same, circular };

struct Layer {
    LayerKind kind = LayerKind::dense;
    double w_var = 1.0, b_var = 0.0;          // dense, conv: sigma_w^2, sigma_b^2
    std::array<std::size_t, 2> window{1, 1};  // conv filter / pooling window (H, W)
    std::array<std::size_t, 2> strides{1, 1};
    Padding padding = Padding::valid;
    Activation activation;  // activation layers
};

// The positions of one input at one layer: an h x w grid, or one position after a readout.
struct Grid {
    std::size_t h = 1, w = 1;
    bool spatial = true;  // false after a readout (or for vector inputs)
    std::size_t size() const { return h * w; }
    bool operator==(const Grid& o) const { return h == o.h && w == o.w && spatial == o.spatial; }
};

namespace detail {

inline std::string layer_name(const std::vector<Layer>& layers, std::size_t l) {
    static const char* names[] = {"Dense", "Conv", "AvgPool", "GlobalAvgPool", "Flatten", "activation"};
    return "layer " + std::to_string(l) + " (" + names[int(layers[l].kind)] + ")";
}

// Output count along one axis of `size` positions for a window, stride and padding
// (docs/math/7-convolutions.md; SAME as XLA: ceil(size / stride)); 0 when VALID does not fit.
inline std::size_t window_count(std::size_t size, std::size_t window, std::size_t stride, Padding padding) {
    if (padding == Padding::valid) return size < window ? 0 : (size - window) / stride + 1;
    return (size + stride - 1) / stride;
}

// Input position of tap t for output o, at [o * window + t]; -1 for a zero-padded position.
inline std::vector<long> window_index(std::size_t size, std::size_t window, std::size_t stride,
                                      Padding padding) {
    const std::size_t out = window_count(size, window, stride, padding);
    long before = 0;
    if (padding != Padding::valid) {
        const long total = long((out - 1) * stride + window) - long(size);
        before = total > 0 ? total / 2 : 0;
    }
    std::vector<long> index(out * window);
    for (std::size_t o = 0; o < out; ++o)
        for (std::size_t t = 0; t < window; ++t) {
            long i = long(o * stride + t) - before;
            if (padding == Padding::circular)
                i = ((i % long(size)) + long(size)) % long(size);
            else if (i < 0 || i >= long(size))
                i = -1;
            index[o * window + t] = i;
        }
    return index;
}

}  // namespace detail

// The grid after each layer, starting from `input`: grids[l] is the input of layer l and
// grids.back() the output.  Throws std::invalid_argument naming the layer that does not fit.
inline std::vector<Grid> layer_grids(const std::vector<Layer>& layers, Grid input) {
    std::vector<Grid> grids{input};
    for (std::size_t l = 0; l < layers.size(); ++l) {
        const Layer& layer = layers[l];
        Grid g = grids.back();
        switch (layer.kind) {
            case LayerKind::conv:
            case LayerKind::avg_pool: {
                if (!g.spatial)
                    throw std::invalid_argument(
                        detail::layer_name(layers, l) +
                        " needs spatial positions: the inputs are vectors or a readout came before");
                const std::size_t h =
                    detail::window_count(g.h, layer.window[0], layer.strides[0], layer.padding);
                const std::size_t w =
                    detail::window_count(g.w, layer.window[1], layer.strides[1], layer.padding);
                if (h == 0 || w == 0)
                    throw std::invalid_argument(detail::layer_name(layers, l) + ": the " +
                                                std::to_string(g.h) + " x " + std::to_string(g.w) +
                                                " grid is smaller than the window under VALID padding");
                g.h = h;
                g.w = w;
                break;
            }
            case LayerKind::global_avg_pool:
            case LayerKind::flatten:
                if (!g.spatial)
                    throw std::invalid_argument(
                        detail::layer_name(layers, l) +
                        " needs spatial positions: the inputs are vectors or a readout came before");
                g = Grid{1, 1, false};
                break;
            case LayerKind::dense:
            case LayerKind::activation:
                break;
        }
        grids.push_back(g);
    }
    if (grids.back().spatial)
        throw std::invalid_argument(
            "layer network: must end in a readout (GlobalAvgPool or Flatten) for spatial inputs");
    return grids;
}

// A plain dense chain on vectors, Dense -> phi -> Dense -> ... -> phi -> Dense with one
// closed-form activation throughout, as the fully-connected network (network.hpp) it is: its
// per-pair state is a scalar, so gram.hpp's fused tiles compute it.  nullopt for any other
// list (spatial inputs, other layers, per-layer or Gauss-Hermite activations), which the
// general engine (conv_kernels.hpp) computes.
inline std::optional<Network> fully_connected_chain(const std::vector<Layer>& layers, Grid input) {
    if (input.spatial || layers.size() % 2 == 0) return std::nullopt;
    Network net;
    for (std::size_t l = 0; l < layers.size(); ++l) {
        const Layer& layer = layers[l];
        if (layer.kind != (l % 2 == 0 ? LayerKind::dense : LayerKind::activation)) return std::nullopt;
        if (l % 2 == 0) {
            net.w_var.push_back(layer.w_var);
            net.b_var.push_back(layer.b_var);
            continue;
        }
        const Activation& act = layer.activation;
        if (act.family == Family::numerical) return std::nullopt;
        if (l == 1) net.activation = act;
        const Activation& first = net.activation;
        if (act.family != first.family || act.a != first.a || act.b != first.b || act.c != first.c)
            return std::nullopt;
    }
    return net;
}

inline void validate_layers(const std::vector<Layer>& layers) {
    for (std::size_t l = 0; l < layers.size(); ++l) {
        const Layer& layer = layers[l];
        if (!(std::isfinite(layer.w_var) && layer.w_var >= 0.0 && std::isfinite(layer.b_var) &&
              layer.b_var >= 0.0))
            throw std::invalid_argument(detail::layer_name(layers, l) +
                                        ": variances must be finite and >= 0");
        for (int a = 0; a < 2; ++a)
            if (layer.window[a] < 1 || layer.strides[a] < 1)
                throw std::invalid_argument(detail::layer_name(layers, l) +
                                            ": windows and strides must be >= 1");
        if (layer.kind == LayerKind::activation) {
            Network probe;  // the activation checks of a one-layer fully-connected network
            probe.activation = layer.activation;
            probe.w_var = {1.0};
            probe.b_var = {0.0};
            probe.validate();
        }
    }
}

}  // namespace ntkcore

// Bindings of layer networks (conv_kernels.hpp): the layer list, array conversion, GIL release.
#include <array>
#include <cstddef>
#include <optional>
#include <string>
#include <vector>

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "bindings.hpp"
#include "instances.hpp"

namespace py = pybind11;

namespace {

std::array<std::size_t, 2> pair_of(const py::handle& value) {
    const auto v = value.cast<std::vector<std::size_t>>();
    if (v.size() != 2) throw std::invalid_argument("layer spec: windows and strides need 2 entries (H, W)");
    return {v[0], v[1]};
}

ntkcore::Padding to_padding(const std::string& name) {
    if (name == "VALID") return ntkcore::Padding::valid;
    if (name == "SAME") return ntkcore::Padding::same;
    if (name == "CIRCULAR") return ntkcore::Padding::circular;
    throw std::invalid_argument("layer spec: padding must be VALID, SAME or CIRCULAR");
}

// The layer list as ntkcore.serial passes it: ("dense", w_var, b_var), ("conv", (fh, fw),
// (sh, sw), padding, w_var, b_var), ("avg_pool", (wh, ww), (sh, sw), padding), ("gap",),
// ("flatten",), ("act", (family, params)).
std::vector<ntkcore::Layer> to_layers(const py::list& spec) {
    std::vector<ntkcore::Layer> layers;
    for (const py::handle& item : spec) {
        const auto entry = item.cast<py::tuple>();
        const auto kind = entry[0].cast<std::string>();
        ntkcore::Layer layer;
        if (kind == "dense") {
            layer.kind = ntkcore::LayerKind::dense;
            layer.w_var = entry[1].cast<double>();
            layer.b_var = entry[2].cast<double>();
        } else if (kind == "conv" || kind == "avg_pool") {
            layer.kind = kind == "conv" ? ntkcore::LayerKind::conv : ntkcore::LayerKind::avg_pool;
            layer.window = pair_of(entry[1]);
            layer.strides = pair_of(entry[2]);
            layer.padding = to_padding(entry[3].cast<std::string>());
            if (kind == "conv") {
                layer.w_var = entry[4].cast<double>();
                layer.b_var = entry[5].cast<double>();
            }
        } else if (kind == "gap") {
            layer.kind = ntkcore::LayerKind::global_avg_pool;
        } else if (kind == "flatten") {
            layer.kind = ntkcore::LayerKind::flatten;
        } else if (kind == "act") {
            layer.kind = ntkcore::LayerKind::activation;
            layer.activation = to_activation(entry[1].cast<py::tuple>());
        } else {
            throw std::invalid_argument("layer spec: unknown layer kind '" + kind + "'");
        }
        layers.push_back(layer);
    }
    return layers;
}

ntkcore::Grid to_grid(const py::tuple& grid) {
    return {grid[0].cast<std::size_t>(), grid[1].cast<std::size_t>(), grid[2].cast<bool>()};
}

template <class T>
py::tuple layer_gram(const py::list& spec, const Array<T>& x1, const py::tuple& grid1,
                     const std::optional<Array<T>>& x2, const py::tuple& grid2, std::size_t channels,
                     int n_threads, const std::optional<py::function>& progress) {
    const auto layers = to_layers(spec);
    const ntkcore::Grid g1 = to_grid(grid1), g2 = x2 ? to_grid(grid2) : g1;
    const auto a = matrix_view(x1, "x1");
    const std::size_t n1 = std::size_t(x1.shape(0)), n2 = x2 ? std::size_t(x2->shape(0)) : n1;
    Array<T> nngp = new_matrix<T>(n1, n2), ntk = new_matrix<T>(n1, n2);
    Eigen::Map<ntkcore::RowMatrix<T>> k(nngp.mutable_data(), Eigen::Index(n1), Eigen::Index(n2));
    Eigen::Map<ntkcore::RowMatrix<T>> t(ntk.mutable_data(), Eigen::Index(n1), Eigen::Index(n2));
    ntkcore::GramOptions opt;
    opt.n_threads = n_threads;
    ntkcore::GramOptions::Progress counter;
    opt.progress = &counter;
    opt.should_stop = interrupt_or_report(progress, counter);
    without_gil([&] {
        if (x2) {
            const Eigen::Ref<const ntkcore::RowMatrix<T>> b = matrix_view(*x2, "x2");
            ntkcore::layer_gram<T>(layers, a, g1, &b, g2, channels, k, t, opt);
        } else {
            ntkcore::layer_gram<T>(layers, a, g1, nullptr, g1, channels, k, t, opt);
        }
    });
    if (progress) (*progress)(counter.total.load(), counter.total.load());
    return py::make_tuple(nngp, ntk);
}

template <class T>
py::tuple layer_diagonal(const py::list& spec, const Array<T>& x, const py::tuple& grid, std::size_t channels,
                         int n_threads) {
    const auto layers = to_layers(spec);
    const ntkcore::Grid g = to_grid(grid);
    const auto a = matrix_view(x, "x");
    const std::size_t n = std::size_t(x.shape(0));
    py::array_t<T> nngp(static_cast<py::ssize_t>(n)), ntk(static_cast<py::ssize_t>(n));
    T* k = nngp.mutable_data();
    T* t = ntk.mutable_data();
    without_gil(
        [&] { layer_diagonal_values<T>(layers, a, g, channels, n_threads, python_interrupt_pending, k, t); });
    return py::make_tuple(nngp, ntk);
}

template <class T>
void define(py::module_& m) {
    m.def("layer_gram", &layer_gram<T>, py::arg("layers"), py::arg("x1").noconvert(), py::arg("grid1"),
          py::arg("x2").noconvert().none(true), py::arg("grid2"), py::arg("channels"),
          py::arg("n_threads") = 0, py::arg("progress") = py::none());
    m.def("layer_diagonal", &layer_diagonal<T>, py::arg("layers"), py::arg("x").noconvert(), py::arg("grid"),
          py::arg("channels"), py::arg("n_threads") = 0);
}

}  // namespace

void bind_layers(py::module_& m) {
    define<double>(m);
    define<float>(m);
}

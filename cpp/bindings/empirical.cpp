// Bindings of the finite-width cores (empirical.hpp: MLPs; empirical_layers.hpp: layer
// networks): array conversion, GIL release, interruption.  The Python layer validates and converts; these
// only check shapes.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "bindings.hpp"
#include "instances.hpp"

namespace py = pybind11;

namespace {

// The network as the Python layer passes it: (family, (a, b, c), w_std, b_std) and the
// per-layer weights (n_out x n_in) and biases (n_out).
template <class T>
ntkcore::MLP<T> to_mlp(const py::tuple& spec, const std::vector<Array<T>>& weights,
                       const std::vector<Array<T>>& biases) {
    if (spec.size() != 4) throw std::invalid_argument("network spec must have 4 entries");
    ntkcore::MLP<T> mlp;
    mlp.activation = to_activation(spec);
    mlp.w_std = spec[2].cast<std::vector<double>>();
    mlp.b_std = spec[3].cast<std::vector<double>>();
    if (weights.size() != biases.size()) throw std::invalid_argument("one bias per weight matrix");
    for (std::size_t m = 0; m < weights.size(); ++m) {
        if (weights[m].ndim() != 2 || biases[m].ndim() != 1)
            throw std::invalid_argument("weights must be 2-D and biases 1-D");
        mlp.weights.emplace_back(weights[m].data(), weights[m].shape(0), weights[m].shape(1));
        mlp.biases.emplace_back(biases[m].data(), biases[m].shape(0));
    }
    mlp.validate();
    return mlp;
}

ntkcore::GramOptions options(int n_threads) {
    ntkcore::GramOptions opt;
    opt.n_threads = n_threads;
    opt.tile_rows = 64;
    opt.should_stop = python_interrupt_pending;
    return opt;
}

ntkcore::NtkOutput to_output(const std::string& output) {
    if (output == "trace") return ntkcore::NtkOutput::trace;
    if (output == "full") return ntkcore::NtkOutput::full;
    throw std::invalid_argument("output must be 'trace' or 'full'");
}

// The outputs f(x) (layer = -1) or the post-activations h^layer (0 <= layer <= L).
template <class T>
Array<T> forward(const py::tuple& spec, const std::vector<Array<T>>& weights,
                 const std::vector<Array<T>>& biases, const Array<T>& x, int n_threads, int layer) {
    const ntkcore::MLP<T> mlp = to_mlp<T>(spec, weights, biases);
    const auto a = matrix_view(x, "x");
    if (layer < -1 || layer >= int(mlp.n_layers()))
        throw std::invalid_argument("layer must be -1 (outputs) or in [0, L]");
    const Eigen::Index width =
        layer < 0 ? mlp.n_outputs() : (layer == 0 ? mlp.input_dim() : mlp.weights[layer - 1].rows());
    Array<T> out({Eigen::Index(x.shape(0)), width});
    Eigen::Map<ntkcore::RowMatrix<T>> o(out.mutable_data(), x.shape(0), width);
    without_gil([&] {
        auto fw = ntkcore::forward<T>(mlp, a, false, options(n_threads));
        o = layer < 0 ? fw.output : fw.h[std::size_t(layer)];
    });
    return out;
}

template <class T>
void ntk(const py::tuple& spec, const std::vector<Array<T>>& weights, const std::vector<Array<T>>& biases,
         const Array<T>& x1, const std::optional<Array<T>>& x2, const std::string& output, Array<T>& theta,
         int n_threads) {
    const ntkcore::MLP<T> mlp = to_mlp<T>(spec, weights, biases);
    const ntkcore::NtkOutput mode = to_output(output);
    const auto a = matrix_view(x1, "x1");
    if (theta.ndim() != 2) throw std::invalid_argument("theta must be 2-D");
    Eigen::Map<ntkcore::RowMatrix<T>> t(theta.mutable_data(), theta.shape(0), theta.shape(1));
    std::optional<Eigen::Ref<const ntkcore::RowMatrix<T>>> b;
    if (x2) b.emplace(matrix_view(*x2, "x2"));
    without_gil([&] { ntkcore::empirical_ntk<T>(mlp, a, b ? &*b : nullptr, mode, t, options(n_threads)); });
}

template <class T>
struct GradientViews {
    std::vector<Eigen::Map<ntkcore::RowMatrix<T>>> w;
    std::vector<Eigen::Map<ntkcore::Vector<T>>> b;
};

template <class T>
GradientViews<T> gradient_views(std::vector<Array<T>>& grad_w, std::vector<Array<T>>& grad_b) {
    GradientViews<T> views;
    for (auto& g : grad_w) {
        if (g.ndim() != 2) throw std::invalid_argument("weight gradients must be 2-D");
        views.w.emplace_back(g.mutable_data(), g.shape(0), g.shape(1));
    }
    for (auto& g : grad_b) {
        if (g.ndim() != 1) throw std::invalid_argument("bias gradients must be 1-D");
        views.b.emplace_back(g.mutable_data(), g.shape(0));
    }
    return views;
}

template <class T>
double loss_gradient(const py::tuple& spec, const std::vector<Array<T>>& weights,
                     const std::vector<Array<T>>& biases, const Array<T>& x, const Array<T>& y,
                     std::vector<Array<T>>& grad_w, std::vector<Array<T>>& grad_b, int n_threads) {
    const ntkcore::MLP<T> mlp = to_mlp<T>(spec, weights, biases);
    const auto a = matrix_view(x, "x");
    const auto b = matrix_view(y, "y");
    GradientViews<T> g = gradient_views(grad_w, grad_b);
    double loss = 0;
    without_gil([&] { loss = ntkcore::loss_gradient<T>(mlp, a, b, g.w, g.b, options(n_threads)); });
    return loss;
}

// An array that is already C-contiguous of dtype T (no silent copy).
template <class T>
Array<T> exact_array(const py::handle& value, const std::string& name) {
    if (!Array<T>::check_(value))
        throw std::invalid_argument(name + " must be a C-contiguous array of the computation's dtype");
    return py::reinterpret_borrow<Array<T>>(value);
}

// One side's layers as the Python layer passes them: (h, g, taps, P_in) per Dense or Conv
// layer; `keep` holds the arrays while the views are used.
template <class T>
std::vector<ntkcore::LayerFactors<T>> to_factors(const py::list& layers, const char* side,
                                                 std::vector<py::object>& keep) {
    std::vector<ntkcore::LayerFactors<T>> out;
    for (std::size_t l = 0; l < layers.size(); ++l) {
        const auto entry = layers[l].cast<py::tuple>();
        const std::string where = std::string(side) + " layer " + std::to_string(l);
        if (entry.size() != 4) throw std::invalid_argument(where + ": expected (h, g, taps, P_in)");
        const Array<T> h = exact_array<T>(entry[0], where + " h"), g = exact_array<T>(entry[1], where + " g");
        const Array<std::int64_t> taps = exact_array<std::int64_t>(entry[2], where + " taps");
        if (h.ndim() != 2 || g.ndim() != 2 || taps.ndim() != 2)
            throw std::invalid_argument(where + ": h, g and taps must be 2-D");
        keep.insert(keep.end(), {h, g, taps});
        out.push_back({{h.data(), h.shape(0), h.shape(1)},
                       {g.data(), g.shape(0), g.shape(1)},
                       {taps.data(), taps.shape(0), taps.shape(1)},
                       entry[3].cast<Eigen::Index>()});
    }
    return out;
}

template <class T>
void layer_ntk(const std::vector<std::pair<double, double>>& scales, const py::list& layers1,
               const std::optional<py::list>& layers2, Eigen::Index k, const std::string& output,
               Array<T>& theta, int n_threads) {
    std::vector<py::object> keep;
    std::vector<ntkcore::LayerScales> s;
    for (const auto& [w, b] : scales) s.push_back({w, b});
    const auto f1 = to_factors<T>(layers1, "x1", keep);
    std::optional<std::vector<ntkcore::LayerFactors<T>>> f2;
    if (layers2) f2 = to_factors<T>(*layers2, "x2", keep);
    const ntkcore::NtkOutput mode = to_output(output);
    if (theta.ndim() != 2) throw std::invalid_argument("theta must be 2-D");
    Eigen::Map<ntkcore::RowMatrix<T>> t(theta.mutable_data(), theta.shape(0), theta.shape(1));
    without_gil(
        [&] { ntkcore::layer_empirical_ntk<T>(s, f1, f2 ? &*f2 : nullptr, k, mode, t, options(n_threads)); });
}

// h <- phi(h) and dphi <- phi'(h) (dphi: None to skip) for an activation spec (family, params).
template <class T>
void activation_values(const py::tuple& act, Array<T>& h, std::optional<Array<T>> dphi, int n_threads) {
    const ntkcore::Activation a = to_activation(act);
    if (dphi && dphi->size() != h.size()) throw std::invalid_argument("dphi must have h's size");
    T* d = dphi ? dphi->mutable_data() : nullptr;
    without_gil([&] {
        ntkcore::pointwise_activation<T>(a, std::size_t(h.size()), h.mutable_data(), d, options(n_threads));
    });
}

template <class T>
void vjp(const py::tuple& spec, const std::vector<Array<T>>& weights, const std::vector<Array<T>>& biases,
         const Array<T>& x, const Array<T>& cotangent, std::vector<Array<T>>& grad_w,
         std::vector<Array<T>>& grad_b, int n_threads) {
    const ntkcore::MLP<T> mlp = to_mlp<T>(spec, weights, biases);
    const auto a = matrix_view(x, "x");
    const auto r = matrix_view(cotangent, "cotangent");
    GradientViews<T> g = gradient_views(grad_w, grad_b);
    without_gil([&] { ntkcore::vjp<T>(mlp, a, r, g.w, g.b, options(n_threads)); });
}

template <class T>
void define(py::module_& m) {
    m.def("mlp_forward", &forward<T>, py::arg("network"), py::arg("weights"), py::arg("biases"),
          py::arg("x").noconvert(), py::arg("n_threads") = 0, py::arg("layer") = -1);
    m.def("empirical_ntk", &ntk<T>, py::arg("network"), py::arg("weights"), py::arg("biases"),
          py::arg("x1").noconvert(), py::arg("x2").noconvert().none(true), py::arg("output"),
          py::arg("theta").noconvert(), py::arg("n_threads") = 0);
    m.def("mlp_loss_gradient", &loss_gradient<T>, py::arg("network"), py::arg("weights"), py::arg("biases"),
          py::arg("x").noconvert(), py::arg("y").noconvert(), py::arg("grad_w"), py::arg("grad_b"),
          py::arg("n_threads") = 0);
    m.def("mlp_vjp", &vjp<T>, py::arg("network"), py::arg("weights"), py::arg("biases"),
          py::arg("x").noconvert(), py::arg("cotangent").noconvert(), py::arg("grad_w"), py::arg("grad_b"),
          py::arg("n_threads") = 0);
    m.def("layer_empirical_ntk", &layer_ntk<T>, py::arg("scales"), py::arg("layers1"),
          py::arg("layers2").none(true), py::arg("k"), py::arg("output"), py::arg("theta").noconvert(),
          py::arg("n_threads") = 0);
    m.def("activation_values", &activation_values<T>, py::arg("activation"), py::arg("h").noconvert(),
          py::arg("dphi").noconvert().none(true), py::arg("n_threads") = 0);
}

}  // namespace

void bind_empirical(py::module_& m) {
    define<double>(m);
    define<float>(m);
}

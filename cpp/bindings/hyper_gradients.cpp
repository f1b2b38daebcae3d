// Bindings of the hyperparameter gradients (hyper_gradients.hpp): float64 only.
#include <optional>
#include <string>

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "bindings.hpp"
#include "instances.hpp"

namespace py = pybind11;

namespace {

// (value (N1, N2), gradient (N1, N2, 2)) of K (kernel "nngp") or Theta ("ntk"); the last
// axis of the gradient is (d / d log W_std, d / d log b_std), all layers scaled together.
py::tuple hyper_gram(const py::tuple& spec, const std::string& kernel, const Array<double>& x1,
                     const std::optional<Array<double>>& x2, int n_threads) {
    if (kernel != "nngp" && kernel != "ntk") throw std::invalid_argument("kernel must be 'nngp' or 'ntk'");
    const ntkcore::Network net = to_network(spec);
    const auto a = matrix_view(x1, "x1");
    const std::size_t n1 = std::size_t(x1.shape(0));
    const std::size_t n2 = x2 ? std::size_t(x2->shape(0)) : n1;
    Array<double> value = new_matrix<double>(n1, n2), gradient = new_matrix<double>(n1, 2 * n2);
    Eigen::Map<ntkcore::RowMatrix<double>> v(value.mutable_data(), Eigen::Index(n1), Eigen::Index(n2));
    Eigen::Map<ntkcore::RowMatrix<double>> g(gradient.mutable_data(), Eigen::Index(n1), Eigen::Index(2 * n2));
    ntkcore::GramOptions opt;
    opt.n_threads = n_threads;
    opt.should_stop = python_interrupt_pending;
    without_gil([&] {
        if (x2) {
            const Eigen::Ref<const ntkcore::RowMatrix<double>> b = matrix_view(*x2, "x2");
            hyper_gram_values(net, kernel == "nngp", a, &b, v, g, opt);
        } else {
            hyper_gram_values(net, kernel == "nngp", a, nullptr, v, g, opt);
        }
    });
    return py::make_tuple(value, gradient.attr("reshape")(n1, n2, 2));
}

}  // namespace

void bind_hyper_gradients(py::module_& m) {
    m.def("hyper_gram", &hyper_gram, py::arg("network"), py::arg("kernel"), py::arg("x1").noconvert(),
          py::arg("x2").noconvert().none(true), py::arg("n_threads") = 0);
}

// Bindings of the matrix-free kernel products (solve.hpp) behind ntkcore.KernelRegression:
// array conversion, GIL release, Ctrl-C and a progress callback between tiles.
#include <atomic>
#include <cstddef>
#include <optional>
#include <utility>

#include <pybind11/eigen.h>
#include <pybind11/functional.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "bindings.hpp"
#include "instances.hpp"
#include "ntkcore/solve.hpp"

namespace py = pybind11;

namespace {

// K(x1, x2) v, or K(x1, x1) v when x2 is None (half the tiles), as an N1 x b array of T.
// progress(done, total), when given, is called with the tiles finished so far, on this thread
// (at most every 50 ms, and once at the end); an exception it raises ends the product and
// propagates, like Ctrl-C.
template <class T>
ntkcore::ColMatrix<T> kernel_product(const py::tuple& spec, const Array<T>& x1,
                                     const std::optional<Array<T>>& x2, bool ntk, const Array<T>& v,
                                     int n_threads, std::size_t tile,
                                     const std::optional<py::function>& progress) {
    const ntkcore::Network net = to_network(spec);
    const auto a = matrix_view(x1, "x1");
    const auto rhs = matrix_view(v, "v");
    const ntkcore::KernelKind kind = ntk ? ntkcore::KernelKind::ntk : ntkcore::KernelKind::nngp;
    const std::size_t n2 = x2 ? std::size_t(x2->shape(0)) : std::size_t(x1.shape(0));
    if (std::size_t(rhs.rows()) != n2) throw std::invalid_argument("v must have one row per point of x2");
    ntkcore::OperatorOptions opt;
    opt.n_threads = n_threads;
    opt.tile = tile;
    const std::size_t total = x2 ? ntkcore::cross_product_tiles(std::size_t(x1.shape(0)), n2, opt)
                                 : ntkcore::symmetric_product_tiles(n2, opt);
    std::atomic<std::size_t> done{0};
    opt.should_stop = [&]() {
        py::gil_scoped_acquire gil;
        if (PyErr_CheckSignals() != 0) return true;
        if (!progress) return false;
        try {
            (*progress)(done.load(std::memory_order_relaxed), total);
        } catch (py::error_already_set& e) {
            e.restore();
            return true;
        }
        return false;
    };
    ntkcore::ColMatrix<T> y(a.rows(), rhs.cols());
    without_gil([&] {
        const ntkcore::ColMatrix<T> columns = rhs;
        if (x2) {
            const Eigen::Ref<const ntkcore::RowMatrix<T>> b = matrix_view(*x2, "x2");
            kernel_product_values<T>(net, a, &b, kind, columns, y, opt, done);
        } else {
            kernel_product_values<T>(net, a, nullptr, kind, columns, y, opt, done);
        }
    });
    if (progress) (*progress)(total, total);
    return y;
}

template <class T>
void define(py::module_& m) {
    m.def("kernel_product", &kernel_product<T>, py::arg("network"), py::arg("x1").noconvert(),
          py::arg("x2").noconvert().none(true), py::arg("ntk"), py::arg("v").noconvert(),
          py::arg("n_threads") = 0, py::arg("tile") = 0, py::arg("progress") = py::none());
}

}  // namespace

void bind_solve(py::module_& m) {
    define<double>(m);
    define<float>(m);
}

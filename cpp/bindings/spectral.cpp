// Bindings of the extreme eigen solvers: array conversion, GIL release, interruption.
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

#include <pybind11/eigen.h>
#include <pybind11/functional.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include "bindings.hpp"
#include "instances.hpp"

namespace py = pybind11;

namespace {

ntkcore::Which to_which(const std::string& which) {
    if (which == "largest") return ntkcore::Which::largest;
    if (which == "smallest") return ntkcore::Which::smallest;
    throw std::invalid_argument("which must be 'largest' or 'smallest'");
}

ntkcore::KernelKind to_kind(const std::string& kernel) {
    if (kernel == "ntk") return ntkcore::KernelKind::ntk;
    if (kernel == "nngp") return ntkcore::KernelKind::nngp;
    throw std::invalid_argument("kernel must be 'ntk' or 'nngp'");
}

struct Settings {
    std::size_t k;
    std::string which;
    double tol;
    std::size_t block_size, max_basis, max_passes;
    std::uint64_t seed;
    int n_threads;
    std::size_t tile;
    bool values_only;
    double magnitude;

    ntkcore::EigenOptions eigen() const {
        ntkcore::EigenOptions opt;
        opt.block_size = block_size;
        opt.max_basis = max_basis;
        opt.max_passes = max_passes;
        opt.tol = tol;
        opt.seed = seed;
        opt.values_only = values_only;
        opt.magnitude = magnitude;
        opt.should_stop = python_interrupt_pending;
        return opt;
    }
    ntkcore::OperatorOptions op() const {
        ntkcore::OperatorOptions opt;
        opt.n_threads = n_threads;
        opt.tile = tile;
        opt.should_stop = python_interrupt_pending;
        return opt;
    }
};

// (values, vectors (N x k, float dtype of the input), residuals, norm_estimate, passes,
// converged, rounding_limited)
template <class T>
py::tuple to_python(ntkcore::EigenResult<T>&& r) {
    return py::make_tuple(py::cast(r.values), py::cast(std::move(r.vectors)), py::cast(r.residuals),
                          r.norm_estimate, r.passes, r.converged, r.rounding_limited);
}

// Runs `solve` without the GIL; Ctrl-C comes back as KeyboardInterrupt.
template <class T, class Solve>
py::tuple run(Solve&& solve) {
    ntkcore::EigenResult<T> r;
    without_gil([&] { r = solve(); });
    return to_python<T>(std::move(r));
}

template <class T>
py::tuple eigsh_dense(const Array<T>& a, const Settings& s) {
    const auto view = matrix_view(a, "K");
    const ntkcore::Which which = to_which(s.which);
    return run<T>([&] { return ntkcore::dense_eigenpairs<T>(view, s.k, which, s.eigen(), s.op()); });
}

template <class T>
py::tuple eigsh_kernel(const py::tuple& spec, const Array<T>& x, const std::string& kernel,
                       const Settings& s) {
    const ntkcore::Network net = to_network(spec);
    const auto view = matrix_view(x, "x");
    const ntkcore::Which which = to_which(s.which);
    const ntkcore::KernelKind kind = to_kind(kernel);
    return run<T>(
        [&] { return ntkcore::kernel_eigenpairs<T>(net, view, kind, s.k, which, s.eigen(), s.op()); });
}

// The block products of eigsh_operator: apply(x) on the Python side, with x an N x b float64
// array, returning an array of the same shape.  Called by the solver without the GIL; an
// exception from Python (KeyboardInterrupt included) ends the solve and comes back as itself.
struct PythonProduct {
    py::function apply;

    void operator()(const Eigen::Ref<const ntkcore::ColMatrix<double>>& x,
                    Eigen::Ref<ntkcore::ColMatrix<double>> y) const {
        py::gil_scoped_acquire gil;
        try {
            const ntkcore::ColMatrix<double> block = x;
            const py::array_t<double, py::array::f_style | py::array::forcecast> out = apply(block);
            if (out.ndim() != 2 || out.shape(0) != y.rows() || out.shape(1) != y.cols())
                throw std::invalid_argument(
                    "eigsh operator: the product must have the shape of its argument");
            y = Eigen::Map<const ntkcore::ColMatrix<double>>(out.data(), y.rows(), y.cols());
        } catch (py::error_already_set& e) {
            e.restore();
            throw ntkcore::Interrupted();
        }
    }
};

py::tuple eigsh_operator(const py::function& apply, std::size_t n, double magnitude, const Settings& s) {
    const PythonProduct product{apply};
    const ntkcore::Which which = to_which(s.which);
    return run<double>(
        [&] { return ntkcore::operator_eigenpairs<double>(n, magnitude, product, s.k, which, s.eigen()); });
}

template <class T>
void define(py::module_& m) {
    m.def(
        "symmetry_report",
        [](const Array<T>& a, int n_threads) {
            const auto view = matrix_view(a, "K");
            ntkcore::SymmetryReport r;
            {
                py::gil_scoped_release release;
                r = ntkcore::symmetry_report<T>(view, n_threads);
            }
            return py::make_tuple(r.max_abs, r.max_asymmetry, r.nonfinite_row, r.nonfinite_col);
        },
        py::arg("K").noconvert(), py::arg("n_threads") = 0);
    m.def(
        "eigsh_dense",
        [](const Array<T>& a, std::size_t k, const std::string& which, double tol, std::size_t block_size,
           std::size_t max_basis, std::size_t max_passes, std::uint64_t seed, int n_threads, bool values_only,
           double magnitude) {
            return eigsh_dense<T>(a, Settings{k, which, tol, block_size, max_basis, max_passes, seed,
                                              n_threads, 0, values_only, magnitude});
        },
        py::arg("K").noconvert(), py::arg("k"), py::arg("which"), py::arg("tol") = 0.0,
        py::arg("block_size") = 0, py::arg("max_basis") = 0, py::arg("max_passes") = 0, py::arg("seed") = 0,
        py::arg("n_threads") = 0, py::arg("values_only") = false, py::arg("magnitude") = 0.0);
    m.def(
        "eigsh_kernel",
        [](const py::tuple& spec, const Array<T>& x, const std::string& kernel, std::size_t k,
           const std::string& which, double tol, std::size_t block_size, std::size_t max_basis,
           std::size_t max_passes, std::uint64_t seed, int n_threads, std::size_t tile) {
            return eigsh_kernel<T>(spec, x, kernel,
                                   Settings{k, which, tol, block_size, max_basis, max_passes, seed, n_threads,
                                            tile, false, 0.0});
        },
        py::arg("network"), py::arg("x").noconvert(), py::arg("kernel"), py::arg("k"), py::arg("which"),
        py::arg("tol") = 0.0, py::arg("block_size") = 0, py::arg("max_basis") = 0, py::arg("max_passes") = 0,
        py::arg("seed") = 0, py::arg("n_threads") = 0, py::arg("tile") = 0);
}

}  // namespace

void bind_spectral(py::module_& m) {
    m.def(
        "eigsh_operator",
        [](const py::function& apply, std::size_t n, double magnitude, std::size_t k,
           const std::string& which, double tol, std::size_t block_size, std::size_t max_basis,
           std::size_t max_passes, std::uint64_t seed) {
            return eigsh_operator(
                apply, n, magnitude,
                Settings{k, which, tol, block_size, max_basis, max_passes, seed, 0, 0, false, 0.0});
        },
        py::arg("apply"), py::arg("n"), py::arg("magnitude"), py::arg("k"), py::arg("which"),
        py::arg("tol") = 0.0, py::arg("block_size") = 0, py::arg("max_basis") = 0, py::arg("max_passes") = 0,
        py::arg("seed") = 0);
    define<double>(m);
    define<float>(m);
}

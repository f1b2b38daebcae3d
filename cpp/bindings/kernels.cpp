// Bindings of the Gram-matrix driver: array conversion, GIL release, interruption.
#include <algorithm>
#include <cstddef>
#include <exception>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "bindings.hpp"
#include "instances.hpp"
#include "ntkcore/activation_families.hpp"
#include "ntkcore/elementwise.hpp"

namespace py = pybind11;

namespace {

// A vectorised Python callable as a batch function: called with the GIL on the calling
// thread on a float64 array of shape (n,); its result must be a real array of that shape.
ntkcore::NumericalFunction::Batch python_batch(const py::object& callable, const std::string& name) {
    // The callable may only be released with the GIL held, wherever the last copy dies.
    std::shared_ptr<py::object> fn(new py::object(callable), [](py::object* p) {
        py::gil_scoped_acquire gil;
        delete p;
    });
    return [fn, name](const double* x, std::size_t n, double* out) {
        py::gil_scoped_acquire gil;
        py::array_t<double> arg(static_cast<py::ssize_t>(n));
        std::copy(x, x + n, arg.mutable_data());
        const py::object result = (*fn)(arg);
        const py::array values = py::array::ensure(result);
        if (!values ||
            (values.dtype().kind() != 'f' && values.dtype().kind() != 'i' && values.dtype().kind() != 'u'))
            throw py::type_error(name + " must return a real numpy array, got " +
                                 std::string(py::str(py::type::of(result))));
        if (values.ndim() != 1 || std::size_t(values.shape(0)) != n)
            throw py::value_error(name + " must return an array of the argument's shape (" +
                                  std::to_string(n) + ",), got shape " +
                                  std::string(py::str(py::getattr(values, "shape"))));
        const auto converted = py::array_t<double, py::array::c_style | py::array::forcecast>::ensure(values);
        std::copy(converted.data(), converted.data() + n, out);
    };
}

// An accuracy warning of the core as ntkcore.activations.AccuracyWarning, attributed to the
// caller of the public function; raises if the warning filters turn it into an error.
void warn_accuracy(const std::string& message) {
    py::gil_scoped_acquire gil;
    const py::object category = py::module_::import("ntkcore.activations").attr("AccuracyWarning");
    if (PyErr_WarnEx(category.ptr(), message.c_str(), 2) != 0) throw py::error_already_set();
}

// ((name or fn), dfn or None, degree) of a numerical activation.
std::shared_ptr<const ntkcore::NumericalFunction> to_numerical(const py::tuple& params) {
    if (params.size() != 3) throw std::invalid_argument("numerical activation needs (fn, dfn, degree)");
    const std::size_t degree = params[2].cast<std::size_t>();
    std::shared_ptr<ntkcore::NumericalFunction> fn;
    if (py::isinstance<py::str>(params[0])) {
        const auto name = params[0].cast<std::string>();
        fn = std::make_shared<ntkcore::NumericalFunction>(
            ntkcore::builtin_numerical(ntkcore::builtin_from_name(name), degree));
        fn->name = name;
    } else {
        fn = std::make_shared<ntkcore::NumericalFunction>();
        fn->phi = python_batch(params[0], "fn");
        if (!params[1].is_none()) fn->dphi = python_batch(params[1], "dfn");
        fn->degree = degree;
        fn->name = "Numerical(" +
                   std::string(py::str(py::getattr(params[0], "__name__", py::repr(params[0])))) + ")";
    }
    fn->warn = warn_accuracy;
    return fn;
}

}  // namespace

// The activation of a spec (family, (a, b, c), ...) as the Python layer passes it; a
// numerical activation has (fn, dfn, degree) in place of (a, b, c).
ntkcore::Activation to_activation(const py::tuple& spec) {
    if (spec.size() < 2) throw std::invalid_argument("spec must start with (family, (a, b, c))");
    ntkcore::Activation act;
    const auto family = spec[0].cast<std::string>();
    if (family == "numerical") {
        act.family = ntkcore::Family::numerical;
        act.numerical = to_numerical(spec[1].cast<py::tuple>());
        return act;
    }
    act.family = ntkcore::family_from_name(family);
    const auto params = spec[1].cast<std::vector<double>>();
    if (params.size() != 3) throw std::invalid_argument("activation needs 3 parameters");
    act.a = params[0];
    act.b = params[1];
    act.c = params[2];
    return act;
}

// The network as the Python layer passes it: (family, (a, b, c), w_var, b_var[, widths]),
// widths None (or absent) for the NTK parameterization, the hidden widths for the standard one.
ntkcore::Network to_network(const py::tuple& spec) {
    if (spec.size() != 4 && spec.size() != 5)
        throw std::invalid_argument("network spec must have 4 or 5 entries");
    ntkcore::Network net;
    net.activation = to_activation(spec);
    net.w_var = spec[2].cast<std::vector<double>>();
    net.b_var = spec[3].cast<std::vector<double>>();
    if (spec.size() == 5 && !spec[4].is_none()) {
        net.standard = true;
        net.widths = spec[4].cast<std::vector<double>>();
    }
    net.validate();
    return net;
}

bool python_interrupt_pending() {
    py::gil_scoped_acquire gil;
    return PyErr_CheckSignals() != 0;
}

std::function<bool()> interrupt_or_report(const std::optional<py::function>& progress,
                                          const ntkcore::GramOptions::Progress& counter) {
    if (!progress) return python_interrupt_pending;
    return [&progress, &counter]() {
        py::gil_scoped_acquire gil;
        if (PyErr_CheckSignals() != 0) return true;
        try {
            (*progress)(counter.done.load(std::memory_order_relaxed),
                        counter.total.load(std::memory_order_relaxed));
        } catch (py::error_already_set& e) {
            e.restore();
            return true;
        }
        return false;
    };
}

namespace {

template <class T>
py::tuple gram(const py::tuple& spec, const Array<T>& x1, const std::optional<Array<T>>& x2, int n_threads,
               std::size_t tile_rows, std::size_t tile_cols, const std::optional<py::function>& progress) {
    const ntkcore::Network net = to_network(spec);
    const auto a = matrix_view(x1, "x1");
    const std::size_t n1 = std::size_t(x1.shape(0));
    const std::size_t n2 = x2 ? std::size_t(x2->shape(0)) : n1;
    Array<T> nngp = new_matrix<T>(n1, n2), ntk = new_matrix<T>(n1, n2);
    Eigen::Map<ntkcore::RowMatrix<T>> k(nngp.mutable_data(), Eigen::Index(n1), Eigen::Index(n2));
    Eigen::Map<ntkcore::RowMatrix<T>> t(ntk.mutable_data(), Eigen::Index(n1), Eigen::Index(n2));
    ntkcore::GramOptions opt;
    opt.n_threads = n_threads;
    opt.tile_rows = tile_rows;
    opt.tile_cols = tile_cols;
    ntkcore::GramOptions::Progress counter;
    opt.progress = &counter;
    opt.should_stop = interrupt_or_report(progress, counter);
    without_gil([&] {
        if (x2) {
            const Eigen::Ref<const ntkcore::RowMatrix<T>> b = matrix_view(*x2, "x2");
            ntkcore::gram<T>(net, a, &b, k, t, opt);
        } else {
            ntkcore::gram<T>(net, a, nullptr, k, t, opt);
        }
    });
    if (progress) (*progress)(counter.total.load(), counter.total.load());
    return py::make_tuple(nngp, ntk);
}

template <class T>
void diagonal(const py::tuple& spec, const Array<T>& x, Array<T>& nngp, Array<T>& ntk) {
    const ntkcore::Network net = to_network(spec);
    const auto a = matrix_view(x, "x");
    if (nngp.ndim() != 1 || ntk.ndim() != 1) throw std::invalid_argument("diagonal outputs must be 1-D");
    Eigen::Map<ntkcore::Vector<T>> k(nngp.mutable_data(), nngp.shape(0));
    Eigen::Map<ntkcore::Vector<T>> t(ntk.mutable_data(), ntk.shape(0));
    without_gil([&] { ntkcore::diagonal<T>(net, a, k, t, python_interrupt_pending); });
}

template <class T>
void define(py::module_& m) {
    // noconvert: arrays must already have the right dtype and layout (the Python layer
    // converts once), and outputs are written in place, never into a temporary copy.
    m.def("gram", &gram<T>, py::arg("network"), py::arg("x1").noconvert(),
          py::arg("x2").noconvert().none(true), py::arg("n_threads") = 0, py::arg("tile_rows") = 64,
          py::arg("tile_cols") = 64, py::arg("progress") = py::none());
    m.def("diagonal", &diagonal<T>, py::arg("network"), py::arg("x").noconvert(), py::arg("nngp").noconvert(),
          py::arg("ntk").noconvert());
}

}  // namespace

void bind_kernels(py::module_& m) {
    // The core's AccuracyError (any binding) as ntkcore.activations.AccuracyError.
    py::register_local_exception_translator([](std::exception_ptr p) {
        try {
            if (p) std::rethrow_exception(p);
        } catch (const ntkcore::AccuracyError& e) {
            const py::object cls = py::module_::import("ntkcore.activations").attr("AccuracyError");
            PyErr_SetString(cls.ptr(), e.what());
        }
    });
    define<double>(m);
    define<float>(m);
    m.def(
        "hermite_rule",
        [](std::size_t degree) {
            if (degree < 1 || degree > 4096) throw std::invalid_argument("degree must be in [1, 4096]");
            const ntkcore::HermiteRule& rule = ntkcore::hermite_rule(degree);
            return py::make_tuple(py::array_t<double>(py::ssize_t(degree), rule.nodes.data()),
                                  py::array_t<double>(py::ssize_t(degree), rule.weights.data()));
        },
        py::arg("degree"));
    m.def("activation_families", [] {
        py::dict families;
        ntkcore::for_each_family<double>([&](auto tag) {
            using Fam = typename decltype(tag)::type;
            families[Fam::name] =
                py::dict(py::arg("hyper_gradients") = !std::is_void_v<typename Fam::Tangent>);
        });
        return families;
    });
}

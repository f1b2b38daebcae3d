// Shared declarations of the binding files: one bind_* function per area, and the
// conversions they all use.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include "ntkcore/gram.hpp"
#include "ntkcore/input_layer.hpp"
#include "ntkcore/network.hpp"
#include "ntkcore/parallel.hpp"

void bind_kernels(pybind11::module_& m);
void bind_empirical(pybind11::module_& m);
void bind_spectral(pybind11::module_& m);
void bind_layers(pybind11::module_& m);
void bind_hyper_gradients(pybind11::module_& m);
void bind_solve(pybind11::module_& m);
// All of them, and best_isa: the contents of each extension module (module.cpp).
void define_module(pybind11::module_& m);

// The activation of a spec that starts (family, (a, b, c)), and the whole network spec of
// FullyConnected._core_network(): (family, (a, b, c), w_var, b_var, widths or None).
ntkcore::Activation to_activation(const pybind11::tuple& spec);
ntkcore::Network to_network(const pybind11::tuple& spec);

// Polls Python's signal handlers from the calling thread, so that Ctrl-C ends a long run
// (GramOptions::should_stop); takes the GIL for the check.
bool python_interrupt_pending();

// A should_stop for a Gram run (GramOptions) that also reports progress: on the calling
// thread, checks Ctrl-C and calls progress(done, total) with the counts of `counter` (at most
// as often as should_stop is polled); an exception progress raises ends the run and
// propagates.  Without progress: python_interrupt_pending.
std::function<bool()> interrupt_or_report(const std::optional<pybind11::function>& progress,
                                          const ntkcore::GramOptions::Progress& counter);

template <class T>
using Array = pybind11::array_t<T, pybind11::array::c_style>;

// A read-only Eigen view of a C-contiguous 2-D array, without copying.
template <class T>
Eigen::Map<const ntkcore::RowMatrix<T>> matrix_view(const Array<T>& a, const char* name) {
    if (a.ndim() != 2) throw std::invalid_argument(std::string(name) + " must be 2-D");
    return {a.data(), a.shape(0), a.shape(1)};
}

// A new C-contiguous rows x cols array whose memory numpy frees.  Allocated here rather
// than by numpy, which asks for transparent huge pages: faulting those in can cost more
// than the whole computation on a machine whose free memory is fragmented.
template <class T>
inline Array<T> new_matrix(std::size_t rows, std::size_t cols) {
    std::unique_ptr<T[]> data(new T[rows * cols]);
    pybind11::capsule owner(data.get(), [](void* p) { delete[] static_cast<T*>(p); });
    T* raw = data.release();
    return Array<T>({rows, cols}, {cols * sizeof(T), sizeof(T)}, raw, owner);
}

// Runs `work` without the GIL; a Ctrl-C that ended it (ntkcore::Interrupted, after
// python_interrupt_pending said so) comes back as the pending KeyboardInterrupt.
template <class Work>
void without_gil(Work&& work) {
    bool interrupted = false;
    {
        pybind11::gil_scoped_release release;
        try {
            work();
        } catch (const ntkcore::Interrupted&) {
            interrupted = true;
        }
    }
    if (interrupted) throw pybind11::error_already_set();
}

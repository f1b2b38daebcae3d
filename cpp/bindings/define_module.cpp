// The contents of the extension modules ntkcore._core[_avx2|_avx512] (module.cpp), compiled once:
// thin bindings over the header-only C++ core.
#include <string>

#include <pybind11/pybind11.h>

#include "bindings.hpp"

namespace {

// The widest instruction set of the module variants that this CPU (and OS) runs.
std::string best_isa() {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("fma"))
        return "avx512";
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "avx2";
#endif
    return "baseline";
}

}  // namespace

void define_module(pybind11::module_& m) {
    m.doc() = "ntkcore's compiled core; use the ntkcore package, not this module.";
    m.def("best_isa", &best_isa);
    bind_kernels(m);
    bind_empirical(m);
    bind_spectral(m);
    bind_layers(m);
    bind_hyper_gradients(m);
    bind_solve(m);
}

// The extension modules ntkcore._core[_avx2|_avx512]: one source, compiled once per
// instruction set (CMakeLists.txt) for the module's name alone; the contents are the same
// for all (define_module.cpp, compiled once).
#include <pybind11/pybind11.h>

void define_module(pybind11::module_& m);

PYBIND11_MODULE(NTKCORE_MODULE_NAME, m) {
    define_module(m);
}

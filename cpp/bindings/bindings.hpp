// Shared declarations of the binding files: one bind_* function per area.
#pragma once

#include <pybind11/pybind11.h>

void bind_kernels(pybind11::module_& m);
void bind_empirical(pybind11::module_& m);

// Shared declarations of the binding files: one bind_* function per area.
#pragma once

#include <pybind11/pybind11.h>

#include "ntkcore/network.hpp"

void bind_kernels(pybind11::module_& m);
void bind_spectral(pybind11::module_& m);
// The network as the Python layer passes it (FullyConnected._core_network()).
ntkcore::Network to_network(const pybind11::tuple& spec);

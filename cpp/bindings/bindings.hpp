// Shared declarations of the binding files: one bind_* function per area.
#pragma once

#include <pybind11/pybind11.h>

#include "ntkcore/network.hpp"

void bind_kernels(pybind11::module_& m);
void bind_empirical(pybind11::module_& m);
void bind_spectral(pybind11::module_& m);
// The activation of a spec that starts (family, (a, b, c)), and the whole network spec of
// FullyConnected._core_network(): (family, (a, b, c), w_var, b_var).
ntkcore::Activation to_activation(const pybind11::tuple& spec);
ntkcore::Network to_network(const pybind11::tuple& spec);

// The instantiations of the extreme eigen solvers (spectral.hpp, symmetry.hpp) that the bindings call;
// compiled once per instruction set (CMakeLists.txt).
#include "instances.hpp"

NTKCORE_SPECTRAL_INSTANCES(, double)
NTKCORE_SPECTRAL_INSTANCES(, float)

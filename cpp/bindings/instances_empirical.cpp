// The instantiations of the finite-width MLP core (empirical.hpp) that the bindings call; compiled once per
// instruction set (CMakeLists.txt).
#include "instances.hpp"

NTKCORE_EMPIRICAL_INSTANCES(, double)
NTKCORE_EMPIRICAL_INSTANCES(, float)
